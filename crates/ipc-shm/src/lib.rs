//! # ipc-shm: brood's shared-memory transport
//!
//! [`ShmTransport`] (key `shm`) carries brood frames through shared memory. A channel is
//! two single-producer/single-consumer byte rings, one per direction, in one `memfd`
//! mapping, set up over a Unix *control socket* that stays open as the liveness signal.
//! Frames are the same as everywhere (a 4-byte little-endian length, a postcard header,
//! the payload), written and read by `spawn_api::codec` over the rings, so a frame larger
//! than a ring streams through it in pieces and the maximum frame is enforced as on any
//! other transport. A busy channel makes no system call: each side copies into and out
//! of the rings and rings the other's doorbell (an eventfd) only when that side sleeps.
//!
//! - **Addresses** are `shm:<control socket path>`, in the same private runtime
//!   directory as `ipc-uds` uses (`os_wrappers::runtime_dir`: given with
//!   [`ShmTransport::with_dir`] or `BROOD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/brood`,
//!   else `/tmp/brood-<uid>` or `/dev/shm/brood-<uid>`; every path component checked).
//!   A root's tree gets a directory `t<pid>-<id>`, every actor of the tree listens there
//!   at `<id>.shm.sock`, [`Transport::cleanup`] removes a dead actor's socket file and
//!   [`Transport::cleanup_tree`] the tree's directory.
//! - **Who may connect.** Both ends check the other's uid with `SO_PEERCRED` on the
//!   control socket; another user is refused with [`TransportError::PeerRefused`]
//!   before anything is exchanged. [`Channel::peer`] reports the peer's pid and uid.
//! - **Setup** (see the `setup` module): the connecting side creates the memfd
//!   (`MFD_CLOEXEC | MFD_ALLOW_SEALING`), sizes and seals it (`F_SEAL_SHRINK |
//!   F_SEAL_GROW | F_SEAL_SEAL`) before the peer sees it, and passes it with two eventfd
//!   doorbells over the control socket (`SCM_RIGHTS`). The accepting side checks the
//!   seals (`F_GET_SEALS`), the size (`fstat`) and the doorbells before it maps
//!   anything. A peer that connects and sends nothing does not block the listener.
//! - **Liveness.** When a side goes (exit, crash, `SIGKILL`, or it drops the channel),
//!   its control socket closes and the other side's waiting reader returns end of stream
//!   (`Ok(None)` between frames, [`ProtocolError::Truncated`](spawn_api::ProtocolError::Truncated) inside one) and its writer
//!   fails with a broken pipe, at once (the socket's end wakes the sleeper). A
//!   [`FrameSink::close`](spawn_api::FrameSink::close) (or a dropped sink) ends the peer's source after what was
//!   written; a dropped source makes the peer's writes fail.
//! - **Nothing left behind.** memfds have no name in any filesystem; the mappings go
//!   with the channel's halves; socket files are unlinked by the listener's drop,
//!   `cleanup` and `cleanup_tree`. Every descriptor is close-on-exec.
//! - **In-process.** Two actors of one process (a `subint` child and its parent) use
//!   the same rings and doorbells; nothing here is process-global.
//!
//! ## Explicit shared memory
//!
//! The transport copies every frame into a ring and out again. For data that should
//! not be copied at all, [`ShmRegion`] is a memory file that one actor creates and
//! hands to others as (part of) any call argument, reply or stream item, over *any*
//! transport (the descriptor rides with the frame: `SCM_RIGHTS` on `uds`, this
//! transport's control socket, the value itself in process). A region is read and
//! written by copies at checked offsets, or through its atomics; [`ShmRegion::freeze`]
//! seals it against writes for good, after which every holder reads it as a plain
//! `&[u8]` ([`FrozenRegion`]); and [`ShmRegion::new_ring`] lays a typed
//! single-producer/single-consumer ring of plain-old-data items over one
//! ([`RingSender`], [`RingReceiver`]). The [`region`] module says what a peer holding a
//! region can and cannot do to you.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use ipc_shm::ShmRegion;
//! // In one actor: a ring of 4 KiB chunks, handed to another actor as a call argument.
//! let region = ShmRegion::new_ring::<[u8; 4096]>(64)?;
//! let mut tx = region.ring_sender::<[u8; 4096]>()?;
//! // (In the other actor, after receiving `region`:)
//! let mut rx = region.ring_receiver::<[u8; 4096]>()?;
//! tx.send(&[7u8; 4096]).await?;
//! assert_eq!(rx.recv().await?.map(|c| c[0]), Some(7));
//! # Ok::<(), ipc_shm::RegionError>(()) }).unwrap();
//! ```
//!
//! ## Who should depend on this crate
//!
//! Programs that pick their crates by hand, to add the `shm` transport to a `Brood`
//! (`actor-core` + a backend + `ipc-shm`); other programs use the `brood` facade, which
//! wires it in behind its `shm` feature. It depends only on the contract (`spawn-api`)
//! and on `os-wrappers` for system calls, never on the actor runtime, a backend or
//! `ipc-uds`.
//!
//! ```no_run
//! use ipc_shm::ShmTransport;
//! use spawn_api::{ActorId, Transport};
//! # async fn demo() -> Result<(), spawn_api::TransportError> {
//! let shm = ShmTransport::new();
//! let addr = shm.address_for(&ActorId::new("root"), None)?;
//! let mut listener = shm.bind(&addr).await?;
//! let client = shm.connect(&addr).await?;
//! let server = listener.accept().await?;
//! # Ok(()) }
//! ```
//!
//! ## The rings and their memory ordering
//!
//! Each ring has a header of three cache-line pairs — the producer's `tail` (bytes ever
//! written) and closed flag, the consumer's `head` (bytes ever read) and closed flag, and
//! the two park flags — followed by a power-of-two data area (256 KiB by default,
//! [`ShmTransport::with_ring_size`]). The rules:
//!
//! 1. *Data before index*: the producer copies bytes in, then publishes `tail` with
//!    `Release`; the consumer loads `tail` with `Acquire`, then copies them out, then
//!    publishes `head` with `Release`; the producer loads `head` with `Acquire` before it
//!    reuses the space.
//! 2. *Park, then look again*: a side with nothing to do spins for a moment
//!    ([`ShmTransport::with_spin`], 50 µs by default; the task asks to be polled again
//!    rather than blocking its executor, so the actor's other tasks run meanwhile), then
//!    stores its park flag, issues a
//!    `SeqCst` fence and checks the ring again before it sleeps on its eventfd; the other
//!    side publishes, issues a `SeqCst` fence, and rings only if it sees the flag (which
//!    it clears, so one sleep costs one ring). With a fence on each side, at least one of
//!    them sees the other's store (Dekker's pattern), so a wake-up is never lost.
//! 3. *Closing* is publishing a flag after the last index, under the same rules.
//!
//! ## What a misbehaving peer can and cannot do
//!
//! The peer maps the same memory and may write any byte of it at any time. It **cannot**
//! make this side read or write outside the segment, crash, panic or hang: every index
//! read from the segment is checked against our own copy of the other index and our own
//! capacity (never the peer's), shared memory is only ever accessed through atomics (no
//! Rust reference to bytes the peer writes), lengths are checked by the frame codec
//! before anything is allocated (at most the transport's maximum frame), the segment's
//! size is sealed so a mapping cannot fault, and a doorbell that is not an eventfd is
//! refused. An impossible index is a typed [`ProtocolError`](spawn_api::ProtocolError) on that channel (the actor
//! and its other channels go on); so is anything on the control socket after the setup
//! but the descriptors of a frame, and a frame that announces descriptors that were not
//! sent.
//!
//! It **can**: send wrong bytes (exactly as over a socket: the codec and the handshake
//! above it judge them); stall the channel by not reading or not writing (as over a
//! socket; its death still ends the channel at once); cost this side extra system calls
//! by setting the park flags, or extra wake-ups by ringing our doorbell; and, by clearing
//! our park flag, delay a wake-up it owes us — which only stalls its own traffic. A peer
//! is a process of the same user (others are refused by the kernel's credentials), so
//! everything it could do to this process through the operating system (`ptrace`,
//! `/proc/<pid>/mem`) is outside any transport's reach anyway.

#![deny(unsafe_code)]

mod bell;
mod channel;
mod pod_ring;
pub mod region;
#[allow(unsafe_code)]
mod ring;
mod setup;
mod stream;

pub use channel::ShmChannel;
pub use pod_ring::{MAX_RING_ITEMS, RingReceiver, RingSender};
pub use region::{FreezeError, FrozenRegion, RegionError, ShmRegion};
pub use setup::{MAX_RING_SIZE, MIN_RING_SIZE};

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};
use std::time::Duration;

use os_wrappers::peercred::{self, PeerCheckError};
use os_wrappers::runtime_dir::{self, DirError, Location, TreeDirs};
use os_wrappers::socket_file::{self, SocketFile};
use spawn_api::codec::DEFAULT_MAX_FRAME;
use spawn_api::{
    ActorId, Addr, Channel, Listener, PeerInfo, Transport, TransportError, async_trait,
};
use tokio::net::UnixStream;

use crate::setup::Config;

/// The key of this transport in addresses and configuration.
pub const KEY: &str = "shm";

/// Environment variable naming the runtime directory (shared with `ipc-uds`).
pub const RUNTIME_DIR_ENV: &str = runtime_dir::RUNTIME_DIR_ENV;

/// Default capacity of each ring (one per direction per channel): 256 KiB.
pub const DEFAULT_RING_SIZE: usize = 256 << 10;

/// How long an idle side polls its ring before it sleeps, by default. Long enough to
/// cover a peer that is about to answer (a wake-up across CPUs alone costs tens of
/// microseconds here, so a round trip that never parks is ~6x faster than one that
/// does); short enough that an idle actor costs nothing after it.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Environment variable that sets the spin time, in microseconds, of every
/// [`ShmTransport::new`] in the process and in the actors it spawns (they inherit the
/// environment): `0` never spins (every wait sleeps on the doorbell: least CPU, the
/// latency of a socket), larger values trade CPU for latency. An invalid value is
/// ignored with a warning.
pub const SPIN_ENV: &str = "BROOD_SHM_SPIN_US";

/// The spin time [`SPIN_ENV`] asks for, if it is set and valid.
fn spin_from_env() -> Option<Duration> {
    let v = std::env::var(SPIN_ENV).ok()?;
    match v.trim().parse::<u64>() {
        Ok(us) if us <= 1_000_000 => Some(Duration::from_micros(us)),
        _ => {
            tracing::warn!(
                value = %v,
                "{SPIN_ENV} is not a number of microseconds up to 1000000; spinning {DEFAULT_SPIN:?}"
            );
            None
        }
    }
}

/// Connections whose setup message has not arrived yet that a listener keeps; the
/// oldest is dropped to make room.
const MAX_PENDING_SETUPS: usize = 64;

/// Shared-memory transport. Cheap to clone (clones share what they know); keeps no
/// per-actor state.
#[derive(Clone, Debug)]
pub struct ShmTransport {
    /// Where trees go (the environment's location unless given), and which of them live
    /// in a fallback directory this transport made (removed with the tree).
    dirs: TreeDirs,
    max_frame: usize,
    ring_size: usize,
    spin: Duration,
}

impl Default for ShmTransport {
    fn default() -> Self {
        ShmTransport::new()
    }
}

impl ShmTransport {
    /// The transport with the default runtime directory, a 64 MiB frame limit, rings of
    /// 256 KiB and 50 µs of spinning (or what [`SPIN_ENV`] says).
    ///
    /// ```
    /// let shm = ipc_shm::ShmTransport::new();
    /// assert_eq!(shm.ring_size(), ipc_shm::DEFAULT_RING_SIZE);
    /// ```
    pub fn new() -> ShmTransport {
        ShmTransport {
            dirs: TreeDirs::new(),
            max_frame: DEFAULT_MAX_FRAME,
            ring_size: DEFAULT_RING_SIZE,
            spin: spin_from_env().unwrap_or(DEFAULT_SPIN),
        }
    }

    /// Use `dir` as the runtime directory (it is created with mode 0700 if missing). It
    /// is used as it is or refused, never replaced (as `ipc-uds` does).
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> ShmTransport {
        self.dirs = self.dirs.with_location(Location::Explicit(dir.into()));
        self
    }

    /// Refuse frames above `bytes`.
    pub fn with_max_frame(mut self, bytes: usize) -> ShmTransport {
        self.max_frame = bytes;
        self
    }

    /// Make the rings of channels this side opens `bytes` large each (rounded up to a
    /// power of two within [`MIN_RING_SIZE`]..=[`MAX_RING_SIZE`]). The connecting side
    /// chooses; an accepting side takes any size within those bounds.
    pub fn with_ring_size(mut self, bytes: usize) -> ShmTransport {
        self.ring_size = bytes
            .clamp(MIN_RING_SIZE, MAX_RING_SIZE)
            .next_power_of_two();
        self
    }

    /// Poll an empty (or full) ring for up to `spin` before sleeping (zero: sleep at
    /// once). Spinning keeps a busy exchange free of system calls; it costs that much CPU
    /// each time a side runs out of work.
    pub fn with_spin(mut self, spin: Duration) -> ShmTransport {
        self.spin = spin;
        self
    }

    /// How long an idle side of this transport's channels spins before it sleeps.
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// The ring size of channels this side opens.
    pub fn ring_size(&self) -> usize {
        self.ring_size
    }

    /// The runtime directory roots of this transport use, created and checked (every
    /// component of its path, see `os_wrappers::runtime_dir`).
    ///
    /// When the default location is taken by someone else, every call makes a fresh
    /// private directory beside it and returns that; the caller removes it.
    ///
    /// # Errors
    /// [`TransportError::RuntimeDir`] if it cannot be created, is not a directory, is
    /// owned by another user or is open to others, or a directory above it could let
    /// another user replace it.
    pub fn runtime_dir(&self) -> Result<PathBuf, TransportError> {
        Ok(self.dirs.resolve().map_err(dir_error)?.path)
    }

    fn config(&self) -> Config {
        Config {
            max_frame: self.max_frame,
            ring_size: self.ring_size,
            spin: self.spin,
        }
    }

    /// The address of a new root: a tree directory in the (checked) runtime directory.
    fn root_address(&self, file: &str, id: &ActorId) -> Result<Addr, TransportError> {
        self.dirs.new_tree(
            id.uid() as u32,
            |tree| make_addr(&tree.join(file)),
            dir_error,
        )
    }

    /// [`Transport::connect`], with the concrete channel.
    async fn open(&self, addr: &Addr) -> Result<ShmChannel, TransportError> {
        let path = socket_path(addr)?;
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| TransportError::io(format!("connecting to {}", path.display()), e))?;
        let peer = check_peer(&stream)?;
        let cfg = self.config();
        let parts = setup::connect(stream, &cfg).await?;
        Ok(ShmChannel::new(parts, peer, &cfg))
    }

    /// [`Transport::bind`], with the concrete listener.
    fn listen(&self, addr: &Addr) -> Result<ShmListener, TransportError> {
        let path = socket_path(addr)?;
        let (listener, guard) = socket_file::bind(&path)
            .map_err(|e| TransportError::io(format!("binding {}", path.display()), e))?;
        Ok(ShmListener {
            listener,
            addr: addr.clone(),
            _unlink: guard,
            cfg: self.config(),
            pending: VecDeque::new(),
        })
    }
}

/// `BROOD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/brood`, else `/tmp/brood-<uid>` (or
/// `/dev/shm/brood-<uid>` when `/tmp` is on disk): where control sockets live, the same
/// place as `ipc-uds`'s sockets.
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
impl Transport for ShmTransport {
    fn key(&self) -> &'static str {
        KEY
    }

    fn address_for(&self, id: &ActorId, near: Option<&Addr>) -> Result<Addr, TransportError> {
        let file = format!("{:016x}.shm.sock", id.uid());
        match near {
            Some(parent) => spawn_api::transport::socket_beside(parent, KEY, &file),
            None => self.root_address(&file, id),
        }
    }

    async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError> {
        Ok(Box::new(self.listen(addr)?))
    }

    async fn connect(&self, addr: &Addr) -> Result<Box<dyn Channel>, TransportError> {
        Ok(Box::new(self.open(addr).await?))
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

/// A connection whose setup message has not arrived yet.
#[derive(Debug)]
struct PendingSetup {
    stream: UnixStream,
    peer: PeerInfo,
}

/// A listening control socket; unlinks its file when dropped.
///
/// `accept` is cancel safe: connections whose setup has not arrived wait in the listener,
/// not in the future, and a setup is completed within one poll.
#[derive(Debug)]
pub struct ShmListener {
    listener: tokio::net::UnixListener,
    addr: Addr,
    _unlink: SocketFile,
    cfg: Config,
    pending: VecDeque<PendingSetup>,
}

impl ShmListener {
    /// The next channel whose setup completed, or a per-connection failure.
    fn poll_accept_shm(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ShmChannel, TransportError>> {
        loop {
            // Setups in progress, oldest first.
            let mut i = 0;
            while i < self.pending.len() {
                match self.pending[i].stream.poll_read_ready(cx) {
                    Poll::Pending => i += 1,
                    Poll::Ready(Err(e)) => {
                        self.pending.remove(i);
                        return Poll::Ready(Err(TransportError::io("receiving the setup", e)));
                    }
                    Poll::Ready(Ok(())) => match setup::try_receive(&self.pending[i].stream) {
                        // Readiness was stale and is cleared now: poll it again.
                        Ok(None) => {}
                        Ok(Some(offer)) => {
                            let Some(p) = self.pending.remove(i) else {
                                continue;
                            };
                            return Poll::Ready(
                                setup::accept(offer, p.stream)
                                    .map(|parts| ShmChannel::new(parts, p.peer, &self.cfg)),
                            );
                        }
                        Err(e) => {
                            self.pending.remove(i);
                            return Poll::Ready(Err(e));
                        }
                    },
                }
            }
            // New connections.
            match self.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(TransportError::io("accepting", e))),
                Poll::Ready(Ok((stream, _))) => {
                    let peer = match check_peer(&stream) {
                        Ok(p) => p,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    if self.pending.len() == MAX_PENDING_SETUPS {
                        tracing::debug!(
                            "too many connections without a setup: dropping the oldest"
                        );
                        self.pending.pop_front();
                    }
                    self.pending.push_back(PendingSetup { stream, peer });
                }
            }
        }
    }

    /// [`Listener::accept`], with the concrete channel.
    async fn accept_shm(&mut self) -> Result<ShmChannel, TransportError> {
        std::future::poll_fn(|cx| self.poll_accept_shm(cx)).await
    }
}

#[async_trait]
impl Listener for ShmListener {
    fn local_addr(&self) -> &Addr {
        &self.addr
    }

    async fn accept(&mut self) -> Result<Box<dyn Channel>, TransportError> {
        Ok(Box::new(self.accept_shm().await?))
    }
}

#[cfg(all(test, not(miri)))]
mod tests;
