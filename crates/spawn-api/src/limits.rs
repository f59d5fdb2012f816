//! [`ChannelLimits`]: every quantity a peer controls, bounded.
//!
//! An actor isolates failures only if its channels do: whatever the other end sends or
//! announces, the memory, tasks and connections it can make this actor hold stay under
//! these bounds. A peer can waste its own budget, never the actor's memory.
//!
//! What one channel can make an actor hold, at most:
//!
//! | what | bound |
//! |---|---|
//! | frames waiting to be written | [`send_buffer`](ChannelLimits::send_buffer) bytes, plus one frame (a sender then waits), plus [`max_queued_control`](ChannelLimits::max_queued_control) small control frames (past that the peer is not reading and the channel closes) |
//! | items received and not yet consumed, per call | the receive window: [`stream_window`](ChannelLimits::stream_window) items and [`stream_window_bytes`](ChannelLimits::stream_window_bytes) bytes, plus one frame |
//! | items received and not yet consumed, all calls of the channel | [`recv_buffer`](ChannelLimits::recv_buffer) bytes, plus one frame: the call whose item would pass it fails with [`kinds::OVERLOADED`](crate::kinds::OVERLOADED) |
//! | calls the peer has open | [`max_calls`](ChannelLimits::max_calls); more are refused with [`kinds::TOO_MANY_CALLS`](crate::kinds::TOO_MANY_CALLS) |
//!
//! and per actor: [`max_peer_connections`](ChannelLimits::max_peer_connections)
//! connections from peers that are neither its parent nor its children (idle ones closed
//! after [`idle_timeout`](ChannelLimits::idle_timeout)), and
//! [`max_pending_handshakes`](ChannelLimits::max_pending_handshakes) connections that have
//! not finished their handshake (each closed after the handshake timeout).
//!
//! A frame itself is at most the transport's maximum ([`crate::Transport::max_frame`],
//! 64 MiB for Unix sockets), refused before anything is allocated.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bounds on what a peer may make an actor hold; see the [module docs](self).
///
/// Set for a whole tree with the runtime's `RootBuilder::limits`; every
/// child receives its parent's limits in its spawn spec.
///
/// ```
/// use spawn_api::ChannelLimits;
/// let l = ChannelLimits::default();
/// assert_eq!(l.stream_window, 256);
/// assert_eq!(l.stream_window_bytes, 8 << 20);
/// let small = ChannelLimits { send_buffer: 1 << 20, ..l };
/// assert!(small.send_buffer < l.send_buffer);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelLimits {
    /// Items a stream or context direction may have in flight before its sender waits
    /// (the receiver's window). A peer's larger window is capped at this.
    pub stream_window: u32,
    /// Bytes of items a stream or context direction may have in flight before its sender
    /// waits. One item may pass it (an item larger than the window still goes, alone).
    pub stream_window_bytes: u64,
    /// Bytes of frames a channel queues for writing before senders of data wait.
    pub send_buffer: usize,
    /// Bytes of received, unconsumed items a channel holds over all its calls.
    pub recv_buffer: usize,
    /// Control frames (credits, acknowledgements, errors) a channel queues for a peer
    /// that does not read before it closes the channel.
    pub max_queued_control: usize,
    /// Calls a peer may have open on one channel at once.
    pub max_calls: u32,
    /// Connections an actor accepts from peers other than its parent and children.
    pub max_peer_connections: u32,
    /// Incoming connections that may be in their handshake at once.
    pub max_pending_handshakes: u32,
    /// How long a peer connection with no open call may stay idle before it is closed.
    pub idle_timeout: Duration,
}

impl Default for ChannelLimits {
    fn default() -> Self {
        ChannelLimits {
            stream_window: 256,
            stream_window_bytes: 8 << 20,
            send_buffer: 8 << 20,
            recv_buffer: 64 << 20,
            max_queued_control: 64 * 1024,
            max_calls: 1024,
            max_peer_connections: 256,
            max_pending_handshakes: 64,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ChannelLimits {
    /// The receive window this actor announces for each stream (at least one item and
    /// one byte, whatever the limits say).
    ///
    /// ```
    /// use spawn_api::{ChannelLimits, Window};
    /// let l = ChannelLimits { stream_window: 0, ..ChannelLimits::default() };
    /// assert_eq!(l.window().items, 1);
    /// ```
    pub fn window(&self) -> Window {
        Window {
            items: self.stream_window.max(1),
            bytes: self.stream_window_bytes.max(1),
        }
    }

    /// A peer's announced window, capped at ours: we never keep more in flight than we
    /// would accept ourselves, whatever the peer claims.
    ///
    /// ```
    /// use spawn_api::{ChannelLimits, Window};
    /// let l = ChannelLimits::default();
    /// assert_eq!(l.cap(Window { items: u32::MAX, bytes: 0 }), Window { items: l.window().items, bytes: 1 });
    /// ```
    pub fn cap(&self, peer: Window) -> Window {
        let ours = self.window();
        Window {
            items: peer.items.clamp(1, ours.items),
            bytes: peer.bytes.clamp(1, ours.bytes),
        }
    }
}

/// How much a receiver lets a sender have in flight on one call: items and bytes of
/// [`crate::Msg::Yield`]s sent and not yet credited back.
///
/// A sender may send while both are below the window (so one item may pass the byte
/// bound); [`crate::Msg::Credit`] gives back what the receiver consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Items in flight.
    pub items: u32,
    /// Bytes of item payloads in flight.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_window_is_capped_at_ours_and_never_zero() {
        let l = ChannelLimits::default();
        let huge = Window {
            items: u32::MAX,
            bytes: u64::MAX,
        };
        assert_eq!(l.cap(huge), l.window());
        let zero = Window { items: 0, bytes: 0 };
        assert_eq!(l.cap(zero), Window { items: 1, bytes: 1 });
    }
}
