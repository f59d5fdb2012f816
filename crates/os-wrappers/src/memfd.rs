//! Anonymous memory files (`memfd_create`) and their seals.
//!
//! A memfd has no name in any filesystem (the name given is only shown in
//! `/proc/<pid>/fd`), so nothing is left behind when its last descriptor and mapping go.
//! Seals make promises to whoever receives the descriptor: with [`SEAL_SHRINK`] and
//! [`SEAL_GROW`] its size can never change again, so a mapping of it can never fault
//! (`SIGBUS`) on a page cut away by someone else, and [`SEAL_SEAL`] freezes the set of
//! seals itself.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::stat::SFlag;

/// The file's size can no longer shrink.
pub const SEAL_SHRINK: i32 = libc::F_SEAL_SHRINK;
/// The file's size can no longer grow.
pub const SEAL_GROW: i32 = libc::F_SEAL_GROW;
/// The set of seals can no longer change.
pub const SEAL_SEAL: i32 = libc::F_SEAL_SEAL;
/// The file's contents can no longer change (and no writable shared mapping may exist).
pub const SEAL_WRITE: i32 = libc::F_SEAL_WRITE;
/// No new writable mapping or write may be made (existing mappings may still write).
pub const SEAL_FUTURE_WRITE: i32 = libc::F_SEAL_FUTURE_WRITE;

/// A new, empty memfd that allows sealing, close-on-exec. `name` is for `/proc` only.
///
/// # Errors
/// The OS error (`EMFILE`, `ENOMEM`...); `InvalidInput` for a name with a NUL byte.
pub fn create(name: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    memfd_create(
        name.as_c_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(io::Error::from)
}

/// Set the size of the file behind `fd` to `len` bytes (new bytes read as zero).
///
/// # Errors
/// The OS error of `ftruncate` (`EPERM` once sealed against the change).
pub fn set_len(fd: impl AsFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    nix::unistd::ftruncate(fd, len).map_err(io::Error::from)
}

/// Add `seals` (a union of the `SEAL_*` constants) to the memfd `fd`.
///
/// # Errors
/// The OS error of `fcntl(F_ADD_SEALS)` (`EPERM` when sealed with [`SEAL_SEAL`],
/// `EINVAL` for a file that cannot be sealed).
pub fn add_seals(fd: impl AsFd, seals: i32) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(seals)))
        .map(drop)
        .map_err(io::Error::from)
}

/// The seals of the file behind `fd`.
///
/// # Errors
/// The OS error of `fcntl(F_GET_SEALS)`: `EINVAL` for a file that is not a memfd (or
/// another shared-memory file), which therefore has no promise to give.
pub fn seals(fd: impl AsFd) -> io::Result<i32> {
    fcntl(fd, FcntlArg::F_GET_SEALS).map_err(io::Error::from)
}

/// The size of the regular file behind `fd`.
///
/// # Errors
/// `InvalidData` if it is not a regular file; the OS error of `fstat`.
pub fn size(fd: impl AsFd) -> io::Result<u64> {
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    u64::try_from(st.st_size).map_err(|_| io::ErrorKind::InvalidData.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_memfd_keeps_its_size_and_says_so() {
        let fd = create("os-wrappers-test").unwrap();
        set_len(&fd, 8192).unwrap();
        assert_eq!(size(&fd).unwrap(), 8192);
        assert_eq!(seals(&fd).unwrap(), 0);
        add_seals(&fd, SEAL_SHRINK | SEAL_GROW | SEAL_SEAL).unwrap();
        let s = seals(&fd).unwrap();
        assert_eq!(s, SEAL_SHRINK | SEAL_GROW | SEAL_SEAL);
        assert!(set_len(&fd, 4096).is_err(), "cannot shrink");
        assert!(set_len(&fd, 1 << 20).is_err(), "cannot grow");
        assert!(add_seals(&fd, SEAL_WRITE).is_err(), "seals are frozen");
        assert_eq!(size(&fd).unwrap(), 8192);
        let flags = fcntl(&fd, FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn other_files_have_no_seals_and_a_socket_has_no_size() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(seals(&f).is_err());
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(size(&a).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            create("a\0b").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
