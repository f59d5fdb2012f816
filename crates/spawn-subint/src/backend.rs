//! [`SubintBackend`]: each actor on a thread of its own, in this process.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use spawn_api::{
    ActorEntry, Child, ChildBoot, ChildExit, EXIT_SETUP, Extensions, SpawnBackend, SpawnError,
    SpawnRequest, async_trait,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::host::{Interp, Shutdown};
use crate::service::NoPython;

/// The key of this backend.
pub const KEY: &str = "subint";

/// The spawn option (the runtime's `ActorOptions::backend_option`) that says when an
/// actor gets its interpreter: `eager`, `lazy` or `none`.
pub const PYTHON_OPTION: &str = "python";

/// How long an ending actor waits for its interpreter to end before abandoning it (its
/// Python code stuck in a native call).
const PYTHON_SHUTDOWN: Duration = Duration::from_secs(1);

/// How long an ending actor waits for in-process children it did not reap (its runtime
/// was aborted with their supervisors in it) before it reports them as left running: a
/// child stopped at the same moment needs up to [`PYTHON_SHUTDOWN`] to give up on its own
/// interpreter, and a little more to report that, so its own report (which says what is
/// stuck) arrives first.
const CHILDREN_SHUTDOWN: Duration = Duration::from_millis(1250);

/// How long after reporting its exit status an actor thread may take to end before its
/// parent gives up waiting and reports it abandoned. It has nothing left to do but return.
const THREAD_EXIT: Duration = Duration::from_secs(1);

/// When a sub-interpreter actor creates its interpreter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PythonMode {
    /// Before the actor starts serving (a spawn fails if Python cannot start).
    Eager,
    /// On the first Python call (the default: Rust-only actors pay nothing).
    #[default]
    Lazy,
    /// Never: Python calls fail with a typed error.
    None,
}

impl FromStr for PythonMode {
    type Err = String;

    fn from_str(s: &str) -> Result<PythonMode, String> {
        match s {
            "eager" => Ok(PythonMode::Eager),
            "lazy" => Ok(PythonMode::Lazy),
            "none" => Ok(PythonMode::None),
            other => Err(format!(
                "unknown {PYTHON_OPTION} option {other:?}; expected eager, lazy or none"
            )),
        }
    }
}

/// Spawns each child actor on a new OS thread of this process, with its own tokio runtime
/// and (per [`PythonMode`]) its own CPython sub-interpreter, hosted on a thread of its own.
///
/// The child still talks to its parent over the configured transport, exactly like a
/// process child: isolation by default, shared memory only through an explicit API.
///
/// Its [`Child`] has no pid. Terminating it raises `KeyboardInterrupt` in its Python and
/// aborts its runtime (dropping its tasks and closing its channels, as a kill would); an
/// actor whose thread is stuck in native code is abandoned, reported, and never waited on.
/// [`Child::wait`] resolves only once the actor's thread (and its Python host thread, when
/// its interpreter ended) has really ended, so a nursery that returned leaves no thread
/// behind. An actor whose runtime ends without its supervisors having reaped its own
/// in-process children (an aborted runtime drops them) stops those children, waits for
/// them within bounds and reports what is left running below it, by tree path, in its own
/// exit status ([`ChildExit::Abandoned`]): nothing in a tree is dropped unreported.
///
/// ```no_run
/// use actor_core::{ActorOptions, Brood, Registry};
/// let brood = Brood::builder()
///     .registry(Registry::new())
///     .backend(spawn_subint::SubintBackend::new())
///     .build();
/// let opts = ActorOptions::new().backend("subint").backend_option("python", "eager");
/// # let _ = (brood, opts);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SubintBackend {
    python: PythonMode,
}

impl SubintBackend {
    /// The backend with lazily created interpreters.
    pub fn new() -> SubintBackend {
        SubintBackend::default()
    }

    /// Use `mode` for actors whose options do not say.
    pub fn with_python(mut self, mode: PythonMode) -> SubintBackend {
        self.python = mode;
        self
    }
}

/// Ends a sub-interpreter actor's runtime at once, as a kill ends a process: its tasks are
/// dropped and its channels close without a goodbye. Found in the actor's extensions;
/// tests use it to crash an in-process actor.
#[derive(Clone, Debug)]
pub struct Abort(CancellationToken);

impl Abort {
    /// Abort the actor.
    pub fn abort(&self) {
        self.0.cancel();
    }

    /// Whether the actor was aborted.
    pub fn is_aborted(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// One sub-interpreter actor, shared by its thread, its parent's [`SubintChild`] and the
/// bookkeeping of the actor that spawned it ([`Spawned`]).
struct Control {
    /// The actor's tree path.
    path: String,
    abort: CancellationToken,
    interp: Mutex<Option<Interp>>,
    /// The interpreter the actor gave up on when it ended (its Python code stuck in a
    /// native call): it ends on its own when that call returns.
    abandoned: Mutex<Option<Interp>>,
    exit: watch::Sender<Option<ChildExit>>,
    /// Becomes `true` while the actor's thread exits, after everything it ran has
    /// returned (see [`ThreadGone`]).
    gone: watch::Sender<bool>,
    /// The actor's thread, until someone saw it finished and joined it.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The in-process children this actor started.
    children: Arc<Spawned>,
    /// Its parent's supervisor collected its final status ([`SubintChild::wait`]
    /// returned it): from then on the parent's nursery answers for it.
    reaped: AtomicBool,
}

impl Control {
    fn stop(&self) {
        if let Some(i) = self.interp.lock().unwrap().clone() {
            i.interrupt();
        }
        self.abort.cancel();
    }

    /// Whether the actor's thread has ended, joining it if it just did. Never blocks.
    fn thread_ended(&self) -> bool {
        let mut t = self.thread.lock().unwrap();
        match t.as_ref() {
            None => true,
            Some(h) if h.is_finished() => {
                // Finished: the join returns at once.
                let _ = t.take().map(JoinHandle::join);
                true
            }
            Some(_) => false,
        }
    }

    /// What of this actor's subtree is still running now: its thread, an interpreter it
    /// abandoned, and (once its thread ended) the same of every in-process child it
    /// started. Tree paths, each with what runs there.
    fn left_running(&self, out: &mut Vec<String>) {
        if !self.thread_ended() {
            out.push(format!("{} (its actor thread has not ended)", self.path));
            return;
        }
        if self
            .abandoned
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|i| !i.has_exited())
        {
            out.push(format!(
                "{} (its Python code is stuck in a native call)",
                self.path
            ));
        }
        for c in self.children.list() {
            c.left_running(out);
        }
    }
}

/// The in-process children an actor started, kept in the actor's own [`Extensions`] (so
/// per actor, never in a `static`: several actors share a process). When the actor's
/// runtime ends, its thread accounts for each one its supervisors did not reap (an aborted
/// runtime drops them, and with them the only handles a nursery would have waited on):
/// it stops them, waits for them within bounds and reports what is left running in its
/// own exit status.
#[derive(Default)]
struct Spawned(Mutex<Vec<Arc<Control>>>);

impl Spawned {
    fn add(&self, c: Arc<Control>) {
        let mut list = self.0.lock().unwrap();
        // Forget the children that are over for good (reaped, nothing left running
        // below them), so a long-lived actor's list stays small.
        list.retain(|c| {
            if !c.reaped.load(Ordering::SeqCst) {
                return true;
            }
            let mut left = Vec::new();
            c.left_running(&mut left);
            !left.is_empty()
        });
        list.push(c);
    }

    fn list(&self) -> Vec<Arc<Control>> {
        self.0.lock().unwrap().clone()
    }
}

/// How the actor finds the list of children it started, from its extensions.
struct SpawnedBy(Arc<Spawned>);

#[async_trait]
impl SpawnBackend for SubintBackend {
    fn key(&self) -> &'static str {
        KEY
    }

    async fn spawn(&self, req: &mut SpawnRequest) -> Result<Box<dyn Child>, SpawnError> {
        if let Some(asked) = &req.boot.sandbox {
            // A child of a sandboxed process actor runs in that process's sandbox, which
            // its vars already say: fine. Anything tighter would need a process.
            let inherited = req
                .vars
                .sandbox
                .as_ref()
                .is_some_and(|v| v.sandbox.same_restrictions(asked));
            if !inherited {
                return Err(SpawnError::SandboxUnsupported {
                    backend: KEY,
                    actor: req.boot.path.clone(),
                    reason: "a sub-interpreter actor shares its parent's process; sandbox a \
                             `proc` or `fork` actor and run it (or its `subint` children) there",
                });
            }
        }
        let mode = match req.options.get(PYTHON_OPTION) {
            Some(s) => s.parse().map_err(|reason| SpawnError::Unavailable {
                backend: KEY,
                reason,
            })?,
            None => self.python,
        };
        let (exit_tx, exit_rx) = watch::channel(None);
        let (entry, boot) = (req.entry.clone(), req.boot.clone());
        let path = boot.path.clone();
        let control = Arc::new(Control {
            path: path.clone(),
            abort: CancellationToken::new(),
            interp: Mutex::new(None),
            abandoned: Mutex::new(None),
            exit: exit_tx,
            gone: watch::Sender::new(false),
            thread: Mutex::new(None),
            children: Arc::default(),
            reaped: AtomicBool::new(false),
        });
        let c2 = control.clone();
        let gone = control.gone.clone();
        // Named like a process actor's command (`brood:<name>`): the kernel keeps 15
        // bytes, which the actor's name fills better than its path.
        let thread = thread::Builder::new()
            .name(format!("brood:{}", boot.id.name()))
            .spawn(move || {
                ThreadGone::arm(gone);
                actor_thread(entry, boot, mode, c2)
            })
            .map_err(|source| SpawnError::Launch {
                backend: KEY,
                actor: path,
                source,
            })?;
        *control.thread.lock().unwrap() = Some(thread);
        // A sub-interpreter actor spawning: remember the child, in case its runtime ends
        // without reaping it (see `Spawned`).
        if let Some(parent) = req.extensions.get::<SpawnedBy>() {
            parent.0.add(control.clone());
        }
        let gone = control.gone.subscribe();
        Ok(Box::new(SubintChild {
            control,
            exit: exit_rx,
            gone,
            reaped: None,
        }))
    }
}

/// Says that an actor's thread is exiting: armed as a thread-local when the thread
/// starts, dropped among the thread's last acts (thread-local destructors run after its
/// function returned and its result was handed over), so that a parent can wait for the
/// real end of the thread without polling a timer.
struct ThreadGone(watch::Sender<bool>);

impl ThreadGone {
    fn arm(tx: watch::Sender<bool>) {
        thread_local! {
            static GONE: std::cell::RefCell<Option<ThreadGone>> = const { std::cell::RefCell::new(None) };
        }
        GONE.with(|g| *g.borrow_mut() = Some(ThreadGone(tx)));
    }
}

impl Drop for ThreadGone {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

fn actor_thread(entry: ActorEntry, boot: ChildBoot, mode: PythonMode, control: Arc<Control>) {
    let exit = match catch_unwind(AssertUnwindSafe(|| run_actor(entry, boot, mode, &control))) {
        Ok(exit) => exit,
        Err(p) => ChildExit::Panicked {
            message: spawn_api::panic_message(&*p),
        },
    };
    control.exit.send_replace(Some(exit));
}

fn run_actor(entry: ActorEntry, boot: ChildBoot, mode: PythonMode, control: &Control) -> ChildExit {
    let rt = match boot.runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(actor = %boot.path, error = %e, "cannot build a runtime");
            return ChildExit::Exited(EXIT_SETUP);
        }
    };
    let ext = Extensions::default();
    ext.insert(Abort(control.abort.clone()));
    ext.insert(SpawnedBy(control.children.clone()));
    let interp = match mode {
        PythonMode::None => {
            ext.insert(NoPython);
            None
        }
        PythonMode::Eager | PythonMode::Lazy => match Interp::new_sub_named(
            mode == PythonMode::Eager,
            format!("brood-py {}", boot.path),
        ) {
            Ok(i) => {
                ext.insert(i.clone());
                *control.interp.lock().unwrap() = Some(i.clone());
                Some(i)
            }
            Err(e) => {
                tracing::error!(actor = %boot.path, error = %e, "cannot start Python");
                return ChildExit::Exited(EXIT_SETUP);
            }
        },
    };
    let served = rt.block_on(async {
        tokio::select! {
            o = entry.serve(boot, ext) => Some(o),
            _ = control.abort.cancelled() => None,
        }
    });
    // Whatever still runs (an aborted actor's tasks) is dropped; a worker stuck in
    // blocking code is left behind rather than waited for.
    rt.shutdown_background();
    let children_deadline = Instant::now() + CHILDREN_SHUTDOWN;
    // Children whose supervisors were dropped with the runtime (their handles' `Drop`
    // stops them too, but on a multi-thread runtime perhaps only later, on a worker that
    // is still shutting down): stop them now, so they end alongside our interpreter.
    let unreaped: Vec<Arc<Control>> = control
        .children
        .list()
        .into_iter()
        .filter(|c| !c.reaped.load(Ordering::SeqCst))
        .collect();
    for c in &unreaped {
        c.stop();
    }
    let stuck = match interp {
        Some(i) if i.shutdown(PYTHON_SHUTDOWN) == Shutdown::Abandoned => {
            *control.abandoned.lock().unwrap() = Some(i);
            true
        }
        _ => false,
    };
    *control.interp.lock().unwrap() = None;
    let left = left_running(control, &unreaped, served.is_none(), children_deadline);
    let mut abandoned = Vec::new();
    if stuck {
        abandoned.push(
            "its Python code is stuck in a native call; its interpreter thread is left running"
                .to_owned(),
        );
    }
    if !left.is_empty() {
        abandoned.push(format!(
            "in-process descendants it could not reap are left running: {}",
            left.join(", ")
        ));
    }
    if !abandoned.is_empty() {
        return ChildExit::Abandoned {
            reason: abandoned.join("; "),
        };
    }
    match served {
        Some(outcome) => ChildExit::Exited(outcome.exit_code()),
        // Aborted: reported as the signal a killed process would have died of.
        None => ChildExit::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false,
        },
    }
}

/// What of the subtree of an ending actor is still running and nobody else will report:
/// the children its supervisors did not reap (`unreaped`, already stopped), once they
/// ended or `deadline` passed; and if the actor was aborted (its supervisors dropped
/// before they could relay what they saw) also what is left running below the children
/// they did reap. The actor's own thread waits here, with no runtime left to block.
fn left_running(
    control: &Control,
    unreaped: &[Arc<Control>],
    aborted: bool,
    deadline: Instant,
) -> Vec<String> {
    while Instant::now() < deadline && !unreaped.iter().all(|c| c.thread_ended()) {
        thread::sleep(Duration::from_millis(5));
    }
    let mut left = Vec::new();
    for c in control.children.list() {
        let reaped = c.reaped.load(Ordering::SeqCst);
        if !reaped || aborted {
            c.left_running(&mut left);
        }
        if !reaped {
            // Accounted for here: its parent's nursery will never see it.
            c.reaped.store(true, Ordering::SeqCst);
        }
    }
    if !left.is_empty() {
        tracing::error!(actor = %control.path, left = ?left, "in-process descendants left running");
    }
    left
}

/// A sub-interpreter actor, as its parent sees it.
pub struct SubintChild {
    control: Arc<Control>,
    exit: watch::Receiver<Option<ChildExit>>,
    gone: watch::Receiver<bool>,
    /// The final status, once `wait` saw the thread end (later calls answer at once).
    reaped: Option<ChildExit>,
}

impl std::fmt::Debug for SubintChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubintChild")
            .field("exit", &*self.exit.borrow())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Child for SubintChild {
    fn pid(&self) -> Option<u32> {
        None
    }

    /// Resolves once the actor's thread has really ended (not merely sent its status: a
    /// nursery that returns must not leave the thread behind), or reports it abandoned
    /// if it does not end within 1 s of its status. Cancel-safe: the status
    /// stays in the channel and the thread handle in `control` until seen.
    async fn wait(&mut self) -> ChildExit {
        if let Some(e) = &self.reaped {
            return e.clone();
        }
        let exit = match self.exit.wait_for(Option::is_some).await {
            Ok(e) => e.clone().expect("waited for Some"),
            // Unreachable while we hold `control` (it owns the sender); kept typed.
            Err(_) => ChildExit::Unknown {
                reason: "the actor thread ended without a status".to_owned(),
            },
        };
        // The thread sends its status as its very last step; its thread-local
        // `ThreadGone` says when its function has returned. Then the join is immediate.
        let ended = tokio::time::timeout(THREAD_EXIT, async {
            self.gone.wait_for(|g| *g).await.map(|_| ())
        })
        .await;
        let reported = Instant::now();
        let exit = loop {
            if ended.is_ok() && self.control.thread_ended() {
                break exit;
            }
            if ended.is_err() || reported.elapsed() >= THREAD_EXIT {
                break ChildExit::Abandoned {
                    reason: format!(
                        "its thread did not end within {THREAD_EXIT:?} of reporting that it {exit}"
                    ),
                };
            }
            // Between the last thread-local destructor and the thread's exit: yield.
            tokio::task::yield_now().await;
        };
        self.control.reaped.store(true, Ordering::SeqCst);
        self.reaped = Some(exit.clone());
        exit
    }

    fn terminate(&mut self) -> io::Result<()> {
        self.control.stop();
        Ok(())
    }

    fn kill(&mut self) -> io::Result<()> {
        // A thread cannot be killed: stop what can be stopped; a thread that still does not
        // end is abandoned by the teardown ladder after its reap bound.
        self.control.stop();
        Ok(())
    }
}

impl Drop for SubintChild {
    fn drop(&mut self) {
        if self.exit.borrow().is_none() {
            // The supervisor went away first (its own runtime is being dropped): stop the
            // actor rather than leave it running unsupervised.
            self.control.stop();
        }
    }
}
