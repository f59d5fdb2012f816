//! The ring on heap memory: the algorithm alone, under Miri too
//! (`cargo +nightly miri test -p ipc-shm ring`), and against an adversarial peer that
//! writes random words into the header and the data while both ends run.

use super::*;
use std::thread;

/// Zeroed heap memory standing in for a shared mapping.
#[derive(Debug)]
pub(crate) struct HeapMem(Box<[AtomicU64]>);

impl HeapMem {
    pub(crate) fn new(len: usize) -> Arc<HeapMem> {
        Arc::new(HeapMem(
            (0..len.div_ceil(8)).map(|_| AtomicU64::new(0)).collect(),
        ))
    }
}

// SAFETY: the boxed slice is 8-aligned, lives as long as the value and is never moved
// out; it is accessed only through the ring module's atomics (and this test module's
// adversary, which uses the same atomics of the same widths).
unsafe impl SharedMem for HeapMem {
    fn base(&self) -> *mut u8 {
        self.0.as_ptr().cast_mut().cast::<u8>()
    }
    fn len(&self) -> usize {
        self.0.len() * 8
    }
}

/// A fresh segment of `cap`-byte rings on the heap.
pub(crate) fn segment(cap: usize) -> Segment {
    Segment::init(HeapMem::new(segment_len(cap).unwrap()), cap).unwrap()
}

fn write_all(p: &mut Producer, bytes: &[u8]) -> usize {
    p.write(&[IoSlice::new(bytes)]).unwrap()
}

fn read_vec(c: &mut Consumer, max: usize) -> Vec<u8> {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); max];
    let n = c.read(&mut buf).unwrap();
    // SAFETY: `read` initialised the first `n` bytes.
    buf[..n]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect()
}

/// Byte `i` of a test stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 7)) as u8
}

#[test]
fn ring_bytes_come_out_in_order_across_many_wraps() {
    let seg = segment(16);
    let (mut p, _) = seg.ends(Side::Connector);
    let (_, mut c) = seg.ends(Side::Acceptor);
    let mut written = 0u64;
    let mut read = 0u64;
    // Odd sizes, so that writes and reads start and end at every offset in a word.
    for round in 0..60usize {
        let want = 1 + round % 13;
        let chunk: Vec<u8> = (written..written + want as u64).map(pattern).collect();
        let n = write_all(&mut p, &chunk);
        assert!(n <= want);
        written += n as u64;
        let got = read_vec(&mut c, 1 + round % 7);
        for b in got {
            assert_eq!(b, pattern(read), "byte {read}");
            read += 1;
        }
    }
    while read < written {
        for b in read_vec(&mut c, 16) {
            assert_eq!(b, pattern(read));
            read += 1;
        }
    }
    assert!(written > 16 * 10, "wrapped many times ({written} bytes)");
}

#[test]
fn ring_a_full_ring_takes_nothing_until_read() {
    let seg = segment(16);
    let (mut p, mut c_other) = seg.ends(Side::Connector);
    let (mut p_other, mut c) = seg.ends(Side::Acceptor);
    assert_eq!(p.capacity(), 16);
    assert_eq!(c.capacity(), 16);
    assert_eq!(seg.capacity(), 16);
    assert_eq!(p.free().unwrap(), 16);
    let bufs = [IoSlice::new(&[1; 10]), IoSlice::new(&[2; 10])];
    assert_eq!(p.write(&bufs).unwrap(), 16, "vectored: fills across slices");
    assert_eq!(p.free().unwrap(), 0);
    assert_eq!(write_all(&mut p, &[3]), 0, "full");
    assert_eq!(c.available().unwrap(), 16);
    assert_eq!(read_vec(&mut c, 11), [[1u8; 10].as_slice(), &[2]].concat());
    assert_eq!(p.free().unwrap(), 11);
    assert_eq!(write_all(&mut p, &[3; 11]), 11);
    assert_eq!(
        read_vec(&mut c, 64),
        [[2u8; 5].as_slice(), &[3; 11]].concat()
    );
    assert_eq!(read_vec(&mut c, 64), Vec::<u8>::new(), "empty");
    // The other direction is independent.
    assert_eq!(c_other.available().unwrap(), 0);
    assert_eq!(write_all(&mut p_other, b"back"), 4);
    assert_eq!(read_vec(&mut c_other, 8), b"back");
}

#[test]
fn ring_read_buf_fills_the_unfilled_part_only() {
    let seg = segment(32);
    let (mut p, _) = seg.ends(Side::Connector);
    let (_, mut c) = seg.ends(Side::Acceptor);
    write_all(&mut p, b"0123456789");
    let mut storage = [MaybeUninit::<u8>::uninit(); 8];
    let mut buf = ReadBuf::uninit(&mut storage);
    buf.put_slice(b"ab");
    assert_eq!(c.read_buf(&mut buf).unwrap(), 6);
    assert_eq!(buf.filled(), b"ab012345");
    assert_eq!(c.read_buf(&mut buf).unwrap(), 0, "no room");
    let mut storage = [0u8; 8];
    let mut buf = ReadBuf::new(&mut storage);
    assert_eq!(c.read_buf(&mut buf).unwrap(), 4);
    assert_eq!(buf.filled(), b"6789");
}

#[test]
fn ring_segments_of_the_wrong_shape_are_refused() {
    let cap = 64;
    let len = segment_len(cap).unwrap();
    for bad_cap in [0, 4, 48, 65] {
        assert!(matches!(
            Segment::init(HeapMem::new(segment_len(bad_cap).unwrap_or(64)), bad_cap),
            Err(RingError::Segment(_))
        ));
    }
    assert!(matches!(
        Segment::init(HeapMem::new(len + 8), cap),
        Err(RingError::Segment(_))
    ));
    let seg = segment(cap);
    Segment::open(seg.mem().clone(), cap).expect("its own header");
    assert!(
        matches!(
            Segment::open(seg.mem().clone(), cap * 2),
            Err(RingError::Segment(_))
        ),
        "another capacity than the memory holds"
    );
    let fresh = HeapMem::new(len);
    let e = Segment::open(fresh, cap).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
    atomic_u32(&**seg.mem(), 12).store(32, Ordering::Relaxed);
    assert!(
        Segment::open(seg.mem().clone(), cap).is_err(),
        "capacity in the header"
    );
    assert_eq!(segment_len(usize::MAX), None);
    let p: ProtocolError = e.into();
    assert!(matches!(p, ProtocolError::Decode(m) if m.contains("shared-memory ring")));
}

/// Store `value` at byte `off` (8-aligned, a 64-bit field or data word) of `mem`, as a
/// hostile peer would.
pub(crate) fn scribble_u64(mem: &dyn SharedMem, off: usize, value: u64) {
    atomic_u64(mem, off).store(value, Ordering::Relaxed);
}

/// Offset of ring `i`'s header in a segment of `cap`-byte rings.
fn ring_off(i: usize, cap: usize) -> usize {
    SEGMENT_HEADER + i * (RING_HEADER + cap)
}

#[test]
fn ring_a_tail_out_of_range_or_moving_back_is_a_sticky_error() {
    let cap = 16;
    let seg = segment(cap);
    let (mut p, _) = seg.ends(Side::Connector);
    let (_, mut c) = seg.ends(Side::Acceptor);
    let tail = atomic_u64(&**seg.mem(), ring_off(0, cap) + TAIL);
    write_all(&mut p, &[7; 10]);
    assert_eq!(c.available().unwrap(), 10);
    // Back: tail below what we saw.
    tail.store(4, Ordering::Relaxed);
    let e = c.available().unwrap_err();
    assert!(
        matches!(
            e,
            RingError::Tail {
                tail: 4,
                seen: 10,
                ..
            }
        ),
        "{e:?}"
    );
    tail.store(10, Ordering::Relaxed);
    assert_eq!(c.available().unwrap_err(), e, "sticky");
    let mut buf = [MaybeUninit::uninit(); 4];
    assert_eq!(c.read(&mut buf).unwrap_err(), e);

    for bad in [17u64, u64::MAX, 1 << 63] {
        let seg = segment(cap);
        let (_, mut c) = seg.ends(Side::Acceptor);
        atomic_u64(&**seg.mem(), ring_off(0, cap) + TAIL).store(bad, Ordering::Relaxed);
        assert!(
            matches!(c.available(), Err(RingError::Tail { .. })),
            "tail {bad}"
        );
    }
}

#[test]
fn ring_a_head_out_of_range_or_moving_back_is_a_sticky_error() {
    let cap = 16;
    for bad in [11u64, u64::MAX, 3] {
        let seg = segment(cap);
        let (mut p, _) = seg.ends(Side::Connector);
        let (_, mut c) = seg.ends(Side::Acceptor);
        write_all(&mut p, &[1; 10]);
        read_vec(&mut c, 5);
        assert_eq!(p.free().unwrap(), 11);
        // 11: past our tail; MAX: far past; 3: behind the 5 we saw.
        atomic_u64(&**seg.mem(), ring_off(0, cap) + HEAD).store(bad, Ordering::Relaxed);
        let e = p.free().unwrap_err();
        assert!(
            matches!(e, RingError::Head { head, .. } if head == bad),
            "{e:?}"
        );
        assert_eq!(p.write(&[IoSlice::new(b"x")]).unwrap_err(), e, "sticky");
        assert!(ProtocolError::from(e).to_string().contains("read index"));
    }
}

#[test]
fn ring_parking_claims_one_wake_per_park() {
    let seg = segment(16);
    let (mut p, _) = seg.ends(Side::Connector);
    let (_, mut c) = seg.ends(Side::Acceptor);
    write_all(&mut p, b"a");
    assert!(!p.wake_needed(), "the reader is not parked");
    c.park();
    write_all(&mut p, b"b");
    assert!(p.wake_needed(), "the reader parked: ring once");
    assert!(!p.wake_needed(), "and only once");
    c.park();
    c.unpark();
    assert!(!p.wake_needed(), "the reader woke by itself");

    write_all(&mut p, &[0; 14]);
    p.park();
    read_vec(&mut c, 4);
    assert!(c.wake_needed(), "the writer parked on a full ring");
    assert!(!c.wake_needed());
    p.park();
    p.unpark();
    assert!(!c.wake_needed());
}

#[test]
fn ring_closing_is_seen_by_the_other_end() {
    let seg = segment(16);
    let (mut p, _) = seg.ends(Side::Connector);
    let (_, mut c) = seg.ends(Side::Acceptor);
    assert!(!c.peer_closed() && !p.peer_closed());
    write_all(&mut p, b"last");
    c.park();
    p.close();
    assert!(p.wake_needed(), "a parked reader is rung for the close");
    assert!(c.peer_closed());
    assert_eq!(
        read_vec(&mut c, 8),
        b"last",
        "bytes before the close arrive"
    );
    c.close();
    assert!(p.peer_closed());
}

/// A tiny deterministic generator (xorshift), so that Miri runs need no OS randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How long the threaded tests go on (Miri is slow).
fn stream_len() -> u64 {
    if cfg!(miri) { 600 } else { 200_000 }
}

/// An honest producer: writes the pattern stream in odd-sized pieces, then closes; stops
/// early at an error. Bounded by `steps`.
fn produce(mut p: Producer, total: u64, seed: u64, steps: usize) -> Result<u64, RingError> {
    let mut rng = Rng(seed | 1);
    let mut sent = 0u64;
    let mut buf = Vec::new();
    for _ in 0..steps {
        if sent == total {
            break;
        }
        let want = (1 + rng.below(23)).min((total - sent) as usize);
        buf.clear();
        buf.extend((sent..sent + want as u64).map(pattern));
        let n = p.write(&[IoSlice::new(&buf)])?;
        sent += n as u64;
        if n == 0 {
            thread::yield_now();
        }
    }
    p.close();
    Ok(sent)
}

/// A consumer: reads until the producer closed and the ring is empty, an error, or
/// `steps` reads; returns the bytes.
fn consume(mut c: Consumer, seed: u64, steps: usize) -> Result<Vec<u8>, RingError> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    let mut buf = [MaybeUninit::<u8>::uninit(); 64];
    for _ in 0..steps {
        let closed = c.peer_closed();
        let n = c.read(&mut buf[..1 + rng.below(63)])?;
        // SAFETY: `read` initialised the first `n` bytes.
        out.extend(buf[..n].iter().map(|b| unsafe { b.assume_init() }));
        if n == 0 {
            if closed {
                break;
            }
            thread::yield_now();
        }
    }
    Ok(out)
}

#[test]
fn ring_two_threads_stream_bytes_in_order() {
    let seg = segment(64);
    let (p, _) = seg.ends(Side::Connector);
    let (_, c) = seg.ends(Side::Acceptor);
    let total = stream_len();
    let steps = usize::MAX;
    let producer = thread::spawn(move || produce(p, total, 7, steps));
    let got = consume(c, 11, steps).unwrap();
    assert_eq!(producer.join().unwrap().unwrap(), total);
    assert_eq!(got.len() as u64, total);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i as u64)));
}

/// A doorbell for threads: a counter the waker bumps, and whether the waker is done.
#[derive(Default)]
struct TestBell {
    rings: AtomicU64,
    done: std::sync::atomic::AtomicBool,
}

impl TestBell {
    fn ring(&self) {
        self.rings.fetch_add(1, Ordering::SeqCst);
    }

    /// Sleep until rung after `seen`; `false` if the other side finished without ringing
    /// (a lost wake-up, since we only sleep after parking and checking again).
    fn wait(&self, seen: u64) -> bool {
        loop {
            if self.rings.load(Ordering::SeqCst) != seen {
                return true;
            }
            if self.done.load(Ordering::SeqCst) {
                return self.rings.load(Ordering::SeqCst) != seen;
            }
            thread::yield_now();
        }
    }
}

#[test]
fn ring_no_wake_up_is_lost_between_parking_and_publishing() {
    // A tiny ring and one-byte steps: both sides park often, the reader on an empty
    // ring and the writer on a full one.
    let seg = segment(8);
    let (mut p, _) = seg.ends(Side::Connector);
    let (_, mut c) = seg.ends(Side::Acceptor);
    let total: u64 = if cfg!(miri) { 60 } else { 20_000 };
    let reader_bell = Arc::new(TestBell::default());
    let writer_bell = Arc::new(TestBell::default());
    let writer = {
        let (reader_bell, writer_bell) = (reader_bell.clone(), writer_bell.clone());
        thread::spawn(move || {
            let mut sent = 0u64;
            while sent < total {
                let seen = writer_bell.rings.load(Ordering::SeqCst);
                let n = p.write(&[IoSlice::new(&[pattern(sent)])]).unwrap();
                if n > 0 {
                    p.unpark();
                    sent += 1;
                    if p.wake_needed() {
                        reader_bell.ring();
                    }
                    continue;
                }
                p.park();
                if p.free().unwrap() > 0 {
                    continue;
                }
                assert!(writer_bell.wait(seen), "the writer's wake-up was lost");
            }
            p.close();
            if p.wake_needed() {
                reader_bell.ring();
            }
            reader_bell.done.store(true, Ordering::SeqCst);
        })
    };
    let mut got = 0u64;
    let mut buf = [MaybeUninit::<u8>::uninit(); 3];
    loop {
        let seen = reader_bell.rings.load(Ordering::SeqCst);
        let n = c.read(&mut buf).unwrap();
        if n > 0 {
            c.unpark();
            for b in &buf[..n] {
                // SAFETY: `read` initialised the first `n` bytes.
                assert_eq!(unsafe { b.assume_init() }, pattern(got));
                got += 1;
            }
            if c.wake_needed() {
                writer_bell.ring();
            }
            continue;
        }
        if c.peer_closed() && c.available().unwrap() == 0 {
            break;
        }
        c.park();
        if c.available().unwrap() > 0 || c.peer_closed() {
            continue;
        }
        assert!(reader_bell.wait(seen), "the reader's wake-up was lost");
    }
    writer_bell.done.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(got, total);
}

/// Whether the 8-byte slot at `off` of a segment of `cap`-byte rings holds 32-bit fields
/// (which must be written as such: no location is accessed with two widths).
fn is_u32_slot(off: usize, cap: usize) -> bool {
    if off == 8 {
        return true; // version and capacity in the segment header
    }
    (0..2).any(|i| {
        let r = ring_off(i, cap);
        [
            PRODUCER_CLOSED,
            CONSUMER_CLOSED,
            READER_PARKED,
            WRITER_PARKED,
        ]
        .contains(&(off.wrapping_sub(r)))
    })
}

/// Write `value` into the 8-byte slot at `off` with the widths the ring uses there.
fn scribble(mem: &dyn SharedMem, off: usize, value: u64, cap: usize) {
    if is_u32_slot(off, cap) {
        atomic_u32(mem, off).store(value as u32, Ordering::Relaxed);
        atomic_u32(mem, off + 4).store((value >> 32) as u32, Ordering::Relaxed);
    } else {
        atomic_u64(mem, off).store(value, Ordering::Relaxed);
    }
}

/// One adversarial run: an honest producer and a consumer on ring 0 while an adversary
/// writes `writes` random words at random places of the segment (header fields, the
/// data, or anywhere), then stops. Whatever happens, both ends return (no panic, no
/// endless loop: their steps are bounded), every failure is a `RingError`, and bytes
/// that arrive before the first scribble are the stream's.
fn adversarial_run(seed: u64, cap: usize, writes: usize, steps: usize) {
    let seg = segment(cap);
    let (p, _) = seg.ends(Side::Connector);
    let (_, c) = seg.ends(Side::Acceptor);
    let mem = seg.mem().clone();
    let adversary = {
        thread::spawn(move || {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let len = mem.len();
            let hot = [
                TAIL,
                HEAD,
                PRODUCER_CLOSED,
                CONSUMER_CLOSED,
                READER_PARKED,
                WRITER_PARKED,
            ];
            for _ in 0..writes {
                let off = match rng.below(3) {
                    // A field of ring 0's header.
                    0 => ring_off(0, cap) + hot[rng.below(hot.len())] / 8 * 8,
                    // Ring 0's data.
                    1 => ring_off(0, cap) + RING_HEADER + rng.below(cap / 8) * 8,
                    // Anywhere.
                    _ => rng.below(len / 8) * 8,
                };
                let value = match rng.below(4) {
                    0 => rng.next(),
                    1 => rng.next() % (4 * cap as u64),
                    2 => 0,
                    _ => u64::MAX,
                };
                scribble(&*mem, off, value, cap);
                if rng.below(4) == 0 {
                    thread::yield_now();
                }
            }
        })
    };
    let total = stream_len();
    let producer = thread::spawn(move || produce(p, total, seed, steps));
    let consumed = consume(c, seed ^ 0x55, steps);
    adversary.join().expect("the adversary does not panic");
    let produced = producer.join().expect("the producer does not panic");
    // Errors are typed; which side notices depends on the interleaving.
    if let Err(e) = &produced {
        assert!(matches!(e, RingError::Head { .. }), "{e:?}");
    }
    if let Err(e) = &consumed {
        assert!(matches!(e, RingError::Tail { .. }), "{e:?}");
    }
    if writes == 0 {
        // Without an adversary: a prefix of the stream, all of it given the steps.
        let (got, sent) = (consumed.unwrap(), produced.unwrap());
        assert!(got.len() as u64 <= sent);
        assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i as u64)));
        if steps == usize::MAX {
            assert_eq!((sent, got.len() as u64), (total, total));
        }
    }
}

#[test]
fn ring_an_adversary_scribbling_on_the_segment_causes_no_ub_panic_or_hang() {
    let (runs, writes, steps) = if cfg!(miri) {
        (2, 200, 400)
    } else {
        (50, 5_000, 20_000)
    };
    for seed in 1..=runs {
        adversarial_run(seed, 64, writes, steps);
    }
    adversarial_run(99, 64, 0, usize::MAX);
}

#[cfg(not(miri))]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// One step of a single-threaded run: write or read so many bytes.
    #[derive(Clone, Debug)]
    enum Op {
        Write(usize),
        Read(usize),
        /// The adversary writes `value` into the slot at 8-byte index `slot`.
        Scribble {
            slot: usize,
            value: u64,
        },
    }

    fn op(cap: usize) -> impl Strategy<Value = Op> {
        let slots = segment_len(cap).unwrap() / 8;
        prop_oneof![
            4 => (0..3 * cap).prop_map(Op::Write),
            4 => (0..3 * cap).prop_map(Op::Read),
            1 => (0..slots, any::<u64>()).prop_map(|(slot, value)| Op::Scribble { slot, value }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Against a model (a queue of bytes): without scribbles the ring is exactly a
        /// bounded FIFO; once the adversary wrote, every call still returns (no panic),
        /// counts stay within the capacity, and failures are typed.
        #[test]
        fn ring_matches_a_bounded_fifo_until_the_peer_scribbles(
            cap_log in 3usize..8,
            ops in proptest::collection::vec(op(128), 1..200),
        ) {
            let cap = 1 << cap_log;
            let seg = segment(cap);
            let (mut p, _) = seg.ends(Side::Connector);
            let (_, mut c) = seg.ends(Side::Acceptor);
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut next = 0u64;
            let mut scribbled = false;
            for op in ops {
                match op {
                    Op::Write(n) => {
                        let bytes: Vec<u8> = (next..next + n as u64).map(pattern).collect();
                        match p.write(&[IoSlice::new(&bytes)]) {
                            Ok(w) => {
                                prop_assert!(w <= n && w <= cap);
                                if !scribbled {
                                    prop_assert_eq!(w, n.min(cap - model.len()));
                                }
                                model.extend(&bytes[..w]);
                                next += w as u64;
                            }
                            Err(e) => {
                                prop_assert!(scribbled, "error without a scribble: {e}");
                                prop_assert!(matches!(e, RingError::Head { .. }), "{:?}", e);
                            }
                        }
                    }
                    Op::Read(n) => {
                        let mut buf = vec![MaybeUninit::<u8>::uninit(); n];
                        match c.read(&mut buf) {
                            Ok(r) => {
                                prop_assert!(r <= n && r <= cap);
                                if !scribbled {
                                    prop_assert_eq!(r, n.min(model.len()));
                                    for b in &buf[..r] {
                                        // SAFETY: `read` initialised the first `r` bytes.
                                        let b = unsafe { b.assume_init() };
                                        prop_assert_eq!(Some(b), model.pop_front());
                                    }
                                }
                            }
                            Err(e) => {
                                prop_assert!(scribbled, "error without a scribble: {e}");
                                prop_assert!(matches!(e, RingError::Tail { .. }), "{:?}", e);
                            }
                        }
                    }
                    Op::Scribble { slot, value } => {
                        let slot = slot % (segment_len(cap).unwrap() / 8);
                        scribble(&**seg.mem(), slot * 8, value, cap);
                        scribbled = true;
                    }
                }
            }
        }

        /// Threads, as between two processes: an adversary scribbles while both ends
        /// run; nothing panics or loops forever and failures are typed.
        #[test]
        fn ring_survives_an_adversary_writing_random_bytes(
            seed in 1u64..u64::MAX,
            cap_log in 3usize..10,
            writes in 0usize..2_000,
        ) {
            adversarial_run(seed, 1 << cap_log, writes, 5_000);
        }
    }
}
