//! # ipc-uds: brood's Unix-socket transport
//!
//! [`UdsTransport`] carries brood frames (a 4-byte little-endian length, a postcard
//! header, the payload) over Unix stream sockets.
//!
//! - **Where sockets live.** A private runtime directory: the one given with
//!   [`UdsTransport::with_dir`] or `BROOD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/brood`, else
//!   `/tmp/brood-<uid>` (`/dev/shm/brood-<uid>` when `/tmp` is on disk and `/dev/shm` in
//!   memory). Each tree gets its own subdirectory (`t<root pid>-<id>`); every actor of the
//!   tree listens there at `<uid>.sock`, and children find it from the absolute address
//!   their parent gives them. A new root removes the directories of trees whose root
//!   process is gone. (The directory logic lives in `os_wrappers::runtime_dir`, shared
//!   with the shared-memory transport, whose control sockets live in the same trees.)
//!
//!   The kernel resolves a socket path again at every `bind` and `connect`, so the
//!   directory is only private if nobody else can change *any* step of that path. The
//!   directory is therefore opened one component at a time from `/` (`openat` with
//!   `O_NOFOLLOW`, each entry looked at with `lstat` first) and checked on the way:
//!   - every directory above it (ancestors, `/` included) must be owned by root or by us
//!     (its owner could rename or replace what is below it), and if group- or
//!     world-writable it must have the sticky bit like `/tmp` (otherwise any writer could
//!     swap the next entry);
//!   - a symbolic link on the way (`/var/run -> /run`) is followed only if root or we own
//!     it: the directory holding it passed the checks, so nobody else can have planted
//!     or changed it (in a sticky directory others can add entries, hence the owner
//!     check);
//!   - the runtime directory itself must be a real directory (not a symlink), ours, mode
//!     0700; a missing one is created with `mkdir` (which never follows a symlink) and
//!     given 0700 whatever the umask.
//!
//!   The checks run on descriptors, so an entry swapped in after it was looked at is not
//!   used. A directory we pass that fails them is a [`TransportError::RuntimeDir`] naming
//!   it and what is wrong.
//!
//!   The *default* location is a name in a shared directory, and another user can create
//!   that name first (a directory of theirs, a file, a symlink) or leave it open. Then a
//!   root does not fail: it makes a fresh private directory beside it with a name nobody
//!   can guess (`/tmp/brood-<uid>-XXXXXXXX`, created atomically by `mkdir`, mode 0700),
//!   uses it for its tree and logs a warning naming the squatted path and its owner. That
//!   directory is removed when the tree ends ([`Transport::cleanup_tree`]); a root that
//!   falls back also sweeps such directories of roots that died before their end. An
//!   *explicit* directory is never replaced: if it is not private the error says why.
//! - **Who may connect.** Both ends check the other's uid with `SO_PEERCRED`; another
//!   user is refused with [`TransportError::PeerRefused`].
//! - **Frame size.** Frames above [`UdsTransport::max_frame`] (64 MiB by default) are
//!   refused before anything is allocated.
//! - **Cleanup.** A listener unlinks its socket when dropped; a parent that reaps a killed
//!   child calls [`Transport::cleanup`], and a root removes its tree directory at the end
//!   ([`Transport::cleanup_tree`]).
//!
//! ## Who should depend on this crate
//!
//! Programs that pick their crates by hand, to add the `uds` transport to a `Brood`:
//! `actor-core` + `spawn-proc` + `ipc-uds` is a complete tree of process actors without
//! Python. Other programs use the `brood` facade (feature `uds`, on by default), which
//! wires this transport in. Tools that speak brood's frames over a socket may use it
//! alone, through [`Transport`]. It depends only on the contract (`spawn-api`) and on
//! `os-wrappers` (which holds the runtime directory's checks and the peer-credential
//! check, shared with `ipc-shm`), never on the actor runtime, a backend or another
//! transport (`actor-core` appears only among its dev-dependencies, for examples and
//! tests).
//!
//! ```no_run
//! use ipc_uds::UdsTransport;
//! use spawn_api::{ActorId, Transport};
//! # async fn demo() -> Result<(), spawn_api::TransportError> {
//! let uds = UdsTransport::new();
//! let addr = uds.address_for(&ActorId::new("root"), None)?;
//! let mut listener = uds.bind(&addr).await?;
//! let client = uds.connect(&addr).await?;
//! let server = listener.accept().await?;
//! # Ok(()) }
//! ```

// The library has no unsafe code; only its tests call libc directly.
#![cfg_attr(not(test), forbid(unsafe_code))]

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use os_wrappers::peercred::{self, PeerCheckError};
use os_wrappers::runtime_dir::{self, DirError, Location, Resolved, TreeDirs};
use os_wrappers::socket_file::{self, SocketFile};

use os_wrappers::fdpass::{FdReadHalf, FdWriteHalf};
use spawn_api::codec::{DEFAULT_MAX_FRAME, FdRead, FdWrite, FrameReader, FrameWriter};
use spawn_api::{
    ActorId, Addr, Channel, ChannelError, Frame, FrameSink, FrameSource, Listener, PeerInfo,
    Transport, TransportError, async_trait,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

/// The key of this transport in addresses and configuration.
pub const KEY: &str = "uds";

/// Environment variable naming the runtime directory (for tests and sandboxes).
pub const RUNTIME_DIR_ENV: &str = runtime_dir::RUNTIME_DIR_ENV;

/// Default socket send buffer per channel: 2 MiB, so a 1 MiB frame leaves in one copy.
/// Kernel memory is only used while data waits for the peer.
pub const DEFAULT_SEND_BUFFER: usize = 2 << 20;

/// Unix-socket transport. Cheap to clone (clones share what they know); keeps no
/// per-actor state.
#[derive(Clone, Debug)]
pub struct UdsTransport {
    /// Where trees go (the environment's location unless given), and which of them live
    /// in a fallback directory this transport made (removed with the tree).
    dirs: TreeDirs,
    max_frame: usize,
    send_buffer: usize,
}

impl Default for UdsTransport {
    fn default() -> Self {
        UdsTransport::new()
    }
}

impl UdsTransport {
    /// The transport with the default runtime directory and a 64 MiB frame limit.
    pub fn new() -> UdsTransport {
        UdsTransport {
            dirs: TreeDirs::new(),
            max_frame: DEFAULT_MAX_FRAME,
            send_buffer: DEFAULT_SEND_BUFFER,
        }
    }

    /// Use `dir` as the runtime directory (it is created with mode 0700 if missing). It
    /// is used as it is or refused, never replaced (see the crate docs).
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> UdsTransport {
        self.dirs = self.dirs.with_location(Location::Explicit(dir.into()));
        self
    }

    /// Use `loc` instead of the environment's location (tests: a default location in a
    /// scratch base instead of `/tmp`).
    #[cfg(test)]
    fn with_location(mut self, loc: Location) -> UdsTransport {
        self.dirs = self.dirs.with_location(loc);
        self
    }

    /// Ask for `bytes` of socket send buffer per channel (0 keeps the system default).
    pub fn with_send_buffer(mut self, bytes: usize) -> UdsTransport {
        self.send_buffer = bytes;
        self
    }

    /// Refuse frames above `bytes`.
    pub fn with_max_frame(mut self, bytes: usize) -> UdsTransport {
        self.max_frame = bytes;
        self
    }

    /// The runtime directory roots of this transport use, created and checked (every
    /// component of its path, see the crate docs).
    ///
    /// When the default location is taken by someone else, every call makes a fresh
    /// private directory beside it and returns that; the caller removes it.
    ///
    /// # Errors
    /// [`TransportError::RuntimeDir`] if it cannot be created, is not a directory, is
    /// owned by another user or is open to others, or a directory above it could let
    /// another user replace it.
    pub fn runtime_dir(&self) -> Result<PathBuf, TransportError> {
        Ok(self.resolve()?.path)
    }

    fn resolve(&self) -> Result<Resolved, TransportError> {
        self.dirs.resolve().map_err(dir_error)
    }
}

/// The runtime directory `loc` names for user `uid`, created and checked (see the crate
/// docs): [`runtime_dir::resolve`] with this transport's error.
#[cfg(test)]
fn resolve(loc: &Location, uid: u32) -> Result<Resolved, TransportError> {
    runtime_dir::resolve(loc, uid).map_err(dir_error)
}

/// `BROOD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/brood`, else `/tmp/brood-<uid>` — unless
/// `/tmp` is on disk and `/dev/shm` is in memory, then `/dev/shm/brood-<uid>`.
///
/// Every actor creates and removes a socket file: on a journalling disk filesystem that
/// costs ~150 µs per actor here (measured on ext4), in memory a few microseconds. The
/// directory is private (0700) wherever it is. This is the expected location: when
/// another user has taken it, roots use a fresh directory beside it (see the crate docs).
pub fn default_runtime_dir() -> PathBuf {
    runtime_dir::default_runtime_dir()
}

fn dir_error(e: DirError) -> TransportError {
    TransportError::RuntimeDir {
        path: e.path.display().to_string(),
        reason: e.reason,
    }
}

fn socket_path(addr: &Addr) -> Result<PathBuf, TransportError> {
    spawn_api::transport::socket_path(addr, KEY)
}

fn make_addr(path: &Path) -> Result<Addr, TransportError> {
    spawn_api::transport::socket_addr(KEY, path)
}

#[cfg(test)]
fn our_uid() -> u32 {
    peercred::effective_uid()
}

/// Ask for a send buffer of `bytes` (the kernel caps it at `net.core.wmem_max`). A Unix
/// stream socket queues what a peer has not read yet against the *sender's* buffer, so a
/// larger one lets a bulk frame go out in fewer, larger copies with fewer wake-ups. Best
/// effort: failing to enlarge it only costs throughput.
fn size_send_buffer(stream: &UnixStream, bytes: usize) {
    if bytes == 0 {
        return;
    }
    if let Err(e) = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::SndBuf, &bytes)
    {
        tracing::debug!(error = %e, "cannot enlarge the socket's send buffer");
    }
}

fn check_peer(stream: &UnixStream) -> Result<PeerInfo, TransportError> {
    match peercred::check_same_user(stream) {
        Ok(cred) => Ok(PeerInfo {
            pid: cred.pid,
            uid: Some(cred.uid),
        }),
        Err(PeerCheckError::Io(e)) => Err(TransportError::io("reading the peer's credentials", e)),
        Err(PeerCheckError::OtherUser { peer_uid, our_uid }) => {
            Err(TransportError::PeerRefused { peer_uid, our_uid })
        }
    }
}

#[async_trait]
impl Transport for UdsTransport {
    fn key(&self) -> &'static str {
        KEY
    }

    fn address_for(&self, id: &ActorId, near: Option<&Addr>) -> Result<Addr, TransportError> {
        let file = format!("{:016x}.sock", id.uid());
        match near {
            Some(parent) => spawn_api::transport::socket_beside(parent, KEY, &file),
            None => self.root_address(&file, id),
        }
    }

    async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError> {
        let path = socket_path(addr)?;
        let (listener, guard) = socket_file::bind(&path)
            .map_err(|e| TransportError::io(format!("binding {}", path.display()), e))?;
        Ok(Box::new(UdsListener {
            listener,
            addr: addr.clone(),
            _unlink: guard,
            max_frame: self.max_frame,
            send_buffer: self.send_buffer,
        }))
    }

    async fn connect(&self, addr: &Addr) -> Result<Box<dyn Channel>, TransportError> {
        let path = socket_path(addr)?;
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| TransportError::io(format!("connecting to {}", path.display()), e))?;
        let peer = check_peer(&stream)?;
        size_send_buffer(&stream, self.send_buffer);
        Ok(Box::new(UdsChannel {
            stream,
            peer,
            max_frame: self.max_frame,
        }))
    }

    fn cleanup(&self, addr: &Addr) {
        if let Ok(path) = socket_path(addr) {
            socket_file::remove(&path);
        }
    }

    fn cleanup_tree(&self, root: &Addr) {
        let Ok(path) = socket_path(root) else {
            return;
        };
        let Some(tree) = path.parent() else {
            return;
        };
        self.dirs.end_tree(tree);
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl UdsTransport {
    /// The address of a new root: a tree directory in the (checked) runtime directory.
    fn root_address(&self, file: &str, id: &ActorId) -> Result<Addr, TransportError> {
        self.dirs.new_tree(
            id.uid() as u32,
            |tree| make_addr(&tree.join(file)),
            dir_error,
        )
    }
}

/// A listening Unix socket; unlinks its file when dropped.
#[derive(Debug)]
pub struct UdsListener {
    listener: tokio::net::UnixListener,
    addr: Addr,
    _unlink: SocketFile,
    max_frame: usize,
    send_buffer: usize,
}

#[async_trait]
impl Listener for UdsListener {
    fn local_addr(&self) -> &Addr {
        &self.addr
    }

    async fn accept(&mut self) -> Result<Box<dyn Channel>, TransportError> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| TransportError::io("accepting", e))?;
        let peer = check_peer(&stream)?;
        size_send_buffer(&stream, self.send_buffer);
        Ok(Box::new(UdsChannel {
            stream,
            peer,
            max_frame: self.max_frame,
        }))
    }
}

/// One connected Unix stream socket.
#[derive(Debug)]
pub struct UdsChannel {
    stream: UnixStream,
    peer: PeerInfo,
    max_frame: usize,
}

impl Channel for UdsChannel {
    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSink>, Box<dyn FrameSource>) {
        let (r, w) = self.stream.into_split();
        (
            Box::new(UdsSink(FrameWriter::new(
                Writer(FdWriteHalf::new(w)),
                self.max_frame,
            ))),
            Box::new(UdsSource(FrameReader::new(
                Reader(FdReadHalf::new(r)),
                self.max_frame,
            ))),
        )
    }
}

/// The socket's read half: every read keeps the descriptors that arrive with it, for
/// the frames that announce them.
struct Reader(FdReadHalf);

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl FdRead for Reader {
    fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>> {
        self.0.take_fds(n)
    }
}

/// The socket's write half: a frame's descriptors ride on its first byte
/// (`SCM_RIGHTS`).
struct Writer(FdWriteHalf);

impl AsyncWrite for Writer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl FdWrite for Writer {
    fn poll_write_fds(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_write_fds(cx, buf, fds)
    }
}

struct UdsSink(FrameWriter<Writer>);

#[async_trait]
impl FrameSink for UdsSink {
    fn feed(&mut self, frame: &Frame) -> Result<(), ChannelError> {
        Ok(self.0.feed(frame)?)
    }

    async fn flush(&mut self) -> Result<(), ChannelError> {
        Ok(self.0.flush().await?)
    }

    async fn close(&mut self) -> Result<(), ChannelError> {
        match self.0.shutdown().await {
            Ok(()) => Ok(()),
            // The peer is already gone: nothing is left to close.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

struct UdsSource(FrameReader<Reader>);

#[async_trait]
impl FrameSource for UdsSource {
    async fn recv(&mut self) -> Result<Option<Frame>, ChannelError> {
        self.0.read_frame().await
    }
}

#[cfg(test)]
mod tests;
