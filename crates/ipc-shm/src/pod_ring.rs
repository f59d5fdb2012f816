//! A typed single-producer/single-consumer ring in a [`ShmRegion`]: the high-rate path
//! between two actors that agree on an item type.
//!
//! Items are plain old data (`bytemuck::Pod`: every bit pattern is a valid value, no
//! pointers, no padding), so whatever a peer writes into a slot is a valid `T`, and
//! items are copied in and out, never referenced in place. One actor makes the ring
//! ([`ShmRegion::new_ring`]) and hands the region to the other; each side claims its end
//! once ([`ShmRegion::ring_sender`], [`ShmRegion::ring_receiver`]).
//!
//! ## Layout and ordering
//!
//! The region starts with a 256-byte header: a magic number, the item size and the
//! capacity (a power of two), the two claim flags, then the sender's `tail` (items ever
//! sent) and closed flag on their own cache line, and the receiver's `head` (items ever
//! taken) and closed flag on another. The slots follow. The sender copies items into
//! free slots, then publishes `tail` with `Release`; the receiver loads `tail` with
//! `Acquire`, copies the items out, then publishes `head` with `Release`; the sender
//! loads `head` with `Acquire` before it reuses slots.
//!
//! ## A peer that lies
//!
//! Each side keeps its own index privately and reads the other's from shared memory as
//! untrusted: an index that runs backwards or further ahead than the capacity makes the
//! ring [`RegionError::Corrupt`] for good. Slots are addressed by an index masked to the
//! capacity read once when the end was claimed, so nothing a peer writes can make an
//! access leave the region. A peer that scribbles on slots gets you wrong items, not
//! undefined behaviour.
//!
//! ## Waiting
//!
//! [`RingSender::send`] and [`RingReceiver::recv`] wait for room or items without
//! blocking the executor: they look again for up to 200 µs (yielding to the actor's
//! other tasks between looks), then sleep in growing steps up to a millisecond. An end dropped (or its
//! process gone, which drops it) is seen as [`RegionError::Closed`] by the sender and
//! as the end of items by the receiver; a peer that dies without either is noticed only
//! by whoever supervises it (the nursery), so pair a ring with a call or a stream that
//! fails when the peer does.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytemuck::Pod;

use crate::region::{RegionError, ShmRegion};

const MAGIC: u64 = u64::from_le_bytes(*b"BROODPOD");
const HEADER: usize = 256;
const OFF_MAGIC: usize = 0;
const OFF_SIZE: usize = 8;
const OFF_CAP: usize = 16;
const OFF_SENDER_CLAIM: usize = 24;
const OFF_RECEIVER_CLAIM: usize = 28;
const OFF_TAIL: usize = 64;
const OFF_SENDER_CLOSED: usize = 72;
const OFF_HEAD: usize = 128;
const OFF_RECEIVER_CLOSED: usize = 136;

/// The largest ring capacity, in items.
pub const MAX_RING_ITEMS: usize = 1 << 30;

impl ShmRegion {
    /// A new region laid out as a ring of `capacity` items of type `T` (rounded up to a
    /// power of two), ready to be claimed by one sender and one receiver, here or in
    /// the actors it is handed to.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use ipc_shm::ShmRegion;
    /// let region = ShmRegion::new_ring::<[u64; 4]>(1024)?;
    /// let mut tx = region.ring_sender::<[u64; 4]>()?;
    /// let mut rx = region.ring_receiver::<[u64; 4]>()?;
    /// tx.send(&[1, 2, 3, 4]).await?;
    /// drop(tx);
    /// assert_eq!(rx.recv().await?, Some([1, 2, 3, 4]));
    /// assert_eq!(rx.recv().await?, None, "the sender is gone");
    /// # Ok::<(), ipc_shm::RegionError>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`RegionError::BadLength`] for a zero-sized `T`, no capacity, or more than
    /// [`MAX_RING_ITEMS`] items; what [`ShmRegion::new`] returns.
    pub fn new_ring<T: Pod>(capacity: usize) -> Result<ShmRegion, RegionError> {
        let size = std::mem::size_of::<T>();
        if size == 0 || capacity == 0 || capacity > MAX_RING_ITEMS {
            return Err(RegionError::BadLength(capacity));
        }
        let cap = capacity.next_power_of_two();
        let len = cap
            .checked_mul(size)
            .and_then(|d| d.checked_add(HEADER))
            .ok_or(RegionError::BadLength(capacity))?;
        let region = ShmRegion::new(len)?;
        region
            .atomic_u64(OFF_SIZE)?
            .store(size as u64, Ordering::Relaxed);
        region
            .atomic_u64(OFF_CAP)?
            .store(cap as u64, Ordering::Relaxed);
        // Last, with Release: an end that sees the magic sees the rest.
        region
            .atomic_u64(OFF_MAGIC)?
            .store(MAGIC, Ordering::Release);
        Ok(region)
    }

    /// Claim this ring's sending end.
    ///
    /// # Errors
    /// [`RegionError::Corrupt`] if the region is not a ring of `T` (wrong magic, item
    /// size or capacity for its length); [`RegionError::Claimed`] if a sender exists
    /// (here or in any holder).
    pub fn ring_sender<T: Pod>(&self) -> Result<RingSender<T>, RegionError> {
        let shape = Shape::check::<T>(self)?;
        claim(self, OFF_SENDER_CLAIM, "sender")?;
        let tail = self.atomic_u64(OFF_TAIL)?.load(Ordering::Acquire);
        Ok(RingSender {
            region: self.clone(),
            shape,
            tail,
            head_seen: tail,
            _t: PhantomData,
        })
    }

    /// Claim this ring's receiving end.
    ///
    /// # Errors
    /// As [`ShmRegion::ring_sender`], for the receiver.
    pub fn ring_receiver<T: Pod>(&self) -> Result<RingReceiver<T>, RegionError> {
        let shape = Shape::check::<T>(self)?;
        claim(self, OFF_RECEIVER_CLAIM, "receiver")?;
        let head = self.atomic_u64(OFF_HEAD)?.load(Ordering::Acquire);
        Ok(RingReceiver {
            region: self.clone(),
            shape,
            head,
            tail_seen: head,
            _t: PhantomData,
        })
    }
}

fn claim(region: &ShmRegion, offset: usize, what: &'static str) -> Result<(), RegionError> {
    region
        .atomic_u32(offset)?
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .map(drop)
        .map_err(|_| RegionError::Claimed(what))
}

/// What an end read from the header once, checked; never read again.
#[derive(Clone, Copy, Debug)]
struct Shape {
    cap: u64,
    size: usize,
}

impl Shape {
    fn check<T: Pod>(region: &ShmRegion) -> Result<Shape, RegionError> {
        let corrupt = |m: String| Err(RegionError::Corrupt(m));
        if region.len() < HEADER {
            return corrupt(format!("{} bytes cannot hold a ring", region.len()));
        }
        if region.atomic_u64(OFF_MAGIC)?.load(Ordering::Acquire) != MAGIC {
            return corrupt("not a ring (no magic)".into());
        }
        let size = region.atomic_u64(OFF_SIZE)?.load(Ordering::Relaxed);
        let cap = region.atomic_u64(OFF_CAP)?.load(Ordering::Relaxed);
        let want = std::mem::size_of::<T>() as u64;
        if size != want {
            return corrupt(format!("a ring of {size}-byte items, not {want}-byte ones"));
        }
        if !cap.is_power_of_two() || cap > MAX_RING_ITEMS as u64 {
            return corrupt(format!("capacity {cap} is not a power of two in range"));
        }
        let need = cap * size + HEADER as u64;
        if need > region.len() as u64 {
            return corrupt(format!(
                "{cap} items need {need} bytes, the region has {}",
                region.len()
            ));
        }
        Ok(Shape {
            cap,
            size: size as usize,
        })
    }

    fn offset(&self, index: u64) -> usize {
        HEADER + (index & (self.cap - 1)) as usize * self.size
    }
}

/// Back-off while waiting on a peer: look again at once for a while (letting the
/// executor run other tasks between looks), then sleep in growing steps up to 1 ms. The
/// busy phase is long enough to cover a peer that is busy with the previous item (a
/// copy of a few hundred KiB); only a peer idle for longer costs sleeps.
struct Backoff {
    started: Option<std::time::Instant>,
    sleeps: u32,
}

impl Backoff {
    /// How long a waiting end keeps looking before it sleeps.
    const BUSY: Duration = Duration::from_micros(200);

    fn new() -> Backoff {
        Backoff {
            started: None,
            sleeps: 0,
        }
    }

    async fn wait(&mut self) {
        let now = std::time::Instant::now();
        let started = *self.started.get_or_insert(now);
        if now.duration_since(started) < Self::BUSY {
            std::hint::spin_loop();
            tokio::task::yield_now().await;
            return;
        }
        let us = 50u64 << self.sleeps.min(5);
        self.sleeps += 1;
        tokio::time::sleep(Duration::from_micros(us.min(1000))).await;
    }
}

/// The sending end of a ring in a [`ShmRegion`]. Closing (dropping) it ends the
/// receiver's items after the last one sent.
#[derive(Debug)]
pub struct RingSender<T> {
    region: ShmRegion,
    shape: Shape,
    /// Items ever sent: ours, never read back from shared memory.
    tail: u64,
    /// The receiver's `head` as last seen.
    head_seen: u64,
    _t: PhantomData<fn(T)>,
}

impl<T: Pod> RingSender<T> {
    fn tail_atomic(&self) -> &AtomicU64 {
        self.region
            .atomic_u64(OFF_TAIL)
            .expect("in the checked header")
    }

    /// Room for how many more items, reading the receiver's index if needed.
    fn room(&mut self) -> Result<u64, RegionError> {
        if self
            .region
            .atomic_u32(OFF_RECEIVER_CLOSED)?
            .load(Ordering::Acquire)
            != 0
        {
            return Err(RegionError::Closed);
        }
        let mut used = self.tail.wrapping_sub(self.head_seen);
        if used >= self.shape.cap {
            let head = self.region.atomic_u64(OFF_HEAD)?.load(Ordering::Acquire);
            let now = self.tail.wrapping_sub(head);
            if now > self.shape.cap || head.wrapping_sub(self.head_seen) > self.shape.cap {
                return Err(RegionError::Corrupt(format!(
                    "the receiver's index {head} is not within {} of ours, {}",
                    self.shape.cap, self.tail
                )));
            }
            self.head_seen = head;
            used = now;
        }
        Ok(self.shape.cap - used)
    }

    /// Send as many of `items` as there is room for, without waiting; returns how many
    /// went.
    ///
    /// # Errors
    /// [`RegionError::Closed`] if the receiver is gone; [`RegionError::Corrupt`] if its
    /// index is impossible.
    pub fn try_send_slice(&mut self, items: &[T]) -> Result<usize, RegionError> {
        let room = self.room()?;
        let n = items.len().min(room as usize);
        // At most two runs of contiguous slots: up to the end of the slots, then from
        // their start.
        let mut left = &items[..n];
        while !left.is_empty() {
            let slot = self.tail & (self.shape.cap - 1);
            let run = left.len().min((self.shape.cap - slot) as usize);
            let at = self.shape.offset(self.tail);
            self.region.write(at, bytemuck::cast_slice(&left[..run]))?;
            self.tail = self.tail.wrapping_add(run as u64);
            left = &left[run..];
        }
        if n > 0 {
            self.tail_atomic().store(self.tail, Ordering::Release);
        }
        Ok(n)
    }

    /// Send one item if there is room; `Ok(false)` if the ring is full.
    ///
    /// # Errors
    /// As [`RingSender::try_send_slice`].
    pub fn try_send(&mut self, item: &T) -> Result<bool, RegionError> {
        Ok(self.try_send_slice(std::slice::from_ref(item))? == 1)
    }

    /// Send every item of `items`, waiting for room as needed.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped midway, a prefix of `items` was sent.
    ///
    /// # Errors
    /// As [`RingSender::try_send_slice`].
    pub async fn send_slice(&mut self, mut items: &[T]) -> Result<(), RegionError> {
        let mut backoff = Backoff::new();
        while !items.is_empty() {
            let n = self.try_send_slice(items)?;
            items = &items[n..];
            if n == 0 {
                backoff.wait().await;
            } else {
                backoff = Backoff::new();
            }
        }
        Ok(())
    }

    /// Send one item, waiting for room.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped, the item was sent or not.
    ///
    /// # Errors
    /// As [`RingSender::try_send_slice`].
    pub async fn send(&mut self, item: &T) -> Result<(), RegionError> {
        self.send_slice(std::slice::from_ref(item)).await
    }
}

impl<T> Drop for RingSender<T> {
    fn drop(&mut self) {
        if let Ok(closed) = self.region.atomic_u32(OFF_SENDER_CLOSED) {
            closed.store(1, Ordering::Release);
        }
    }
}

/// The receiving end of a ring in a [`ShmRegion`].
#[derive(Debug)]
pub struct RingReceiver<T> {
    region: ShmRegion,
    shape: Shape,
    /// Items ever taken: ours, never read back from shared memory.
    head: u64,
    /// The sender's `tail` as last seen.
    tail_seen: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod> RingReceiver<T> {
    /// Items ready, reading the sender's index if none are known.
    fn ready(&mut self) -> Result<u64, RegionError> {
        let mut avail = self.tail_seen.wrapping_sub(self.head);
        if avail == 0 {
            let tail = self.region.atomic_u64(OFF_TAIL)?.load(Ordering::Acquire);
            let now = tail.wrapping_sub(self.head);
            if now > self.shape.cap || tail.wrapping_sub(self.tail_seen) > self.shape.cap {
                return Err(RegionError::Corrupt(format!(
                    "the sender's index {tail} is not within {} of ours, {}",
                    self.shape.cap, self.head
                )));
            }
            self.tail_seen = tail;
            avail = now;
        }
        Ok(avail)
    }

    /// Take as many items as are ready into `out`, without waiting; returns how many.
    /// `Ok(0)` with a non-empty `out` means none are ready (or the sender is gone and
    /// all are taken: see [`RingReceiver::is_finished`]).
    ///
    /// # Errors
    /// [`RegionError::Corrupt`] if the sender's index is impossible.
    pub fn try_recv_slice(&mut self, out: &mut [T]) -> Result<usize, RegionError> {
        let n = out.len().min(self.ready()? as usize);
        let mut left = &mut out[..n];
        while !left.is_empty() {
            let slot = self.head & (self.shape.cap - 1);
            let run = left.len().min((self.shape.cap - slot) as usize);
            let at = self.shape.offset(self.head);
            let (now, rest) = left.split_at_mut(run);
            self.region.read(at, bytemuck::cast_slice_mut(now))?;
            self.head = self.head.wrapping_add(run as u64);
            left = rest;
        }
        if n > 0 {
            self.region
                .atomic_u64(OFF_HEAD)?
                .store(self.head, Ordering::Release);
        }
        Ok(n)
    }

    /// Take one item if one is ready.
    ///
    /// # Errors
    /// As [`RingReceiver::try_recv_slice`].
    pub fn try_recv(&mut self) -> Result<Option<T>, RegionError> {
        let mut one = [T::zeroed()];
        Ok((self.try_recv_slice(&mut one)? == 1).then_some(one[0]))
    }

    /// Whether the sender is gone and every item it sent was taken.
    ///
    /// # Errors
    /// As [`RingReceiver::try_recv_slice`].
    pub fn is_finished(&mut self) -> Result<bool, RegionError> {
        let closed = self
            .region
            .atomic_u32(OFF_SENDER_CLOSED)?
            .load(Ordering::Acquire)
            != 0;
        // The closed flag was published after the last tail: look at the tail after it.
        Ok(closed && self.ready()? == 0)
    }

    /// Take up to `out.len()` items, waiting for at least one; `Ok(0)` once the sender
    /// is gone and every item was taken.
    ///
    /// # Cancel safety
    /// Cancel safe: items are taken only by the poll that returns them.
    ///
    /// # Errors
    /// As [`RingReceiver::try_recv_slice`].
    pub async fn recv_slice(&mut self, out: &mut [T]) -> Result<usize, RegionError> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut backoff = Backoff::new();
        loop {
            let n = self.try_recv_slice(out)?;
            if n > 0 || self.is_finished()? {
                return Ok(n);
            }
            backoff.wait().await;
        }
    }

    /// The next item, waiting for it; `None` once the sender is gone and every item was
    /// taken.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`RingReceiver::recv_slice`].
    ///
    /// # Errors
    /// As [`RingReceiver::try_recv_slice`].
    pub async fn recv(&mut self) -> Result<Option<T>, RegionError> {
        let mut one = [T::zeroed()];
        Ok((self.recv_slice(&mut one).await? == 1).then_some(one[0]))
    }
}

impl<T> Drop for RingReceiver<T> {
    fn drop(&mut self) {
        if let Ok(closed) = self.region.atomic_u32(OFF_RECEIVER_CLOSED) {
            closed.store(1, Ordering::Release);
        }
    }
}

// Real memory files and mappings: not under Miri (which has no `memfd_create`).
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn items_cross_in_order_through_many_wraps() {
        rt().block_on(async {
            let region = ShmRegion::new_ring::<u64>(6).unwrap();
            let mut tx = region.ring_sender::<u64>().unwrap();
            let mut rx = region.ring_receiver::<u64>().unwrap();
            let producer = tokio::spawn(async move {
                let items: Vec<u64> = (0..10_000).collect();
                for chunk in items.chunks(5) {
                    tx.send_slice(chunk).await.unwrap();
                }
            });
            let mut got = Vec::new();
            let mut buf = [0u64; 3];
            loop {
                let n = rx.recv_slice(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            producer.await.unwrap();
            assert_eq!(got, (0..10_000).collect::<Vec<_>>());
        });
    }

    #[test]
    fn a_full_ring_refuses_without_waiting_and_a_gone_receiver_is_closed() {
        let region = ShmRegion::new_ring::<u32>(4).unwrap();
        let mut tx = region.ring_sender::<u32>().unwrap();
        let rx = region.ring_receiver::<u32>().unwrap();
        assert_eq!(tx.try_send_slice(&[1, 2, 3, 4, 5, 6]).unwrap(), 4);
        assert!(!tx.try_send(&7).unwrap());
        drop(rx);
        assert!(matches!(tx.try_send(&7), Err(RegionError::Closed)));
    }

    #[test]
    fn each_end_is_claimed_once_and_the_type_must_match() {
        let region = ShmRegion::new_ring::<[u8; 16]>(8).unwrap();
        let _tx = region.ring_sender::<[u8; 16]>().unwrap();
        assert!(matches!(
            region.ring_sender::<[u8; 16]>(),
            Err(RegionError::Claimed("sender"))
        ));
        assert!(matches!(
            region.ring_receiver::<u64>(),
            Err(RegionError::Corrupt(_))
        ));
        let plain = ShmRegion::new(4096).unwrap();
        assert!(matches!(
            plain.ring_receiver::<u64>(),
            Err(RegionError::Corrupt(_))
        ));
        assert!(ShmRegion::new_ring::<()>(8).is_err(), "zero-sized items");
        assert!(ShmRegion::new_ring::<u8>(0).is_err());
    }

    #[test]
    fn a_ring_handed_over_as_a_value_is_the_same_ring() {
        use spawn_api::{Fds, Wire};
        let region = ShmRegion::new_ring::<u16>(8).unwrap();
        let mut fds = Fds::new();
        let bytes = region.encode_with(&mut fds).unwrap();
        let theirs = ShmRegion::decode_with(bytes, fds).unwrap();
        let mut tx = region.ring_sender::<u16>().unwrap();
        let mut rx = theirs.ring_receiver::<u16>().unwrap();
        tx.try_send_slice(&[7, 8]).unwrap();
        assert_eq!(rx.try_recv().unwrap(), Some(7));
        assert_eq!(rx.try_recv().unwrap(), Some(8));
        assert_eq!(rx.try_recv().unwrap(), None);
        assert!(!rx.is_finished().unwrap());
        drop(tx);
        assert!(rx.is_finished().unwrap());
    }

    proptest! {
        /// A hostile peer writes anything into the shared indices and flags between
        /// our operations: every call returns (a value or a typed error), never panics
        /// or touches memory outside the region, and Corrupt is for good.
        #[test]
        fn scribbled_indices_give_typed_errors(
            writes in proptest::collection::vec((0usize..4, any::<u64>()), 1..40),
        ) {
            let region = ShmRegion::new_ring::<u32>(8).unwrap();
            let mut tx = region.ring_sender::<u32>().unwrap();
            let mut rx = region.ring_receiver::<u32>().unwrap();
            for (what, value) in writes {
                match what {
                    0 => region.atomic_u64(OFF_TAIL).unwrap().store(value, Ordering::Relaxed),
                    1 => region.atomic_u64(OFF_HEAD).unwrap().store(value, Ordering::Relaxed),
                    2 => region.atomic_u64(OFF_CAP).unwrap().store(value, Ordering::Relaxed),
                    _ => region.atomic_u32(OFF_SENDER_CLOSED).unwrap().store(value as u32, Ordering::Relaxed),
                }
                let _ = tx.try_send_slice(&[1, 2, 3]);
                let mut out = [0u32; 5];
                if let Ok(n) = rx.try_recv_slice(&mut out) {
                    prop_assert!(n <= 5);
                }
                let _ = rx.is_finished();
            }
        }
    }
}
