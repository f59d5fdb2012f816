//! The system calls this backend needs that std does not offer safely: `fork`, pidfds,
//! `waitid(P_PIDFD)`, descriptor passing, `close_range`, signal resets, `poll`, `_exit`.
//!
//! Every `unsafe` block of the crate is here, each with the reason it is sound; the tests
//! at the bottom exercise each call against real processes.

use std::ffi::{OsStr, OsString};
use std::io::{self, IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Proof that the process had one thread when it was made, which is what makes
/// [`fork`] sound. The forkserver makes one at start-up and never starts a thread; the
/// token is neither `Send` nor `Sync`, so it stays on the thread that checked.
#[derive(Debug)]
pub(crate) struct SingleThreaded(PhantomData<*const ()>);

impl SingleThreaded {
    /// Check `/proc/self/status`: `Ok` only if this process has exactly one thread.
    pub(crate) fn check() -> io::Result<SingleThreaded> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<u32>().ok());
        match threads {
            Some(1) => Ok(SingleThreaded(PhantomData)),
            Some(n) => Err(io::Error::other(format!(
                "the process has {n} threads; fork needs exactly one"
            ))),
            None => Err(io::Error::other("no thread count in /proc/self/status")),
        }
    }

    /// For tests whose children only call async-signal-safe functions, which is sound
    /// after a fork from a multi-threaded process.
    ///
    /// # Safety
    /// The child of every [`fork`] made with this token must call only async-signal-safe
    /// functions until it execs or exits.
    #[cfg(test)]
    pub(crate) unsafe fn assume() -> SingleThreaded {
        SingleThreaded(PhantomData)
    }
}

/// Which side of a [`fork`] this is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The caller, with the child's pid.
    Parent(u32),
}

/// `fork()`. The token proves the process is single-threaded, so the child gets a
/// consistent copy of every lock and allocator state and may run ordinary Rust code.
pub(crate) fn fork(_single: &SingleThreaded) -> io::Result<Forked> {
    // SAFETY: with one thread there is no other thread whose locks or partial updates
    // the child could inherit mid-way, which is the only hazard of fork; glibc's fork
    // wrapper resets its own internal state in the child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        p => Ok(Forked::Parent(p as u32)),
    }
}

/// Close every descriptor from 3 up except those in `keep`. Async-signal-safe.
///
/// Whatever owned the closed descriptors in this process must never be dropped
/// afterwards (a freshly forked child that ends with `_exit`), or must not exist (the
/// start of the server, which owns nothing yet but what it keeps).
pub(crate) fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep_sorted = [libc::c_uint::MAX; 4];
    let n = keep.len().min(keep_sorted.len());
    for (k, fd) in keep_sorted.iter_mut().zip(keep) {
        *k = libc::c_uint::try_from(*fd).unwrap_or(libc::c_uint::MAX);
    }
    keep_sorted[..n].sort_unstable();
    let mut first: libc::c_uint = 3;
    for &k in keep_sorted[..n].iter().filter(|&&k| k >= 3) {
        if k > first {
            close_range(first, k - 1)?;
        }
        first = first.max(k.saturating_add(1));
    }
    close_range(first, libc::c_uint::MAX)
}

fn close_range(first: libc::c_uint, last: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range takes integers only; the caller vouches that nothing will use
    // or drop the descriptors it closes (see `close_fds_except`).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    // Before Linux 5.9: one close per possible descriptor, up to the limit.
    // SAFETY: an all-zero rlimit is a valid value for getrlimit to overwrite.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a live, writable rlimit.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as libc::c_uint
    } else {
        1 << 16
    };
    for fd in first..=last.min(max) {
        // SAFETY: as for close_range above; EBADF for numbers not open is harmless.
        unsafe { libc::close(fd as RawFd) };
    }
    Ok(())
}

/// Make `target` a copy of `fd` (`dup2`): it loses close-on-exec; its old file is
/// closed.
pub(crate) fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == target {
        return Ok(());
    }
    // SAFETY: dup2 takes integers only. `target` is one of the standard descriptors,
    // which the process owns for its whole life (std never closes them).
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Block `SIGCHLD` (to read it from a signalfd instead); returns the mask as it was.
pub(crate) fn block_sigchld() -> io::Result<libc::sigset_t> {
    // SAFETY: all-zero sigset_t values are valid for sigemptyset/sigprocmask to fill.
    let (mut set, mut old): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: both sets are live and writable; sigprocmask only reads `set` and writes
    // `old`.
    let r = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// Set the signal mask to `mask`. Async-signal-safe.
pub(crate) fn set_signal_mask(mask: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `mask` is a valid, initialised set borrowed for the call; the old mask is
    // not wanted (null).
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Have the kernel `SIGKILL` process group `pgid` as soon as `sock` has input or its peer
/// goes away (`O_ASYNC` with the signal set to `SIGKILL`). Nothing in the process has to
/// run for it to happen. Async-signal-safe.
///
/// Arm it before checking whether the peer is already gone, or a close in between goes
/// unnoticed.
pub(crate) fn kill_group_on_input(sock: BorrowedFd<'_>, pgid: u32) -> io::Result<()> {
    // Linux's F_SETSIG (fcntl.h), which the libc crate does not export.
    const F_SETSIG: libc::c_int = 10;
    let fd = sock.as_raw_fd();
    let pgid =
        libc::pid_t::try_from(pgid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fcntl with F_SETOWN (a negative owner names a process group), F_SETSIG and
    // F_GETFL/F_SETFL takes integers only and changes flags of a descriptor we hold.
    let ok = unsafe {
        libc::fcntl(fd, libc::F_SETOWN, -pgid) == 0
            && libc::fcntl(fd, F_SETSIG, libc::SIGKILL) == 0
            && {
                let fl = libc::fcntl(fd, libc::F_GETFL);
                fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_ASYNC) == 0
            }
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// End the process now with `code`, running no destructors and no `atexit` handlers
/// (a forked child must not run the ones the forkserver registered).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Take ownership of a descriptor inherited across exec, after checking it is open.
pub(crate) fn adopt_inherited_fd(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {raw} is a standard stream"),
        ));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open, and the process that exec'd us passed it for us
    // alone (its number came in our environment); nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: F_SETFD with FD_CLOEXEC only sets a flag on a descriptor we now own.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(fd)
}

/// Take ownership of a descriptor `accept4` just returned (`None` for a negative one).
pub(crate) fn adopt_accepted(raw: RawFd) -> Option<OwnedFd> {
    if raw < 0 {
        return None;
    }
    // SAFETY: accept4 returned this new descriptor to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Let `fds` (close-on-exec in this process) survive the exec of `cmd`: they are
/// cleared of close-on-exec in the child only, so no other process this program starts
/// meanwhile inherits them.
pub(crate) fn inherit_on_exec(cmd: &mut Command, fds: [RawFd; 2]) {
    let hook = move || -> io::Result<()> {
        for fd in fds {
            // SAFETY: fcntl is async-signal-safe and only changes a flag of a descriptor
            // of this (forked, about to exec) child.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec in a child of a possibly
    // multi-threaded parent; it calls fcntl only, which is async-signal-safe, and neither
    // allocates nor takes locks.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Read and remove an environment variable of this process, but only if the process is
/// single-threaded: `Ok(None)` if it is not set; an error (and the environment untouched)
/// if another thread exists.
///
/// The environment is process-global and unsynchronised in libc: removing a variable
/// while another thread reads it (`getenv` in any library) is undefined behaviour. So the
/// thread count is checked first, here, rather than taken on the caller's word; the
/// token that proves it is returned, since a caller that needs one thread (the
/// forkserver) needs it for `fork` too.
pub(crate) fn take_env(key: impl AsRef<OsStr>) -> io::Result<Option<(OsString, SingleThreaded)>> {
    let key = key.as_ref();
    if std::env::var_os(key).is_none() {
        return Ok(None);
    }
    let single = SingleThreaded::check()?;
    let Some(value) = std::env::var_os(key) else {
        return Ok(None);
    };
    // SAFETY: `check` has just seen exactly one thread in the process, and it is this one,
    // running this function: no other thread exists to read or write the environment
    // concurrently, and none can be started before `remove_var` returns.
    unsafe { std::env::remove_var(key) };
    Ok(Some((value, single)))
}

/// What `/proc/self/fdinfo/<fd>` says about a descriptor that should be a pidfd: the pid
/// of its process (in our pid namespace), from its `Pid:` line; `Ok(None)` if there is
/// no such line, so that the descriptor is no pidfd. `-1` (or `0` on older kernels)
/// means the process has been reaped or is outside our pid namespace.
pub(crate) fn pidfd_pid(fd: BorrowedFd<'_>) -> io::Result<Option<i64>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i64>().ok()))
}

/// The parent of process `pid` (`PPid:` in `/proc/<pid>/status`); `Ok(None)` if the
/// file has no such line.
pub(crate) fn parent_of(pid: u32) -> io::Result<Option<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse::<u32>().ok()))
}

/// The address family and type of socket `fd` (`SO_DOMAIN`, `SO_TYPE`); `ENOTSOCK` for
/// a descriptor that is not a socket.
pub(crate) fn socket_kind(fd: BorrowedFd<'_>) -> io::Result<(libc::c_int, libc::c_int)> {
    let get = |opt: libc::c_int| -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live and writable for the call, and `len` is the size
        // of `v`, so the kernel writes at most that many bytes into it.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw mut v).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v)
    };
    Ok((get(libc::SO_DOMAIN)?, get(libc::SO_TYPE)?))
}

/// The credentials the kernel holds for the peer of Unix socket `fd` (`SO_PEERCRED`):
/// `(pid, uid)`. For a connection to a listening socket they are those of the process
/// that called `listen()`; for a socketpair, those of the process that created it. The
/// pid is 0 if that process is gone or outside our pid namespace.
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<(i32, u32)> {
    let c = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok((c.pid(), c.uid()))
}

/// `poll(2)` over `fds`, waiting at most `timeout_ms` (-1: forever). Returns how many
/// entries have events; an interrupted call returns 0.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: the pointer and length describe a live, writable slice of pollfd for the
    // duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// Send one datagram with `fds` attached, without blocking and without `SIGPIPE`.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    send_parts_with_fds(sock, &[bytes], fds)
}

/// Send one datagram made of `parts` in order, with `fds` attached (at most four),
/// without blocking and without `SIGPIPE`: a header and a body that lives elsewhere go
/// out without being copied together first.
pub(crate) fn send_parts_with_fds(
    sock: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let raw: [RawFd; 4] = std::array::from_fn(|i| fds.get(i).map_or(-1, |f| f.as_raw_fd()));
    let raw = &raw[..fds.len().min(4)];
    let cmsg = [ControlMessage::ScmRights(raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let iov: [IoSlice<'_>; 2] =
        std::array::from_fn(|i| IoSlice::new(parts.get(i).copied().unwrap_or_default()));
    if parts.len() > iov.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "at most two parts per datagram",
        ));
    }
    sendmsg::<()>(sock.as_raw_fd(), &iov[..parts.len()], cmsgs, flags, None)
        .map_err(io::Error::from)
}

/// One received datagram.
#[derive(Debug)]
pub(crate) struct Received {
    /// Its length (0: the peer closed the connection).
    pub(crate) len: usize,
    /// Whether it did not fit the buffer.
    pub(crate) truncated: bool,
    /// The descriptors that came with it, close-on-exec.
    pub(crate) fds: Vec<OwnedFd>,
}

/// Receive one datagram and its descriptors (at most four) without blocking.
pub(crate) fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut space = [0u8; 64];
    let mut iov = [IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags)
        .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                // SAFETY: SCM_RIGHTS installed these descriptors in our table for this
                // message only; nothing else knows their numbers.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        truncated: msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
        fds,
    })
}

/// A non-blocking Unix seqpacket pair, as the server makes for a link or an idle child:
/// for the tests of the modules that pass such sockets around.
#[cfg(test)]
pub(crate) fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .unwrap()
}

#[cfg(test)]
// The tests reap through the pidfd under test, which std's lint cannot see.
#[allow(clippy::zombie_processes)]
mod tests {
    use super::*;
    use os_wrappers::pidfd::{has_exited as is_readable, open as pidfd_open, register, try_reap};
    use spawn_api::ChildExit;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    fn reap(fd: &OwnedFd) -> ChildExit {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = try_reap(fd.as_fd()).unwrap() {
                return ChildExit::from_status(e);
            }
            assert!(Instant::now() < deadline, "child did not exit");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Fork a child that runs `f` (async-signal-safe calls only) and exits with its
    /// result; returns the child's exit.
    fn in_child(f: impl FnOnce() -> i32) -> ChildExit {
        // SAFETY: every closure passed here calls async-signal-safe functions only.
        let token = unsafe { SingleThreaded::assume() };
        match fork(&token).unwrap() {
            Forked::Child => exit_now(f()),
            Forked::Parent(pid) => reap(&pidfd_open(pid).unwrap()),
        }
    }

    #[test]
    fn fork_exit_and_reap_through_a_pidfd() {
        assert_eq!(in_child(|| 7), ChildExit::Exited(7));
    }

    #[test]
    fn a_multi_threaded_process_gets_no_fork_token() {
        // The test harness runs threads, and this spawns one more: the check must refuse.
        let e = std::thread::spawn(|| SingleThreaded::check().map(|_| ()))
            .join()
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("threads"), "{e}");
    }

    #[test]
    fn close_fds_except_keeps_one_and_the_standard_streams() {
        let keep = std::fs::File::open("/dev/null").unwrap();
        let other = std::fs::File::open("/dev/null").unwrap();
        let (k, o) = (keep.as_raw_fd(), other.as_raw_fd());
        let exit = in_child(|| {
            if close_fds_except(&[k]).is_err() {
                return 1;
            }
            // SAFETY: (in the test child) fcntl(F_GETFD) only reads flags.
            let open = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
            match (open(0), open(2), open(k), open(o)) {
                (true, true, true, false) => 0,
                _ => 2,
            }
        });
        assert_eq!(exit, ChildExit::Exited(0));
    }

    #[test]
    fn the_signal_mask_is_saved_and_restored() {
        let exit = in_child(|| {
            let Ok(old) = block_sigchld() else { return 1 };
            // SAFETY: (in the test child) reading the mask only.
            let blocked = |sig| unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigprocmask(libc::SIG_SETMASK, std::ptr::null(), &mut set);
                libc::sigismember(&set, sig) == 1
            };
            // SAFETY: (in the test child) as above.
            let was_blocked = unsafe { libc::sigismember(&old, libc::SIGCHLD) == 1 };
            if was_blocked || !blocked(libc::SIGCHLD) {
                return 2;
            }
            if set_signal_mask(&old).is_err() || blocked(libc::SIGCHLD) {
                return 3;
            }
            0
        });
        assert_eq!(exit, ChildExit::Exited(0));
    }

    #[test]
    fn the_kernel_kills_the_group_when_the_peer_goes_away() {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // SAFETY: the child calls close_range, setpgid, fcntl, write and pause only, all
        // async-signal-safe.
        let token = unsafe { SingleThreaded::assume() };
        let pid = match fork(&token).unwrap() {
            Forked::Child => {
                // As the real child does: only the parent may hold the other end.
                if close_fds_except(&[theirs.as_raw_fd()]).is_err() {
                    exit_now(3);
                }
                // SAFETY: (in the test child) setpgid and getpid take and return integers.
                let me = unsafe {
                    libc::setpgid(0, 0);
                    libc::getpid()
                };
                if kill_group_on_input(theirs.as_fd(), me as u32).is_err() {
                    exit_now(1);
                }
                // SAFETY: (in the test child) write reads one byte of a live static buffer.
                unsafe { libc::write(theirs.as_raw_fd(), b"r".as_ptr().cast(), 1) };
                loop {
                    // SAFETY: (in the test child) pause only waits for a signal.
                    unsafe { libc::pause() };
                }
            }
            Forked::Parent(pid) => pid,
        };
        let fd = pidfd_open(pid).unwrap();
        drop(theirs);
        let mut ours = std::os::unix::net::UnixStream::from(ours);
        ours.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(
            ours.read(&mut [0u8; 1]).unwrap(),
            1,
            "the child armed the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            try_reap(fd.as_fd()).unwrap().map(ChildExit::from_status),
            None,
            "alive while we hold our end"
        );
        drop(ours);
        assert_eq!(
            reap(&fd),
            ChildExit::Signaled {
                signal: libc::SIGKILL,
                core_dumped: false
            }
        );
    }

    #[test]
    fn dup_onto_replaces_a_descriptor() {
        let (mut r, w) = std::io::pipe().unwrap();
        let target = std::fs::File::open("/dev/null").unwrap();
        dup_onto(w.as_fd(), target.as_raw_fd()).unwrap();
        drop(w);
        let mut t: std::fs::File = target;
        t.write_all(b"hi").unwrap();
        drop(t);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi");
    }

    #[test]
    fn descriptors_travel_with_a_datagram() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (mut r, w) = std::io::pipe().unwrap();
        assert_eq!(send_with_fds(a.as_fd(), b"one", &[w.as_fd()]).unwrap(), 3);
        drop(w);
        send_with_fds(a.as_fd(), b"two", &[]).unwrap();
        let mut buf = [0u8; 2];
        let got = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert!(got.truncated, "three bytes do not fit in two");
        assert_eq!(got.fds.len(), 1);
        let mut w: std::fs::File = got.fds.into_iter().next().unwrap().into();
        w.write_all(b"through").unwrap();
        drop(w);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "through");
        let mut buf = [0u8; 8];
        let got = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..got.len], got.fds.len()), (&b"two"[..], 0));
        let e = recv_with_fds(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf).unwrap().len, 0, "EOF");
    }

    #[test]
    fn poll_sees_readiness() {
        let (r, mut w) = std::io::pipe().unwrap();
        let mut p = [libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut p, 0).unwrap(), 0);
        w.write_all(b"x").unwrap();
        assert_eq!(poll(&mut p, 1000).unwrap(), 1);
        assert!(is_readable(r.as_fd()).unwrap());
    }

    #[test]
    fn inherited_descriptors_are_adopted_and_passed_on_exec() {
        let (mut r, w) = std::io::pipe().unwrap();
        let extra = std::fs::File::open("/dev/null").unwrap();
        let raw = w.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("echo hi >&{raw}")]);
        inherit_on_exec(&mut cmd, [raw, extra.as_raw_fd()]);
        let status = cmd.status().unwrap();
        assert!(status.success());
        drop(w);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi\n");

        let raw = std::os::fd::IntoRawFd::into_raw_fd(extra.try_clone().unwrap());
        let adopted = adopt_inherited_fd(raw).unwrap();
        assert_eq!(adopted.as_raw_fd(), raw);
        assert!(adopt_inherited_fd(1).is_err(), "a standard stream");
        assert!(adopt_inherited_fd(i32::MAX - 1).is_err(), "not open");
        assert!(adopt_accepted(-1).is_none());
    }

    #[test]
    fn descriptors_are_told_apart() {
        let me = std::process::id();
        let pidfd = pidfd_open(me).unwrap();
        assert_eq!(pidfd_pid(pidfd.as_fd()).unwrap(), Some(i64::from(me)));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(pidfd_pid(file.as_fd()).unwrap(), None, "not a pidfd");
        assert_eq!(
            parent_of(me).unwrap(),
            Some(nix::unistd::getppid().as_raw() as u32)
        );
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        assert_eq!(
            socket_kind(a.as_fd()).unwrap(),
            (libc::AF_UNIX, libc::SOCK_SEQPACKET)
        );
        assert_eq!(
            peer_credentials(a.as_fd()).unwrap(),
            (me as i32, nix::unistd::geteuid().as_raw()),
            "a socketpair carries its maker's credentials"
        );
        let e = socket_kind(file.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK));
    }

    #[test]
    fn a_reaped_process_has_no_pid_behind_its_pidfd() {
        let mut c = Command::new("true").spawn().unwrap();
        let fd = pidfd_open(c.id()).unwrap();
        c.wait().unwrap();
        assert_eq!(pidfd_pid(fd.as_fd()).unwrap(), Some(-1));
    }

    #[test]
    fn an_absent_variable_is_not_taken() {
        assert!(matches!(
            take_env("BROOD_SURELY_NOT_SET_ANYWHERE"),
            Ok(None)
        ));
    }

    #[test]
    fn close_fds_except_keeps_several_in_any_order() {
        let files: Vec<std::fs::File> = (0..4)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let (a, b, c, d) = (raw[0], raw[1], raw[2], raw[3]);
        let exit = in_child(|| {
            if close_fds_except(&[d, b]).is_err() {
                return 1;
            }
            // SAFETY: (in the test child) fcntl(F_GETFD) only reads flags.
            let open = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
            match (open(a), open(b), open(c), open(d), open(1)) {
                (false, true, false, true, true) => 0,
                _ => 2,
            }
        });
        assert_eq!(exit, ChildExit::Exited(0));
    }

    #[test]
    fn a_registered_descriptor_wakes_its_task() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (r, mut w) = std::io::pipe().unwrap();
        rt.block_on(async {
            let fd = register(OwnedFd::from(r), tokio::io::Interest::READABLE).unwrap();
            let waiter = tokio::spawn(async move {
                let _ready = fd.readable().await.unwrap();
            });
            tokio::task::yield_now().await;
            w.write_all(b"x").unwrap();
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .unwrap();
        });
    }
}
