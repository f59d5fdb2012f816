//! Setting a channel up over its control socket.
//!
//! The connecting side creates everything and the accepting side checks everything:
//!
//! 1. The connector connects the Unix control socket and checks the acceptor's uid
//!    (`SO_PEERCRED`); the acceptor checks the connector's as it accepts.
//! 2. The connector creates a memfd (`MFD_CLOEXEC | MFD_ALLOW_SEALING`, no name in any
//!    filesystem), sizes it for two rings, maps it, writes the segment header, and seals
//!    it against shrinking and growing (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`)
//!    *before* anyone else can map it. It makes two eventfds: the acceptor's doorbell and
//!    its own.
//! 3. It sends one 16-byte message — `BROODSHM`, the version (u32), the ring capacity
//!    (u32), little-endian — with the memfd and the two eventfds attached (`SCM_RIGHTS`).
//!    Nothing is awaited back: it can start writing its ring at once.
//! 4. The acceptor reads the message (without blocking its listener: a peer that does
//!    not send it waits among the pending setups), then checks, before it maps
//!    anything: the magic and version; a capacity that is a power of two within bounds;
//!    exactly three descriptors; the memfd's seals (`F_GET_SEALS` must include shrink,
//!    grow and seal, so its size is fixed for good and a mapping of it can never fault);
//!    its size (`fstat`, exactly the layout's); that both doorbells are eventfds, which it
//!    makes non-blocking. Then it maps the memfd and checks the segment header once.
//!
//! After the setup the control socket carries only the descriptors of frames that carry
//! some (a `ShmRegion`): one message per such frame, the byte `F` with the descriptors
//! attached, sent *before* the frame's bytes go into the ring, so they are waiting in
//! the socket by the time the reader parses that frame. Anything else on it (another
//! byte, the mark without descriptors, more than 64 descriptors no frame has claimed)
//! is a protocol error that ends the channel. It stays open as the liveness signal:
//! either side's end (exit, crash, SIGKILL, the channel dropped) makes it readable at
//! end-of-file on the other side, which ends the channel.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use os_wrappers::{eventfd, fdpass, memfd, mmap::SharedMapping};
use spawn_api::{ChannelError, ProtocolError, TransportError};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::bell::Bell;
use crate::ring::{self, Segment, SharedMem, Side};

/// The smallest ring: one page.
pub const MIN_RING_SIZE: usize = 4 << 10;

/// The largest ring: 64 MiB.
pub const MAX_RING_SIZE: usize = 64 << 20;

/// The setup message's first bytes.
const MAGIC: &[u8; 8] = b"BROODSHM";
/// The setup message's version (and the segment layout's).
const VERSION: u32 = ring::VERSION;
/// The setup message's length.
pub(crate) const SETUP_LEN: usize = 16;
/// The seals a segment must carry.
const REQUIRED_SEALS: i32 = memfd::SEAL_SHRINK | memfd::SEAL_GROW | memfd::SEAL_SEAL;

/// What a channel is made with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) max_frame: usize,
    pub(crate) ring_size: usize,
    pub(crate) spin: Duration,
}

/// One side of a channel, set up: the checked segment, which end we are, our bell.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) segment: Segment,
    pub(crate) side: Side,
    pub(crate) bell: Bell,
}

fn encode(capacity: usize) -> [u8; SETUP_LEN] {
    let mut m = [0u8; SETUP_LEN];
    m[..8].copy_from_slice(MAGIC);
    m[8..12].copy_from_slice(&VERSION.to_le_bytes());
    // Fits: ring sizes are at most MAX_RING_SIZE.
    m[12..16].copy_from_slice(&(capacity as u32).to_le_bytes());
    m
}

/// The capacity a setup message announces, if the message is one we accept.
fn decode(m: &[u8]) -> Result<usize, String> {
    if m.len() != SETUP_LEN {
        return Err(format!(
            "a setup message of {} bytes, expected {SETUP_LEN}",
            m.len()
        ));
    }
    if &m[..8] != MAGIC {
        return Err("not a brood shared-memory setup message".into());
    }
    let version = u32::from_le_bytes([m[8], m[9], m[10], m[11]]);
    if version != VERSION {
        return Err(format!("setup version {version}, ours is {VERSION}"));
    }
    let cap = u32::from_le_bytes([m[12], m[13], m[14], m[15]]) as usize;
    if !cap.is_power_of_two() || !(MIN_RING_SIZE..=MAX_RING_SIZE).contains(&cap) {
        return Err(format!(
            "ring capacity {cap} is not a power of two in {MIN_RING_SIZE}..={MAX_RING_SIZE}"
        ));
    }
    Ok(cap)
}

/// A setup the peer got wrong.
pub(crate) fn refused(why: impl std::fmt::Display) -> TransportError {
    TransportError::Channel(ChannelError::Protocol(ProtocolError::Decode(format!(
        "shared-memory setup: {why}"
    ))))
}

fn ring_error(e: ring::RingError) -> TransportError {
    TransportError::Channel(ChannelError::Protocol(e.into()))
}

/// The connecting side: make the segment and the doorbells, send them over `stream`
/// (connected, its peer checked), and return our side.
pub(crate) async fn connect(stream: UnixStream, cfg: &Config) -> Result<Parts, TransportError> {
    let cap = cfg.ring_size;
    let len = ring::segment_len(cap).ok_or_else(|| refused("ring too large"))?;
    let fd = memfd::create("brood-shm")
        .map_err(|e| TransportError::io("creating the shared-memory file", e))?;
    memfd::set_len(&fd, len as u64)
        .map_err(|e| TransportError::io("sizing the shared-memory file", e))?;
    let map = SharedMapping::map(&fd, len)
        .map_err(|e| TransportError::io("mapping the shared-memory file", e))?;
    map.dont_fork()
        .map_err(|e| TransportError::io("mapping the shared-memory file", e))?;
    let mem: Arc<dyn SharedMem> = Arc::new(map);
    let seg = Segment::init(mem, cap).map_err(ring_error)?;
    memfd::add_seals(&fd, REQUIRED_SEALS)
        .map_err(|e| TransportError::io("sealing the shared-memory file", e))?;
    let ours = eventfd::new().map_err(|e| TransportError::io("creating a doorbell", e))?;
    let theirs = eventfd::new().map_err(|e| TransportError::io("creating a doorbell", e))?;
    let msg = encode(cap);
    loop {
        stream
            .writable()
            .await
            .map_err(|e| TransportError::io("sending the setup", e))?;
        match stream.try_io(Interest::WRITABLE, || {
            fdpass::send_with_fds(&stream, &msg, &[fd.as_fd(), theirs.as_fd(), ours.as_fd()])
        }) {
            Ok(n) if n == SETUP_LEN => break,
            // Descriptors ride on the first byte, and a fresh socket takes 16 bytes.
            Ok(n) => {
                return Err(TransportError::io(
                    "sending the setup",
                    io::Error::other(format!("only {n} of {SETUP_LEN} bytes went")),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(TransportError::io("sending the setup", e)),
        }
    }
    // The mapping keeps the file; the peer has its own descriptors now.
    drop(fd);
    Ok(Parts {
        segment: seg,
        side: Side::Connector,
        bell: make_bell(ours, theirs, stream)?,
    })
}

/// What the acceptor received: the capacity and the three descriptors.
#[derive(Debug)]
pub(crate) struct Offer {
    capacity: usize,
    memfd: OwnedFd,
    /// Ours to wait on.
    ours: OwnedFd,
    /// The connector's.
    theirs: OwnedFd,
}

/// The accepting side, one non-blocking attempt: the peer's setup message if it is
/// there (`None`: not yet).
///
/// # Errors
/// A message that is not a setup, the peer's end before it, or the socket's failure.
pub(crate) fn try_receive(stream: &UnixStream) -> Result<Option<Offer>, TransportError> {
    let mut buf = [0u8; SETUP_LEN + 1];
    let got = match stream.try_io(Interest::READABLE, || {
        fdpass::recv_with_fds(stream, &mut buf)
    }) {
        Ok(got) => got,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(TransportError::io("receiving the setup", e)),
    };
    if got.len == 0 {
        return Err(refused("the peer left before sending its setup"));
    }
    if got.truncated {
        return Err(refused("the setup message came with too much attached"));
    }
    let capacity = decode(&buf[..got.len]).map_err(refused)?;
    let Ok([memfd, ours, theirs]) = <[OwnedFd; 3]>::try_from(got.fds) else {
        return Err(refused(
            "the setup message does not carry exactly three descriptors",
        ));
    };
    Ok(Some(Offer {
        capacity,
        memfd,
        ours,
        theirs,
    }))
}

/// The accepting side: check what the peer offered, map it and return our side.
pub(crate) fn accept(offer: Offer, stream: UnixStream) -> Result<Parts, TransportError> {
    let Offer {
        capacity,
        memfd: fd,
        ours,
        theirs,
    } = offer;
    let len = ring::segment_len(capacity).ok_or_else(|| refused("ring too large"))?;
    let seals = memfd::seals(&fd)
        .map_err(|e| refused(format!("the segment is not a sealable memory file ({e})")))?;
    if seals & REQUIRED_SEALS != REQUIRED_SEALS {
        return Err(refused(format!(
            "the segment's seals are {seals:#x}; it must be sealed against shrinking, growing \
             and further sealing ({REQUIRED_SEALS:#x})"
        )));
    }
    let size = memfd::size(&fd).map_err(|e| refused(format!("the segment's size: {e}")))?;
    if size != len as u64 {
        return Err(refused(format!(
            "the segment has {size} bytes, rings of {capacity} bytes need {len}"
        )));
    }
    for (bell, which) in [(&ours, "our doorbell"), (&theirs, "the peer's doorbell")] {
        if !eventfd::is_eventfd(bell).map_err(|e| TransportError::io("checking a doorbell", e))? {
            return Err(refused(format!("{which} is not an eventfd")));
        }
        eventfd::set_nonblocking(bell).map_err(|e| TransportError::io("checking a doorbell", e))?;
    }
    let map = SharedMapping::map(&fd, len)
        .map_err(|e| refused(format!("the segment cannot be mapped ({e})")))?;
    map.dont_fork()
        .map_err(|e| TransportError::io("mapping the segment", e))?;
    drop(fd);
    let mem: Arc<dyn SharedMem> = Arc::new(map);
    let seg = Segment::open(mem, capacity).map_err(ring_error)?;
    Ok(Parts {
        segment: seg,
        side: Side::Acceptor,
        bell: make_bell(ours, theirs, stream)?,
    })
}

/// A side's bell, with this transport's error.
fn make_bell(ours: OwnedFd, theirs: OwnedFd, stream: UnixStream) -> Result<Bell, TransportError> {
    Bell::new(ours, theirs, stream).map_err(|e| TransportError::io("registering the doorbell", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_messages_are_checked() {
        let m = encode(1 << 16);
        assert_eq!(decode(&m), Ok(1 << 16));
        assert!(decode(&m[..15]).is_err());
        let mut bad = m;
        bad[0] = b'X';
        assert!(decode(&bad).unwrap_err().contains("not a brood"));
        let mut bad = m;
        bad[8] = 9;
        assert!(decode(&bad).unwrap_err().contains("version"));
        for cap in [0usize, 3 << 12, MIN_RING_SIZE / 2, MAX_RING_SIZE * 2] {
            let mut bad = m;
            bad[12..16].copy_from_slice(&(cap as u32).to_le_bytes());
            assert!(decode(&bad).unwrap_err().contains("capacity"), "{cap}");
        }
    }
}
