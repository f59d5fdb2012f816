//! What SIGTERM means to a process actor.
//!
//! A parent terminates a child only after the child overran its cancel step (see the
//! actor runtime's teardown ladder). A leaf child should then die at once, as SIGTERM's default
//! action does. A child that still has children of its own must not: dying would take
//! them down by their parent-death signal, skipping their ladders and every teardown hook
//! (a debugger lock waiting there included). So a process actor installs a handler that
//! keeps the default action while the actor has no live child, and otherwise turns the
//! signal into "tear your subtree down now" (a cancel of the actor, which is usually
//! under way already).
//!
//! Signal dispositions belong to the whole process, so this is the one place where
//! brood keeps process-wide state: it is installed only by the runtime's process entry
//! (`ActorMain::run_process`), for the one actor that *is* the process; in-process actors
//! never touch it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The process actor's count of live children, read by the handler.
static LIVE_CHILDREN: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
/// The write end of the pipe that wakes the actor's runtime (-1: none).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigterm(_sig: libc::c_int) {
    // Only async-signal-safe work here: atomic loads, write(2), signal(2), raise(3).
    let busy = LIVE_CHILDREN
        .get()
        .is_some_and(|c| c.load(Ordering::SeqCst) > 0);
    if busy {
        let fd = WAKE_FD.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: errno is thread-local; saving and restoring it keeps the
            // interrupted code's view intact. write(2) on a non-blocking pipe is
            // async-signal-safe; a full pipe already holds a wake-up, so a failure is fine.
            unsafe {
                let errno = libc::__errno_location();
                let saved = *errno;
                let byte = 1u8;
                let _ = libc::write(fd, (&raw const byte).cast(), 1);
                *errno = saved;
            }
        }
        return;
    }
    // SAFETY: restoring the default disposition and re-raising is what the default
    // action would have done; both calls are async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::raise(libc::SIGTERM);
    }
}

/// Install the handler for the process actor whose live children `live` counts, and
/// return the read end of the pipe that becomes readable when a SIGTERM arrives while it
/// has any. Call once per process (a second call fails).
///
/// # Errors
/// The OS error of `pipe2` or `sigaction`, or `AlreadyExists` on a second call.
pub fn install(live: Arc<AtomicUsize>) -> io::Result<OwnedFd> {
    LIVE_CHILDREN
        .set(live)
        .map_err(|_| io::Error::from(io::ErrorKind::AlreadyExists))?;
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a live array of two ints for the call to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two descriptors to us; nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The write end lives as long as the process: the handler may run at any time.
    WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(write);
    // SAFETY: an all-zero sigaction is a valid value (no flags, empty mask) that we then
    // fill in; the handler only does async-signal-safe work (see `on_sigterm`).
    let ok = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigterm as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGTERM, &act, std::ptr::null_mut()) == 0
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    Ok(read)
}
