//! # ipc-uds: brood's Unix-socket transport
//!
//! [`UdsTransport`] carries brood frames (a 4-byte little-endian length, a postcard
//! header, the payload) over Unix stream sockets.
//!
//! - **Where sockets live.** A private runtime directory, `$XDG_RUNTIME_DIR/brood`, else
//!   `/tmp/brood-<uid>` (`/dev/shm/brood-<uid>` when `/tmp` is on disk and `/dev/shm` in
//!   memory; override with [`UdsTransport::with_dir`] or `BROOD_RUNTIME_DIR`),
//!   created with mode 0700 and refused if another user owns it or others can enter it.
//!   Each tree gets its own subdirectory (`t<root pid>-<id>`); every actor of the tree
//!   listens there at `<uid>.sock`. A new root removes the directories of trees whose root
//!   process is gone.
//! - **Who may connect.** Both ends check the other's uid with `SO_PEERCRED`; another
//!   user is refused with [`TransportError::PeerRefused`].
//! - **Frame size.** Frames above [`UdsTransport::max_frame`] (64 MiB by default) are
//!   refused before anything is allocated.
//! - **Cleanup.** A listener unlinks its socket when dropped; a parent that reaps a killed
//!   child calls [`Transport::cleanup`], and a root removes its tree directory at the end
//!   ([`Transport::cleanup_tree`]).
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

#![warn(missing_docs)]

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use spawn_api::codec::{DEFAULT_MAX_FRAME, FrameReader, FrameWriter};
use spawn_api::{
    ActorId, Addr, Channel, ChannelError, Frame, FrameSink, FrameSource, Listener, PeerInfo,
    Transport, TransportError, async_trait,
};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The key of this transport in addresses and configuration.
pub const KEY: &str = "uds";

/// Environment variable naming the runtime directory (for tests and sandboxes).
pub const RUNTIME_DIR_ENV: &str = "BROOD_RUNTIME_DIR";

/// Default socket send buffer per channel: 2 MiB, so a 1 MiB frame leaves in one copy.
/// Kernel memory is only used while data waits for the peer.
pub const DEFAULT_SEND_BUFFER: usize = 0;

/// The longest socket path the kernel accepts (`sun_path` less its terminating NUL).
const MAX_PATH: usize = 107;

/// Unix-socket transport. Cheap to clone; keeps no per-actor state.
#[derive(Clone, Debug)]
pub struct UdsTransport {
    dir: Option<PathBuf>,
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
            dir: None,
            max_frame: DEFAULT_MAX_FRAME,
            send_buffer: DEFAULT_SEND_BUFFER,
        }
    }

    /// Use `dir` as the runtime directory (it is created with mode 0700 if missing).
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> UdsTransport {
        self.dir = Some(dir.into());
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

    /// The runtime directory roots of this transport use, created and checked.
    ///
    /// # Errors
    /// [`TransportError::RuntimeDir`] if it cannot be created, is not a directory, is
    /// owned by another user or is open to others.
    pub fn runtime_dir(&self) -> Result<PathBuf, TransportError> {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => default_runtime_dir(),
        };
        ensure_private_dir(&dir)?;
        Ok(dir)
    }
}

/// `BROOD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/brood`, else `/tmp/brood-<uid>` — unless
/// `/tmp` is on disk and `/dev/shm` is in memory, then `/dev/shm/brood-<uid>`.
///
/// Every actor creates and removes a socket file: on a journalling disk filesystem that
/// costs ~150 µs per actor here (measured on ext4), in memory a few microseconds. The
/// directory is private (0700) wherever it is.
pub fn default_runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(RUNTIME_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("brood");
    }
    let uid = nix::unistd::geteuid();
    if !in_memory(Path::new("/tmp")) && in_memory(Path::new("/dev/shm")) {
        return PathBuf::from(format!("/dev/shm/brood-{uid}"));
    }
    PathBuf::from(format!("/tmp/brood-{uid}"))
}

/// Whether `path` lives on a tmpfs.
fn in_memory(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

fn dir_error(dir: &Path, reason: impl Into<String>) -> TransportError {
    TransportError::RuntimeDir {
        path: dir.display().to_string(),
        reason: reason.into(),
    }
}

/// Create `dir` (mode 0700) if needed and check that it is a real directory of ours
/// that nobody else can enter.
fn ensure_private_dir(dir: &Path) -> Result<(), TransportError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(dir_error(dir, format!("cannot create: {e}"))),
    }
    let meta =
        fs::symlink_metadata(dir).map_err(|e| dir_error(dir, format!("cannot stat: {e}")))?;
    if !meta.is_dir() {
        return Err(dir_error(dir, "not a directory (or a symbolic link)"));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(dir_error(
            dir,
            format!("owned by uid {}, not by us (uid {uid})", meta.uid()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(dir_error(
            dir,
            format!(
                "mode {:o} lets other users in; expected 0700",
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(())
}

fn socket_path(addr: &Addr) -> Result<PathBuf, TransportError> {
    if addr.transport() != KEY {
        return Err(TransportError::BadAddr {
            addr: addr.to_string(),
            reason: format!("not a {KEY} address"),
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

fn make_addr(path: &Path) -> Result<Addr, TransportError> {
    let s = path.to_str().ok_or_else(|| TransportError::BadAddr {
        addr: path.display().to_string(),
        reason: "socket path is not UTF-8".to_owned(),
    })?;
    if s.len() > MAX_PATH {
        return Err(TransportError::BadAddr {
            addr: s.to_owned(),
            reason: format!(
                "socket path is {} bytes, the kernel takes at most {MAX_PATH}; use a shorter runtime directory",
                s.len()
            ),
        });
    }
    Ok(Addr::new(KEY, s))
}

/// Remove tree directories whose root process no longer exists.
fn remove_stale_trees(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix('t'))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) => true,
            Err(nix::errno::Errno::ESRCH) => false,
            Err(_) => true,
        };
        if !alive {
            tracing::debug!(tree = %e.path().display(), "removing a stale tree directory");
            remove_tree_dir(&e.path());
        }
    }
}

/// Unlink the sockets in a tree directory, then the directory. Foreign files are left
/// (and keep the directory).
fn remove_tree_dir(tree: &Path) {
    if let Ok(entries) = fs::read_dir(tree) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".sock") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    if let Err(e) = fs::remove_dir(tree)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(tree = %tree.display(), error = %e, "tree directory not removed");
    }
}

fn our_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
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
    let cred = stream
        .peer_cred()
        .map_err(|e| TransportError::io("reading the peer's credentials", e))?;
    let info = PeerInfo {
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
        uid: Some(cred.uid()),
    };
    if cred.uid() != our_uid() {
        return Err(TransportError::PeerRefused {
            peer_uid: cred.uid(),
            our_uid: our_uid(),
        });
    }
    Ok(info)
}

#[async_trait]
impl Transport for UdsTransport {
    fn key(&self) -> &'static str {
        KEY
    }

    fn address_for(&self, id: &ActorId, near: Option<&Addr>) -> Result<Addr, TransportError> {
        let file = format!("{:016x}.sock", id.uid());
        let tree = match near {
            Some(parent) => {
                let p = socket_path(parent)?;
                p.parent()
                    .map(Path::to_path_buf)
                    .ok_or_else(|| TransportError::BadAddr {
                        addr: parent.to_string(),
                        reason: "socket path has no directory".to_owned(),
                    })?
            }
            None => {
                let dir = self.runtime_dir()?;
                remove_stale_trees(&dir);
                let tree = dir.join(format!("t{}-{:08x}", std::process::id(), id.uid() as u32));
                ensure_private_dir(&tree)?;
                tree
            }
        };
        make_addr(&tree.join(file))
    }

    async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError> {
        let path = socket_path(addr)?;
        if fs::symlink_metadata(&path).is_ok() {
            // A socket file is left over: reuse the name only if nobody listens there.
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(_) => {
                    return Err(TransportError::io(
                        format!("binding {}", path.display()),
                        io::Error::from(io::ErrorKind::AddrInUse),
                    ));
                }
                Err(_) => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let std_listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| TransportError::io(format!("binding {}", path.display()), e))?;
        // No chmod: the socket sits in a 0700 directory checked above (every actor pays
        // for a chmod at start-up, and the directory already keeps others out).
        let guard = Unlink(path.clone());
        std_listener
            .set_nonblocking(true)
            .map_err(|e| TransportError::io("setting the listener non-blocking", e))?;
        let listener = tokio::net::UnixListener::from_std(std_listener)
            .map_err(|e| TransportError::io("registering the listener", e))?;
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
        if let Ok(path) = socket_path(addr)
            && let Ok(meta) = fs::symlink_metadata(&path)
            && std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
        {
            let _ = fs::remove_file(&path);
        }
    }

    fn cleanup_tree(&self, root: &Addr) {
        if let Ok(path) = socket_path(root)
            && let Some(tree) = path.parent()
        {
            remove_tree_dir(tree);
        }
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }
}

/// Removes a socket file when dropped.
#[derive(Debug)]
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A listening Unix socket; unlinks its file when dropped.
#[derive(Debug)]
pub struct UdsListener {
    listener: tokio::net::UnixListener,
    addr: Addr,
    _unlink: Unlink,
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
            Box::new(UdsSink(FrameWriter::new(w, self.max_frame))),
            Box::new(UdsSource(FrameReader::new(r, self.max_frame))),
        )
    }
}

struct UdsSink(FrameWriter<OwnedWriteHalf>);

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

struct UdsSource(FrameReader<OwnedReadHalf>);

#[async_trait]
impl FrameSource for UdsSource {
    async fn recv(&mut self) -> Result<Option<Frame>, ChannelError> {
        self.0.read_frame().await
    }
}

#[cfg(test)]
mod tests;
