//! Explicit shared memory: [`ShmRegion`], a sealed memory file mapped read-write by
//! every actor that holds it, and [`FrozenRegion`], one sealed against writes that
//! every holder may read as a plain `&[u8]`.
//!
//! A region is created by one actor and handed to others as (part of) a call's
//! arguments, a reply or a stream item: its descriptor travels with the frame
//! (`spawn_api::fds`), over whichever transport the channel uses. What crosses is the
//! memory file itself; the receiver checks its seals and size before it maps anything.
//!
//! ## What a peer that holds the region can and cannot do to you
//!
//! - It **cannot** make your mapping fault: every region is sealed against shrinking
//!   and growing (`F_SEAL_SHRINK | F_SEAL_GROW`) before it first leaves its creator, and
//!   a received descriptor without those seals is refused.
//! - It **cannot** make this crate read or write out of bounds: every offset and length
//!   is checked against the size fixed by the seals.
//! - It **can**, in a [`ShmRegion`], write any byte at any time. That is why a
//!   `ShmRegion` never hands out `&[u8]` or `&T` into itself: [`ShmRegion::read`] and
//!   [`ShmRegion::write`] copy, and agreement on *when* the bytes are ready is yours to
//!   build (a reply that follows the writes, the atomics of
//!   [`ShmRegion::atomic_u64`], or [`crate::RingSender`]/[`crate::RingReceiver`]). A
//!   peer that breaks your agreement makes you read torn or stale bytes, never
//!   undefined behaviour in your process.
//! - It **cannot** change a [`FrozenRegion`] (`F_SEAL_WRITE`: no writable mapping, no
//!   `write(2)`, no hole punched), so a frozen region is safely a `&[u8]`.
//!
//! ## Memory ordering
//!
//! Copies in and out of a region are plain memory operations; they are ordered with
//! respect to another process only through an atomic in the region (a `Release` store
//! after the writes, an `Acquire` load before the reads) or through a message: a call's
//! reply or a stream item sent after the writes happens-after them for whoever receives
//! it (the transports' own atomics and system calls order them).
//!
//! Regions have no name in any filesystem: the memory goes when the last holder drops
//! its `ShmRegion` (and its mapping), in whatever process that is. They are kept out of
//! forked children (`MADV_DONTFORK`).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};

use os_wrappers::memfd;
use os_wrappers::mmap::{ReadOnlyMapping, SharedMapping};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use spawn_api::fds;

/// The largest region: 64 GiB (a received descriptor announcing more is refused).
pub const MAX_REGION_LEN: usize = 64 << 30;

/// The seals every region carries before it leaves its creator.
const SIZE_SEALS: i32 = memfd::SEAL_SHRINK | memfd::SEAL_GROW;

/// Why a region operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// A system call refused (out of memory, out of descriptors...).
    #[error("shared-memory region: {op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A length of zero or above [`MAX_REGION_LEN`].
    #[error("a region of {0} bytes: regions hold 1 byte to {MAX_REGION_LEN} bytes")]
    BadLength(usize),
    /// An access outside the region.
    #[error("bytes {offset}..{offset}+{len} are outside the region of {size} bytes")]
    OutOfBounds {
        /// Where the access started.
        offset: usize,
        /// How long it was.
        len: usize,
        /// The region's size.
        size: usize,
    },
    /// An atomic at an offset that is not a multiple of its size.
    #[error("offset {offset} is not aligned to {align} bytes")]
    Misaligned {
        /// The offset asked for.
        offset: usize,
        /// The alignment needed.
        align: usize,
    },
    /// [`ShmRegion::freeze`] on a region that is mapped writable elsewhere (another
    /// clone here, or a peer that holds it).
    #[error("cannot freeze a region that is still shared writable: {0}")]
    Shared(&'static str),
    /// A received descriptor is not a region this crate can map safely.
    #[error("refused a received region: {0}")]
    Refused(String),
    /// A ring's shared header or indices are not what a ring's peer may write: the
    /// peer is broken or hostile. The ring is unusable.
    #[error("shared-memory ring is corrupt: {0}")]
    Corrupt(String),
    /// The ring's other end is gone (dropped, or its process ended).
    #[error("the ring's other end is closed")]
    Closed,
    /// Another sender (or receiver) already claimed this ring's end.
    #[error("this ring already has a {0}")]
    Claimed(&'static str),
}

fn os(op: &'static str) -> impl FnOnce(io::Error) -> RegionError {
    move |source| RegionError::Os { op, source }
}

/// A shared-memory region that every holder maps read-write.
///
/// Create one with [`ShmRegion::new`], write into it, and pass it (or a struct holding
/// it) as a call argument, reply or stream item: the receiving actor gets the same
/// memory. Clones share one mapping. See the [module docs](self) for what a peer can do.
///
/// ```
/// use ipc_shm::ShmRegion;
/// let r = ShmRegion::new(4096)?;
/// r.write(100, b"hello")?;
/// let mut out = [0u8; 5];
/// r.read(100, &mut out)?;
/// assert_eq!(&out, b"hello");
/// assert!(r.write(4094, b"abc").is_err(), "out of bounds");
/// # Ok::<(), ipc_shm::RegionError>(())
/// ```
#[derive(Clone)]
pub struct ShmRegion {
    inner: Arc<Writable>,
}

struct Writable {
    fd: Arc<OwnedFd>,
    map: SharedMapping,
}

impl fmt::Debug for ShmRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmRegion")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

fn check_len(len: usize) -> Result<(), RegionError> {
    if len == 0 || len > MAX_REGION_LEN {
        return Err(RegionError::BadLength(len));
    }
    Ok(())
}

fn map_writable(fd: &OwnedFd, len: usize) -> Result<SharedMapping, RegionError> {
    let map = SharedMapping::map(fd, len).map_err(os("mapping"))?;
    map.dont_fork()
        .map_err(os("keeping the mapping out of forks"))?;
    Ok(map)
}

impl ShmRegion {
    /// A new zero-filled region of `len` bytes, sealed against resizing.
    ///
    /// # Errors
    /// [`RegionError::BadLength`] for 0 or more than [`MAX_REGION_LEN`];
    /// [`RegionError::Os`] if the memory file cannot be made or mapped.
    pub fn new(len: usize) -> Result<ShmRegion, RegionError> {
        check_len(len)?;
        let fd = memfd::create("brood-region").map_err(os("creating the memory file"))?;
        memfd::set_len(&fd, len as u64).map_err(os("sizing the memory file"))?;
        memfd::add_seals(&fd, SIZE_SEALS).map_err(os("sealing the memory file"))?;
        let map = map_writable(&fd, len)?;
        Ok(ShmRegion {
            inner: Arc::new(Writable {
                fd: Arc::new(fd),
                map,
            }),
        })
    }

    /// A region received from a peer: checked, then mapped.
    fn adopt(fd: Arc<OwnedFd>, len: u64) -> Result<ShmRegion, RegionError> {
        let len = check_received(&fd, len, false)?;
        let map = map_writable(&fd, len)?;
        Ok(ShmRegion {
            inner: Arc::new(Writable { fd, map }),
        })
    }

    /// Its size in bytes (fixed for good).
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Whether it is empty (never: regions hold at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bounds(&self, offset: usize, len: usize) -> Result<(), RegionError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(RegionError::OutOfBounds {
                offset,
                len,
                size: self.len(),
            }),
        }
    }

    /// Copy `src` into the region at `offset`.
    ///
    /// # Errors
    /// [`RegionError::OutOfBounds`] if it does not fit (nothing is written).
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), RegionError> {
        self.bounds(offset, src.len())?;
        raw::copy_in(&self.inner.map, offset, src);
        Ok(())
    }

    /// Copy bytes of the region at `offset` into `dst`.
    ///
    /// # Errors
    /// [`RegionError::OutOfBounds`] if the range is not all in the region (nothing is
    /// read).
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), RegionError> {
        self.bounds(offset, dst.len())?;
        raw::copy_out(&self.inner.map, offset, dst);
        Ok(())
    }

    /// The 8-byte atomic at `offset`, shared with every holder: the way to build your
    /// own agreement on when bytes are ready (a `Release` store after writing them, an
    /// `Acquire` load before reading them).
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let r = ipc_shm::ShmRegion::new(64)?;
    /// r.atomic_u64(8)?.store(7, Ordering::Release);
    /// assert_eq!(r.atomic_u64(8)?.load(Ordering::Acquire), 7);
    /// assert!(r.atomic_u64(4).is_err(), "misaligned");
    /// # Ok::<(), ipc_shm::RegionError>(())
    /// ```
    ///
    /// # Errors
    /// [`RegionError::OutOfBounds`], [`RegionError::Misaligned`] (offsets are multiples
    /// of 8).
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64, RegionError> {
        self.bounds(offset, 8)?;
        if !offset.is_multiple_of(8) {
            return Err(RegionError::Misaligned { offset, align: 8 });
        }
        Ok(raw::atomic_u64(&self.inner.map, offset))
    }

    /// The 4-byte atomic at `offset` (see [`ShmRegion::atomic_u64`]).
    ///
    /// # Errors
    /// [`RegionError::OutOfBounds`], [`RegionError::Misaligned`] (offsets are multiples
    /// of 4).
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, RegionError> {
        self.bounds(offset, 4)?;
        if !offset.is_multiple_of(4) {
            return Err(RegionError::Misaligned { offset, align: 4 });
        }
        Ok(raw::atomic_u32(&self.inner.map, offset))
    }

    /// The first byte, for code that needs raw access (SIMD kernels, a C library). Valid
    /// for `len()` bytes while any clone of this region lives. Any byte may change at
    /// any time if a peer writes it: never make a Rust reference into it; use volatile
    /// or atomic accesses, or copy out first.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.map.as_ptr()
    }

    /// Seal the region against writes for good and map it read-only: from then on no
    /// holder, here or in any peer, can change it, so it reads as a plain `&[u8]`.
    ///
    /// ```
    /// let r = ipc_shm::ShmRegion::new(4096)?;
    /// r.write(0, b"final")?;
    /// let frozen = r.freeze()?;
    /// assert_eq!(&frozen[..5], b"final");
    /// # Ok::<(), ipc_shm::RegionError>(())
    /// ```
    ///
    /// # Errors
    /// [`RegionError::Shared`] if another clone of this region exists here, or the
    /// kernel reports a writable mapping elsewhere (a peer that holds it); the region
    /// comes back unchanged in the [`FreezeError`]. [`RegionError::Os`] if it could not
    /// be mapped again (only under memory exhaustion; the region is then lost).
    pub fn freeze(self) -> Result<FrozenRegion, FreezeError> {
        let len = self.len();
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(inner) => {
                return Err(FreezeError {
                    region: Some(ShmRegion { inner }),
                    error: RegionError::Shared("another clone of it exists in this process"),
                });
            }
        };
        let Writable { fd, map } = inner;
        // Our own mapping would make the seal fail: let it go first.
        drop(map);
        if let Err(e) = memfd::add_seals(&*fd, memfd::SEAL_WRITE) {
            let error = if e.kind() == io::ErrorKind::ResourceBusy {
                RegionError::Shared("a peer holds it mapped writable")
            } else {
                RegionError::Os {
                    op: "sealing against writes",
                    source: e,
                }
            };
            return Err(match map_writable(&fd, len) {
                Ok(map) => FreezeError {
                    region: Some(ShmRegion {
                        inner: Arc::new(Writable { fd, map }),
                    }),
                    error,
                },
                Err(remap) => FreezeError {
                    region: None,
                    error: remap,
                },
            });
        }
        match ReadOnlyMapping::map(&*fd, len) {
            Ok(map) => Ok(FrozenRegion {
                inner: Arc::new(ReadOnly { fd, map }),
            }),
            Err(e) => Err(FreezeError {
                region: None,
                error: os("mapping read-only")(e),
            }),
        }
    }
}

/// Why [`ShmRegion::freeze`] failed, with the region back when it could be kept.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct FreezeError {
    region: Option<ShmRegion>,
    #[source]
    error: RegionError,
}

impl FreezeError {
    /// The region, unchanged (`None` only if it could not be mapped again).
    pub fn into_region(self) -> Option<ShmRegion> {
        self.region
    }

    /// What went wrong.
    pub fn error(&self) -> &RegionError {
        &self.error
    }
}

impl From<FreezeError> for RegionError {
    fn from(e: FreezeError) -> RegionError {
        e.error
    }
}

/// A region sealed against writes: every holder maps it read-only and nobody, in any
/// process, can change it, so it derefs to `&[u8]`.
///
/// Made by [`ShmRegion::freeze`]; received like a `ShmRegion` (as an argument, reply or
/// item). The way to hand a large immutable buffer (a model, a frame of video) to other
/// actors without copying it.
#[derive(Clone)]
pub struct FrozenRegion {
    inner: Arc<ReadOnly>,
}

struct ReadOnly {
    fd: Arc<OwnedFd>,
    map: ReadOnlyMapping,
}

impl fmt::Debug for FrozenRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrozenRegion")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl FrozenRegion {
    fn adopt(fd: Arc<OwnedFd>, len: u64) -> Result<FrozenRegion, RegionError> {
        let len = check_received(&fd, len, true)?;
        let map = ReadOnlyMapping::map(&*fd, len).map_err(os("mapping read-only"))?;
        Ok(FrozenRegion {
            inner: Arc::new(ReadOnly { fd, map }),
        })
    }
}

impl std::ops::Deref for FrozenRegion {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        raw::frozen_bytes(&self.inner.map)
    }
}

impl AsRef<[u8]> for FrozenRegion {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Check a received descriptor before mapping it: a memory file sealed against resizing
/// (and against writes, for a frozen region; *not* against them for a writable one,
/// which could not be mapped), of the announced size. Returns the size.
fn check_received(fd: &OwnedFd, announced: u64, frozen: bool) -> Result<usize, RegionError> {
    let refuse = |m: String| RegionError::Refused(m);
    let seals = memfd::seals(fd.as_fd())
        .map_err(|e| refuse(format!("not a sealable memory file ({e})")))?;
    if seals & SIZE_SEALS != SIZE_SEALS {
        return Err(refuse(
            "not sealed against resizing, so a mapping of it could fault".to_owned(),
        ));
    }
    let write_sealed = seals & memfd::SEAL_WRITE != 0;
    if frozen && !write_sealed {
        return Err(refuse(
            "a frozen region that is not sealed against writes".to_owned(),
        ));
    }
    if !frozen && write_sealed {
        return Err(refuse(
            "the region is frozen (sealed against writes): receive it as a FrozenRegion".to_owned(),
        ));
    }
    let size = memfd::size(fd.as_fd()).map_err(|e| refuse(format!("no size ({e})")))?;
    if size != announced {
        return Err(refuse(format!(
            "the file has {size} bytes, the message says {announced}"
        )));
    }
    let len = usize::try_from(size).map_err(|_| refuse(format!("{size} bytes")))?;
    check_len(len).map_err(|e| refuse(e.to_string()))?;
    Ok(len)
}

/// The wire form: the descriptor's index in the frame and the size.
#[derive(Serialize, Deserialize)]
struct OnWire {
    fd: u32,
    len: u64,
}

fn attach(fd: &Arc<OwnedFd>, len: usize) -> Result<OnWire, fds::FdError> {
    Ok(OnWire {
        fd: fds::attach(fd.clone())?,
        len: len as u64,
    })
}

impl Serialize for ShmRegion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        attach(&self.inner.fd, self.len())
            .map_err(fds::ser_error)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ShmRegion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ShmRegion, D::Error> {
        let w = OnWire::deserialize(d)?;
        let fd = fds::claim(w.fd).map_err(fds::de_error)?;
        ShmRegion::adopt(fd, w.len).map_err(fds::de_error)
    }
}

impl Serialize for FrozenRegion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        attach(&self.inner.fd, self.len())
            .map_err(fds::ser_error)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for FrozenRegion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FrozenRegion, D::Error> {
        let w = OnWire::deserialize(d)?;
        let fd = fds::claim(w.fd).map_err(fds::de_error)?;
        FrozenRegion::adopt(fd, w.len).map_err(fds::de_error)
    }
}

/// The raw accesses, each bounds-checked by its caller.
#[allow(unsafe_code)]
mod raw {
    use std::sync::atomic::{AtomicU32, AtomicU64};

    use os_wrappers::mmap::{ReadOnlyMapping, SharedMapping};

    pub(super) fn copy_in(map: &SharedMapping, offset: usize, src: &[u8]) {
        debug_assert!(offset + src.len() <= map.len());
        // SAFETY: the caller checked offset + len <= map.len(), so the destination is
        // inside the live mapping; `src` is ordinary memory of ours and cannot overlap
        // a shared mapping it does not point into. No reference into the mapping is
        // made: a peer writing the same bytes concurrently leaves them torn, which is
        // the documented contract of a writable region.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), map.as_ptr().add(offset), src.len());
        }
    }

    pub(super) fn copy_out(map: &SharedMapping, offset: usize, dst: &mut [u8]) {
        debug_assert!(offset + dst.len() <= map.len());
        // SAFETY: as in copy_in, with the roles of the two buffers swapped; every
        // byte value is a valid u8, so whatever a peer wrote is a valid result.
        unsafe {
            std::ptr::copy_nonoverlapping(map.as_ptr().add(offset), dst.as_mut_ptr(), dst.len());
        }
    }

    pub(super) fn atomic_u64(map: &SharedMapping, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= map.len() && offset.is_multiple_of(8));
        // SAFETY: in bounds and 8-aligned (checked by the caller; the mapping is page
        // aligned); atomics may be modified concurrently by anyone, other processes
        // included, so a shared reference to one is sound; the borrow of `map` keeps
        // the memory mapped.
        unsafe { AtomicU64::from_ptr(map.as_ptr().add(offset).cast()) }
    }

    pub(super) fn atomic_u32(map: &SharedMapping, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= map.len() && offset.is_multiple_of(4));
        // SAFETY: as for atomic_u64, with 4-byte alignment.
        unsafe { AtomicU32::from_ptr(map.as_ptr().add(offset).cast()) }
    }

    pub(super) fn frozen_bytes(map: &ReadOnlyMapping) -> &[u8] {
        // SAFETY: the mapping is live for the borrow of `map` and `len` bytes long; the
        // file behind it was checked (or made) sealed against writes and resizing, so
        // no process can change or remove these bytes while we hold the slice.
        unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) }
    }
}

// Real memory files and mappings: not under Miri (which has no `memfd_create`).
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use spawn_api::{Fds, Wire};

    fn round_trip<T: Wire>(v: &T) -> Result<T, spawn_api::CodecError> {
        let mut fds = Fds::new();
        let bytes = v.encode_with(&mut fds)?;
        T::decode_with(bytes, fds)
    }

    #[test]
    fn a_region_round_trips_as_the_same_memory() {
        let a = ShmRegion::new(8192).unwrap();
        let b = round_trip(&a).unwrap();
        assert_ne!(a.as_ptr(), b.as_ptr(), "a second mapping");
        a.write(8000, b"shared").unwrap();
        let mut got = [0u8; 6];
        b.read(8000, &mut got).unwrap();
        assert_eq!(&got, b"shared");
        b.atomic_u64(0)
            .unwrap()
            .store(5, std::sync::atomic::Ordering::Release);
        assert_eq!(
            a.atomic_u64(0)
                .unwrap()
                .load(std::sync::atomic::Ordering::Acquire),
            5
        );
    }

    #[test]
    fn regions_nest_in_any_serde_value() {
        let a = ShmRegion::new(4096).unwrap();
        let b = ShmRegion::new(100).unwrap();
        let v = (String::from("job"), vec![a.clone(), b.clone()], 3u8);
        let (name, rs, n) = round_trip(&v).unwrap();
        assert_eq!((name.as_str(), rs.len(), n), ("job", 2, 3));
        assert_eq!((rs[0].len(), rs[1].len()), (4096, 100));
    }

    #[test]
    fn a_plain_encode_refuses_and_a_decode_without_descriptors_is_typed() {
        let a = ShmRegion::new(64).unwrap();
        assert!(a.encode().is_err(), "no frame to carry the descriptor");
        let mut fds = Fds::new();
        let bytes = a.encode_with(&mut fds).unwrap();
        let e = ShmRegion::decode_with(bytes, Fds::new()).unwrap_err();
        assert!(e.to_string().contains("descriptor #0"), "{e}");
    }

    #[test]
    fn received_descriptors_are_checked_before_mapping() {
        let check = |fd: OwnedFd, len: u64| {
            let mut fds = Fds::new();
            fds.push(Arc::new(fd));
            let bytes = postcard_bytes(len);
            ShmRegion::decode_with(bytes, fds).unwrap_err().to_string()
        };
        // A file that is not a memfd.
        let e = check(std::fs::File::open("/proc/self/status").unwrap().into(), 10);
        assert!(e.contains("not a sealable memory file"), "{e}");
        // A memfd a peer could shrink under our mapping.
        let fd = memfd::create("unsealed").unwrap();
        memfd::set_len(&fd, 4096).unwrap();
        let e = check(fd, 4096);
        assert!(e.contains("not sealed against resizing"), "{e}");
        // A size that disagrees with the message.
        let fd = memfd::create("liar").unwrap();
        memfd::set_len(&fd, 4096).unwrap();
        memfd::add_seals(&fd, SIZE_SEALS).unwrap();
        let e = check(fd, 1 << 20);
        assert!(e.contains("4096 bytes, the message says 1048576"), "{e}");
    }

    /// The wire form of a region at descriptor 0 with `len` bytes (postcard, as
    /// `OnWire` encodes: the same as a `(u32, u64)`).
    fn postcard_bytes(len: u64) -> bytes::Bytes {
        (0u32, len).encode().unwrap()
    }

    #[test]
    fn bounds_and_alignment_are_checked() {
        let r = ShmRegion::new(100).unwrap();
        assert!(matches!(
            r.write(usize::MAX, b"x"),
            Err(RegionError::OutOfBounds { .. })
        ));
        assert!(matches!(
            r.read(99, &mut [0u8; 2]),
            Err(RegionError::OutOfBounds { .. })
        ));
        assert!(matches!(
            r.atomic_u64(96),
            Err(RegionError::OutOfBounds { .. })
        ));
        assert!(matches!(
            r.atomic_u32(2),
            Err(RegionError::Misaligned { .. })
        ));
        assert!(matches!(ShmRegion::new(0), Err(RegionError::BadLength(0))));
        assert!(matches!(
            ShmRegion::new(MAX_REGION_LEN + 1),
            Err(RegionError::BadLength(_))
        ));
    }

    #[test]
    fn freezing_needs_the_only_writable_mapping_and_loses_nothing_when_refused() {
        let r = ShmRegion::new(4096).unwrap();
        r.write(0, b"abc").unwrap();
        let clone = r.clone();
        let e = r.freeze().unwrap_err();
        assert!(matches!(e.error(), RegionError::Shared(_)), "{e}");
        let r = e.into_region().unwrap();
        drop(clone);
        // A "peer" (a second mapping of the same file) still maps it writable.
        let peer = round_trip(&r).unwrap();
        let e = r.freeze().unwrap_err();
        assert!(matches!(e.error(), RegionError::Shared(_)), "{e}");
        let r = e.into_region().unwrap();
        let mut got = [0u8; 3];
        r.read(0, &mut got).unwrap();
        assert_eq!(&got, b"abc", "the region came back intact");
        drop(peer);
        let frozen = r.freeze().unwrap();
        assert_eq!(&frozen[..3], b"abc");
        // Received frozen: read-only and still the same bytes; not as a writable one.
        let again = round_trip(&frozen).unwrap();
        assert_eq!(&again[..3], b"abc");
        let mut fds = Fds::new();
        let bytes = frozen.encode_with(&mut fds).unwrap();
        let e = ShmRegion::decode_with(bytes, fds).unwrap_err();
        assert!(
            e.to_string().contains("receive it as a FrozenRegion"),
            "{e}"
        );
    }

    #[test]
    fn a_writable_region_is_not_accepted_as_frozen() {
        let r = ShmRegion::new(4096).unwrap();
        let mut fds = Fds::new();
        let bytes = r.encode_with(&mut fds).unwrap();
        let e = FrozenRegion::decode_with(bytes, fds).unwrap_err();
        assert!(e.to_string().contains("not sealed against writes"), "{e}");
    }
}
