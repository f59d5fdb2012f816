//! # spawn-fork: child actors forked from a forkserver
//!
//! Exec-ing a fresh process costs about a millisecond before `main` runs; forking a
//! small, already initialised process costs a tenth of that. Forking the program itself
//! is unsound once it runs threads (a tokio runtime does), so, like Python's
//! `forkserver` start method, [`ForkBackend`] forks from a dedicated server process that
//! never starts a thread.
//!
//! - **The server** is this same program re-executed once per tree, in forkserver mode:
//!   the runtime's `Brood::enter` at the top of `main` finds
//!   [`SERVER_ENV`] and runs the server loop instead of the program. It is
//!   single-threaded (no runtime, no threads), so a forked child may run ordinary Rust
//!   code at once: it builds its own runtime and connects back to its parent exactly as
//!   a `spawn-proc` child does, without exec-ing anything.
//! - **One server per tree:** the first fork spawn of a tree starts it and records its
//!   socket under [`SERVICE_KEY`] in the child's runtime vars; every descendant inherits
//!   the address and asks the same server. Each spawning actor keeps its connection in
//!   its `Extensions`.
//! - **Lifetime:** the server watches the actor that started it (a pidfd, and the end of
//!   that actor's connection). When the starter dies (`SIGKILL` included) or finishes,
//!   the server kills the children it still has and exits; the starter reaps it.
//! - **Supervision:** the parent receives each child's pidfd over the socket
//!   (`SCM_RIGHTS`) and signals through it, to the child's whole process group, without
//!   racing pid reuse. Only the server can reap; it sends each exit status back on the
//!   connection that asked for the child, so panics (101 plus the report on the
//!   channel), exit codes and signals read exactly as with `spawn-proc`.
//! - **No orphans:** a forked actor's OS parent is the server, so the parent-death signal
//!   cannot say "dies with its parent actor". Each child gets a *link* instead, a socket
//!   whose other end only its parent actor holds, armed (`O_ASYNC`, `F_SETSIG`) so that
//!   the kernel itself sends `SIGKILL` to the child's process group the moment that end
//!   closes: however the parent died, even while the child is stuck, with no thread.
//!   The server also kills the children of a connection that closes, and all of them
//!   when its owner goes. The link also carries the child's exit code, for a parent that
//!   outlives the server.
//! - **Failures are typed:** a server that exits makes pending and later spawns fail
//!   with [`SpawnError::Unavailable`], never hang; running children keep serving.
//! - **Trust no one it did not start:** the socket's name is visible to every process, and
//!   anyone may bind it once the server is gone. A client connecting by name checks the
//!   kernel's credentials for the socket (our uid, and the pid of the actor that listened
//!   on it, recorded with the name in [`ForkService`]) before it sends anything: the boot
//!   carries the tree's secret, and the request our stdout and stderr. Every `Spawned`
//!   reply's descriptors are checked before use (a pidfd of the claimed pid, a child of
//!   the server; a Unix seqpacket link the server made); a reply that fails is a forgery:
//!   its descriptors are closed unsignalled, and the connection is given up.
//!
//! - **Pre-forked children:** the server keeps a few children forked ahead of any
//!   request (a *pool*; [`DEFAULT_POOL`] of them), each already in its own process group,
//!   with the server's descriptors closed and the signal mask restored, waiting on a
//!   private socket. A spawn then hands one of them its boot, its link and its stdio
//!   instead of forking, and the reply is the same as for a child forked on request (its
//!   pid, a pidfd the server opened when it forked it, the link). The pool is refilled
//!   after the reply, once the server has had nothing to do for a couple of
//!   milliseconds (a fork meanwhile would take the CPU from the child starting); when
//!   it is empty (a burst of spawns) a child is forked on request as before. An idle child is the server's alone: it dies
//!   with the server (its parent-death signal, however the server ends), and one that
//!   dies meanwhile is only replaced, never reported as an actor. Its size is
//!   [`ForkBackend::with_pool`], else [`POOL_ENV`] (`BROOD_FORK_POOL`) in the environment
//!   of the actor that starts the server, else [`DEFAULT_POOL`]; `0` turns it off.
//!
//! Differences from `spawn-proc`: a forked child inherits the environment and working
//! directory the server had when the tree started (stdout and stderr are the parent
//! actor's, passed with each request); it has one more descriptor, its link, and none of
//! the descriptors an exec'd child would inherit without close-on-exec.
//!
//! ## Who should depend on this crate
//!
//! Programs that pick their crates by hand, to add the `fork` backend to a `Brood`
//! (beside `actor-core` and a transport such as `ipc-uds`). Other programs use the
//! `brood` facade (feature `fork`, on by default), which wires this backend in. This
//! crate depends only on the contract (`spawn-api`) and on `os-wrappers` for its system
//! calls, never on the actor runtime or on another backend or transport (`actor-core`
//! appears only among its dev-dependencies, for examples and tests).
//!
//! ```no_run
//! use actor_core::{Brood, Registry};
//! let brood = Brood::builder()
//!     .registry(Registry::new())
//!     .backend(spawn_fork::ForkBackend::new())
//!     .build();
//! brood.enter(); // the forkserver (and every forked child) never returns from here
//! ```

mod check;
mod client;
mod pool;
mod proto;
mod server;
mod service;
mod sys;

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use spawn_api::{
    ActorEntry, Child, ChildStdio, SpawnBackend, SpawnError, SpawnRequest, async_trait,
};
use tokio::sync::OnceCell;

pub use client::ForkChild;
pub use pool::{DEFAULT_POOL, MAX_POOL, POOL_ENV, PoolError};
pub use service::{ForkService, ServiceError};

use client::{Client, ClientError};
pub use server::SERVER_ENV;

/// The key of this backend (`BROOD_BACKEND=fork`, `ActorOptions::backend("fork")`).
///
/// ```
/// assert_eq!(spawn_fork::KEY, "fork");
/// ```
pub const KEY: &str = "fork";

/// Key of the tree's forkserver in [`RuntimeVars::services`]: a [`ForkService`], the
/// name of its abstract Unix socket and the pids a client checks before it trusts what
/// answers there. Set in the vars of every child this backend spawns; actors below
/// inherit it and reach the same server.
///
/// ```
/// // A root has no forkserver until its first fork spawn.
/// let vars = spawn_api::RuntimeVars::root("root", spawn_fork::KEY);
/// assert!(vars.services.get(spawn_fork::SERVICE_KEY).is_none());
/// ```
///
/// [`RuntimeVars::services`]: spawn_api::RuntimeVars::services
pub const SERVICE_KEY: &str = "fork.server";

/// Spawns child actors by forking them from the tree's forkserver.
///
/// ```
/// let backend = spawn_fork::ForkBackend::new();
/// assert_eq!(spawn_api::SpawnBackend::key(&backend), "fork");
/// ```
#[derive(Clone, Debug, Default)]
pub struct ForkBackend {
    exe: Option<PathBuf>,
    args: Vec<OsString>,
    /// Idle children of the server this backend starts (`None`: [`POOL_ENV`], else
    /// [`DEFAULT_POOL`]).
    pool: Option<usize>,
}

impl ForkBackend {
    /// Start the forkserver by re-executing the current program (`/proc/self/exe`).
    ///
    /// ```no_run
    /// use actor_core::{ActorOptions, Brood, Registry};
    /// actor_core::call!(Add: (i64, i64) => i64);
    /// # fn transports(b: actor_core::BroodBuilder) -> actor_core::BroodBuilder { b }
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let registry = Registry::new().call(Add, |_cx, (a, b)| async move { Ok(a + b) });
    ///     let brood = transports(Brood::builder().registry(registry))
    ///         .backend(spawn_fork::ForkBackend::new())
    ///         .build();
    ///     brood.enter(); // the forkserver runs here, and never returns
    ///     let rt = tokio::runtime::Runtime::new()?;
    ///     let sum = rt.block_on(brood.root().run(async |nursery| {
    ///         // The first spawn starts the tree's forkserver; this child is forked.
    ///         let adder = nursery.start_actor("adder", ActorOptions::new()).await?;
    ///         Ok(adder.run(Add, (40, 2)).await?)
    ///     }))?;
    ///     assert_eq!(sum, 42);
    ///     Ok(())
    /// }
    /// ```
    pub fn new() -> ForkBackend {
        ForkBackend::default()
    }

    /// Start the forkserver from `exe` instead; it must call `Brood::enter` with an
    /// equivalent brood first thing in `main`.
    ///
    /// ```
    /// let b = spawn_fork::ForkBackend::new().with_exe("/usr/local/bin/my-app");
    /// # let _ = b;
    /// ```
    pub fn with_exe(mut self, exe: impl Into<PathBuf>) -> ForkBackend {
        self.exe = Some(exe.into());
        self
    }

    /// Pass `args` to the forkserver (for programs whose argument parsing runs before
    /// `Brood::enter`).
    ///
    /// ```
    /// let b = spawn_fork::ForkBackend::new().with_args(["--quiet"]);
    /// # let _ = b;
    /// ```
    pub fn with_args<I, S>(mut self, args: I) -> ForkBackend
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Keep `idle` children forked ahead of any request in the forkserver this backend
    /// starts (a *pool*), so that a spawn hands one of them its work instead of forking;
    /// `0` forks every child on request. Overrides [`POOL_ENV`]; without either the
    /// server keeps [`DEFAULT_POOL`]. It applies to the servers this backend starts, not
    /// to one a parent started already (a tree has one server, sized by its starter).
    ///
    /// # Errors
    /// [`PoolError::TooLarge`] for more than [`MAX_POOL`].
    ///
    /// ```
    /// use spawn_fork::{ForkBackend, PoolError};
    /// let busy = ForkBackend::new().with_pool(8)?;
    /// let on_request = ForkBackend::new().with_pool(0)?;
    /// assert!(matches!(
    ///     ForkBackend::new().with_pool(1000),
    ///     Err(PoolError::TooLarge { asked: 1000 })
    /// ));
    /// # let _ = (busy, on_request);
    /// # Ok::<(), PoolError>(())
    /// ```
    pub fn with_pool(mut self, idle: usize) -> Result<ForkBackend, PoolError> {
        self.pool = Some(pool::checked(idle)?);
        Ok(self)
    }

    /// The pool size of a server this backend starts: its own setting, else
    /// [`POOL_ENV`], else [`DEFAULT_POOL`].
    fn pool_size(&self) -> Result<usize, PoolError> {
        match self.pool {
            Some(n) => Ok(n),
            None => pool::from_env_value(std::env::var_os(POOL_ENV).as_deref()),
        }
    }

    async fn client(&self, req: &SpawnRequest) -> Result<Arc<Client>, SpawnError> {
        let slot = req.extensions.get_or_insert_with(ClientSlot::default);
        let client = slot
            .0
            .get_or_try_init(|| async {
                let client = match req.vars.services.get(&service_key(req)) {
                    Some(value) => {
                        let service = ForkService::parse(value).map_err(|e| {
                            unavailable(format!(
                                "the forkserver's entry in the runtime vars is unusable: {e}"
                            ))
                        })?;
                        Client::connect(&service, req.boot.connect_timeout)
                            .await
                            .map_err(|e| unavailable(e.to_string()))?
                    }
                    None => {
                        let exe = self
                            .exe
                            .clone()
                            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
                        let start = |pool| Client::start(&exe, &self.args, pool);
                        self.pool_size()
                            .map_err(io::Error::other)
                            .and_then(start)
                            .map_err(|e| unavailable(format!("cannot start the forkserver: {e}")))?
                    }
                };
                Ok::<_, SpawnError>(Arc::new(client))
            })
            .await?;
        Ok(client.clone())
    }
}

/// The error of a spawn whose child exited before its reply was read: a sandboxed child
/// that was refused its sandbox left the refusal on its `link` before it exited, and says
/// why; any other child died early.
fn died_early(req: &SpawnRequest, exit: spawn_api::ChildExit, link: &OwnedFd) -> SpawnError {
    if req.boot.sandbox.is_some()
        && let Ok(Some(Err(refusal))) = client::take_outcome(link.as_fd())
    {
        return SpawnError::SandboxRefused {
            backend: KEY,
            actor: req.boot.path.clone(),
            refusal,
        };
    }
    SpawnError::DiedEarly {
        actor: req.boot.path.clone(),
        exit,
    }
}

/// Where the spawning actor finds its forkserver in the vars: [`SERVICE_KEY`] outside any
/// sandbox, and `fork.server@<path>` inside the sandbox the actor at `<path>` entered. A
/// server forks its children inside whatever sandbox it runs in, so the first fork spawn in
/// a sandbox starts a server there (a server outside would fork children outside the
/// sandbox; its socket and pid are not even visible from inside), and the actors sharing
/// that sandbox share that server.
fn service_key(req: &SpawnRequest) -> String {
    match &req.vars.sandbox {
        Some(s) => format!("{SERVICE_KEY}@{}", s.applied_by),
        None => SERVICE_KEY.to_owned(),
    }
}

/// The spawning actor's connection, created by its first fork spawn.
#[derive(Default)]
struct ClientSlot(OnceCell<Arc<Client>>);

fn unavailable(reason: String) -> SpawnError {
    SpawnError::Unavailable {
        backend: KEY,
        reason,
    }
}

#[async_trait]
impl SpawnBackend for ForkBackend {
    fn key(&self) -> &'static str {
        KEY
    }

    /// Ask the tree's forkserver (started on the first call) for a child.
    ///
    /// # Errors
    /// [`SpawnError::Unavailable`] if the forkserver cannot be started or reached, is
    /// gone, fails the credential check, or its connection sent a forged reply;
    /// [`SpawnError::Launch`] if it could not fork (or its reply could not be checked);
    /// [`SpawnError::DiedEarly`] if the child exited before its reply was read (unless it
    /// was refused its sandbox and left the refusal on its link: then
    /// [`SpawnError::SandboxRefused`], as when the refusal is read in time);
    /// [`SpawnError::Timeout`] if it did not answer within the spawn timeout.
    async fn spawn(&self, req: &mut SpawnRequest) -> Result<Box<dyn Child>, SpawnError> {
        let client = self.client(req).await?;
        if let Some(why) = client.gone() {
            return Err(unavailable(why));
        }
        req.vars
            .services
            .insert(service_key(req), client.service().to_string());
        let timeout = req.boot.connect_timeout;
        // The server that forks this child was started by the first fork spawn in this
        // actor's sandbox (see `service_key`): the child is inside it already.
        let plan = sandbox::parent::Plan::new(req);
        let spawned = client
            .spawn(&req.boot.to_bytes(), req.stdio == ChildStdio::Null, timeout)
            .await
            .map_err(|e| match e {
                ClientError::Gone(reason) | ClientError::Forged(reason) => unavailable(reason),
                ClientError::DiedEarly(exit, link) => died_early(req, exit, &link),
                ClientError::Unchecked(e) => SpawnError::Launch {
                    backend: KEY,
                    actor: req.boot.path.clone(),
                    source: std::io::Error::new(
                        e.kind(),
                        format!("cannot check the forkserver's reply: {e}"),
                    ),
                },
                ClientError::Failed { stage, errno } => SpawnError::Launch {
                    backend: KEY,
                    actor: req.boot.path.clone(),
                    source: std::io::Error::new(
                        std::io::Error::from_raw_os_error(errno).kind(),
                        format!(
                            "forkserver: {}: {}",
                            stage.what(),
                            std::io::Error::from_raw_os_error(errno)
                        ),
                    ),
                },
                ClientError::Timeout => SpawnError::Timeout {
                    actor: req.boot.path.clone(),
                    after: timeout,
                },
            })?;
        let pid = spawned.pid;
        let mut child = ForkChild::new(spawned, client).map_err(|source| SpawnError::Launch {
            backend: KEY,
            actor: req.boot.path.clone(),
            source,
        })?;
        tracing::trace!(pid, actor = %req.boot.path, "forked");
        let mut report = None;
        if req.boot.sandbox.is_some() {
            // Dropped on any error (or with this future): the child is killed.
            let outcome = child.sandbox_outcome(timeout).await;
            report = Some(sandbox::parent::judge(KEY, &req.boot.path, outcome, &mut child).await?);
        }
        plan.record(req, report);
        Ok(Box::new(child))
    }

    /// In a process started as a forkserver ([`SERVER_ENV`] set), run the server until
    /// its tree is gone and return its exit code. Forked children never get here: the
    /// server calls the child path directly after `fork`, and it ends the process.
    fn enter(&self, entry: &ActorEntry) -> Option<i32> {
        std::env::var_os(SERVER_ENV)?;
        Some(server::main(entry))
    }
}

/// Entry points for fuzz targets: each runs one decoder of outside input on arbitrary
/// input, as this crate runs it, and checks what must hold of the result. None may panic
/// (a panic is a finding). Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// A datagram from a client, as the server judges it (with no descriptors, and as if
    /// it had been truncated); the id of the request it would fork for, if any.
    pub fn decode_request(data: &[u8]) -> Option<u32> {
        let _ = crate::proto::request_id(data);
        let _ = crate::server::parse_request(data, true, Vec::new());
        let decoded = crate::proto::decode_spawn(data);
        match crate::server::parse_request(data, false, Vec::new()) {
            crate::server::Request::Spawn { req, boot, stdio } => {
                assert!(stdio.is_none(), "descriptors out of nothing");
                let d = decoded.expect("a spawn the decoder refused");
                assert_eq!((d.req, d.boot), (req, boot));
                Some(req)
            }
            crate::server::Request::Refuse(_) => None,
        }
    }

    /// A datagram from the server, as a client decodes it; whether it is a reply. A
    /// reply whose encoding is canonical must encode back to the same bytes.
    pub fn decode_reply(data: &[u8]) -> bool {
        let Some(r) = crate::proto::decode_reply(data) else {
            return false;
        };
        let canonical = match &r {
            crate::proto::Reply::Exit { .. } => data.get(5).is_some_and(|k| *k <= 2),
            _ => true,
        };
        if canonical {
            let (b, n) = crate::proto::encode_reply(&r);
            assert_eq!(&b[..n], data, "{r:?} re-encodes differently");
        }
        true
    }

    /// The forkserver's start-up argument; whether it decodes.
    pub fn decode_server_args(s: &str) -> bool {
        crate::server::ServerArgs::decode(s).is_some()
    }

    /// A [`ForkService`](crate::ForkService) value from the runtime vars; whether it
    /// decodes. A decoded value must round-trip.
    pub fn decode_service(s: &str) -> bool {
        match crate::ForkService::parse(s) {
            Ok(v) => {
                assert_eq!(crate::ForkService::parse(&v.to_string()), Ok(v.clone()));
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set (through exec) only in the copy of this test binary that plays a program
    /// calling `Brood::enter` once it runs threads.
    const PROBE_ENV: &str = "BROOD_FORK_TEST_ENTER_PROBE";

    #[test]
    fn a_multi_threaded_process_keeps_the_server_variable_and_starts_no_server() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::enter_probe", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(PROBE_ENV, "1")
            .env(SERVER_ENV, "3,4,1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("probe: variable kept"),
            "{}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        assert!(
            stderr.contains("a forkserver must be single-threaded"),
            "a clear message: {stderr}"
        );
    }

    /// Does something only in the copy started above. libtest runs each test on a
    /// thread of its own, so that process is multi-threaded here.
    #[test]
    fn enter_probe() {
        if std::env::var_os(PROBE_ENV).is_none() {
            return;
        }
        assert!(
            sys::SingleThreaded::check().is_err(),
            "a thread besides main"
        );
        let brood = actor_core::Brood::builder()
            .registry(actor_core::Registry::new())
            .backend(ForkBackend::new())
            .build();
        let code = ForkBackend::new().enter(&spawn_api::ActorEntry::new(brood));
        assert_eq!(code, Some(spawn_api::EXIT_SETUP), "no server started");
        assert_eq!(
            std::env::var(SERVER_ENV).as_deref(),
            Ok("3,4,1"),
            "the environment is untouched"
        );
        println!("probe: variable kept");
    }

    #[test]
    fn the_backends_pool_size_overrides_the_environment() {
        // Set by the builder, the size is taken as is: the environment is not read (this
        // test leaves it alone, as a multi-threaded test must).
        for n in [0, 1, MAX_POOL] {
            assert_eq!(ForkBackend::new().with_pool(n).unwrap().pool_size(), Ok(n));
        }
        assert_eq!(
            ForkBackend::new().with_pool(MAX_POOL + 1).unwrap_err(),
            PoolError::TooLarge {
                asked: MAX_POOL + 1
            }
        );
        let b = ForkBackend::new().with_pool(3).unwrap().with_exe("/bin/x");
        assert_eq!(b.pool, Some(3), "kept through the other builder methods");
    }

    #[test]
    fn the_fuzzing_entry_points_take_anything() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in 0..96 {
            for _ in 0..64 {
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let _ = fuzzing::decode_request(&bytes);
                let _ = fuzzing::decode_reply(&bytes);
                let text = String::from_utf8_lossy(&bytes);
                let _ = fuzzing::decode_server_args(&text);
                let _ = fuzzing::decode_service(&text);
            }
        }
        let mut spawn = proto::encode_spawn(5, 0, b"boot");
        assert_eq!(
            fuzzing::decode_request(&spawn),
            None,
            "no descriptors for stdio"
        );
        spawn[5] = proto::FLAG_NULL_STDIO;
        assert_eq!(fuzzing::decode_request(&spawn), Some(5));
        let (b, n) = proto::encode_reply(&proto::Reply::Spawned { req: 1, pid: 2 });
        assert!(fuzzing::decode_reply(&b[..n]));
        assert!(fuzzing::decode_server_args("3,4,5"));
        assert!(fuzzing::decode_server_args("3,4,5,pool=2"));
        assert!(!fuzzing::decode_server_args("3,4,5,pool=65"));
        assert!(fuzzing::decode_service(
            "brood-fork/1 owner=1 server=2 name=brood-fork/1/0/00000000"
        ));
    }
}
