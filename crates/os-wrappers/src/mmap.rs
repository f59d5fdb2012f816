//! Shared mappings of a file, writable ([`SharedMapping`]) or read-only
//! ([`ReadOnlyMapping`]), unmapped when dropped.
//!
//! The mapping hands out a raw pointer and nothing else: its memory is shared with every
//! other process that maps the same file, which may write any byte at any time, so Rust
//! references into it would be unsound. Callers read and write it through atomics or
//! volatile accesses, and must make sure the file cannot shrink under the mapping (a
//! memfd sealed with `SEAL_SHRINK`, see [`crate::memfd`]): a page cut away by someone else
//! faults with `SIGBUS` when touched.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
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
        let ptr = map_shared(fd.as_fd(), len, libc::PROT_READ | libc::PROT_WRITE)?;
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

/// `mmap` of the first `len` bytes of `fd`, `MAP_SHARED`, with protection `prot`.
fn map_shared(fd: BorrowedFd<'_>, len: usize, prot: libc::c_int) -> io::Result<NonNull<u8>> {
    if len == 0 {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: a null hint lets the kernel choose fresh address space, so no existing
    // mapping (memory of ours) is replaced; the descriptor is live for the call.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))
}

/// A `MAP_SHARED`, read-only mapping of the first `len` bytes of a file. Whether its
/// bytes can change under it is the file's business: a memfd sealed with
/// [`crate::memfd::SEAL_WRITE`] (and against shrinking) never changes, and only then may
/// a caller treat the mapping as an immutable `&[u8]`.
#[derive(Debug)]
pub struct ReadOnlyMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: as for SharedMapping: a region of address space that this type only gives
// the address of.
unsafe impl Send for ReadOnlyMapping {}
// SAFETY: as for Send.
unsafe impl Sync for ReadOnlyMapping {}

impl ReadOnlyMapping {
    /// Map the first `len` bytes of the file behind `fd`, shared and read-only.
    ///
    /// # Errors
    /// `InvalidInput` for `len == 0`; the OS error of `mmap`.
    pub fn map(fd: impl AsFd, len: usize) -> io::Result<ReadOnlyMapping> {
        let ptr = map_shared(fd.as_fd(), len, libc::PROT_READ)?;
        Ok(ReadOnlyMapping { ptr, len })
    }

    /// The first byte (page aligned). Valid for reads of `len()` bytes while `self`
    /// lives.
    pub fn as_ptr(&self) -> *const u8 {
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

impl Drop for ReadOnlyMapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are what mmap returned, unmapped only here. Callers that made
        // slices of it tied them to a borrow of `self`, which has ended.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
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
    fn a_read_only_mapping_sees_writes_and_cannot_be_made_writable_on_a_sealed_file() {
        let fd = memfd::create("os-wrappers-ro-test").unwrap();
        memfd::set_len(&fd, 4096).unwrap();
        {
            let w = SharedMapping::map(&fd, 4096).unwrap();
            // SAFETY: valid for 4096 bytes while `w` lives; only this test uses it.
            unsafe { w.as_ptr().add(7).write_volatile(9) };
        }
        memfd::add_seals(&fd, memfd::SEAL_WRITE).unwrap();
        let r = ReadOnlyMapping::map(&fd, 4096).unwrap();
        // SAFETY: valid for reads of 4096 bytes while `r` lives.
        assert_eq!(unsafe { r.as_ptr().add(7).read() }, 9);
        assert!(!r.is_empty());
        // Nobody gets a writable mapping of a write-sealed file any more.
        assert!(SharedMapping::map(&fd, 4096).is_err());
        // SAFETY: asks the kernel to make our own read-only mapping writable; it must
        // refuse (VM_MAYWRITE was dropped for the sealed file), so memory is unchanged.
        let r2 = unsafe {
            libc::mprotect(
                r.as_ptr() as *mut _,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        assert_eq!(
            r2, -1,
            "mprotect to writable must fail on a write-sealed memfd"
        );
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
