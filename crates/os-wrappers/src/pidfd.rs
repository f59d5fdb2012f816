//! [`Pidfd`]: a process handle that cannot be confused with another process.
//!
//! Process backends (`spawn-proc`, `spawn-fork`) and the actor runtime supervise children through pidfds: the
//! kernel names the process by object, not by number, so a signal never reaches a
//! process that reused a dead child's pid, and the descriptor becomes readable when the
//! process exits (no `SIGCHLD` handler). The system calls std does not wrap live here,
//! each `unsafe` block with the reason it is sound; the tests exercise every call on real
//! processes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// `pidfd_send_signal` flag (Linux 6.9): signal the process group the pidfd's process
/// leads, resolved by the kernel from the pid object rather than from a number.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// Open a pidfd for `pid` (close-on-exec).
///
/// The number must name the intended process: call this as its parent before reaping it,
/// or for a process known to be alive and related (our parent, ourselves).
///
/// # Errors
/// The OS error (`ESRCH`: no such process; `ENOSYS`: a kernel before 5.3).
pub fn open(pid: u32) -> io::Result<OwnedFd> {
    let raw =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new descriptor or -1;
    // no memory of ours is involved.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(pidfd: BorrowedFd<'_>, sig: libc::c_int, flags: libc::c_uint) -> i64 {
    // SAFETY: the pidfd is a live descriptor borrowed for the call; the siginfo pointer
    // may be null (the kernel fills in a default); flags is a plain integer.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    }
}

/// Send `sig` to the process behind `pidfd`. A process that has exited (reaped or not) is
/// not an error: it is gone.
///
/// # Errors
/// Any other OS error (`EPERM`).
pub fn signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    if send(pidfd, sig, 0) < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Send `sig` to the process group led by the process behind `pidfd` (number `pid`), and
/// to the process.
///
/// On Linux 6.9 and later the kernel resolves the group from the pidfd, so this can never
/// reach an unrelated group that reused the number. Older kernels fall back to `killpg`
/// only while the leader has not exited (an unreaped leader keeps its number reserved),
/// then signal the leader through its pidfd.
///
/// # Errors
/// Any OS error but `ESRCH` (the group is gone).
pub fn signal_group(pidfd: BorrowedFd<'_>, pid: u32, sig: libc::c_int) -> io::Result<()> {
    if send(pidfd, sig, PIDFD_SIGNAL_PROCESS_GROUP) == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ESRCH) => return Ok(()),
        Some(libc::EINVAL) => {}
        _ => return Err(e),
    }
    if !has_exited(pidfd)? {
        let pgid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: killpg takes two integers and touches no memory of ours.
        let _ = unsafe { libc::killpg(pgid, sig) };
    }
    signal(pidfd, sig)
}

/// Whether `fd` is readable right now (for a pidfd: whether its process has exited).
///
/// # Errors
/// The OS error of `poll`.
pub fn has_exited(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut p = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    loop {
        // SAFETY: `p` is a live array of one pollfd for the call; timeout 0.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 1, 0) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reap the process behind `pidfd` if it has exited; `Ok(None)` if it still runs.
///
/// # Errors
/// `ECHILD` unless the caller is the process's parent (or subreaper), or it was reaped
/// already.
pub fn try_reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<ExitStatus>> {
    // SAFETY: an all-zero siginfo_t is a valid value (integers and a union of integers);
    // waitid writes into it only on success.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is live and writable for the call; the pidfd is a live descriptor;
    // P_PIDFD is the id type for a pidfd.
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
    // SAFETY: waitid succeeded, so the si_pid/si_status fields of the SIGCHLD variant are
    // the ones it filled in (both zero if the child has not changed state).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    // Rebuild the classic wait status (what std's ExitStatus holds) from waitid's split
    // report: an exit code in bits 8..16, or the signal in bits 0..7 with 0x80 for a core.
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        other => {
            return Err(io::Error::other(format!(
                "waitid reported si_code {other} for an exited child"
            )));
        }
    };
    Ok(Some(ExitStatus::from_raw(raw)))
}

/// Register `fd` with the current tokio reactor for `interest`.
///
/// # Errors
/// The reactor's registration error.
///
/// # Panics
/// Outside a tokio runtime.
pub fn register(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd owns its descriptor and returns that same descriptor from
    // as_raw_fd until dropped; the AsyncFd takes ownership of it, so the descriptor stays
    // open and the same for the AsyncFd's whole life.
    let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) };
    Ok(fd?)
}

/// A pidfd and the pid it was opened for.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: u32,
}

impl Pidfd {
    /// Open a pidfd for `pid`; see [`open`].
    ///
    /// # Errors
    /// As [`open`].
    pub fn open(pid: u32) -> io::Result<Pidfd> {
        Ok(Pidfd {
            fd: open(pid)?,
            pid,
        })
    }

    /// Wrap a pidfd obtained elsewhere (received over a socket) for process `pid`.
    pub fn from_owned(fd: OwnedFd, pid: u32) -> Pidfd {
        Pidfd { fd, pid }
    }

    /// The pid this pidfd was opened for.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// [`signal`] the process.
    ///
    /// # Errors
    /// As [`signal`].
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        signal(self.fd.as_fd(), sig)
    }

    /// [`signal_group`] the process's group.
    ///
    /// # Errors
    /// As [`signal_group`].
    pub fn signal_group(&self, sig: libc::c_int) -> io::Result<()> {
        signal_group(self.fd.as_fd(), self.pid, sig)
    }

    /// Whether the process has exited; see [`has_exited`].
    ///
    /// # Errors
    /// As [`has_exited`].
    pub fn has_exited(&self) -> io::Result<bool> {
        has_exited(self.fd.as_fd())
    }

    /// [`try_reap`] the process.
    ///
    /// # Errors
    /// As [`try_reap`].
    pub fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        try_reap(self.fd.as_fd())
    }

    /// Register with the current tokio reactor: readable once the process exits.
    ///
    /// # Errors
    /// The reactor's registration error.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn into_async(self) -> io::Result<tokio::io::unix::AsyncFd<Pidfd>> {
        // SAFETY: a Pidfd owns its descriptor and returns that same descriptor from
        // as_raw_fd for as long as it lives; the AsyncFd takes ownership of it, so the
        // descriptor stays open and the same for the AsyncFd's whole life.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(self, tokio::io::Interest::READABLE)
        };
        Ok(fd?)
    }
}

impl AsRawFd for Pidfd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
// The tests reap through the pidfd under test, which std's lint cannot see.
#[allow(clippy::zombie_processes)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn reap(fd: &Pidfd) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = fd.try_reap().unwrap() {
                return e;
            }
            assert!(Instant::now() < deadline, "child did not exit");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn exit_codes_and_signals_are_reported() {
        let c = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let fd = Pidfd::open(c.id()).unwrap();
        assert_eq!(fd.pid(), c.id());
        assert_eq!(reap(&fd).code(), Some(3));

        let c = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        let fd = Pidfd::open(c.id()).unwrap();
        let status = reap(&fd);
        assert_eq!((status.signal(), status.core_dumped()), (Some(9), false));
    }

    #[test]
    fn a_running_child_is_not_reaped_until_signalled() {
        let c = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = Pidfd::open(c.id()).unwrap();
        assert_eq!(fd.try_reap().unwrap(), None);
        assert!(!fd.has_exited().unwrap());
        fd.signal(libc::SIGTERM).unwrap();
        assert_eq!(reap(&fd).signal(), Some(libc::SIGTERM));
        assert!(fd.has_exited().unwrap());
        assert!(
            fd.signal(libc::SIGKILL).is_ok(),
            "a gone process is not an error"
        );
        assert!(fd.try_reap().is_err(), "reaped already");
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
        let fd = Pidfd::open(c.id()).unwrap();
        let mut out = String::new();
        let mut stdout = std::io::BufReader::new(c.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut stdout, &mut out).unwrap();
        let grandchild: i32 = out.trim().parse().unwrap();
        fd.signal_group(libc::SIGKILL).unwrap();
        assert_eq!(reap(&fd).signal(), Some(9));
        let deadline = Instant::now() + Duration::from_secs(5);
        // The grandchild is re-parented and reaped by init or a subreaper; wait until its
        // pid no longer names a live process.
        while std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
        {
            assert!(
                Instant::now() < deadline,
                "grandchild survived the group kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            fd.signal_group(libc::SIGKILL).is_ok(),
            "a gone group is not an error"
        );
    }

    #[test]
    fn reaping_a_process_that_is_not_our_child_fails() {
        let fd = Pidfd::open(std::process::id()).unwrap();
        assert_eq!(
            fd.try_reap().unwrap_err().raw_os_error(),
            Some(libc::ECHILD)
        );
    }

    #[test]
    fn an_async_pidfd_wakes_when_the_process_exits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Command::new("sleep").arg("0.05").spawn().unwrap();
            let fd = Pidfd::open(c.id()).unwrap().into_async().unwrap();
            let _ready = tokio::time::timeout(Duration::from_secs(5), fd.readable())
                .await
                .expect("readable on exit")
                .unwrap();
            let status = fd.get_ref().try_reap().unwrap().expect("reaped");
            assert_eq!(status.code(), Some(0));
        });
    }
}
