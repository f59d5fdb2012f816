//! The thread every child process is started from.
//!
//! `PR_SET_PDEATHSIG` (how a child dies with its parent) fires when the *thread* that
//! created the child exits, not the process (prctl(2)). A child started from a tokio
//! blocking-pool thread that retires, or from a scoped helper thread, would be SIGKILLed
//! while its parent lives on. So children are started from one thread that lives as long
//! as the process: it takes requests over a channel and never returns.
//!
//! The thread is process-wide infrastructure, not actor state: it holds nothing between
//! requests.

use std::io;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc;

use os_wrappers::Pidfd;
use tokio::sync::oneshot;

/// A started child: its pid and a pidfd opened before anyone could reap it.
pub(crate) struct Started {
    pub(crate) pid: u32,
    pub(crate) pidfd: Pidfd,
}

struct Request {
    cmd: Command,
    reply: oneshot::Sender<io::Result<Started>>,
}

fn spawner() -> io::Result<&'static mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<Request>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("brood-spawner".to_owned())
                .spawn(move || serve(rx))
                .map(|_| tx)
                .map_err(|e| format!("cannot start the spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

/// Start the spawner thread now (otherwise the first spawn does). For programs that
/// count their threads (test harnesses) or want the first spawn to be as fast as the
/// others.
///
/// # Errors
/// The OS error if the thread cannot be created.
pub fn start_spawner() -> io::Result<()> {
    spawner().map(|_| ())
}

/// Start `cmd` from the spawner thread.
///
/// Cancel safety: cancel-safe: if the future is dropped after the child was started, the
/// spawner kills and reaps it (nobody would supervise it).
pub(crate) async fn spawn(cmd: Command) -> io::Result<Started> {
    let (reply, rx) = oneshot::channel();
    spawner()?
        .send(Request { cmd, reply })
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))?
}

fn serve(rx: mpsc::Receiver<Request>) {
    // The sender lives in a static: this loop ends only with the process.
    while let Ok(Request { mut cmd, reply }) = rx.recv() {
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start(&mut cmd)))
            .unwrap_or_else(|_| Err(io::Error::other("panicked while starting the child")));
        if let Err(Ok(orphan)) = reply.send(started) {
            // The spawn was given up while we started it: the child must not run
            // unsupervised.
            tracing::debug!(
                pid = orphan.pid,
                "killing a child whose spawn was abandoned"
            );
            let _ = orphan.pidfd.signal_group(libc::SIGKILL);
            reap_blocking(&orphan.pidfd, std::time::Duration::from_secs(1));
        }
    }
}

fn start(cmd: &mut Command) -> io::Result<Started> {
    let mut child: Child = cmd.spawn()?;
    let pid = child.id();
    match Pidfd::open(pid) {
        // std's handle only closes pipes we did not ask for; the pidfd supervises it.
        Ok(pidfd) => Ok(Started { pid, pidfd }),
        Err(e) => {
            // Nobody could supervise it without a pidfd: it must not run.
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Reap the (killed) process behind `pidfd`, waiting at most `bound`: for places with
/// no runtime to wait on (the spawner thread, a `Drop`). Returns whether its status was
/// collected (or is no longer ours to collect).
pub(crate) fn reap_blocking(pidfd: &Pidfd, bound: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + bound;
    loop {
        match pidfd.try_reap() {
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(None) => return false,
            _ => return true,
        }
    }
}
