//! The keeper: the process a sandbox with a pid namespace leaves outside it.
//!
//! `unshare(CLONE_NEWPID)` does not move the caller into the new namespace; its next child
//! is the namespace's pid 1. So the process the parent actor started (and supervises
//! through a pidfd) forks the actor and stays behind as its keeper, doing only this:
//!
//! - every catchable signal it receives (the ladder's `SIGTERM` to its process group,
//!   say) goes on to the actor's process group;
//! - when the actor ends, the keeper ends the same way (the same exit code, or killed by
//!   the same signal), so the parent reads the actor's status as if there were no keeper;
//! - if the keeper is killed (`SIGKILL` from the ladder, or its own parent-death signal),
//!   the actor's parent-death signal kills the namespace's pid 1, and with it the kernel
//!   kills every process of the namespace.

use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::sys;

/// The signals the keeper handles by waiting for them (blocked before the fork, so none
/// is lost between the fork and the wait).
pub(crate) fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCONT,
        Signal::SIGALRM,
    ] {
        set.add(s);
    }
    set
}

/// Block [`signals`], returning the mask to restore.
pub(crate) fn block() -> nix::Result<SigSet> {
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals()), Some(&mut old))?;
    Ok(old)
}

/// Keep `actor` (this process's child, pid 1 of its namespace and leader of its own
/// process group) until it ends, then end the same way. `alive` is the keeper's end of
/// the pipe the actor checks after arming its parent-death signal; `note` the read end
/// of the pipe on which the actor says it aborted (see [`sys::report_abort_to`]);
/// `cleanup` runs after the actor ended (it removes a cgroup).
pub(crate) fn keep(actor: libc::pid_t, alive: OwnedFd, note: OwnedFd, cleanup: impl FnOnce()) -> ! {
    let pid = Pid::from_raw(actor);
    let signals = match SignalFd::with_flags(&signals(), SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => fd,
        Err(_) => {
            // Cannot keep it: it must not run unkept.
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            sys::exit_now(spawn_api::EXIT_SETUP);
        }
    };
    let mut noted = None;
    let status = loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(note.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        if noted.is_none() && fds[1].any().unwrap_or(false) {
            let mut byte = [0u8; 1];
            if let Ok(1) = nix::unistd::read(&note, &mut byte) {
                // The actor aborted and waits in its handler: end it for good.
                noted = Signal::try_from(byte[0] as libc::c_int).ok();
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
        }
        let signal = match signals.read_signal() {
            Ok(Some(info)) => match Signal::try_from(info.ssi_signo as libc::c_int) {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ => continue,
        };
        if signal != Signal::SIGCHLD {
            // To the actor's group: whatever the actor started itself hears it too, as it
            // would without a keeper.
            let _ = nix::sys::signal::killpg(pid, signal);
            continue;
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break status,
            Ok(_) => {}
            Err(_) => break WaitStatus::Exited(pid, STATUS_LOST),
        }
    };
    drop(alive);
    cleanup();
    if let Some(signal) = noted {
        sys::die_by(signal as libc::c_int);
    }
    match status {
        WaitStatus::Exited(_, code) => sys::exit_now(code),
        WaitStatus::Signaled(_, signal, _) => sys::die_by(signal as libc::c_int),
        _ => sys::exit_now(STATUS_LOST),
    }
}

/// The keeper's exit code when the actor's status could not be collected (it cannot
/// happen short of a kernel bug, but the keeper must end somehow).
const STATUS_LOST: i32 = 125;
