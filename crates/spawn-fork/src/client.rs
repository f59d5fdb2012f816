//! A spawning actor's side: its connection to the forkserver and its handles on forked
//! children.
//!
//! One [`Client`] per spawning actor, kept in the actor's `Extensions`. A reader task
//! owns the receiving side: it hands each `Spawned` reply (with the child's pidfd and
//! link) to the request that asked, and each `Exit` to that child's handle. When the
//! connection ends, every pending request fails and every handle learns that the server
//! is gone, so nothing waits on it forever.

use spawn_api::pidfd::Pidfd;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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

use crate::proto::{self, FLAG_NULL_STDIO, Reply, Stage};
use crate::server::ServerArgs;
use crate::{SERVER_ENV, sys};

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
            && let Ok(Some(e)) = spawn_api::pidfd::try_reap(self.pidfd.as_fd())
        {
            *exit = Some(e);
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
        let _ = spawn_api::pidfd::signal(self.pidfd.as_fd(), libc::SIGKILL);
        wait(1000);
        if self.try_reap().is_none() {
            tracing::warn!(pid = self.pid, "the killed forkserver was not reaped");
        }
    }
}

#[derive(Default)]
struct State {
    pending: HashMap<u32, oneshot::Sender<Result<Spawned, ClientError>>>,
    exits: HashMap<u32, watch::Sender<ExitState>>,
    gone: Option<String>,
}

struct Shared {
    sock: AsyncFd<OwnedFd>,
    state: Mutex<State>,
    next_req: AtomicU32,
    server: Option<ServerProc>,
}

impl Shared {
    /// Mark the server gone: fail what waits, tell every child handle.
    fn fail_all(&self, reason: String) {
        let mut st = self.state.lock().unwrap();
        for (_, tx) in st.pending.drain() {
            let _ = tx.send(Err(ClientError::Gone(reason.clone())));
        }
        for (_, tx) in st.exits.drain() {
            tx.send_replace(ExitState::ServerGone(reason.clone()));
        }
        st.gone.get_or_insert(reason);
    }

    fn dispatch(&self, msg: &[u8], fds: Vec<OwnedFd>) {
        let Some(reply) = proto::decode_reply(msg) else {
            tracing::warn!(
                len = msg.len(),
                "ignored a malformed reply from the forkserver"
            );
            return;
        };
        match reply {
            Reply::Spawned { req, pid } => {
                let mut fds = fds.into_iter();
                let (Some(pidfd), Some(link)) = (fds.next(), fds.next()) else {
                    tracing::error!(pid, "the forkserver sent a child without its descriptors");
                    return;
                };
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
                // The request was given up (timed out, or its future dropped) after the
                // fork: the child must not live on unsupervised.
                if let Some(Ok(s)) = unwanted {
                    tracing::debug!(pid, "killing a child whose spawn was abandoned");
                    let _ = spawn_api::pidfd::signal_group(s.pidfd.as_fd(), s.pid, libc::SIGKILL);
                }
            }
            Reply::Failed { req, stage, errno } => {
                if let Some(w) = self.state.lock().unwrap().pending.remove(&req) {
                    let _ = w.send(Err(ClientError::Failed { stage, errno }));
                }
            }
            Reply::Exit { pid, exit } => {
                if let Some(tx) = self.state.lock().unwrap().exits.remove(&pid) {
                    tx.send_replace(ExitState::Exited(exit));
                }
            }
        }
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
            Ok(Ok(r)) => shared.dispatch(&buf[..r.len], r.fds),
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => break format!("reading from the forkserver: {e}"),
        }
    };
    let reason = shared.describe_end(end).await;
    tracing::warn!(%reason, "forkserver unavailable");
    shared.fail_all(reason);
}

/// A spawning actor's connection to the tree's forkserver.
pub(crate) struct Client {
    shared: Arc<Shared>,
    reader: AbortHandle,
    /// The server's abstract socket name, for the children's runtime vars.
    addr: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("owner", &self.shared.server.is_some())
            .finish()
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
    fn new(sock: OwnedFd, server: Option<ServerProc>, addr: String) -> io::Result<Client> {
        let shared = Arc::new(Shared {
            sock: spawn_api::pidfd::register(sock, Interest::READABLE | Interest::WRITABLE)?,
            state: Mutex::new(State::default()),
            next_req: AtomicU32::new(1),
            server,
        });
        let reader = tokio::spawn(read_loop(shared.clone())).abort_handle();
        Ok(Client {
            shared,
            reader,
            addr,
        })
    }

    /// The server's address, as recorded in the tree's runtime vars.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Start a forkserver for this tree (`exe args`, in forkserver mode) and connect to
    /// it as its owner: it lives until this client is dropped or this process dies.
    pub(crate) fn start(exe: &Path, args: &[OsString]) -> io::Result<Client> {
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
        };
        let mut cmd = Command::new(exe);
        cmd.args(args)
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
        let pidfd = spawn_api::pidfd::open(pid)?;
        drop((listener, theirs));
        tracing::debug!(pid, %name, "started a forkserver");
        Client::new(
            ours,
            Some(ServerProc {
                pid,
                pidfd,
                exit: Mutex::new(None),
            }),
            name,
        )
    }

    /// Connect to the tree's forkserver at `name`.
    pub(crate) async fn connect(name: &str, timeout: Duration) -> io::Result<Client> {
        let sock = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let addr = UnixAddr::new_abstract(name.as_bytes())?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match connect(sock.as_raw_fd(), &addr) {
                Ok(()) => break,
                // A full backlog: the server is busy forking.
                Err(nix::errno::Errno::EAGAIN) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Client::new(sock, None, name.to_owned())
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
/// # async fn demo(nursery: &spawn_api::Nursery) -> Result<(), spawn_api::SpawnError> {
/// use spawn_api::ActorOptions;
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
        if let Ok(Some(exit)) = self.pidfd.get_ref().try_reap() {
            return exit;
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
