//! The system calls nix has no safe wrapper for. Every unsafe block of the crate is here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Which side of a [`fork`] we are on.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The old one, with the new one's pid.
    Parent(libc::pid_t),
}

/// The number of threads of this process (`/proc/self/task`).
pub(crate) fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// `fork()`.
///
/// The caller must have checked that the process has a single thread ([`thread_count`]):
/// then the child is an exact copy of a process in a consistent state (no lock held by a
/// thread that does not exist in it), and may run ordinary code.
pub(crate) fn fork_single_threaded() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety precondition of its own; the hazard of a forked
    // multi-threaded process (locks held by threads that are gone) is excluded by the
    // caller, which checked that this process runs one thread.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// End the process now, without running destructors or `atexit` handlers (which belong
/// to the process it was forked from).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` only ends the process.
    unsafe { libc::_exit(code) }
}

/// Bring the loopback interface of this network namespace up.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: socket() takes no pointers; the result is checked before it is owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor socket() just returned, owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data, for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`, which lives
    // for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS just filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`, which lives for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Make the mount at `path`, and with `recursive` every mount below it, read-only
/// (`on`) or writable (`!on`), in this mount namespace only.
pub(crate) fn set_read_only(path: &Path, on: bool, recursive: bool) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let attr = MountAttr {
        attr_set: if on { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: if on { 0 } else { MOUNT_ATTR_RDONLY },
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: the path is a NUL-terminated string and `attr` a mount_attr whose size is
    // passed; both live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SECBIT_NOROOT`, `SECBIT_NOROOT_LOCKED`, `SECBIT_NO_CAP_AMBIENT_RAISE` and its lock
/// (`<linux/securebits.h>`).
const SECUREBITS: libc::c_ulong = 1 | 1 << 1 | 1 << 6 | 1 << 7;

/// Give up every capability (effective, permitted, inheritable, ambient), for good: the
/// locked securebits keep an exec by uid 0 from granting the bounding set again.
///
/// The bounding set itself is left alone: the kernel bounds a new user namespace's
/// capabilities by it, and a sandboxed actor must still be able to start a child in a
/// tighter sandbox of its own (which needs the capabilities a new user namespace gives).
pub(crate) fn drop_capabilities() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_SECUREBITS, bits) takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0) } < 0 {
        let e = io::Error::last_os_error();
        // EPERM: no CAP_SETPCAP, so no capabilities to lose (an ordinary user outside a
        // user namespace); an exec cannot give it root's either.
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    // SAFETY: prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL) takes integers only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and the two data words that version
    // calls for; both live for the call.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Install the classic-BPF seccomp filter `program` on this thread (`no_new_privs` set
/// first, or the kernel refuses).
pub(crate) fn install_seccomp(program: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a filter too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) reads `len` instructions
    // from `filter`, which points into `program`; both outlive the call, and the kernel
    // copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `PR_SET_NO_NEW_PRIVS`.
pub(crate) fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `PR_SET_NO_NEW_PRIVS` is set.
#[cfg(test)]
pub(crate) fn no_new_privs() -> bool {
    // SAFETY: prctl(PR_GET_NO_NEW_PRIVS) takes integers only.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 }
}

/// Where [`on_abort`] writes: the keeper's death-note pipe (-1: none).
static DEATH_NOTE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_abort(signal: libc::c_int) {
    let fd = DEATH_NOTE.load(std::sync::atomic::Ordering::Relaxed);
    let byte = signal as u8;
    // SAFETY: write and pause are async-signal-safe; `byte` lives for the call. The
    // keeper kills this process once it reads the note, so pause never returns for long.
    unsafe {
        libc::write(fd, (&byte as *const u8).cast(), 1);
        loop {
            libc::pause();
        }
    }
}

/// In a pid namespace's pid 1: make `abort()` end the process with `SIGABRT` as seen
/// from outside. The kernel drops a signal that pid 1 sends itself while its disposition
/// is the default, so glibc's `abort` falls through to a faulting instruction and the
/// parent would read `SIGSEGV`. Instead the handler writes the signal on `note` (the
/// keeper's pipe) and waits; the keeper kills this process and ends with `SIGABRT`.
/// `note` must stay open for the life of the process.
pub(crate) fn report_abort_to(note: std::os::fd::RawFd) -> io::Result<()> {
    DEATH_NOTE.store(note, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: sigaction reads a sigaction struct built here (all-zero is valid for it)
    // that names a handler of the right signature; it lives for the call.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// End this process the way another one ended: killed by `signal`, with no core dump.
pub(crate) fn die_by(signal: libc::c_int) -> ! {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct, which lives for the call; signal() and
    // sigprocmask take a valid signal number and a set built here; kill names this
    // process. None of them touches memory of ours beyond that.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
    }
    // A signal whose default is not to end the process (it never kills one).
    exit_now(128 + signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_exits_with_its_code() {
        // The test harness runs threads, so this only checks the call's plumbing in a
        // child that exits at once.
        match fork_single_threaded().unwrap() {
            Forked::Child => exit_now(7),
            Forked::Parent(pid) => {
                let status =
                    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 7)
                );
            }
        }
    }

    #[test]
    fn die_by_reports_the_signal() {
        match fork_single_threaded().unwrap() {
            Forked::Child => die_by(libc::SIGTERM),
            Forked::Parent(pid) => {
                let status =
                    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
                assert!(matches!(
                    status,
                    nix::sys::wait::WaitStatus::Signaled(
                        _,
                        nix::sys::signal::Signal::SIGTERM,
                        false
                    )
                ));
            }
        }
    }

    #[test]
    fn no_new_privs_sticks_in_a_child() {
        match fork_single_threaded().unwrap() {
            Forked::Child => {
                let ok = set_no_new_privs().is_ok() && no_new_privs();
                exit_now(if ok { 0 } else { 1 })
            }
            Forked::Parent(pid) => {
                let status =
                    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
                assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)));
            }
        }
    }
}
