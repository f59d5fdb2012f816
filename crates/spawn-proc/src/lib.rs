//! # spawn-proc: child actors as processes
//!
//! [`ProcBackend`] starts each child actor by executing this same program again with
//! the child's boot information in its environment; the program's `main` calls
//! [`Brood::enter`](spawn_api::Brood::enter) first thing, which finds it and runs the
//! actor instead of the program.
//!
//! - **Supervision** through a pidfd: the parent waits for the exit without a `SIGCHLD`
//!   handler and signals the child without racing pid reuse.
//! - **No orphans:** the child asks the kernel for `SIGKILL` when its parent dies
//!   (`PR_SET_PDEATHSIG`, checked against the parent's pid to close the race with an
//!   early death), and also shuts down when its channel to the parent closes.
//! - **Process groups:** each child leads its own group, so terminate and kill reach any
//!   subprocess it started (actors it spawned have groups of their own and are stopped by
//!   their own parent, or die with it).
//! - **Stdio:** children share the parent's stdout and stderr unless told otherwise; their
//!   log lines carry their tree path.
//!
//! ```no_run
//! use spawn_api::{Brood, Registry};
//! let brood = Brood::builder()
//!     .registry(Registry::new())
//!     .backend(spawn_proc::ProcBackend::new())
//!     .build();
//! brood.enter();
//! ```

#![warn(missing_docs)]

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use spawn_api::child::{EXIT_SETUP, run_child_process};
use spawn_api::pidfd::Pidfd;
use spawn_api::{
    Brood, Child, ChildBoot, ChildExit, ChildStdio, SpawnBackend, SpawnError, SpawnRequest,
    async_trait,
};
use tokio::io::unix::AsyncFd;

/// The key of this backend.
pub const KEY: &str = "proc";

/// Environment variable carrying a child's encoded [`ChildBoot`].
pub const BOOT_ENV: &str = "BROOD_ACTOR";

/// Environment variable carrying the parent's pid, to detect a parent that died before
/// the child armed its death signal.
pub const PARENT_PID_ENV: &str = "BROOD_PARENT_PID";

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
        let launch = |source: io::Error| SpawnError::Launch {
            backend: KEY,
            actor: req.boot.path.clone(),
            source,
        };
        let exe = match &self.exe {
            Some(e) => e.clone(),
            None => PathBuf::from("/proc/self/exe"),
        };
        let mut cmd = Command::new(&exe);
        cmd.args(&self.args)
            .env(BOOT_ENV, hex(&req.boot.to_bytes()))
            .env(PARENT_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .process_group(0);
        if req.stdio == ChildStdio::Null {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        // No pre_exec hook, so std can use posix_spawn (vfork-like): spawning from a
        // large multi-threaded parent stays cheap. The child arms its death signal
        // itself, first thing in `enter`.
        let child = cmd.spawn().map_err(launch)?;
        let pid = child.id();
        // std's handle would only close pipes we did not ask for; the pidfd is ours.
        drop(child);
        let pidfd = Pidfd::open(pid)
            .and_then(Pidfd::into_async)
            .map_err(launch)?;
        Ok(Box::new(ProcChild {
            pid,
            pidfd,
            status: None,
        }))
    }

    fn enter(&self, brood: &Brood) -> Option<i32> {
        let boot = std::env::var(BOOT_ENV).ok()?;
        let parent = std::env::var(PARENT_PID_ENV).ok();
        // SAFETY: `enter` runs first thing in `main`, before the program starts threads
        // (documented on `Brood::enter`), so no other thread reads the environment. The
        // variables must not leak into processes this actor starts.
        unsafe {
            std::env::remove_var(BOOT_ENV);
            std::env::remove_var(PARENT_PID_ENV);
        }
        if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
            eprintln!("brood: cannot arm the parent-death signal: {e}");
            return Some(EXIT_SETUP);
        }
        // The parent may have died before the signal was armed: then nobody will send
        // it, and we must not run as an orphan.
        let expected = parent.and_then(|p| p.parse::<i32>().ok());
        if expected.is_some_and(|p| nix::unistd::getppid().as_raw() != p) {
            return Some(EXIT_SETUP);
        }
        let boot = match unhex(&boot).and_then(|b| ChildBoot::from_bytes(&b).ok()).ok_or("not a boot") {
            Ok(b) => b,
            Err(e) => {
                eprintln!("brood: bad {BOOT_ENV}: {e}");
                return Some(EXIT_SETUP);
            }
        };
        Some(run_child_process(brood, boot))
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
                Ok(Some(exit)) => self.status = Some(exit),
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
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        while std::time::Instant::now() < deadline {
            match self.pidfd.get_ref().try_reap() {
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(1)),
                _ => return,
            }
        }
        tracing::warn!(
            pid = self.pid,
            "a killed child did not exit in 500 ms; left to init"
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}
