//! # spawn-proc: child actors as processes
//!
//! [`ProcBackend`] starts each child actor by executing this same program again with
//! the child's boot information in its environment; the program's `main` calls the
//! runtime's `Brood::enter` first thing, which finds it and runs the actor instead of
//! the program.
//!
//! - **Supervision** through a pidfd: the parent waits for the exit without a `SIGCHLD`
//!   handler and signals the child without racing pid reuse.
//! - **No orphans:** the child asks the kernel for `SIGKILL` when its parent dies
//!   (`PR_SET_PDEATHSIG`, checked against the parent's pid to close the race with an
//!   early death), and also shuts down when its channel to the parent closes. The signal
//!   follows the *thread* that started the child, so every child is started from one
//!   thread that lives as long as the process ([`start_spawner`]): a child never dies
//!   because the thread that asked for it ended.
//! - **The boot travels over stdin**, not the command line or the environment: it holds
//!   the tree's secret. The environment only carries a marker ([`BOOT_ENV`]), so
//!   `Brood::enter` needs no unsound `remove_var`.
//! - **Process groups:** each child leads its own group, so terminate and kill reach any
//!   subprocess it started (actors it spawned have groups of their own and are stopped by
//!   their own parent, or die with it).
//! - **Stdio:** children share the parent's stdout and stderr unless told otherwise; their
//!   log lines carry their tree path.
//!
//! ## Who should depend on this crate
//!
//! Programs that pick their crates by hand, to add the `proc` backend to a `Brood`:
//! `actor-core` + `spawn-proc` + `ipc-uds` is a complete tree of process actors without
//! Python. Other programs use the `brood` facade (feature `proc`, on by default), which
//! wires this backend in. This crate depends only on the contract (`spawn-api`) and on
//! `os-wrappers` for its system calls, never on the actor runtime or on another backend
//! or transport (`actor-core` appears only among its dev-dependencies, for examples and
//! tests); new backends should keep to the same rule.
//!
//! ```no_run
//! use actor_core::{Brood, Registry};
//! let brood = Brood::builder()
//!     .registry(Registry::new())
//!     .backend(spawn_proc::ProcBackend::new())
//!     .build();
//! brood.enter();
//! ```

#![forbid(unsafe_code)]

mod boot;
mod report;
mod spawner;

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use os_wrappers::Pidfd;
use spawn_api::{
    ActorEntry, Child, ChildBoot, ChildExit, ChildStdio, EXIT_SETUP, SpawnBackend, SpawnError,
    SpawnRequest, async_trait,
};
use tokio::io::unix::AsyncFd;

pub use boot::BOOT_ENV;
pub use spawner::start_spawner;

/// The key of this backend.
pub const KEY: &str = "proc";

/// Spawns child actors as processes running this program again.
#[derive(Clone, Debug, Default)]
pub struct ProcBackend {
    exe: Option<PathBuf>,
    args: Vec<OsString>,
}

impl ProcBackend {
    /// Re-execute the current program (`/proc/self/exe`).
    pub fn new() -> ProcBackend {
        ProcBackend::default()
    }

    /// Execute `exe` instead (it must call `Brood::enter` with an equivalent brood).
    pub fn with_exe(mut self, exe: impl Into<PathBuf>) -> ProcBackend {
        self.exe = Some(exe.into());
        self
    }

    /// Pass `args` to children (for programs whose argument parsing runs before
    /// `Brood::enter`).
    pub fn with_args<I, S>(mut self, args: I) -> ProcBackend
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }
}

#[async_trait]
impl SpawnBackend for ProcBackend {
    fn key(&self) -> &'static str {
        KEY
    }

    async fn spawn(&self, req: &mut SpawnRequest) -> Result<Box<dyn Child>, SpawnError> {
        // A child of a sandboxed actor is its process's descendant, inside its sandbox
        // already: it applies only what it adds.
        let plan = sandbox::parent::Plan::new(req);
        let launch = |source: io::Error| SpawnError::Launch {
            backend: KEY,
            actor: req.boot.path.clone(),
            source,
        };
        let exe = match &self.exe {
            Some(e) => e.clone(),
            None => PathBuf::from("/proc/self/exe"),
        };
        let (stdin, marker, back) = boot::prepare(&boot::Envelope {
            parent_pid: std::process::id(),
            boot: req.boot.to_bytes(),
        })
        .map_err(launch)?;
        let mut cmd = Command::new(&exe);
        // Its command line in `ps` and `top -c`: the tree path (brood reads no child's
        // `argv[0]`). A NUL, which no argument can hold, would fail the spawn.
        cmd.arg0(format!("brood: {}", req.boot.path).replace('\0', "?"))
            .args(&self.args)
            .env(BOOT_ENV, marker)
            .stdin(Stdio::from(stdin))
            .process_group(0);
        if req.stdio == ChildStdio::Null {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        // No pre_exec hook, so std can use posix_spawn (vfork-like): spawning from a
        // large multi-threaded parent stays cheap. The child arms its death signal
        // itself, first thing in `enter`.
        let started = spawner::spawn(cmd).await.map_err(launch)?;
        let pid = started.pid;
        let pidfd = started.pidfd.into_async().map_err(launch)?;
        let mut child = ProcChild {
            pid,
            pidfd,
            status: None,
        };
        let mut report = None;
        if req.boot.sandbox.is_some() {
            // Dropped on any error (or with this future): the child is killed and reaped.
            let outcome = report::receive(back, req.boot.connect_timeout).await;
            report = Some(sandbox::parent::judge(KEY, &req.boot.path, outcome, &mut child).await?);
        }
        plan.record(req, report);
        Ok(Box::new(child))
    }

    fn enter(&self, entry: &ActorEntry) -> Option<i32> {
        let marker = std::env::var(BOOT_ENV).ok()?;
        let (envelope, back) = match boot::take(&marker) {
            Ok(Some(e)) => e,
            // The marker was inherited by a program an actor started: not ours.
            Ok(None) => return None,
            Err(e) => {
                eprintln!("brood: cannot read the boot: {e}");
                return Some(EXIT_SETUP);
            }
        };
        if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
            eprintln!("brood: cannot arm the parent-death signal: {e}");
            return Some(EXIT_SETUP);
        }
        // The parent may have died before the signal was armed: then nobody will send
        // it, and we must not run as an orphan.
        if nix::unistd::getppid().as_raw() as u32 != envelope.parent_pid {
            return Some(EXIT_SETUP);
        }
        let boot = match ChildBoot::from_bytes(&envelope.boot) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("brood: bad boot: {e}");
                return Some(EXIT_SETUP);
            }
        };
        // Its name in `top` (15 bytes); the command line came with `argv[0]`. Cosmetic:
        // an error changes nothing else.
        let _ = os_wrappers::title::set_comm(&format!("brood:{}", boot.id.name()));
        // The report goes back up the boot's socket (dropped unused without a sandbox).
        if !sandbox::enter_boot(&boot, |bytes| report::send(back, bytes)) {
            return Some(EXIT_SETUP);
        }
        Some(entry.run_process(boot))
    }
}

/// A child process, supervised through its pidfd.
#[derive(Debug)]
pub struct ProcChild {
    pid: u32,
    pidfd: AsyncFd<Pidfd>,
    status: Option<ChildExit>,
}

impl ProcChild {
    fn signal(&mut self, sig: libc::c_int) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        self.pidfd.get_ref().signal_group(sig)
    }
}

#[async_trait]
impl Child for ProcChild {
    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    async fn wait(&mut self) -> ChildExit {
        loop {
            if let Some(s) = &self.status {
                return s.clone();
            }
            let mut ready = match self.pidfd.readable().await {
                Ok(r) => r,
                Err(e) => {
                    return ChildExit::Unknown {
                        reason: format!("polling the pidfd: {e}"),
                    };
                }
            };
            match self.pidfd.get_ref().try_reap() {
                Ok(Some(status)) => self.status = Some(ChildExit::from_status(status)),
                Ok(None) => ready.clear_ready(),
                Err(e) => {
                    let exit = ChildExit::Unknown {
                        reason: format!("waitid: {e}"),
                    };
                    self.status = Some(exit.clone());
                    return exit;
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

impl Drop for ProcChild {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // Dropped unreaped: the supervisor itself was torn down (its runtime is
        // shutting down). Kill and reap so no process or zombie outlives the handle.
        if let Err(e) = self.signal(libc::SIGKILL) {
            tracing::warn!(pid = self.pid, error = %e, "cannot kill a dropped child");
            return;
        }
        if spawner::reap_blocking(self.pidfd.get_ref(), std::time::Duration::from_millis(500)) {
            return;
        }
        tracing::warn!(
            pid = self.pid,
            "a killed child did not exit in 500 ms; left to init"
        );
    }
}
