//! The controlling terminal: opening it, and holding its signal keys while a debugger
//! prompt reads it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use nix::unistd::{self, Pid};

/// The process's controlling terminal (`/dev/tty`), for reading and writing, close-on-exec.
///
/// # Errors
/// `ENXIO` (or another OS error) when the process has no controlling terminal: a
/// daemon, a test under CI with no standard input.
pub fn open_controlling() -> io::Result<File> {
    // std opens with O_CLOEXEC.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
}

/// While alive, the terminal's signal keys (Ctrl-C, Ctrl-\, Ctrl-Z) send no signal to
/// anyone: they arrive as bytes to whoever reads the terminal. Dropping it restores the
/// terminal's settings as they were.
#[derive(Debug)]
pub struct SignalsHeld {
    fd: OwnedFd,
    saved: Termios,
}

/// Hold the signal keys of the terminal `tty` (see [`SignalsHeld`]).
///
/// ```no_run
/// let tty = os_wrappers::tty::open_controlling()?;
/// let held = os_wrappers::tty::hold_signals(&tty)?;
/// // Ctrl-C now reads as the byte 0x03.
/// drop(held);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// `ENOTTY` if `tty` is not a terminal; the OS error of `tcgetattr`/`tcsetattr`.
pub fn hold_signals(tty: &impl AsFd) -> io::Result<SignalsHeld> {
    let fd = tty.as_fd().try_clone_to_owned()?;
    let saved = termios::tcgetattr(&fd).map_err(io::Error::from)?;
    let mut held = saved.clone();
    held.local_flags.remove(LocalFlags::ISIG);
    termios::tcsetattr(&fd, SetArg::TCSANOW, &held).map_err(io::Error::from)?;
    Ok(SignalsHeld { fd, saved })
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        if let Err(e) = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved) {
            tracing::warn!(error = %e, "cannot restore the terminal's settings");
        }
    }
}

/// The foreground process group of the terminal behind `fd`, if `fd` is one.
pub fn foreground_group(fd: &impl AsFd) -> Option<i32> {
    unistd::tcgetpgrp(fd).ok().map(Pid::as_raw)
}

/// This process's group.
pub fn own_group() -> i32 {
    unistd::getpgrp().as_raw()
}

/// While alive, this process's group is the terminal's foreground group, so it may read
/// the terminal (a background group that reads it is stopped by `SIGTTIN`); dropping it
/// gives the foreground back to the group that had it.
#[derive(Debug)]
pub struct Foreground {
    fd: OwnedFd,
    previous: Pid,
}

/// Make this process's group the foreground group of the terminal `tty` (see
/// [`Foreground`]). A process actor runs in a process group of its own, so its debugger
/// prompt takes the terminal this way.
///
/// # Errors
/// `ENOTTY` if `tty` is not this process's controlling terminal; the OS error of
/// `tcgetpgrp`/`tcsetpgrp`.
pub fn take_foreground(tty: &impl AsFd) -> io::Result<Foreground> {
    let fd = tty.as_fd().try_clone_to_owned()?;
    let previous = unistd::tcgetpgrp(&fd).map_err(io::Error::from)?;
    set_foreground(&fd, unistd::getpgrp())?;
    Ok(Foreground { fd, previous })
}

/// `tcsetpgrp` with `SIGTTOU` blocked on this thread: a background group may then change
/// the foreground instead of being stopped for trying.
fn set_foreground(fd: &OwnedFd, pgrp: Pid) -> io::Result<()> {
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old))
        .map_err(io::Error::from)?;
    let r = unistd::tcsetpgrp(fd, pgrp).map_err(io::Error::from);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    r
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if let Err(e) = set_foreground(&self.fd, self.previous) {
            tracing::warn!(error = %e, "cannot give the terminal's foreground back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_terminal_is_refused() {
        let f = File::open("/proc/self/status").unwrap();
        assert!(hold_signals(&f).is_err());
        assert!(take_foreground(&f).is_err());
        assert_eq!(foreground_group(&f), None);
        assert!(own_group() > 0);
    }
}
