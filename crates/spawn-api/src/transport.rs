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
use std::path::{Path, PathBuf};

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
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: the runtime awaits `bind` as a root or a
    /// child actor starts, and drops the future if that start is abandoned (the root's
    /// future dropped, an in-process child aborted). Dropped, it must leave nothing
    /// listening and no endpoint behind, as a dropped [`Listener`] does.
    async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError>;

    /// Open a channel to the actor listening at `addr`.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: the runtime awaits `connect` as a child
    /// reaches its parent and drops the future if that start is abandoned. Dropped, it
    /// must close whatever it opened; the peer's listener may then have accepted a
    /// channel that ends at once, which the runtime treats as a failed handshake.
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
    /// # Cancel safety
    ///
    /// The runtime's accept loop drops an `accept` future only when the actor stops
    /// listening, and drops the listener with it: a channel lost that way has no one to
    /// serve it anyway. Implementations therefore need not be cancel safe, but should
    /// say so if they are not; one that is (`ipc-uds`'s is) loses no incoming channel
    /// when the future is dropped, so callers may use it in a `select!` loop.
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
    ///
    /// # Cancel safety
    ///
    /// The runtime drops a `flush` future only when it gives up the channel (closing, it
    /// waits a bounded time for a peer that does not read), and then drops the sink
    /// without calling it again. Implementations therefore need not be cancel safe: a
    /// dropped flush may leave part of a frame written and the rest lost. They must not
    /// block or panic when dropped mid-flush. (The codec's
    /// [`FrameWriter::flush`](crate::codec::FrameWriter::flush) is cancel safe: what it
    /// did not write stays queued.)
    async fn flush(&mut self) -> Result<(), ChannelError>;

    /// Flush and close the sending direction; the peer's source then ends.
    ///
    /// # Cancel safety
    ///
    /// As [`flush`](FrameSink::flush): the runtime bounds `close` with a timeout and, if
    /// it passes, drops the sink; the peer then sees the channel end without a clean
    /// close.
    async fn close(&mut self) -> Result<(), ChannelError>;
}

/// The receiving half of a channel.
#[async_trait]
pub trait FrameSource: Send {
    /// The next frame, or `Ok(None)` once the peer closed cleanly.
    ///
    /// # Cancel safety
    ///
    /// The runtime drops a `recv` future only when it gives up the channel: the channel
    /// closed, it sat idle past the idle timeout, or a handshake timed out. It never calls
    /// `recv` again on that source. Implementations therefore need not be cancel safe (a
    /// frame partly read when the future is dropped may be lost), but should say so if
    /// they are not: `ipc-uds`'s, built on
    /// [`FrameReader::read_frame`](crate::codec::FrameReader::read_frame), is not for
    /// large frames.
    ///
    /// # Errors
    /// A broken frame is a [`ChannelError::Protocol`]; the channel is unusable after any
    /// error.
    async fn recv(&mut self) -> Result<Option<Frame>, ChannelError>;
}

/// The longest path a Unix socket address takes: `sun_path` holds 108 bytes, one of them
/// the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// For transports whose endpoints are Unix socket paths (`uds`, `shm`'s control
/// sockets): the address of transport `key` for the socket at `path`.
///
/// ```
/// use std::path::Path;
/// let a = spawn_api::transport::socket_addr("uds", Path::new("/run/b/x.sock")).unwrap();
/// assert_eq!(a.to_string(), "uds:/run/b/x.sock");
/// let long = format!("/{}", "d".repeat(200));
/// assert!(spawn_api::transport::socket_addr("uds", Path::new(&long)).is_err());
/// ```
///
/// # Errors
/// [`TransportError::BadAddr`] if the path is not UTF-8 or longer than
/// [`MAX_SOCKET_PATH`] bytes.
pub fn socket_addr(key: &str, path: &Path) -> Result<Addr, TransportError> {
    let s = path.to_str().ok_or_else(|| TransportError::BadAddr {
        addr: path.display().to_string(),
        reason: "socket path is not UTF-8".to_owned(),
    })?;
    if s.len() > MAX_SOCKET_PATH {
        return Err(TransportError::BadAddr {
            addr: s.to_owned(),
            reason: format!(
                "socket path is {} bytes, the kernel takes at most {MAX_SOCKET_PATH}; use a \
                 shorter runtime directory",
                s.len()
            ),
        });
    }
    Ok(Addr::new(key, s))
}

/// The socket path an address of transport `key` names; the inverse of [`socket_addr`].
///
/// ```
/// let a: spawn_api::Addr = "uds:/run/b/x.sock".parse().unwrap();
/// assert_eq!(spawn_api::transport::socket_path(&a, "uds").unwrap().to_str(), Some("/run/b/x.sock"));
/// assert!(spawn_api::transport::socket_path(&a, "shm").is_err());
/// ```
///
/// # Errors
/// [`TransportError::BadAddr`] if the address is another transport's or its path is
/// not absolute.
pub fn socket_path(addr: &Addr, key: &str) -> Result<PathBuf, TransportError> {
    if addr.transport() != key {
        return Err(TransportError::BadAddr {
            addr: addr.to_string(),
            reason: format!("not a {key} address"),
        });
    }
    let p = PathBuf::from(addr.endpoint());
    if !p.is_absolute() {
        return Err(TransportError::BadAddr {
            addr: addr.to_string(),
            reason: "socket path is not absolute".to_owned(),
        });
    }
    Ok(p)
}

/// The address of transport `key` for a socket named `file` in the directory of the
/// socket `near` names: where a socket-based transport places a child next to its parent,
/// so a whole tree shares one directory.
///
/// ```
/// let parent: spawn_api::Addr = "uds:/run/b/t1/p.sock".parse().unwrap();
/// let child = spawn_api::transport::socket_beside(&parent, "uds", "c.sock").unwrap();
/// assert_eq!(child.to_string(), "uds:/run/b/t1/c.sock");
/// ```
///
/// # Errors
/// As [`socket_path`] and [`socket_addr`], and [`TransportError::BadAddr`] if `near`'s
/// path has no directory.
pub fn socket_beside(near: &Addr, key: &str, file: &str) -> Result<Addr, TransportError> {
    let path = socket_path(near, key)?;
    let dir = path.parent().ok_or_else(|| TransportError::BadAddr {
        addr: near.to_string(),
        reason: "socket path has no directory".to_owned(),
    })?;
    socket_addr(key, &dir.join(file))
}
