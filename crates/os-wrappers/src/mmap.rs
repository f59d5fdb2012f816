//! Shared, writable mappings of a file ([`SharedMapping`]), unmapped when dropped.
//!
//! The mapping hands out a raw pointer and nothing else: its memory is shared with every
//! other process that maps the same file, which may write any byte at any time, so Rust
//! references into it would be unsound. Callers read and write it through atomics or
//! volatile accesses, and must make sure the file cannot shrink under the mapping (a
//! memfd sealed with `SEAL_SHRINK`, see [`crate::memfd`]): a page cut away by someone else
//! faults with `SIGBUS` when touched.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;

/// A `MAP_SHARED`, readable and writable mapping of the first `len` bytes of a file.
#[derive(Debug)]
pub struct SharedMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is a plain region of address space owned by this value; it is not
// tied to the thread that made it, and this type only hands out its address (every
// access through it is the caller's responsibility), so moving or sharing the value
// between threads is sound.
unsafe impl Send for SharedMapping {}
// SAFETY: as for Send: `&SharedMapping` only gives the address and the length.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Map the first `len` bytes of the file behind `fd`, shared, read and write. The
    /// descriptor may be closed afterwards: the mapping keeps the file alive.
    ///
    /// # Errors
    /// `InvalidInput` for `len == 0`; the OS error of `mmap` (`EACCES` for a descriptor
    /// not open for reading and writing, `EPERM` for a write-sealed memfd, `ENODEV` for a
    /// file that cannot be mapped).
    pub fn map(fd: impl AsFd, len: usize) -> io::Result<SharedMapping> {
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: a null hint lets the kernel choose fresh address space, so no existing
        // mapping (memory of ours) is replaced; the descriptor is live for the call.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(SharedMapping { ptr, len })
    }

    /// Keep the mapping out of processes forked from this one (`MADV_DONTFORK`): a fork
    /// child (a forkserver, a forked actor) neither keeps the memory alive nor can touch
    /// it. (After an `exec` nothing is inherited anyway.)
    ///
    /// # Errors
    /// The OS error of `madvise`.
    pub fn dont_fork(&self) -> io::Result<()> {
        // SAFETY: the range is exactly this mapping, which is live; MADV_DONTFORK changes
        // what a later fork copies, not this process's memory.
        let r = unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, libc::MADV_DONTFORK) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The first byte (page aligned). Valid for `len()` bytes as long as `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: `map` refuses 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned and are unmapped only here,
        // once; this type never gave out references into the region, so nothing of ours
        // points into it any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfd;

    fn maps_of(name: &str) -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.contains(name))
            .count()
    }

    #[test]
    fn two_mappings_of_a_memfd_share_bytes_and_are_unmapped_on_drop() {
        let name = "os-wrappers-mmap-test";
        let fd = memfd::create(name).unwrap();
        memfd::set_len(&fd, 8192).unwrap();
        let a = SharedMapping::map(&fd, 8192).unwrap();
        let b = SharedMapping::map(&fd, 8192).unwrap();
        drop(fd);
        assert_eq!((a.len(), a.is_empty()), (8192, false));
        assert_eq!(a.as_ptr() as usize % 4096, 0, "page aligned");
        assert_eq!(maps_of(name), 2);
        // SAFETY: both pointers are valid for 8192 bytes while `a` and `b` live; this
        // test is the only user of the file.
        unsafe {
            a.as_ptr().add(100).write_volatile(42);
            assert_eq!(b.as_ptr().add(100).read_volatile(), 42);
        }
        drop(a);
        drop(b);
        assert_eq!(maps_of(name), 0, "unmapped");
    }

    #[test]
    fn a_dont_fork_mapping_is_not_in_a_forked_child() {
        let name = "os-wrappers-dontfork-test";
        let fd = memfd::create(name).unwrap();
        memfd::set_len(&fd, 4096).unwrap();
        let kept = SharedMapping::map(&fd, 4096).unwrap();
        let hidden = SharedMapping::map(&fd, 4096).unwrap();
        hidden.dont_fork().unwrap();
        // SAFETY: the child only waits for its signal (pause is async-signal-safe) and
        // never returns into Rust code.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                libc::pause();
                libc::_exit(0);
            }
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        // SAFETY: our own child, signalled and reaped once here.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let in_child = maps.lines().filter(|l| l.contains(name)).count();
        assert_eq!(
            in_child, 1,
            "only the mapping without MADV_DONTFORK: {maps}"
        );
        assert_eq!(maps_of(name), 2, "both here");
        drop((kept, hidden));
    }

    #[test]
    fn bad_requests_are_errors() {
        let fd = memfd::create("x").unwrap();
        assert_eq!(
            SharedMapping::map(&fd, 0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let ro = std::fs::File::open("/proc/self/status").unwrap();
        assert!(SharedMapping::map(&ro, 4096).is_err());
    }
}
