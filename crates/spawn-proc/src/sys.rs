//! The few system calls std does not wrap: pidfds and `waitid(P_PIDFD)`.
//!
//! Every unsafe block is here, each with the reason it is sound; the tests at the bottom
//! exercise each call against real processes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use spawn_api::ChildExit;

/// Open a pidfd for `pid`, close-on-exec.
///
/// The caller must own `pid` as an unreaped child, so the number cannot have been
/// reused by another process.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new descriptor or
    // -1; no memory is passed. PIDFD_NONBLOCK is not set, so waitid with WNOHANG is what
    // keeps the wait non-blocking.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    // pidfds are created close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Register a pidfd with the current tokio reactor (readable when the process exits).
pub(crate) fn register(pidfd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd always returns the descriptor it owns from as_raw_fd, and the
    // AsyncFd takes ownership of it, so the descriptor stays open and the same for the
    // AsyncFd's whole life.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    };
    Ok(fd?)
}

/// Send `sig` to the process behind `pidfd`. Sending to a process that has exited but
/// is not reaped yet fails with ESRCH, which is reported as success: it is gone.
pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd is a valid descriptor we own; the siginfo pointer may be null
    // (the kernel then fills in a default), and flags must be 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Send `sig` to the process group `pgid` (a child we spawned as a group leader). A
/// group that no longer exists is not an error.
pub(crate) fn signal_group(pgid: u32, sig: libc::c_int) -> io::Result<()> {
    let pgid =
        libc::pid_t::try_from(pgid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: killpg takes two integers and touches no memory of ours.
    let r = unsafe { libc::killpg(pgid, sig) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Reap the process behind `pidfd` if it has exited; `Ok(None)` if it still runs.
pub(crate) fn try_reap(pidfd: &OwnedFd) -> io::Result<Option<ChildExit>> {
    // SAFETY: an all-zero siginfo_t is a valid value (plain integers and a union of
    // integers); waitid writes into it only on success.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a live, writable siginfo_t for the duration of the call; pidfd is
    // a valid descriptor we own; P_PIDFD is the id type for a pidfd.
    let r = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid succeeded, so the si_pid/si_status fields of the SIGCHLD variant
    // are the ones it filled in (both zero if the child has not changed state).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => ChildExit::Exited(status),
        libc::CLD_KILLED => ChildExit::Signaled {
            signal: status,
            core_dumped: false,
        },
        libc::CLD_DUMPED => ChildExit::Signaled {
            signal: status,
            core_dumped: true,
        },
        other => ChildExit::Unknown {
            reason: format!("waitid reported si_code {other}"),
        },
    }))
}

#[cfg(test)]
// The tests reap through the pidfd under test, which std's lint cannot see.
#[allow(clippy::zombie_processes)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn reap(fd: &OwnedFd) -> ChildExit {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = try_reap(fd).unwrap() {
                return e;
            }
            assert!(Instant::now() < deadline, "child did not exit");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn exit_codes_and_signals_are_reported() {
        let c = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let fd = pidfd_open(c.id()).unwrap();
        assert_eq!(reap(&fd), ChildExit::Exited(3));

        let c = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        let fd = pidfd_open(c.id()).unwrap();
        assert_eq!(
            reap(&fd),
            ChildExit::Signaled {
                signal: 9,
                core_dumped: false
            }
        );
    }

    #[test]
    fn a_running_child_is_not_reaped_until_signalled() {
        let c = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = pidfd_open(c.id()).unwrap();
        assert_eq!(try_reap(&fd).unwrap(), None);
        pidfd_send_signal(&fd, libc::SIGTERM).unwrap();
        assert_eq!(
            reap(&fd),
            ChildExit::Signaled {
                signal: libc::SIGTERM,
                core_dumped: false
            }
        );
        // Reaped: signalling again is harmless... and reaping again is an error.
        assert!(try_reap(&fd).is_err());
    }

    #[test]
    fn group_signals_reach_grandchildren() {
        use std::os::unix::process::CommandExt;
        // sh starts a sleep in the background and waits; both are in the new group.
        let mut c = Command::new("sh")
            .args(["-c", "sleep 30 & echo $! ; wait"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let fd = pidfd_open(c.id()).unwrap();
        let mut out = String::new();
        let mut stdout = std::io::BufReader::new(c.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut stdout, &mut out).unwrap();
        let grandchild: i32 = out.trim().parse().unwrap();
        signal_group(c.id(), libc::SIGKILL).unwrap();
        assert!(matches!(reap(&fd), ChildExit::Signaled { signal: 9, .. }));
        let deadline = Instant::now() + Duration::from_secs(5);
        // The grandchild is reparented and reaped by init or a subreaper; wait until
        // its pid no longer names a live process.
        while std::path::Path::new(&format!("/proc/{grandchild}/stat")).exists()
            && !std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "grandchild survived the group kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            signal_group(c.id(), libc::SIGKILL).is_ok(),
            "a gone group is not an error"
        );
    }
}
