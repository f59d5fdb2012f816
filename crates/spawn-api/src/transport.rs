//! The transport contract: how actors reach each other on one machine.
//!
//! A [`Transport`] binds [`Listener`]s and connects [`Channel`]s. A channel moves
//! [`Frame`]s both ways and splits into a [`FrameSink`] (written by one task) and a
//! [`FrameSource`] (read by another). How bytes move (a socket, a shared-memory ring
//! with a doorbell, descriptors passed over a control socket) is the transport's
//! business; the actor runtime sees only frames.
//!
//! Addresses are chosen by the parent: [`Transport::address_for`] names where a new
//! child will listen, next to its parent, so the parent can remove what is left there
//! ([`Transport::cleanup`]) if the child dies without cleaning up.

use std::fmt;

use async_trait::async_trait;

use crate::error::{ChannelError, TransportError};
use crate::id::{ActorId, Addr};
use crate::wire::Frame;

/// A localhost transport (`uds`, `shm`, ...).
///
/// Implementations must be cheap to share (`Arc<dyn Transport>`) and must not keep
/// per-actor state in statics: several actors may use one transport value in one
/// process.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// The key addresses of this transport carry (`"uds"`).
    fn key(&self) -> &'static str;

    /// Where actor `id` should listen. `near` is its parent's address (`None` for a
    /// root); a transport places children next to their parent so that a whole tree
    /// shares the root's location.
    ///
    /// # Errors
    /// [`TransportError::BadAddr`] if `near` is not this transport's, or the location
    /// cannot hold another endpoint (a path too long, say).
    fn address_for(&self, id: &ActorId, near: Option<&Addr>) -> Result<Addr, TransportError>;

    /// Listen at `addr`.
    async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError>;

    /// Open a channel to the actor listening at `addr`.
    async fn connect(&self, addr: &Addr) -> Result<Box<dyn Channel>, TransportError>;

    /// Remove whatever an actor that listened at `addr` left behind (a socket file, a
    /// shared-memory name). Called by the parent's reaper; must tolerate there being
    /// nothing to remove.
    fn cleanup(&self, addr: &Addr);

    /// Remove everything the tree whose root listened at `root` left behind (endpoints
    /// of descendants whose parents died before they could clean up). Called by the
    /// root once all its children are reaped.
    fn cleanup_tree(&self, root: &Addr) {
        let _ = root;
    }

    /// The largest frame this transport's channels carry.
    fn max_frame(&self) -> usize;
}

/// Accepts channels at one address. Dropping it stops listening and removes the
/// endpoint.
#[async_trait]
pub trait Listener: Send + Sync + fmt::Debug {
    /// The address peers connect to.
    fn local_addr(&self) -> &Addr;

    /// The next incoming channel.
    ///
    /// # Errors
    /// Per-connection failures (a refused peer, a failed setup) return an error and the
    /// listener keeps listening; [`TransportError::Closed`] means it never will again.
    async fn accept(&mut self) -> Result<Box<dyn Channel>, TransportError>;
}

/// What the kernel says about the other end of a channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's process id, if the transport knows it.
    pub pid: Option<u32>,
    /// The peer's user id, if the transport knows it.
    pub uid: Option<u32>,
}

/// A connected, bidirectional frame channel.
pub trait Channel: Send + fmt::Debug {
    /// Who is at the other end.
    fn peer(&self) -> PeerInfo;

    /// Separate the two directions so one task can write while another reads.
    fn split(self: Box<Self>) -> (Box<dyn FrameSink>, Box<dyn FrameSource>);
}

/// The sending half of a channel. Frames are queued by [`feed`](FrameSink::feed) and
/// sent by [`flush`](FrameSink::flush), so a writer can batch whatever is ready.
#[async_trait]
pub trait FrameSink: Send {
    /// Queue `frame` for sending.
    ///
    /// # Errors
    /// [`ChannelError::Protocol`] with [`crate::ProtocolError::FrameTooLarge`] if the
    /// frame exceeds the channel's maximum (nothing is queued; the channel stays usable).
    fn feed(&mut self, frame: &Frame) -> Result<(), ChannelError>;

    /// Send everything queued.
    async fn flush(&mut self) -> Result<(), ChannelError>;

    /// Flush and close the sending direction; the peer's source then ends.
    async fn close(&mut self) -> Result<(), ChannelError>;
}

/// The receiving half of a channel.
#[async_trait]
pub trait FrameSource: Send {
    /// The next frame, or `Ok(None)` once the peer closed cleanly.
    ///
    /// # Errors
    /// A broken frame is a [`ChannelError::Protocol`]; the channel is unusable after any
    /// error.
    async fn recv(&mut self) -> Result<Option<Frame>, ChannelError>;
}
