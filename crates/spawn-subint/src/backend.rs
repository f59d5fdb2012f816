//! [`SubintBackend`]: each actor on a thread of its own, in this process.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use spawn_api::child::{EXIT_SETUP, serve_child_with};
use spawn_api::{
    Brood, Child, ChildBoot, ChildExit, Extensions, SpawnBackend, SpawnError, SpawnRequest,
    async_trait,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::host::{Interp, Shutdown};
use crate::service::NoPython;

/// The key of this backend.
pub const KEY: &str = "subint";

/// The spawn option ([`ActorOptions::backend_option`](spawn_api::ActorOptions::backend_option))
/// that says when an actor gets its interpreter: `eager`, `lazy` or `none`.
pub const PYTHON_OPTION: &str = "python";

/// How long an ending actor waits for its interpreter to end before abandoning it (its
/// Python code stuck in a native call).
const PYTHON_SHUTDOWN: Duration = Duration::from_secs(1);

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
///
/// ```no_run
/// use spawn_api::{ActorOptions, Brood, Registry};
/// let brood = Brood::builder()
///     .registry(spawn_subint::python_service())
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

struct Control {
    abort: CancellationToken,
    interp: Mutex<Option<Interp>>,
    exit: watch::Sender<Option<ChildExit>>,
}

impl Control {
    fn stop(&self) {
        if let Some(i) = self.interp.lock().unwrap().clone() {
            i.interrupt();
        }
        self.abort.cancel();
    }
}

#[async_trait]
impl SpawnBackend for SubintBackend {
    fn key(&self) -> &'static str {
        KEY
    }

    async fn spawn(&self, req: &mut SpawnRequest) -> Result<Box<dyn Child>, SpawnError> {
        let mode = match req.options.get(PYTHON_OPTION) {
            Some(s) => s.parse().map_err(|reason| SpawnError::Unavailable {
                backend: KEY,
                reason,
            })?,
            None => self.python,
        };
        let (exit_tx, exit_rx) = watch::channel(None);
        let control = Arc::new(Control {
            abort: CancellationToken::new(),
            interp: Mutex::new(None),
            exit: exit_tx,
        });
        let (brood, boot) = (req.brood.clone(), req.boot.clone());
        let path = boot.path.clone();
        let c2 = control.clone();
        thread::Builder::new()
            .name(format!("brood-subint {path}"))
            .spawn(move || actor_thread(brood, boot, mode, c2))
            .map_err(|source| SpawnError::Launch {
                backend: KEY,
                actor: path,
                source,
            })?;
        Ok(Box::new(SubintChild {
            control,
            exit: exit_rx,
        }))
    }
}

fn actor_thread(brood: Brood, boot: ChildBoot, mode: PythonMode, control: Arc<Control>) {
    let exit = match catch_unwind(AssertUnwindSafe(|| run_actor(brood, boot, mode, &control))) {
        Ok(exit) => exit,
        Err(p) => ChildExit::Panicked {
            message: p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned()),
        },
    };
    control.exit.send_replace(Some(exit));
}

fn run_actor(brood: Brood, boot: ChildBoot, mode: PythonMode, control: &Control) -> ChildExit {
    let rt = match boot.runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(actor = %boot.path, error = %e, "cannot build a runtime");
            return ChildExit::Exited(EXIT_SETUP);
        }
    };
    let ext = Extensions::default();
    ext.insert(Abort(control.abort.clone()));
    let interp = match mode {
        PythonMode::None => {
            ext.insert(NoPython);
            None
        }
        PythonMode::Eager | PythonMode::Lazy => match Interp::new_sub(mode == PythonMode::Eager) {
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
            o = serve_child_with(brood, boot, ext) => Some(o),
            _ = control.abort.cancelled() => None,
        }
    });
    // Whatever still runs (an aborted actor's tasks) is dropped; a worker stuck in
    // blocking code is left behind rather than waited for.
    rt.shutdown_background();
    let stuck = interp.is_some_and(|i| i.shutdown(PYTHON_SHUTDOWN) == Shutdown::Abandoned);
    *control.interp.lock().unwrap() = None;
    if stuck {
        return ChildExit::Abandoned {
            reason:
                "its Python code is stuck in a native call; its interpreter thread is left running"
                    .to_owned(),
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

/// A sub-interpreter actor, as its parent sees it.
pub struct SubintChild {
    control: Arc<Control>,
    exit: watch::Receiver<Option<ChildExit>>,
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

    async fn wait(&mut self) -> ChildExit {
        match self.exit.wait_for(Option::is_some).await {
            Ok(e) => e.clone().expect("waited for Some"),
            Err(_) => ChildExit::Unknown {
                reason: "the actor thread ended without a status".to_owned(),
            },
        }
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
