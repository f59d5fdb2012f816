//! [`Interp`]: an interpreter and the thread that hosts it.
//!
//! Every interpreter brood runs code in lives on a host thread of its own: the thread
//! creates it, runs every job in it, and ends it. Actor code hands jobs over with
//! [`Interp::run`] and awaits the result, so the actor's runtime keeps serving (and can
//! cancel) while Python runs. Cancelling a job (dropping its future) raises
//! `KeyboardInterrupt` in the running Python code; a job stuck in native code cannot be
//! stopped, and its host thread is abandoned when the interpreter is shut down.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::ffi::{self, Interrupter};
use crate::python::Python;

/// Sub-interpreters alive in this process (created and not yet ended).
static LIVE_INTERPRETERS: AtomicUsize = AtomicUsize::new(0);

/// Host threads alive in this process (including the main interpreter's, once started).
static LIVE_HOSTS: AtomicUsize = AtomicUsize::new(0);

/// How many sub-interpreters exist in this process right now (diagnostics and leak
/// checks).
pub fn live_interpreters() -> usize {
    LIVE_INTERPRETERS.load(Ordering::SeqCst)
}

/// How many interpreter host threads are running in this process right now.
pub fn live_hosts() -> usize {
    LIVE_HOSTS.load(Ordering::SeqCst)
}

/// Running code in an interpreter failed before the code itself could run or finish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    /// The interpreter could not be created.
    #[error("cannot create the interpreter: {0}")]
    Setup(String),
    /// The interpreter has been shut down.
    #[error("the interpreter has ended")]
    Ended,
    /// The job panicked in Rust code.
    #[error("the job panicked: {0}")]
    Panicked(String),
    /// The actor was started without Python (`python = "none"`).
    #[error("this actor was started without Python (python = \"none\")")]
    NoPython,
}

/// How a host thread treats its interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A sub-interpreter, created when the host starts.
    SubEager,
    /// A sub-interpreter whose host thread and interpreter the first job starts.
    SubLazy,
    /// The process's main interpreter.
    Main,
}

type Job = Box<dyn FnOnce(Result<&Python<'_>, &str>) + Send>;

struct Queued {
    id: u64,
    cancelled: Arc<AtomicBool>,
    job: Job,
}

struct Host {
    kind: Kind,
    /// Where jobs are queued, and the id of the next one. Ids are taken under this lock,
    /// so the host runs jobs in the order of their ids (an interrupt for a lower id than
    /// one already asked for is for a job that has ended).
    jobs: Mutex<Option<(mpsc::Sender<Queued>, u64)>>,
    interrupter: Arc<Interrupter>,
    /// Interrupts asked for and not delivered yet.
    interrupts: Arc<Mutex<Interrupts>>,
    /// Set when the host thread has ended its interpreter and is about to exit.
    exited: Arc<(Mutex<bool>, Condvar)>,
    /// The host thread, joined once it has said it exited (so a clean shutdown returns
    /// only once the thread is gone).
    thread: Mutex<Option<JoinHandle<()>>>,
    /// A lazy host's thread before its first job: what starting it takes. Most actors
    /// never run Python; each would otherwise pay a second thread to start, to hold
    /// while it lives, and to join at its end.
    unstarted: Mutex<Option<Unstarted>>,
}

/// What a lazy host's thread is started with, by the first job.
struct Unstarted {
    name: String,
    jobs: mpsc::Receiver<Queued>,
}

/// The interrupt requests of one host: at most one helper thread delivers them at a time
/// (one blocked on a stuck interpreter must not be joined by more).
#[derive(Default)]
struct Interrupts {
    /// The job to interrupt (the highest id asked for).
    job: u64,
    /// A request for `job` came after the last delivery attempt started.
    fresh: bool,
    /// A helper thread is delivering.
    in_flight: bool,
}

/// A handle on an interpreter and its host thread. Cheap to clone; every clone runs jobs
/// in the same interpreter.
///
/// An actor started by [`SubintBackend`](crate::SubintBackend) finds its own in
/// the runtime's `ActorCx::extensions`; [`Interp::of`] returns the
/// right one for any actor (in a process child: the process's main interpreter).
#[derive(Clone)]
pub struct Interp {
    host: Arc<Host>,
}

impl std::fmt::Debug for Interp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interp")
            .field("kind", &self.host.kind)
            .finish_non_exhaustive()
    }
}

/// What [`Interp::shutdown`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// The interpreter ended and its host thread exited.
    Clean,
    /// The host thread was still running a job in native code; it is abandoned (it ends
    /// the interpreter itself if the job ever returns).
    Abandoned,
}

impl Interp {
    /// A new sub-interpreter on a new host thread. With `eager`, blocks until the
    /// interpreter exists (and fails if it cannot be created); otherwise the first job
    /// starts the thread and creates it (an actor that never runs Python has neither).
    ///
    /// # Errors
    /// [`InterpError::Setup`] if the thread or (with `eager`) the interpreter cannot be
    /// created.
    pub fn new_sub(eager: bool) -> Result<Interp, InterpError> {
        Interp::new_sub_named(eager, "brood-py".to_owned())
    }

    /// [`new_sub`](Interp::new_sub) with a host thread called `name`.
    pub(crate) fn new_sub_named(eager: bool, name: String) -> Result<Interp, InterpError> {
        let kind = if eager { Kind::SubEager } else { Kind::SubLazy };
        Interp::start(kind, name)
    }

    /// The process's main interpreter, on a host thread of its own started on first use.
    /// Lives as long as the process.
    pub fn main() -> Result<Interp, InterpError> {
        static MAIN: OnceLock<Result<Interp, InterpError>> = OnceLock::new();
        MAIN.get_or_init(|| Interp::start(Kind::Main, "brood-py-main".to_owned()))
            .clone()
    }

    fn start(kind: Kind, name: String) -> Result<Interp, InterpError> {
        let (tx, rx) = mpsc::channel::<Queued>();
        let host = Arc::new(Host {
            kind,
            jobs: Mutex::new(Some((tx, 1))),
            interrupter: Arc::new(Interrupter::new()),
            interrupts: Arc::default(),
            exited: Arc::new((Mutex::new(false), Condvar::new())),
            thread: Mutex::new(None),
            unstarted: Mutex::new(None),
        });
        if kind == Kind::SubLazy {
            // The first job starts the thread (see `Host::unstarted`).
            *host.unstarted.lock().unwrap() = Some(Unstarted { name, jobs: rx });
            return Ok(Interp { host });
        }
        let ready = host.spawn_thread(name, rx)?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Interp { host }),
            Ok(Err(e)) => Err(InterpError::Setup(e)),
            Err(_) => Err(InterpError::Setup("the host thread died".to_owned())),
        }
    }

    /// Run `f` in this interpreter, on its host thread, and return what it returns.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future before it completes cancels
    /// the job. A job still queued never runs. A running job gets `KeyboardInterrupt`
    /// raised in its Python code (code stuck in a native call notices only when that call
    /// returns; Rust code in `f` runs to its end). Either way its result is lost,
    /// including one computed just before the drop and not yet received, and what the
    /// job did before it was interrupted stays done. Calling `run` again runs a new job.
    ///
    /// # Errors
    /// [`InterpError::Setup`] if a lazily created interpreter cannot be created,
    /// [`InterpError::Ended`] after [`shutdown`](Interp::shutdown),
    /// [`InterpError::Panicked`] if `f` panicked.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let interp = spawn_subint::Interp::new_sub(true)?;
    /// let v = interp.run(|py| py.eval("6 * 7")).await??;
    /// assert_eq!(v.as_int(), Some(42));
    /// # Ok(()) }
    /// ```
    pub async fn run<R, F>(&self, f: F) -> Result<R, InterpError>
    where
        F: for<'py> FnOnce(&Python<'py>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let job: Job = Box::new(move |py: Result<&Python<'_>, &str>| {
            let r = match py {
                Ok(py) => catch_unwind(AssertUnwindSafe(|| f(py)))
                    .map_err(|p| InterpError::Panicked(spawn_api::panic_message(&*p))),
                Err(e) => Err(InterpError::Setup(e.to_owned())),
            };
            let _ = tx.send(r);
        });
        let id = {
            let mut jobs = self.host.jobs.lock().unwrap();
            let Some((sender, next)) = jobs.as_mut() else {
                return Err(InterpError::Ended);
            };
            let id = *next;
            sender
                .send(Queued {
                    id,
                    cancelled: cancelled.clone(),
                    job,
                })
                .map_err(|_| InterpError::Ended)?;
            *next += 1;
            if let Err(e) = self.host.start_if_lazy() {
                // The job stays queued for a thread that will never run it: the host is
                // as good as ended.
                jobs.take();
                return Err(e);
            }
            id
        };
        let mut guard = CancelOnDrop {
            host: &self.host,
            id,
            cancelled,
            armed: true,
        };
        let out = rx.await.unwrap_or(Err(InterpError::Ended));
        guard.armed = false;
        out
    }

    /// Raise `KeyboardInterrupt` in the job the host thread runs now (never in a later
    /// one: if it ends before the interrupt is delivered, nothing is raised). Returns at
    /// once: the interrupt is delivered from a helper thread, because reaching an
    /// interpreter whose code is stuck in native code can block forever.
    pub fn interrupt(&self) {
        interrupt(&self.host, self.host.interrupter.running());
    }

    /// Whether this interpreter's host thread was started (and not yet joined).
    #[cfg(test)]
    pub(crate) fn has_thread(&self) -> bool {
        self.host.thread.lock().unwrap().is_some()
    }

    /// The id of the job running now (0: none), for tests.
    #[cfg(test)]
    pub(crate) fn running_job(&self) -> u64 {
        self.host.interrupter.running()
    }

    /// Deliver an interrupt for job `job` from the calling thread, as the helper thread
    /// would, and say whether it was sent. Blocks until the interpreter is free (tests).
    #[cfg(test)]
    pub(crate) fn interrupt_job_now(&self, job: u64) -> bool {
        self.host.interrupter.interrupt(job)
    }

    /// Whether the host thread has ended its interpreter (an interpreter
    /// [`Shutdown::Abandoned`] ends once its stuck job returns).
    pub(crate) fn has_exited(&self) -> bool {
        *self.host.exited.0.lock().unwrap()
    }

    /// Stop taking jobs, interrupt the running one, and wait up to `bound` for the host
    /// thread to end the interpreter and exit. The main interpreter is never shut down
    /// (it lives as long as the process): for it this returns at once.
    pub fn shutdown(&self, bound: Duration) -> Shutdown {
        if self.host.kind == Kind::Main {
            return Shutdown::Clean;
        }
        let never_started = {
            let mut jobs = self.host.jobs.lock().unwrap();
            jobs.take();
            self.host.unstarted.lock().unwrap().take().is_some()
        };
        if never_started {
            // A lazy host that never ran a job: no thread, no interpreter.
            let (lock, cv) = &*self.host.exited;
            *lock.lock().unwrap() = true;
            cv.notify_all();
            return Shutdown::Clean;
        }
        let (lock, cv) = &*self.host.exited;
        let mut done = lock.lock().unwrap();
        let deadline = std::time::Instant::now() + bound;
        let mut last_interrupt: Option<std::time::Instant> = None;
        while !*done {
            // Code that catches BaseException swallows one interrupt: send another every
            // 50 ms until the bound (each one for the job running when it is asked for).
            let job = self.host.interrupter.running();
            if job != 0 && last_interrupt.is_none_or(|t| t.elapsed() >= Duration::from_millis(50)) {
                interrupt(&self.host, job);
                last_interrupt = Some(std::time::Instant::now());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Shutdown::Abandoned;
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            done = cv.wait_timeout(done, wait).unwrap().0;
        }
        drop(done);
        // The thread said it exited: all it has left to do is return. Join it, so that
        // "clean" means the thread is gone (its parent's nursery may be checking).
        if let Some(t) = self.host.thread.lock().unwrap().take() {
            let _ = t.join();
        }
        Shutdown::Clean
    }
}

impl Host {
    /// Start the host thread on `jobs`. Its interpreter (unless lazy) is being created
    /// when this returns; the receiver hears whether that worked.
    fn spawn_thread(
        &self,
        name: String,
        jobs: mpsc::Receiver<Queued>,
    ) -> Result<mpsc::Receiver<Result<(), String>>, InterpError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let kind = self.kind;
        let interrupter = self.interrupter.clone();
        let exited = self.exited.clone();
        LIVE_HOSTS.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new().name(name).spawn(move || {
            host_thread(kind, jobs, interrupter, ready_tx);
            LIVE_HOSTS.fetch_sub(1, Ordering::SeqCst);
            let (lock, cv) = &*exited;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        });
        match spawned {
            Ok(t) => {
                *self.thread.lock().unwrap() = Some(t);
                Ok(ready_rx)
            }
            Err(e) => {
                LIVE_HOSTS.fetch_sub(1, Ordering::SeqCst);
                Err(InterpError::Setup(format!(
                    "cannot start a host thread: {e}"
                )))
            }
        }
    }

    /// A lazy host's first job is queued: start its thread. Called with the job queue's
    /// lock held, so that a shutdown sees either no thread and no job, or both.
    fn start_if_lazy(&self) -> Result<(), InterpError> {
        let Some(Unstarted { name, jobs }) = self.unstarted.lock().unwrap().take() else {
            return Ok(());
        };
        self.spawn_thread(name, jobs).map(drop)
    }
}

/// Cancels a job whose future was dropped before it completed.
struct CancelOnDrop<'a> {
    host: &'a Arc<Host>,
    id: u64,
    cancelled: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Paired with the host thread, which publishes the running id and then reads
        // `cancelled` (both SeqCst): either it sees the flag and skips the job, or we see
        // the job running and interrupt it.
        self.cancelled.store(true, Ordering::SeqCst);
        if self.host.interrupter.running() == self.id {
            interrupt(self.host, self.id);
        }
    }
}

/// Ask for `KeyboardInterrupt` in job `job` (0: none), delivered by a helper thread that
/// injects it only if that job is still the running one once it holds the interpreter.
fn interrupt(host: &Arc<Host>, job: u64) {
    if job == 0 {
        return;
    }
    {
        let mut s = host.interrupts.lock().unwrap();
        if job < s.job {
            // Jobs run in id order and a later one was already running: this one ended.
            return;
        }
        s.job = job;
        s.fresh = true;
        if s.in_flight {
            // The helper in flight (maybe blocked on a stuck interpreter) takes it next.
            return;
        }
        s.in_flight = true;
    }
    let interrupter = host.interrupter.clone();
    let requests = host.interrupts.clone();
    let spawned = thread::Builder::new()
        .name("brood-py-interrupt".to_owned())
        .spawn(move || {
            loop {
                let job = {
                    let mut s = requests.lock().unwrap();
                    if !s.fresh {
                        s.in_flight = false;
                        return;
                    }
                    s.fresh = false;
                    s.job
                };
                // Not holding the lock: this may block for good on a stuck interpreter.
                let sent = interrupter.interrupt(job);
                tracing::trace!(job, sent, "interrupt");
            }
        });
    if spawned.is_err() {
        host.interrupts.lock().unwrap().in_flight = false;
    }
}

/// The interpreter a host thread owns.
enum Owned {
    Sub(ffi::SubInterp),
    Main(ffi::MainState),
}

impl Owned {
    fn create(kind: Kind) -> Result<Owned, String> {
        match kind {
            // SAFETY: called on the host thread, which has nothing attached; the result is
            // used and ended on this thread only.
            Kind::SubEager | Kind::SubLazy => unsafe { ffi::SubInterp::new() }.map(|s| {
                LIVE_INTERPRETERS.fetch_add(1, Ordering::SeqCst);
                Owned::Sub(s)
            }),
            // SAFETY: as above.
            Kind::Main => unsafe { ffi::main_thread_state() }.map(Owned::Main),
        }
    }

    fn thread_state(&self) -> &ffi::Detached {
        match self {
            Owned::Sub(s) => s.thread_state(),
            Owned::Main(m) => m.thread_state(),
        }
    }

    fn target(&self) -> ffi::Target {
        match self {
            Owned::Sub(s) => s.target(),
            Owned::Main(m) => m.target(),
        }
    }

    fn end(self) {
        match self {
            Owned::Sub(s) => {
                // SAFETY: on the host thread, nothing attached, interrupter disarmed by the
                // caller.
                unsafe { s.end() };
                LIVE_INTERPRETERS.fetch_sub(1, Ordering::SeqCst);
            }
            // SAFETY: on the host thread, nothing attached.
            Owned::Main(m) => unsafe { m.delete() },
        }
    }
}

fn host_thread(
    kind: Kind,
    rx: mpsc::Receiver<Queued>,
    interrupter: Arc<Interrupter>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut interp: Option<Owned> = None;
    let mut failure: Option<String> = None;
    let create =
        |interp: &mut Option<Owned>, failure: &mut Option<String>| match Owned::create(kind) {
            Ok(o) => {
                interrupter.arm(o.target());
                *interp = Some(o);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot create an interpreter");
                *failure = Some(e);
            }
        };
    if kind != Kind::SubLazy {
        create(&mut interp, &mut failure);
        let _ = ready.send(match &failure {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        });
    }
    // Blocking on the channel with nothing attached: no GIL is held while waiting.
    while let Ok(q) = rx.recv() {
        if q.cancelled.load(Ordering::SeqCst) {
            continue;
        }
        if interp.is_none() && failure.is_none() {
            create(&mut interp, &mut failure);
        }
        let Some(o) = &interp else {
            (q.job)(Err(failure.as_deref().unwrap_or("no interpreter")));
            continue;
        };
        let target = o.target();
        // SAFETY: this thread created the state and has nothing attached.
        let attached = unsafe { o.thread_state().attach() };
        // The running id changes only while attached: an interrupter checks it and injects
        // while attached to this same interpreter, so never across a job switch.
        interrupter.job_started(q.id, &target, &attached);
        // Cancelled between `recv` and now: its canceller may have looked for it running
        // before we published its id (see `CancelOnDrop`).
        if !q.cancelled.load(Ordering::SeqCst) {
            let py = Python::new(&attached);
            (q.job)(Ok(&py));
        }
        interrupter.job_ended(&target, &attached);
        drop(attached);
    }
    interrupter.disarm();
    if let Some(o) = interp {
        o.end();
    }
}
