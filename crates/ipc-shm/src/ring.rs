//! The ring algorithm: single-producer/single-consumer byte rings in memory that a peer
//! may write at any time. No system calls here (so that Miri can run it on heap memory):
//! waking a parked side is the caller's business ([`crate::bell`]).
//!
//! ## Layout
//!
//! A *segment* (one memfd mapping per channel) holds a small header and two rings, one
//! per direction; ring 0 carries the connecting side's bytes, ring 1 the accepting
//! side's:
//!
//! ```text
//! 0                      magic "BROODSHM" (u64), version (u32), capacity (u32)
//! 128                    ring 0: header (384 bytes), then `capacity` data bytes
//! 128 + 384 + capacity   ring 1: the same
//! ```
//!
//! A ring's header is three 128-byte lines, so that the producer's and the consumer's
//! hot words never share a cache line (nor its adjacent-line prefetch pair):
//!
//! | offset | field | written by |
//! |---|---|---|
//! | 0 | `tail`: bytes ever written (u64) | producer |
//! | 8 | `producer_closed` (u32, non-zero: closed) | producer |
//! | 128 | `head`: bytes ever read (u64) | consumer |
//! | 136 | `consumer_closed` (u32) | consumer |
//! | 256 | `reader_parked` (u32) | consumer sets, producer clears |
//! | 264 | `writer_parked` (u32) | producer sets, consumer clears |
//!
//! The capacity is a power of two; byte `p` of the stream lives at data offset
//! `p & (capacity - 1)`. `tail - head` (wrapping) is the number of unread bytes, at
//! most the capacity.
//!
//! ## Memory ordering
//!
//! - **Data before index.** The producer copies bytes into the data area, then stores
//!   `tail` with `Release`; the consumer loads `tail` with `Acquire` before it copies
//!   them out. Symmetrically the consumer stores `head` with `Release` once it has copied
//!   bytes out, and the producer loads `head` with `Acquire` before it overwrites them.
//! - **Parking (no lost wake-up).** A side that finds nothing to do (an empty ring for
//!   the reader, a full one for the writer) stores its park flag, issues a `SeqCst`
//!   fence, and loads the index again before it sleeps. The other side stores its index
//!   (or its closed flag), issues a `SeqCst` fence, then loads the park flag, and rings
//!   the doorbell only if it is set (clearing it with a swap, so that one park costs at
//!   most one ring). The two fences are ordered one way or the other: either the
//!   sleeper's reload sees the new index (and it does not sleep), or the waker's load
//!   sees the flag (and it rings). This is Dekker's pattern; plain `Release`/`Acquire`
//!   would not do, since both sides store one location and then load another.
//! - **Closing** is an index change like any other: the closed flag is stored with
//!   `Release` after the last `tail`/`head`, loaded with `Acquire`, and checked in the
//!   same parking protocol.
//!
//! ## What a peer can do
//!
//! Nothing read from the segment is trusted. Each side keeps its own index privately
//! (the shared copy is only written, never read back) and checks the peer's index on
//! every load: the consumer requires `0 <= tail - head <= capacity` and that `tail` did
//! not move back; the producer requires that `head` lies between what it saw last and
//! its own `tail`. A violation is a [`RingError`], sticky for that ring end. The
//! capacity and the offsets come from our own configuration (the acceptor checks the
//! peer's once, at setup), so no index from the segment ever selects memory outside it.
//!
//! No reference to shared bytes is ever made: header fields are accessed as atomics,
//! data as whole aligned 64-bit atomic words (relaxed) copied to or from private
//! memory, so a peer writing concurrently is not a data race in Rust's memory model and
//! can only make us read wrong bytes (which the frame codec then checks). Partial words
//! at the edges of a write are read, merged and written back whole: the only other
//! legitimate user of the data area, the consumer, never writes it.

use std::fmt;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use spawn_api::ProtocolError;
use tokio::io::ReadBuf;

/// Bytes per cache line pair: the unit of the layout.
const LINE: usize = 128;
/// Offsets of the fields in a ring's header.
const TAIL: usize = 0;
const PRODUCER_CLOSED: usize = 8;
const HEAD: usize = LINE;
const CONSUMER_CLOSED: usize = LINE + 8;
const READER_PARKED: usize = 2 * LINE;
const WRITER_PARKED: usize = 2 * LINE + 8;
/// Size of a ring's header; its data follows.
pub(crate) const RING_HEADER: usize = 3 * LINE;
/// Size of the segment's header; ring 0 follows.
pub(crate) const SEGMENT_HEADER: usize = LINE;
/// The segment's first word.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"BROODSHM");
/// The layout's version.
pub(crate) const VERSION: u32 = 1;
/// The smallest capacity the algorithm supports (one data word).
pub(crate) const MIN_CAPACITY: usize = 8;
/// The largest capacity a segment header can name.
pub(crate) const MAX_CAPACITY: usize = 1 << 31;

/// Memory shared with a peer that may write any byte of it at any time.
///
/// # Safety
///
/// Implementors guarantee that `base()` is 8-byte aligned and that `[base, base + len)`
/// stays valid for reads and writes for as long as the value lives, and that nothing in
/// this process accesses that memory other than through this module (which uses atomic
/// accesses only). Other processes may do anything to it.
pub(crate) unsafe trait SharedMem: Send + Sync + fmt::Debug + 'static {
    /// The first byte.
    fn base(&self) -> *mut u8;
    /// The length in bytes.
    fn len(&self) -> usize;
}

// SAFETY: a SharedMapping is page aligned, valid for its whole length until it is
// dropped (it is unmapped only then), and hands out nothing but its address; this crate
// touches the mapping only through this module.
unsafe impl SharedMem for os_wrappers::mmap::SharedMapping {
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn len(&self) -> usize {
        os_wrappers::mmap::SharedMapping::len(self)
    }
}

/// A broken ring or segment: what the peer (or its absence) did wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RingError {
    /// The producer's `tail` is not within the capacity ahead of our `head`, or moved
    /// back.
    Tail {
        /// Our head.
        head: u64,
        /// The tail we saw last.
        seen: u64,
        /// The tail now.
        tail: u64,
    },
    /// The consumer's `head` is ahead of our `tail`, more than the capacity behind it,
    /// or moved back.
    Head {
        /// The head we saw last.
        seen: u64,
        /// The head now.
        head: u64,
        /// Our tail.
        tail: u64,
    },
    /// The segment does not have the expected shape.
    Segment(String),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Tail { head, seen, tail } => write!(
                f,
                "the peer's write index {tail} is out of range (read index {head}, last \
                 write index {seen})"
            ),
            RingError::Head { seen, head, tail } => write!(
                f,
                "the peer's read index {head} is out of range (last read index {seen}, \
                 write index {tail})"
            ),
            RingError::Segment(why) => write!(f, "bad segment: {why}"),
        }
    }
}

impl std::error::Error for RingError {}

impl From<RingError> for ProtocolError {
    fn from(e: RingError) -> ProtocolError {
        ProtocolError::Decode(format!("shared-memory ring: {e}"))
    }
}

/// The length of a segment with two rings of `capacity` bytes.
pub(crate) fn segment_len(capacity: usize) -> Option<usize> {
    capacity
        .checked_add(RING_HEADER)?
        .checked_mul(2)?
        .checked_add(SEGMENT_HEADER)
}

fn check_capacity(capacity: usize) -> Result<(), RingError> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(RingError::Segment(format!(
            "capacity {capacity} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}"
        )));
    }
    Ok(())
}

/// Which end of the channel a side is: the connecting side writes ring 0 and reads
/// ring 1, the accepting side the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The side that created the segment.
    Connector,
    /// The side that received it.
    Acceptor,
}

/// A checked segment: memory of the right length and alignment, and a capacity of our
/// own choosing (or checked against ours).
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    mem: Arc<dyn SharedMem>,
    capacity: usize,
}

impl Segment {
    /// Check that `mem` can hold a segment of `capacity`-byte rings.
    fn check(mem: Arc<dyn SharedMem>, capacity: usize) -> Result<Segment, RingError> {
        check_capacity(capacity)?;
        let need = segment_len(capacity).ok_or_else(|| RingError::Segment("too large".into()))?;
        if mem.len() != need {
            return Err(RingError::Segment(format!(
                "{} bytes, expected {need} for rings of {capacity} bytes",
                mem.len()
            )));
        }
        if !(mem.base() as usize).is_multiple_of(8) {
            return Err(RingError::Segment("not 8-byte aligned".into()));
        }
        Ok(Segment { mem, capacity })
    }

    /// A new segment in zeroed memory: writes its header.
    pub(crate) fn init(mem: Arc<dyn SharedMem>, capacity: usize) -> Result<Segment, RingError> {
        let seg = Segment::check(mem, capacity)?;
        atomic_u64(&*seg.mem, 0).store(MAGIC, Ordering::Relaxed);
        atomic_u32(&*seg.mem, 8).store(VERSION, Ordering::Relaxed);
        // Fits: check_capacity bounds it by MAX_CAPACITY = 2^31.
        atomic_u32(&*seg.mem, 12).store(capacity as u32, Ordering::Relaxed);
        Ok(seg)
    }

    /// A segment the peer made, for rings of `capacity` bytes (as the peer announced
    /// and we accepted): checks its header once. What the header says later is never
    /// read again.
    pub(crate) fn open(mem: Arc<dyn SharedMem>, capacity: usize) -> Result<Segment, RingError> {
        let seg = Segment::check(mem, capacity)?;
        let magic = atomic_u64(&*seg.mem, 0).load(Ordering::Relaxed);
        let version = atomic_u32(&*seg.mem, 8).load(Ordering::Relaxed);
        let cap = atomic_u32(&*seg.mem, 12).load(Ordering::Relaxed);
        if magic != MAGIC || version != VERSION || cap as usize != capacity {
            return Err(RingError::Segment(format!(
                "header says magic {magic:#x}, version {version}, capacity {cap}; expected \
                 {MAGIC:#x}, {VERSION}, {capacity}"
            )));
        }
        Ok(seg)
    }

    /// The capacity of each ring.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The memory behind the segment.
    #[cfg(test)]
    pub(crate) fn mem(&self) -> &Arc<dyn SharedMem> {
        &self.mem
    }

    /// Data ring `i` (0 or 1).
    fn data_ring(&self, i: usize) -> RingPtr {
        RingPtr {
            mem: self.mem.clone(),
            off: SEGMENT_HEADER + i * (RING_HEADER + self.capacity),
            capacity: self.capacity,
        }
    }

    /// This side's ends: the producer of the ring it writes and the consumer of the
    /// ring it reads.
    pub(crate) fn ends(&self, side: Side) -> (Producer, Consumer) {
        let (tx, rx) = match side {
            Side::Connector => (0, 1),
            Side::Acceptor => (1, 0),
        };
        (
            Producer {
                ring: self.data_ring(tx),
                tail: 0,
                head_seen: 0,
                broken: None,
            },
            Consumer {
                ring: self.data_ring(rx),
                head: 0,
                tail_seen: 0,
                broken: None,
            },
        )
    }
}

/// The 64-bit atomic at byte `off` of `mem`.
///
/// # Panics
/// If `off` is not 8-aligned or the word is not inside `mem` (offsets come from our own
/// layout, never from the segment, so this does not happen).
fn atomic_u64(mem: &dyn SharedMem, off: usize) -> &AtomicU64 {
    assert!(off.is_multiple_of(8) && off.checked_add(8).is_some_and(|end| end <= mem.len()));
    // SAFETY: the word is inside `mem` (checked above) and 8-aligned (SharedMem's base
    // is, and so is `off`); SharedMem keeps it valid for as long as `mem` is borrowed,
    // which bounds the returned reference; everything in this process accesses it only
    // through such atomic views of this one width (SharedMem's contract and this
    // module's layout: no location is used with two widths), so the view is sound
    // whatever another process writes there.
    unsafe { AtomicU64::from_ptr(mem.base().add(off).cast::<u64>()) }
}

/// The 32-bit atomic at byte `off` of `mem`.
///
/// # Panics
/// As [`atomic_u64`], for 4-byte words.
fn atomic_u32(mem: &dyn SharedMem, off: usize) -> &AtomicU32 {
    assert!(off.is_multiple_of(4) && off.checked_add(4).is_some_and(|end| end <= mem.len()));
    // SAFETY: as in `atomic_u64`, for a 4-aligned 32-bit word.
    unsafe { AtomicU32::from_ptr(mem.base().add(off).cast::<u32>()) }
}

/// One data ring of a checked segment: its header at `off`, its data right after.
#[derive(Debug)]
struct RingPtr {
    mem: Arc<dyn SharedMem>,
    off: usize,
    capacity: usize,
}

impl RingPtr {
    fn field64(&self, field: usize) -> &AtomicU64 {
        atomic_u64(&*self.mem, self.off + field)
    }

    fn field32(&self, field: usize) -> &AtomicU32 {
        atomic_u32(&*self.mem, self.off + field)
    }

    /// The data area, as words.
    fn data(&self) -> &[AtomicU64] {
        let off = self.off + RING_HEADER;
        assert!(
            off.is_multiple_of(8)
                && off
                    .checked_add(self.capacity)
                    .is_some_and(|end| end <= self.mem.len())
        );
        // SAFETY: the `capacity / 8` words are inside `mem` (checked above) and
        // 8-aligned (SharedMem's base is, and so is `off`); SharedMem keeps them valid
        // for as long as `self.mem`, which bounds the returned slice; every access in
        // this process is atomic and 64 bits wide (SharedMem's contract; the data area is
        // only ever accessed as these words), so a slice of atomic views is sound
        // whatever another process writes there.
        unsafe {
            std::slice::from_raw_parts(
                self.mem.base().add(off).cast::<AtomicU64>(),
                self.capacity / 8,
            )
        }
    }

    /// Copy bytes of the stream from position `pos` into `dst` (all of it).
    fn copy_out(&self, pos: u64, mut dst: &mut [MaybeUninit<u8>]) {
        let data = self.data();
        let mask = self.capacity - 1;
        let mut idx = (pos as usize) & mask;
        while !dst.is_empty() {
            let (w, at) = (idx / 8, idx % 8);
            let (take, rest) = if at != 0 || dst.len() < 8 {
                // Part of a word.
                let take = (8 - at).min(dst.len());
                let b = data[w].load(Ordering::Relaxed).to_ne_bytes();
                for (d, s) in dst[..take].iter_mut().zip(&b[at..at + take]) {
                    d.write(*s);
                }
                (take, take)
            } else {
                // Whole words, up to the end of the data area.
                let n = (dst.len() / 8).min(data.len() - w);
                for (word, chunk) in data[w..w + n].iter().zip(dst.chunks_exact_mut(8)) {
                    let b = word.load(Ordering::Relaxed).to_ne_bytes();
                    for (d, s) in chunk.iter_mut().zip(b) {
                        d.write(s);
                    }
                }
                (n * 8, n * 8)
            };
            dst = &mut std::mem::take(&mut dst)[rest..];
            idx = (idx + take) & mask;
        }
    }

    /// Copy `src` into the stream at position `pos`.
    fn copy_in(&self, pos: u64, mut src: &[u8]) {
        let data = self.data();
        let mask = self.capacity - 1;
        let mut idx = (pos as usize) & mask;
        while !src.is_empty() {
            let (w, at) = (idx / 8, idx % 8);
            let take = if at != 0 || src.len() < 8 {
                // Part of a word: keep its other bytes (unread bytes written before, or
                // bytes of the previous lap the consumer has not read yet). Only the
                // consumer reads them meanwhile; it never writes the data area.
                let take = (8 - at).min(src.len());
                let mut b = data[w].load(Ordering::Relaxed).to_ne_bytes();
                b[at..at + take].copy_from_slice(&src[..take]);
                data[w].store(u64::from_ne_bytes(b), Ordering::Relaxed);
                take
            } else {
                // Whole words, up to the end of the data area.
                let n = (src.len() / 8).min(data.len() - w);
                for (word, chunk) in data[w..w + n].iter().zip(src.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    word.store(u64::from_ne_bytes(b), Ordering::Relaxed);
                }
                n * 8
            };
            src = &src[take..];
            idx = (idx + take) & mask;
        }
    }
}

/// The writing end of a ring.
#[derive(Debug)]
pub(crate) struct Producer {
    ring: RingPtr,
    /// Bytes written: ours, the shared copy is never read back.
    tail: u64,
    /// The consumer's head when we last looked.
    head_seen: u64,
    broken: Option<RingError>,
}

impl Producer {
    /// The ring's capacity.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Bytes that can be written now, after checking the consumer's head.
    pub(crate) fn free(&mut self) -> Result<usize, RingError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let head = self.ring.field64(HEAD).load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        let read_since = head.wrapping_sub(self.head_seen);
        let unread_before = self.tail.wrapping_sub(self.head_seen);
        if used > self.ring.capacity as u64 || read_since > unread_before {
            let e = RingError::Head {
                seen: self.head_seen,
                head,
                tail: self.tail,
            };
            self.broken = Some(e.clone());
            return Err(e);
        }
        self.head_seen = head;
        Ok(self.ring.capacity - used as usize)
    }

    /// Copy as much of `bufs` as fits and publish it; how many bytes went (0 when the
    /// ring is full). The caller then asks [`wake_needed`](Producer::wake_needed).
    pub(crate) fn write(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, RingError> {
        let mut room = self.free()?;
        let mut n = 0;
        for b in bufs {
            if room == 0 {
                break;
            }
            let take = b.len().min(room);
            self.ring
                .copy_in(self.tail.wrapping_add(n as u64), &b[..take]);
            n += take;
            room -= take;
        }
        if n > 0 {
            self.tail = self.tail.wrapping_add(n as u64);
            // Release: the bytes copied above are visible to whoever sees this tail.
            self.ring.field64(TAIL).store(self.tail, Ordering::Release);
        }
        Ok(n)
    }

    /// After publishing (a write or a close): whether the reader is parked and must be
    /// rung. Claims the wake-up (clears the flag), so one park costs one ring.
    pub(crate) fn wake_needed(&self) -> bool {
        // Dekker: our store of tail (or of the closed flag) is ordered before this load
        // of the reader's flag; the reader stores its flag, fences, then loads tail.
        fence(Ordering::SeqCst);
        let flag = self.ring.field32(READER_PARKED);
        flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::SeqCst) != 0
    }

    /// Announce that we are about to sleep until the consumer frees space. The caller
    /// must then check [`free`](Producer::free) (and the closed flags) again before it
    /// sleeps.
    pub(crate) fn park(&self) {
        self.ring.field32(WRITER_PARKED).store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// We are awake again.
    pub(crate) fn unpark(&self) {
        self.ring.field32(WRITER_PARKED).store(0, Ordering::Relaxed);
    }

    /// No more bytes will come: the consumer ends after the published ones. The caller
    /// then asks [`wake_needed`](Producer::wake_needed).
    pub(crate) fn close(&self) {
        self.ring
            .field32(PRODUCER_CLOSED)
            .store(1, Ordering::Release);
    }

    /// Whether the consumer went away (or claims it did).
    pub(crate) fn peer_closed(&self) -> bool {
        self.ring.field32(CONSUMER_CLOSED).load(Ordering::Acquire) != 0
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    ring: RingPtr,
    /// Bytes read: ours, the shared copy is never read back.
    head: u64,
    /// The producer's tail when we last looked.
    tail_seen: u64,
    broken: Option<RingError>,
}

impl Consumer {
    /// The ring's capacity.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Bytes that can be read now, after checking the producer's tail.
    pub(crate) fn available(&mut self) -> Result<usize, RingError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let tail = self.ring.field64(TAIL).load(Ordering::Acquire);
        let avail = tail.wrapping_sub(self.head);
        let before = self.tail_seen.wrapping_sub(self.head);
        if avail > self.ring.capacity as u64 || avail < before {
            let e = RingError::Tail {
                head: self.head,
                seen: self.tail_seen,
                tail,
            };
            self.broken = Some(e.clone());
            return Err(e);
        }
        self.tail_seen = tail;
        Ok(avail as usize)
    }

    /// Copy what is available (up to `dst.len()`) into `dst` and release the space; how
    /// many bytes came (0: the ring is empty). The caller then asks
    /// [`wake_needed`](Consumer::wake_needed).
    pub(crate) fn read(&mut self, dst: &mut [MaybeUninit<u8>]) -> Result<usize, RingError> {
        let n = self.available()?.min(dst.len());
        if n > 0 {
            self.ring.copy_out(self.head, &mut dst[..n]);
            self.head = self.head.wrapping_add(n as u64);
            // Release: we are done with these bytes before the producer may reuse them.
            self.ring.field64(HEAD).store(self.head, Ordering::Release);
        }
        Ok(n)
    }

    /// [`read`](Consumer::read) into the unfilled part of `buf`, marking what came as
    /// filled.
    pub(crate) fn read_buf(&mut self, buf: &mut ReadBuf<'_>) -> Result<usize, RingError> {
        // SAFETY: `read` only writes initialised bytes into the slice and never
        // de-initialises any, and exactly the `n` bytes it reports are then marked
        // initialised and filled.
        let n = self.read(unsafe { buf.unfilled_mut() })?;
        // SAFETY: the first `n` bytes of the unfilled part were just written.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Ok(n)
    }

    /// After releasing space (a read or a close): whether the writer is parked and must
    /// be rung. Claims the wake-up (clears the flag).
    pub(crate) fn wake_needed(&self) -> bool {
        // Dekker, as in Producer::wake_needed: our head store, then the writer's flag.
        fence(Ordering::SeqCst);
        let flag = self.ring.field32(WRITER_PARKED);
        flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::SeqCst) != 0
    }

    /// Announce that we are about to sleep until the producer writes. The caller must
    /// then check [`available`](Consumer::available) (and the closed flag) again before
    /// it sleeps.
    pub(crate) fn park(&self) {
        self.ring.field32(READER_PARKED).store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// We are awake again.
    pub(crate) fn unpark(&self) {
        self.ring.field32(READER_PARKED).store(0, Ordering::Relaxed);
    }

    /// We will read no more: the producer's writes fail from now on. The caller then asks
    /// [`wake_needed`](Consumer::wake_needed).
    pub(crate) fn close(&self) {
        self.ring
            .field32(CONSUMER_CLOSED)
            .store(1, Ordering::Release);
    }

    /// Whether the producer closed (or claims it did). Bytes published before the close
    /// are available once this is seen.
    pub(crate) fn peer_closed(&self) -> bool {
        self.ring.field32(PRODUCER_CLOSED).load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
pub(crate) mod tests;
