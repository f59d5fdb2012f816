//! The floors of the shared-memory transport:
//! what two processes sharing memory can do at best, with nothing of brood in between.
//!
//! - [`spin_round_trips`]: a 64-byte request and reply through a shared mapping, each
//!   side spinning on a sequence counter (no system call at all);
//! - [`memcpy`]: copying a buffer once, in one process (hot in that CPU's caches);
//! - [`handoff`]: 64 KiB chunks copied into a 1 MiB ring of shared memory by one process
//!   and out of it by another on the other CPU, both spinning: what moving bytes between
//!   two CPUs through shared memory costs at best (the bytes cross the CPUs' caches).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The message size of the round-trip floor.
pub(crate) const MSG: usize = 64;

/// A `MAP_SHARED | MAP_ANONYMOUS` mapping: after a `fork`, parent and child see the same
/// bytes. Laid out as two cache lines of counters and two message slots.
struct Shared {
    base: NonNull<u8>,
    len: usize,
}

/// Offsets in the mapping: each counter and slot on its own cache line.
const REQ_SEQ: usize = 0;
const REP_SEQ: usize = 64;
const REQ_SLOT: usize = 128;
const REP_SLOT: usize = 192;
const LEN: usize = 4096;

/// What the parent stores in the request counter to tell the child to exit.
const STOP: u64 = u64::MAX;

impl Shared {
    fn new() -> Shared {
        Shared::with_len(LEN)
    }

    fn with_len(len: usize) -> Shared {
        // SAFETY: an anonymous shared mapping of `len` bytes at an address of the kernel's
        // choosing; no existing memory is involved. The result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap failed");
        Shared {
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        }
    }

    fn counter(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: offset is one of the 8-aligned counter offsets inside the mapping,
        // which lives as long as `self`; the memory is only ever accessed as this
        // atomic (by both processes), which is what makes sharing it sound.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn slot(&self, offset: usize) -> *mut u8 {
        assert!(offset < self.len);
        // SAFETY: offset is within the mapping (checked); callers copy at most to its end.
        unsafe { self.base.as_ptr().add(offset) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `with_len` with this length and is unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// `iters` round trips of `MSG` bytes with a forked child through shared memory, both
/// sides spinning. The child is set up before and reaped after the timed loop.
pub(crate) fn spin_round_trips(iters: u64) -> Duration {
    let shared = Shared::new();
    let child_view = &shared;
    let echo = || {
        let (req, rep) = (child_view.counter(REQ_SEQ), child_view.counter(REP_SEQ));
        let mut seen = 0;
        loop {
            let seq = req.load(Ordering::Acquire);
            if seq == STOP {
                return 0;
            }
            if seq == seen {
                std::hint::spin_loop();
                continue;
            }
            seen = seq;
            // SAFETY: both slots are MSG bytes inside the mapping and do not overlap; the
            // parent wrote the request before publishing `seq` (its Release store is paired
            // with our Acquire load).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    child_view.slot(REQ_SLOT),
                    child_view.slot(REP_SLOT),
                    MSG,
                )
            };
            rep.store(seq, Ordering::Release);
        }
    };
    // SAFETY: the child only spins on atomics and copies bytes between two slots of a
    // mapping made before the fork: no allocation, lock or system call besides `_exit`.
    let pid = super::spawning_on_child_cpu(|| unsafe { super::fork_child(echo) });
    let (req, rep) = (shared.counter(REQ_SEQ), shared.counter(REP_SEQ));
    let request = [0x5au8; MSG];
    let mut reply = [0u8; MSG];
    let start = Instant::now();
    for i in 1..=iters {
        // SAFETY: the request slot is MSG bytes inside the mapping; the child reads it
        // only after it sees `i` published below.
        unsafe { std::ptr::copy_nonoverlapping(request.as_ptr(), shared.slot(REQ_SLOT), MSG) };
        req.store(i, Ordering::Release);
        while rep.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        // SAFETY: the reply slot is MSG bytes inside the mapping, written by the child
        // before it published `i`.
        unsafe { std::ptr::copy_nonoverlapping(shared.slot(REP_SLOT), reply.as_mut_ptr(), MSG) };
    }
    let elapsed = start.elapsed();
    assert_eq!(reply, request, "the floor's child echoed something else");
    req.store(STOP, Ordering::Release);
    super::reap(pid);
    elapsed
}

/// The handoff floor's chunk, and how many its ring holds (1 MiB, as brood's region
/// ring in the benchmark beside it).
const CHUNK: usize = 64 << 10;
const SLOTS: u64 = 16;
/// Offsets of the handoff ring's counters and first slot.
const TAIL: usize = 0;
const HEAD: usize = 64;
const DATA: usize = 4096;

/// `chunks` chunks of 64 KiB from this process to a forked child on the other CPU
/// through a ring of 16 slots in shared memory: this side copies each chunk in and
/// publishes it, the child copies it out and frees the slot, both spinning. Timed until
/// the child has taken the last one; the child is set up before and reaped after.
pub(crate) fn handoff(chunks: u64) -> Duration {
    let shared = Shared::with_len(DATA + CHUNK * SLOTS as usize);
    let child_view = &shared;
    // Allocated before the fork: the child only spins and copies.
    let mut out = vec![0u8; CHUNK];
    let drain = || {
        let (tail, head) = (child_view.counter(TAIL), child_view.counter(HEAD));
        let mut taken = 0u64;
        while taken < chunks {
            if tail.load(Ordering::Acquire) == taken {
                std::hint::spin_loop();
                continue;
            }
            let slot = DATA + (taken % SLOTS) as usize * CHUNK;
            // SAFETY: the slot is CHUNK bytes inside the mapping; the parent filled it
            // before publishing a tail past it (Release/Acquire), and does not reuse it
            // until we publish the head past it.
            unsafe {
                std::ptr::copy_nonoverlapping(child_view.slot(slot), out.as_mut_ptr(), CHUNK)
            };
            std::hint::black_box(&mut out);
            taken += 1;
            head.store(taken, Ordering::Release);
        }
        0
    };
    // SAFETY: the child spins on atomics and copies out of a mapping made before the
    // fork into a buffer allocated before it: no allocation, lock or system call besides
    // `_exit`.
    let pid = super::spawning_on_child_cpu(|| unsafe { super::fork_child(drain) });
    let (tail, head) = (shared.counter(TAIL), shared.counter(HEAD));
    let src = vec![0xa5u8; CHUNK];
    let start = Instant::now();
    for i in 0..chunks {
        while i - head.load(Ordering::Acquire) >= SLOTS {
            std::hint::spin_loop();
        }
        let slot = DATA + (i % SLOTS) as usize * CHUNK;
        // SAFETY: the slot is CHUNK bytes inside the mapping and free (the child's head
        // is past its previous use).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), shared.slot(slot), CHUNK) };
        tail.store(i + 1, Ordering::Release);
    }
    while head.load(Ordering::Acquire) < chunks {
        std::hint::spin_loop();
    }
    let elapsed = start.elapsed();
    super::reap(pid);
    elapsed
}

/// `iters` copies of `src` into `dst`.
pub(crate) fn memcpy(iters: u64, src: &[u8], dst: &mut [u8]) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        dst.copy_from_slice(std::hint::black_box(src));
        std::hint::black_box(&mut *dst);
    }
    start.elapsed()
}
