//! Event counters (`eventfd`) used as doorbells between processes.
//!
//! One side rings ([`ring`]: adds 1 to the counter), the other waits for the descriptor
//! to become readable (with tokio's `AsyncFd`, say) and [`drain`]s it (reads and resets
//! the counter). Descriptors received from someone else are checked with
//! [`is_eventfd`] and made non-blocking with [`set_nonblocking`] before use, so that a
//! peer cannot hand over a pipe or a blocking descriptor that would stall a reader.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// A new eventfd with a zero counter, non-blocking and close-on-exec.
///
/// # Errors
/// The OS error (`EMFILE`...).
pub fn new() -> io::Result<OwnedFd> {
    EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map(OwnedFd::from)
        .map_err(io::Error::from)
}

/// Add 1 to the counter behind `fd`, waking whoever waits on it. A counter at its
/// maximum already wakes its waiter: that is not an error.
///
/// # Errors
/// The OS error of `write`.
pub fn ring(fd: impl AsFd) -> io::Result<()> {
    loop {
        match nix::unistd::write(&fd, &1u64.to_ne_bytes()) {
            Ok(_) | Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Read and reset the counter behind `fd`: whether it was rung since the last drain.
///
/// # Errors
/// `WouldBlock` never (it is `Ok(false)`); other OS errors of `read`.
pub fn drain(fd: impl AsFd) -> io::Result<bool> {
    let mut buf = [0u8; 8];
    loop {
        match nix::unistd::read(&fd, &mut buf) {
            Ok(8) => return Ok(u64::from_ne_bytes(buf) != 0),
            Ok(_) => return Err(io::ErrorKind::InvalidData.into()),
            Err(Errno::EAGAIN) => return Ok(false),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `fd` is an eventfd (as `/proc/self/fd` names it).
///
/// # Errors
/// The OS error of `readlink` (no `/proc`).
pub fn is_eventfd(fd: impl AsFd) -> io::Result<bool> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))?;
    Ok(link.as_os_str() == "anon_inode:[eventfd]")
}

/// Make `fd` non-blocking. This is a property of the open file, so it holds for every
/// process that shares it.
///
/// # Errors
/// The OS error of `fcntl`.
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(&fd, FcntlArg::F_SETFL(flags))
        .map(drop)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_is_drained_once() {
        let fd = new().unwrap();
        assert!(is_eventfd(&fd).unwrap());
        assert!(!drain(&fd).unwrap(), "nothing rung yet");
        ring(&fd).unwrap();
        ring(&fd).unwrap();
        assert!(drain(&fd).unwrap());
        assert!(!drain(&fd).unwrap(), "drained");
    }

    #[test]
    fn other_descriptors_are_told_apart_and_made_non_blocking() {
        let (r, w) = std::io::pipe().unwrap();
        assert!(!is_eventfd(&r).unwrap());
        set_nonblocking(&r).unwrap();
        let flags = fcntl(&r, FcntlArg::F_GETFL).unwrap();
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        let mut buf = [0u8; 8];
        assert_eq!(
            nix::unistd::read(&r, &mut buf).unwrap_err(),
            Errno::EAGAIN,
            "a read no longer blocks"
        );
        drop(w);
    }
}
