//! A spawning actor's side: its connection to the forkserver and its handles on forked
//! children.
//!
//! One [`Client`] per spawning actor, kept in the actor's `Extensions`. A reader task
//! owns the receiving side: it hands each `Spawned` reply (with the child's pidfd and
//! link) to the request that asked, and each `Exit` to that child's handle. When the
//! connection ends, every pending request fails and every handle learns that the server
//! is gone, so nothing waits on it forever.
//!
//! A client trusts only the server its tree started: a connection by name is used only
//! once the kernel's credentials for it match ([`check::server_credentials`]), and a
//! `Spawned` reply's descriptors only once they are shown to be the server's child and
//! link ([`check::child`]). A reply that fails a check is a forgery: its descriptors are
//! closed without a signal and the connection is given up.

use os_wrappers::pidfd::Pidfd;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket, socketpair,
};
use spawn_api::{Child, ChildExit, async_trait};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use crate::check::{self, ChildCheck, ConnectError};
use crate::proto::{self, FLAG_NULL_STDIO, Reply, Stage};
use crate::server::SERVER_ENV;
use crate::server::ServerArgs;
use crate::{ForkService, sys};

/// How long dropping the owner's client waits for the server to exit on its own before
/// killing it.
const SERVER_EXIT_GRACE: Duration = Duration::from_millis(500);

/// Why a request to the forkserver failed.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The server is gone (or never came up), with the reason.
    Gone(String),
    /// The server could not fork.
    Failed { stage: Stage, errno: i32 },
    /// No answer within the bound.
    Timeout,
    /// The reply to this request was forged (the reason says how); the connection is
    /// given up.
    Forged(String),
    /// The child exited before its reply could be checked; this is how it ended, and its
    /// link (checked to be one the server made), holding what the child left there: a
    /// sandbox's refusal, say.
    DiedEarly(ChildExit, OwnedFd),
    /// The reply's descriptors could not be checked (our own reading failed); they were
    /// closed, which ends the child if it was real.
    Unchecked(io::Error),
}

/// What a child's handle learns from the reader.
#[derive(Clone, Debug)]
pub(crate) enum ExitState {
    Running,
    Exited(ChildExit),
    /// The server went away before reporting the status.
    ServerGone(String),
}

/// A child the server just forked.
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) link: OwnedFd,
    pub(crate) exit: watch::Receiver<ExitState>,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// The forkserver process, as seen by the actor that started it (its parent, so the one
/// who must reap it).
#[derive(Debug)]
struct ServerProc {
    pid: u32,
    pidfd: OwnedFd,
    exit: Mutex<Option<ChildExit>>,
}

impl ServerProc {
    /// Reap the server if it has exited; its status, once known.
    fn try_reap(&self) -> Option<ChildExit> {
        let mut exit = self.exit.lock().unwrap();
        if exit.is_none()
            && let Ok(Some(e)) = os_wrappers::pidfd::try_reap(self.pidfd.as_fd())
        {
            *exit = Some(ChildExit::from_status(e));
        }
        exit.clone()
    }

    /// Wait up to `grace` for the server to exit, kill it if it has not, and reap it.
    /// Blocking, bounded: for `Drop`.
    fn reap_blocking(&self, grace: Duration) {
        let wait = |ms: i32| {
            let mut p = [libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let _ = sys::poll(&mut p, ms);
        };
        if self.try_reap().is_some() {
            return;
        }
        wait(grace.as_millis() as i32);
        if self.try_reap().is_some() {
            return;
        }
        tracing::warn!(pid = self.pid, "the forkserver did not exit; killing it");
        let _ = os_wrappers::pidfd::signal(self.pidfd.as_fd(), libc::SIGKILL);
        wait(1000);
        if self.try_reap().is_none() {
            tracing::warn!(pid = self.pid, "the killed forkserver was not reaped");
        }
    }
}

type Waiter = oneshot::Sender<Result<Spawned, ClientError>>;

#[derive(Default)]
struct State {
    pending: HashMap<u32, Waiter>,
    exits: HashMap<u32, watch::Sender<ExitState>>,
    /// Requests whose child had exited before its reply could be checked, by the
    /// child's pid: they end with its exit report.
    early: HashMap<u32, (Waiter, OwnedFd)>,
    gone: Option<String>,
}

struct Shared {
    sock: AsyncFd<OwnedFd>,
    state: Mutex<State>,
    next_req: AtomicU32,
    server: Option<ServerProc>,
    /// The server process, the parent every child must have.
    server_pid: u32,
}

impl Shared {
    /// Mark the server gone: fail what waits (request `forged`, whose reply was forged,
    /// with that error), tell every child handle. Under one lock, so that no request is
    /// sent on a connection found forged.
    fn fail_all(&self, reason: String, forged: Option<u32>) {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        if let Some(w) = forged.and_then(|req| st.pending.remove(&req)) {
            let _ = w.send(Err(ClientError::Forged(reason.clone())));
        }
        let early = st.early.drain().map(|(pid, (tx, _link))| (pid, tx));
        for (_, tx) in st.pending.drain().chain(early) {
            let _ = tx.send(Err(ClientError::Gone(reason.clone())));
        }
        for (_, tx) in st.exits.drain() {
            tx.send_replace(ExitState::ServerGone(reason.clone()));
        }
        st.gone.get_or_insert(reason);
    }

    /// Act on one reply; `Err` (why) if it is a forgery, which ends the connection.
    fn dispatch(&self, msg: &[u8], truncated: bool, fds: Vec<OwnedFd>) -> Result<(), String> {
        if truncated {
            return Err(self.forged(
                None,
                format!(
                    "a reply longer than {} bytes or with too many descriptors",
                    msg.len()
                ),
            ));
        }
        let Some(reply) = proto::decode_reply(msg) else {
            return Err(self.forged(None, format!("a malformed reply of {} bytes", msg.len())));
        };
        match reply {
            Reply::Spawned { req, pid } => self.spawned(req, pid, fds),
            Reply::Failed { req, stage, errno } => {
                stray(fds, "Failed");
                if let Some(w) = self.state.lock().unwrap().pending.remove(&req) {
                    let _ = w.send(Err(ClientError::Failed { stage, errno }));
                }
                Ok(())
            }
            Reply::Exit { pid, exit } => {
                stray(fds, "Exit");
                let mut st = self.state.lock().unwrap();
                if let Some(tx) = st.exits.remove(&pid) {
                    tx.send_replace(ExitState::Exited(exit));
                } else if let Some((w, link)) = st.early.remove(&pid) {
                    let _ = w.send(Err(ClientError::DiedEarly(exit, link)));
                }
                Ok(())
            }
        }
    }

    /// A reply failed a check: fail its request and the connection; the reason.
    fn forged(&self, req: Option<u32>, why: String) -> String {
        let reason = format!("the forkserver's connection sent a forged reply: {why}");
        tracing::error!(%reason, "giving up the forkserver connection");
        self.fail_all(reason.clone(), req);
        reason
    }

    fn spawned(&self, req: u32, pid: u32, fds: Vec<OwnedFd>) -> Result<(), String> {
        // Whatever fails below, the descriptors are only closed: closing a pidfd signals
        // nothing, and closing a link can only deliver a signal its other end armed with
        // its own credentials, not ours.
        let [pidfd, link] = match <[OwnedFd; 2]>::try_from(fds) {
            Ok(pair) => pair,
            Err(fds) => {
                let n = fds.len();
                drop(fds);
                return Err(self.forged(
                    Some(req),
                    format!("a child reply with {n} descriptors instead of 2"),
                ));
            }
        };
        match check::child(pidfd.as_fd(), link.as_fd(), pid, self.server_pid) {
            ChildCheck::Ours => {}
            ChildCheck::Gone => {
                // The link passed its checks: what the child left there is kept for the
                // request, with the exit the server reports next.
                drop(pidfd);
                tracing::debug!(pid, "a forked child exited before its reply was read");
                let mut st = self.state.lock().unwrap();
                if let Some(w) = st.pending.remove(&req) {
                    st.early.insert(pid, (w, link));
                }
                return Ok(());
            }
            ChildCheck::Forged(why) => {
                drop((pidfd, link));
                return Err(self.forged(Some(req), why));
            }
            ChildCheck::Unchecked(e) => {
                drop((pidfd, link));
                tracing::warn!(pid, error = %e, "cannot check a forkserver reply");
                if let Some(w) = self.state.lock().unwrap().pending.remove(&req) {
                    let _ = w.send(Err(ClientError::Unchecked(e)));
                }
                return Ok(());
            }
        }
        let (tx, rx) = watch::channel(ExitState::Running);
        let mut st = self.state.lock().unwrap();
        let waiting = st.pending.remove(&req);
        st.exits.insert(pid, tx);
        drop(st);
        let spawned = Spawned {
            pid,
            pidfd,
            link,
            exit: rx,
        };
        let unwanted = match waiting {
            Some(w) => w.send(Ok(spawned)).err(),
            None => Some(Ok(spawned)),
        };
        // The request was given up (timed out, or its future dropped) after the fork:
        // the child, shown to be the server's, must not live on unsupervised.
        if let Some(Ok(s)) = unwanted {
            tracing::debug!(pid, "killing a child whose spawn was abandoned");
            let _ = os_wrappers::pidfd::signal_group(s.pidfd.as_fd(), s.pid, libc::SIGKILL);
        }
        Ok(())
    }

    /// Why the connection ended, as precisely as we can tell.
    async fn describe_end(&self, what: String) -> String {
        let Some(server) = &self.server else {
            return what;
        };
        // The server closing our connection means it is exiting: give it a moment so
        // the reason can name its status.
        for _ in 0..20 {
            if let Some(exit) = server.try_reap() {
                return format!("the forkserver (pid {}) {exit}", server.pid);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        what
    }
}

/// Stray descriptors came with a reply that carries none: closed unused.
fn stray(fds: Vec<OwnedFd>, what: &str) {
    if !fds.is_empty() {
        tracing::warn!(
            n = fds.len(),
            "closed descriptors sent with a forkserver {what} reply"
        );
    }
}

async fn read_loop(shared: Arc<Shared>) {
    let mut buf = [0u8; 64];
    let end = loop {
        let mut ready = match shared.sock.readable().await {
            Ok(r) => r,
            Err(e) => break format!("polling the forkserver connection: {e}"),
        };
        match ready.try_io(|s| sys::recv_with_fds(s.get_ref().as_fd(), &mut buf)) {
            Err(_would_block) => continue,
            Ok(Ok(r)) if r.len == 0 => break "the forkserver closed the connection".to_owned(),
            Ok(Ok(r)) => {
                // A forgery has failed everything already: read nothing more from it.
                if shared.dispatch(&buf[..r.len], r.truncated, r.fds).is_err() {
                    return;
                }
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => break format!("reading from the forkserver: {e}"),
        }
    };
    let reason = shared.describe_end(end).await;
    tracing::warn!(%reason, "forkserver unavailable");
    shared.fail_all(reason, None);
}

/// A spawning actor's connection to the tree's forkserver.
pub(crate) struct Client {
    shared: Arc<Shared>,
    reader: AbortHandle,
    /// The server's address and identity, for the children's runtime vars.
    service: ForkService,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.service)
            .field("owner", &self.shared.server.is_some())
            .finish()
    }
}

/// A connection known to lead to the tree's server: one end of a socketpair whose other
/// end we gave the server ourselves, or a connection whose credentials were checked.
/// Only such a connection carries a request (the boot, with the tree's secret) or our
/// stdout and stderr.
pub(crate) struct Verified(OwnedFd);

impl Verified {
    /// For tests that play the server over a socketpair.
    #[cfg(test)]
    pub(crate) fn assume(sock: OwnedFd) -> Verified {
        Verified(sock)
    }
}

fn unique_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "brood-fork/{}/{}/{nanos:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Client {
    /// A client on `sock` (non-blocking) for the server `service` describes.
    fn new(sock: Verified, server: Option<ServerProc>, service: ForkService) -> io::Result<Client> {
        let shared = Arc::new(Shared {
            sock: os_wrappers::pidfd::register(sock.0, Interest::READABLE | Interest::WRITABLE)?,
            state: Mutex::new(State::default()),
            next_req: AtomicU32::new(1),
            server,
            server_pid: service.server_pid,
        });
        let reader = tokio::spawn(read_loop(shared.clone())).abort_handle();
        Ok(Client {
            shared,
            reader,
            service,
        })
    }

    /// The server's address and identity, as recorded in the tree's runtime vars.
    pub(crate) fn service(&self) -> &ForkService {
        &self.service
    }

    /// Start a forkserver for this tree (`exe args`, in forkserver mode, keeping `pool`
    /// idle children) and connect to it as its owner: it lives until this client is
    /// dropped or this process dies.
    pub(crate) fn start(exe: &Path, args: &[OsString], pool: usize) -> io::Result<Client> {
        let name = unique_name();
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(
            listener.as_raw_fd(),
            &UnixAddr::new_abstract(name.as_bytes())?,
        )?;
        // Clients connect before the server runs its loop: the backlog holds them.
        listen(&listener, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        let spec = ServerArgs {
            listener: listener.as_raw_fd(),
            owner: theirs.as_raw_fd(),
            owner_pid: std::process::id(),
            pool,
        };
        let mut cmd = Command::new(exe);
        // Room for the titles of the children it forks (see `server_arg0`).
        cmd.arg0(crate::server::server_arg0())
            .args(args)
            .env(SERVER_ENV, spec.encode())
            .stdin(Stdio::null())
            // Its own group: a terminal's Ctrl-C is for the root, which tears the tree
            // down in order; the server goes when the root does.
            .process_group(0);
        sys::inherit_on_exec(&mut cmd, [listener.as_raw_fd(), theirs.as_raw_fd()]);
        let child = cmd.spawn()?;
        let pid = child.id();
        // std's handle owns no pipes here; the pidfd is how we watch and reap it.
        drop(child);
        let pidfd = os_wrappers::pidfd::open(pid)?;
        drop((listener, theirs));
        tracing::debug!(pid, %name, "started a forkserver");
        let service = ForkService {
            name,
            // We listened on the socket: the kernel reports our credentials for every
            // connection to it.
            owner_pid: std::process::id(),
            server_pid: pid,
        };
        Client::new(
            // The other end went to the process we just started, and to nobody else.
            Verified(ours),
            Some(ServerProc {
                pid,
                pidfd,
                exit: Mutex::new(None),
            }),
            service,
        )
    }

    /// Connect to the tree's forkserver that `service` describes, and check that it is
    /// the one (see [`check::server_credentials`]) before anything is sent.
    pub(crate) async fn connect(
        service: &ForkService,
        timeout: Duration,
    ) -> Result<Client, ConnectError> {
        let sock = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(io::Error::from)?;
        let addr = UnixAddr::new_abstract(service.name.as_bytes()).map_err(io::Error::from)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match connect(sock.as_raw_fd(), &addr) {
                Ok(()) => break,
                // A full backlog: the server is busy forking.
                Err(nix::errno::Errno::EAGAIN) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
        // Refused: the socket closes unused, and its peer has seen a connection, nothing
        // more.
        check::server_credentials(sock.as_fd(), service)?;
        Ok(Client::new(Verified(sock), None, service.clone())?)
    }

    /// Whether the server is gone, and why.
    pub(crate) fn gone(&self) -> Option<String> {
        self.shared.state.lock().unwrap().gone.clone()
    }

    /// Ask the server for a child booting with `boot` (an encoded `ChildBoot`).
    pub(crate) async fn spawn(
        &self,
        boot: &[u8],
        null_stdio: bool,
        timeout: Duration,
    ) -> Result<Spawned, ClientError> {
        match tokio::time::timeout(timeout, self.request(boot, null_stdio)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout),
        }
    }

    async fn request(&self, boot: &[u8], null_stdio: bool) -> Result<Spawned, ClientError> {
        let req = self.shared.next_req.fetch_add(1, Ordering::Relaxed);
        let rx = {
            let mut st = self.shared.state.lock().unwrap();
            if let Some(g) = &st.gone {
                return Err(ClientError::Gone(g.clone()));
            }
            let (tx, rx) = oneshot::channel();
            st.pending.insert(req, tx);
            rx
        };
        // If this future is dropped, the request is forgotten and a late reply's child
        // is killed by the reader.
        let _forget = Forget {
            shared: &self.shared,
            req,
        };
        let flags = if null_stdio { FLAG_NULL_STDIO } else { 0 };
        let msg = proto::encode_spawn(req, flags, boot);
        let (stdout, stderr) = (io::stdout(), io::stderr());
        let fds = if null_stdio {
            Vec::new()
        } else {
            vec![stdout.as_fd(), stderr.as_fd()]
        };
        loop {
            let mut ready = self
                .shared
                .sock
                .writable()
                .await
                .map_err(|e| ClientError::Gone(format!("polling the connection: {e}")))?;
            match ready.try_io(|s| sys::send_with_fds(s.get_ref().as_fd(), &msg, &fds)) {
                Ok(Ok(_)) => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => {
                    return Err(ClientError::Gone(
                        self.gone()
                            .unwrap_or_else(|| format!("cannot reach the forkserver: {e}")),
                    ));
                }
                Err(_would_block) => {}
            }
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => {
                Err(ClientError::Gone(self.gone().unwrap_or_else(|| {
                    "the forkserver connection closed".to_owned()
                })))
            }
        }
    }
}

struct Forget<'a> {
    shared: &'a Shared,
    req: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().pending.remove(&self.req);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
        // The reader task may hold the socket a little longer: shutting it down tells
        // the server now that this actor is done.
        let _ = nix::sys::socket::shutdown(
            self.shared.sock.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        if let Some(server) = &self.shared.server {
            server.reap_blocking(SERVER_EXIT_GRACE);
        }
    }
}

/// The first datagram on a child's `link`, decoded as a sandbox outcome, without
/// waiting: `Ok(None)` if none is there yet.
///
/// # Errors
/// `UnexpectedEof` if the link closed with nothing on it; `InvalidData` for a datagram
/// that is not an outcome; the socket's error.
pub(crate) fn take_outcome(link: BorrowedFd<'_>) -> io::Result<Option<sandbox::Outcome>> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match nix::sys::socket::recv(
            link.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the link closed before a sandbox report",
                ));
            }
            Ok(n) => {
                return sandbox::decode_outcome(&buf[..n])
                    .map(Some)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A forked child actor, as [`ForkBackend`](crate::ForkBackend) returns it: supervised
/// through its pidfd; its exit status comes from the forkserver, which is its OS parent.
///
/// - [`wait`](Child::wait) never fails: if the forkserver dies first, the status is
///   collected another way (reaped through the pidfd if this process became the
///   child's parent, as a subreaper does, else read from the exit code the child leaves
///   on its link); a child killed by a signal then reports [`ChildExit::Unknown`].
/// - [`terminate`](Child::terminate) and [`kill`](Child::kill) signal the child's whole
///   process group through the pidfd; a child that has ended is not an error; they fail
///   only with the error of `pidfd_send_signal` itself (`EPERM`, say).
/// - Dropping an unreaped handle kills the child (the server reaps it).
///
/// ```no_run
/// # async fn demo(nursery: &actor_core::Nursery) -> Result<(), actor_core::SpawnError> {
/// use actor_core::ActorOptions;
/// // The nursery supervises the `ForkChild` the backend returns for this actor.
/// let portal = nursery.start_actor("worker", ActorOptions::new().backend(spawn_fork::KEY)).await?;
/// # let _ = portal; Ok(()) }
/// ```
pub struct ForkChild {
    pidfd: AsyncFd<Pidfd>,
    link: OwnedFd,
    exit: watch::Receiver<ExitState>,
    status: Option<ChildExit>,
    // Keeps the connection (and so the status reports) alive as long as the handle.
    _client: Arc<Client>,
}

impl std::fmt::Debug for ForkChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkChild")
            .field("pid", &self.pidfd.get_ref().pid())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl ForkChild {
    pub(crate) fn new(s: Spawned, client: Arc<Client>) -> io::Result<ForkChild> {
        Ok(ForkChild {
            pidfd: Pidfd::from_owned(s.pidfd, s.pid).into_async()?,
            link: s.link,
            exit: s.exit,
            status: None,
            _client: client,
        })
    }

    /// The sandbox outcome a sandboxed child sends on its link before anything else,
    /// waited for up to `bound`.
    pub(crate) async fn sandbox_outcome(&self, bound: Duration) -> io::Result<sandbox::Outcome> {
        let link =
            os_wrappers::pidfd::register(self.link.try_clone()?, tokio::io::Interest::READABLE)?;
        let read = async {
            loop {
                let mut ready = link.readable().await?;
                match take_outcome(link.get_ref().as_fd())? {
                    Some(outcome) => return Ok(outcome),
                    None => ready.clear_ready(),
                }
            }
        };
        tokio::time::timeout(bound, read).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no sandbox report within {bound:?}"),
            )
        })?
    }

    fn finished(&self) -> bool {
        self.status.is_some() || matches!(*self.exit.borrow(), ExitState::Exited(_))
    }

    fn signal(&mut self, sig: libc::c_int) -> io::Result<()> {
        if self.finished() {
            return Ok(());
        }
        self.pidfd.get_ref().signal_group(sig)
    }

    /// The status of a child whose server is gone: wait for it to exit, then ask the
    /// kernel (if we are its parent now) or its link.
    async fn orphan_exit(&mut self, why: &str) -> ChildExit {
        loop {
            match self.pidfd.readable().await {
                Ok(mut r) => {
                    if self.pidfd.get_ref().has_exited().unwrap_or(true) {
                        break;
                    }
                    r.clear_ready();
                }
                Err(e) => {
                    return ChildExit::Unknown {
                        reason: format!("{why}; polling the pidfd: {e}"),
                    };
                }
            }
        }
        if let Ok(Some(status)) = self.pidfd.get_ref().try_reap() {
            return ChildExit::from_status(status);
        }
        let mut code = [0u8; 4];
        match sys::recv_with_fds(self.link.as_fd(), &mut code) {
            Ok(r) if r.len == 4 => ChildExit::Exited(i32::from_le_bytes(code)),
            _ => ChildExit::Unknown {
                reason: format!("{why}; the child left no exit code (killed by a signal?)"),
            },
        }
    }
}

#[async_trait]
impl Child for ForkChild {
    fn pid(&self) -> Option<u32> {
        Some(self.pidfd.get_ref().pid())
    }

    async fn wait(&mut self) -> ChildExit {
        loop {
            if let Some(s) = &self.status {
                return s.clone();
            }
            let state = self.exit.borrow_and_update().clone();
            match state {
                ExitState::Exited(e) => self.status = Some(e),
                ExitState::ServerGone(why) => {
                    let exit = self.orphan_exit(&why).await;
                    self.status = Some(exit);
                }
                ExitState::Running => {
                    if self.exit.changed().await.is_err() {
                        // The reader ended without a word (its runtime is going away).
                        let exit = self.orphan_exit("the forkserver connection ended").await;
                        self.status = Some(exit);
                    }
                }
            }
        }
    }

    fn terminate(&mut self) -> io::Result<()> {
        self.signal(libc::SIGTERM)
    }

    fn kill(&mut self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }
}

impl Drop for ForkChild {
    fn drop(&mut self) {
        // Dropped unreaped: its supervisor was torn down. The server reaps it; our part
        // is that it stops (closing the link would stop it too, a moment later).
        if !self.finished()
            && let Err(e) = self.signal(libc::SIGKILL)
        {
            tracing::warn!(pid = self.pidfd.get_ref().pid(), error = %e, "cannot kill a dropped child");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::fd::BorrowedFd;
    use std::time::Instant;

    use crate::proto::encode_reply;

    const BOUND: Duration = Duration::from_secs(10);

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    use crate::sys::seqpacket_pair;

    /// The test playing the forkserver on the other end of a client's socketpair.
    struct FakeServer(OwnedFd);

    impl FakeServer {
        fn wait_readable(&self) {
            let mut p = [libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let deadline = Instant::now() + BOUND;
            while sys::poll(&mut p, 100).unwrap() == 0 {
                assert!(Instant::now() < deadline, "no request came");
            }
        }

        /// The next request's id, after checking it carries what a null-stdio request
        /// carries.
        fn request(&self) -> u32 {
            self.wait_readable();
            let mut buf = [0u8; 256];
            let got = sys::recv_with_fds(self.0.as_fd(), &mut buf).unwrap();
            let req = proto::decode_spawn(&buf[..got.len]).expect("a spawn request");
            assert!(got.fds.is_empty());
            req.req
        }

        fn reply(&self, r: &Reply, fds: &[BorrowedFd<'_>]) {
            let (b, n) = encode_reply(r);
            sys::send_with_fds(self.0.as_fd(), &b[..n], fds).unwrap();
        }
    }

    /// A client whose server is `server_pid`, talking to the returned fake server.
    fn client_with(server_pid: u32) -> (Arc<Client>, FakeServer) {
        let (ours, theirs) = seqpacket_pair();
        let service = ForkService {
            name: "brood-fork/test".to_owned(),
            owner_pid: std::process::id(),
            server_pid,
        };
        let client = Client::new(Verified::assume(ours), None, service).unwrap();
        (Arc::new(client), FakeServer(theirs))
    }

    /// Start a spawn request on `client`.
    fn request(client: &Arc<Client>) -> tokio::task::JoinHandle<Result<Spawned, ClientError>> {
        let c = client.clone();
        tokio::spawn(async move { c.spawn(b"boot", true, BOUND).await })
    }

    /// What the backend makes of a reply: a handle on the child if it was accepted, which
    /// is then dropped as a torn-down nursery drops it (killing the child).
    async fn outcome(
        client: &Arc<Client>,
        req: tokio::task::JoinHandle<Result<Spawned, ClientError>>,
    ) -> Result<u32, ClientError> {
        let r = tokio::time::timeout(BOUND, req).await.unwrap().unwrap();
        r.map(|s| {
            let pid = s.pid;
            drop(ForkChild::new(s, client.clone()).unwrap());
            pid
        })
    }

    /// A process nobody asked the server for, leading its own process group as every
    /// forked child does (a client signals a child's group): killed and reaped when
    /// dropped.
    struct Victim {
        /// The victim itself, or (for a grandchild) its parent.
        ours: std::process::Child,
        pid: u32,
        pidfd: OwnedFd,
    }

    impl Victim {
        /// A `sleep` of ours.
        fn child() -> Victim {
            let ours = Command::new("sleep")
                .arg("60")
                .process_group(0)
                .spawn()
                .unwrap();
            let pid = ours.id();
            Victim {
                pidfd: os_wrappers::pidfd::open(pid).unwrap(),
                pid,
                ours,
            }
        }

        /// A `sleep` whose parent is a shell of ours (so not this process).
        fn grandchild() -> Victim {
            let mut ours = Command::new("sh")
                .args(["-c", "setsid sleep 60 & echo $!; wait"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            std::io::BufReader::new(ours.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let pid: u32 = line.trim().parse().unwrap();
            // Alive (the shell waits for it), so the pid names it.
            let pidfd = os_wrappers::pidfd::open(pid).unwrap();
            Victim { ours, pid, pidfd }
        }

        /// Whether it still runs, a moment after anything could have signalled it.
        fn alive(&self) -> bool {
            std::thread::sleep(Duration::from_millis(50));
            !os_wrappers::pidfd::has_exited(self.pidfd.as_fd()).unwrap()
        }
    }

    impl Drop for Victim {
        fn drop(&mut self) {
            let _ = os_wrappers::pidfd::signal(self.pidfd.as_fd(), libc::SIGKILL);
            let _ = self.ours.kill();
            let _ = self.ours.wait();
        }
    }

    fn forged(r: Result<u32, ClientError>, says: &str) {
        match r {
            Err(ClientError::Forged(why)) => assert!(why.contains(says), "{why}"),
            other => panic!("expected a forged-reply error saying {says:?}, got {other:?}"),
        }
    }

    fn assert_gone_forged(client: &Client) {
        let gone = client.gone().expect("the connection is given up");
        assert!(gone.contains("forged"), "{gone}");
    }

    #[test]
    fn a_pidfd_of_a_process_that_is_not_the_servers_child_is_refused_unsignalled() {
        rt().block_on(async {
            let victim = Victim::grandchild();
            // The link is ours, as the server's would be its own: only the parent differs.
            let (client, server) = client_with(std::process::id());
            let req = request(&client);
            let id = server.request();
            let (link, _peer) = seqpacket_pair();
            server.reply(
                &Reply::Spawned {
                    req: id,
                    pid: victim.pid,
                },
                &[victim.pidfd.as_fd(), link.as_fd()],
            );
            let r = outcome(&client, req).await;
            assert!(victim.alive(), "the forged reply's process was signalled");
            forged(r, "not of the forkserver");
            assert_gone_forged(&client);
            // Later requests fail at once, and send nothing.
            let e = client.spawn(b"boot", true, BOUND).await.unwrap_err();
            assert!(
                matches!(e, ClientError::Gone(ref g) if g.contains("forged")),
                "{e:?}"
            );
        });
    }

    #[test]
    fn a_pidfd_for_another_pid_than_claimed_is_refused_unsignalled() {
        rt().block_on(async {
            let victim = Victim::child();
            let (client, server) = client_with(std::process::id());
            let req = request(&client);
            let id = server.request();
            let (link, _peer) = seqpacket_pair();
            server.reply(
                &Reply::Spawned {
                    req: id,
                    pid: victim.pid + 1,
                },
                &[victim.pidfd.as_fd(), link.as_fd()],
            );
            let r = outcome(&client, req).await;
            assert!(victim.alive(), "the forged reply's process was signalled");
            forged(r, &format!("is for pid {}", victim.pid));
            assert_gone_forged(&client);
        });
    }

    #[test]
    fn a_descriptor_that_is_not_a_pidfd_is_refused() {
        rt().block_on(async {
            let (client, server) = client_with(std::process::id());
            let req = request(&client);
            let id = server.request();
            let (link, _peer) = seqpacket_pair();
            let (not_a_pidfd, _w) = std::io::pipe().unwrap();
            server.reply(
                &Reply::Spawned {
                    req: id,
                    pid: std::process::id(),
                },
                &[not_a_pidfd.as_fd(), link.as_fd()],
            );
            forged(outcome(&client, req).await, "not a pidfd");
            assert_gone_forged(&client);
        });
    }

    #[test]
    fn a_link_that_is_not_a_seqpacket_socket_of_the_server_is_refused_unsignalled() {
        let victim = Victim::child();
        let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
        let stream = std::os::unix::net::UnixStream::pair().unwrap();
        let (seqpacket, _peer) = seqpacket_pair();
        for (link, server_pid, says) in [
            (pipe_r.as_fd(), std::process::id(), "not a socket"),
            (
                stream.0.as_fd(),
                std::process::id(),
                "not a Unix seqpacket socket",
            ),
            // Made by us, while the server is said to be another process.
            (seqpacket.as_fd(), 1, "made by pid"),
        ] {
            rt().block_on(async {
                let (client, server) = client_with(server_pid);
                let req = request(&client);
                let id = server.request();
                server.reply(
                    &Reply::Spawned {
                        req: id,
                        pid: victim.pid,
                    },
                    &[victim.pidfd.as_fd(), link],
                );
                let r = outcome(&client, req).await;
                assert!(victim.alive(), "the forged reply's process was signalled");
                forged(r, says);
                assert_gone_forged(&client);
            });
        }
    }

    #[test]
    fn a_child_reply_without_exactly_two_descriptors_is_refused() {
        let victim = Victim::child();
        let (link, _peer) = seqpacket_pair();
        let sets: [&[BorrowedFd<'_>]; 3] = [
            &[],
            &[victim.pidfd.as_fd()],
            &[victim.pidfd.as_fd(), link.as_fd(), link.as_fd()],
        ];
        for fds in sets {
            rt().block_on(async {
                let (client, server) = client_with(std::process::id());
                let req = request(&client);
                let id = server.request();
                server.reply(
                    &Reply::Spawned {
                        req: id,
                        pid: victim.pid,
                    },
                    fds,
                );
                let r = outcome(&client, req).await;
                assert!(victim.alive(), "the forged reply's process was signalled");
                forged(r, &format!("{} descriptors instead of 2", fds.len()));
            });
        }
    }

    #[test]
    fn a_forged_reply_to_no_request_kills_nobody() {
        // A reply nobody waits for is what an abandoned spawn gets, and its child is
        // killed: a forged one must not make us kill a stranger.
        rt().block_on(async {
            let victim = Victim::child();
            let (client, server) = client_with(1);
            let (link, _peer) = seqpacket_pair();
            server.reply(
                &Reply::Spawned {
                    req: 77,
                    pid: victim.pid,
                },
                &[victim.pidfd.as_fd(), link.as_fd()],
            );
            let deadline = Instant::now() + Duration::from_secs(2);
            while client.gone().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(victim.alive(), "a stranger was killed");
            assert_gone_forged(&client);
        });
    }

    #[test]
    fn a_malformed_or_oversized_reply_ends_the_connection() {
        for bytes in [&b"P1234"[..], &[b'X'; 11][..], &[b'F'; 100][..]] {
            rt().block_on(async {
                let (client, server) = client_with(std::process::id());
                let req = request(&client);
                let _ = server.request();
                sys::send_with_fds(server.0.as_fd(), bytes, &[]).unwrap();
                let r = tokio::time::timeout(BOUND, req).await.unwrap().unwrap();
                assert!(
                    matches!(&r, Err(ClientError::Gone(g)) if g.contains("forged")),
                    "{r:?}"
                );
                assert_gone_forged(&client);
            });
        }
    }

    #[test]
    fn descriptors_on_replies_that_carry_none_are_closed_and_the_reply_stands() {
        rt().block_on(async {
            let (client, server) = client_with(std::process::id());
            let req = request(&client);
            let id = server.request();
            let (mut r, w) = std::io::pipe().unwrap();
            server.reply(
                &Reply::Failed {
                    req: id,
                    stage: Stage::Fork,
                    errno: libc::EAGAIN,
                },
                &[w.as_fd()],
            );
            drop(w);
            let got = tokio::time::timeout(BOUND, req).await.unwrap().unwrap();
            assert!(
                matches!(got, Err(ClientError::Failed { stage: Stage::Fork, errno }) if errno == libc::EAGAIN),
                "{got:?}"
            );
            // Our copy is gone, so only the client's could keep the pipe open.
            let mut b = [0u8; 1];
            assert_eq!(std::io::Read::read(&mut r, &mut b).unwrap(), 0, "closed");
            assert!(client.gone().is_none(), "a genuine reply keeps the connection");
        });
    }

    #[test]
    fn a_genuine_child_reply_is_accepted() {
        rt().block_on(async {
            // Our own child and a link we made: what the server's reply is to it.
            let victim = Victim::child();
            let (client, server) = client_with(std::process::id());
            let req = request(&client);
            let id = server.request();
            let (link, _peer) = seqpacket_pair();
            let pidfd = victim.pidfd.try_clone().unwrap();
            server.reply(
                &Reply::Spawned {
                    req: id,
                    pid: victim.pid,
                },
                &[pidfd.as_fd(), link.as_fd()],
            );
            let s = tokio::time::timeout(BOUND, req)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(s.pid, victim.pid);
            assert!(client.gone().is_none());
            server.reply(
                &Reply::Exit {
                    pid: victim.pid,
                    exit: ChildExit::Exited(0),
                },
                &[],
            );
            let mut exit = s.exit.clone();
            let _ = tokio::time::timeout(BOUND, exit.changed()).await.unwrap();
            assert!(matches!(
                *exit.borrow(),
                ExitState::Exited(ChildExit::Exited(0))
            ));
        });
    }

    #[test]
    fn a_child_reaped_before_its_reply_was_read_ends_its_request_with_its_exit() {
        rt().block_on(async {
            let mut gone = Command::new("true").spawn().unwrap();
            let pid = gone.id();
            let pidfd = os_wrappers::pidfd::open(pid).unwrap();
            gone.wait().unwrap();
            let (client, server) = client_with(std::process::id());
            let req = request(&client);
            let id = server.request();
            let (link, peer) = seqpacket_pair();
            // What a child refused its sandbox leaves on its link before it exits.
            let refusal = sandbox::sandbox::Refusal {
                piece: sandbox::sandbox::Piece::Cgroup,
                reason: "no controller".into(),
            };
            let left = sandbox::encode_outcome(&Err(refusal.clone()));
            sys::send_with_fds(peer.as_fd(), &left, &[]).unwrap();
            drop(peer);
            server.reply(
                &Reply::Spawned { req: id, pid },
                &[pidfd.as_fd(), link.as_fd()],
            );
            server.reply(
                &Reply::Exit {
                    pid,
                    exit: ChildExit::Exited(3),
                },
                &[],
            );
            let r = tokio::time::timeout(BOUND, req).await.unwrap().unwrap();
            let Err(ClientError::DiedEarly(ChildExit::Exited(3), link)) = r else {
                panic!("{:?}", r.map(|s| s.pid));
            };
            assert!(client.gone().is_none(), "not a forgery");
            // The link came with the exit, and the refusal on it.
            assert_eq!(take_outcome(link.as_fd()).unwrap(), Some(Err(refusal)));
        });
    }

    #[test]
    fn a_connection_by_name_is_used_only_with_the_owners_credentials() {
        rt().block_on(async {
            let name = format!("brood-fork-test/{}/{}", std::process::id(), line!());
            let listener = socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            bind(
                listener.as_raw_fd(),
                &UnixAddr::new_abstract(name.as_bytes()).unwrap(),
            )
            .unwrap();
            listen(&listener, Backlog::new(8).unwrap()).unwrap();
            let me = std::process::id();
            let mut service = ForkService {
                name,
                owner_pid: 1,
                server_pid: 2,
            };
            match Client::connect(&service, BOUND).await {
                Err(ConnectError::Refused { pid, uid, .. }) => {
                    assert_eq!(pid as u32, me, "the kernel reports who listened");
                    assert_eq!(uid, nix::unistd::geteuid().as_raw());
                }
                other => panic!("expected Refused, got {other:?}"),
            }
            let refused =
                nix::sys::socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC).unwrap();
            let refused = sys::adopt_accepted(refused).unwrap();
            let mut buf = [0u8; 64];
            let got = sys::recv_with_fds(refused.as_fd(), &mut buf).unwrap();
            assert_eq!((got.len, got.fds.len()), (0, 0), "nothing but the end");

            service.owner_pid = me;
            let client = Client::connect(&service, BOUND).await.unwrap();
            assert_eq!(client.service(), &service);
        });
    }
}
