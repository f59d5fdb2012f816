//! One stream of items, many subscribers: [`BroadcastStream`].
//!
//! A broadcast has no task of its own. An item is pulled from the underlying source (a
//! call's reply stream, say) only when a subscriber that has already seen every item asks
//! for the next one: that subscriber receives the item from the source, leaves a copy in a
//! ring buffer the subscribers share, and returns it. Every other subscriber reads the item
//! from the ring. The source is therefore paced by the fastest subscriber, and when every
//! subscriber stops reading the source is not read at all, so its own flow control (a reply
//! stream's window) holds the sender back.
//!
//! ## A slow subscriber
//!
//! The ring keeps the last `capacity` items and never more, whatever the subscribers do:
//! memory is bounded, and a slow subscriber never holds the others (or the source) back.
//! Instead it lags: once it is more than `capacity` items behind the fastest subscriber,
//! the items that left the ring are lost for it, its next `recv` fails with
//! [`PortalError::Lagged`] saying how many it missed, and the `recv` after that returns the
//! oldest item still buffered. Lagging is not an end: the subscriber carries on from there.
//! This is the policy of `tokio::sync::broadcast` and of tractor's broadcast receiver.
//!
//! ## The end
//!
//! When the source ends (or fails), each subscriber first gets the items still in the ring
//! that it has not seen (or a `Lagged` if it fell behind), then the end: `Ok(None)`, or a
//! clone of the source's error. Every later `recv` answers the same at once.
//!
//! ## Lifetime and cancellation
//!
//! Subscribers (made by `subscribe` or `clone`) share the source, which is dropped with the
//! last of them: for a call's reply stream that cancels the call. `cancel` cancels the
//! underlying call for every subscriber without waiting for one that is blocked in the
//! source; each then gets the cancellation error after the items it has not seen.
//!
//! ## Cancel safety
//!
//! | method | cancel safe | if the future is dropped |
//! |---|---|---|
//! | [`BroadcastStream::recv`] | yes | nothing is lost, for this subscriber or any other: an item the source gave is in the ring before the future can be dropped, and the next `recv` returns it |
//! | [`BroadcastStream::cancel`] | no | the cancel may not have been asked for: call it again |

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::PortalError;

/// A boxed future that can move between threads.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a broadcast pulls its items from.
pub(crate) trait Source<T>: Send + 'static {
    /// The next item; `Ok(None)` at the end. After the end (or an error) answers the same
    /// at once every time. Cancel safe: dropping the future loses no item.
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<T>, PortalError>>;
}

/// Cancels a source without holding it (a subscriber may be waiting in the source's
/// `recv`): after a successful cancel the source's `recv` answers with an error soon.
pub(crate) trait Canceller: Send + Sync + 'static {
    /// Ask for the cancel; fails if it could not be asked for (the source is gone, say).
    fn cancel(&self, reason: String) -> BoxFuture<'static, Result<(), PortalError>>;
}

/// One subscriber of a broadcast: the items of one underlying stream (a call's reply
/// stream, say), shared by every subscriber.
///
/// Make more subscribers with [`subscribe`](Self::subscribe) (it gets the items pulled
/// from then on) or [`clone`](Clone::clone) (it gets every item this one has not received
/// yet). Each subscriber receives the items in order, each once, then the end: `Ok(None)`,
/// or the stream's error, from every later [`recv`](Self::recv).
///
/// There is no background task: the underlying stream is read only when a subscriber that
/// has seen every item calls `recv`, so it goes at the pace of the fastest subscriber. The
/// others read from a buffer of the last [`capacity`](Self::capacity) items, and memory
/// never grows past it: a subscriber that falls further behind gets
/// [`PortalError::Lagged`] with the number of items it missed, then carries on from the
/// oldest item still buffered.
///
/// The underlying stream is dropped with the last subscriber, which cancels its call;
/// [`cancel`](Self::cancel) cancels the call for every subscriber without dropping any.
/// `recv` is cancel safe, `cancel` is not (see each).
///
/// Made by [`ReplyStream::broadcast`](crate::ReplyStream::broadcast) and
/// [`CallerContext::broadcast`](crate::CallerContext::broadcast):
///
/// ```no_run
/// # async fn demo(portal: actor_core::Portal) -> Result<(), actor_core::PortalError> {
/// use actor_core::PortalError;
/// actor_core::stream!(Events: () => String);
/// let events = portal.open_stream(Events, ()).await?.broadcast(256);
/// let mut audit = events.clone(); // every event this one has not seen yet
/// let mut live = events.subscribe(); // events from now on
/// drop(events);
/// tokio::spawn(async move {
///     loop {
///         match live.recv().await {
///             Ok(Some(e)) => println!("{e}"),
///             Err(PortalError::Lagged { missed }) => eprintln!("{missed} events skipped"),
///             Ok(None) | Err(_) => break,
///         }
///     }
/// });
/// while let Some(e) = audit.recv().await? {
///     let _ = e;
/// }
/// # Ok(()) }
/// ```
pub struct BroadcastStream<T> {
    shared: Arc<Shared<T>>,
    /// The sequence number of the next item this subscriber gets.
    cursor: u64,
}

struct Shared<T> {
    ring: Mutex<Ring<T>>,
    /// Held across the source's `recv`, so that one subscriber pulls at a time; a
    /// subscriber only ever takes it when it has seen everything in the ring.
    source: tokio::sync::Mutex<Box<dyn Source<T>>>,
    /// Separate from `source` because cancelling must reach a source whose lock is held by
    /// a subscriber blocked in its `recv`.
    canceller: Arc<dyn Canceller>,
    capacity: usize,
    subscribers: AtomicUsize,
}

/// The last `capacity` items pulled, and how the source ended.
struct Ring<T> {
    items: VecDeque<T>,
    /// The sequence number of `items[0]` (of the next item to pull when `items` is empty).
    front: u64,
    /// Set once, by the subscriber that pulled the end; the end's sequence number is
    /// `next()`, as nothing is pushed after it.
    end: Option<Result<(), PortalError>>,
}

impl<T> Ring<T> {
    /// The sequence number the next item pulled from the source gets.
    fn next(&self) -> u64 {
        self.front + self.items.len() as u64
    }

    fn push(&mut self, item: T, capacity: usize) {
        if self.items.len() >= capacity {
            self.items.pop_front();
            self.front += 1;
        }
        self.items.push_back(item);
    }
}

impl<T: Clone> Ring<T> {
    /// What a subscriber at `cursor` gets without pulling, moving `cursor` past it; `None`
    /// when it is at the head of a source that has not ended, and must pull.
    fn answer(&self, cursor: &mut u64) -> Option<Result<Option<T>, PortalError>> {
        if *cursor < self.front {
            let missed = self.front - *cursor;
            *cursor = self.front;
            return Some(Err(PortalError::Lagged { missed }));
        }
        let offset = *cursor - self.front;
        if offset < self.items.len() as u64 {
            *cursor += 1;
            return Some(Ok(Some(self.items[offset as usize].clone())));
        }
        // Cursors start at or before `next()` and move one item at a time.
        debug_assert_eq!(*cursor, self.next(), "a cursor ran past the head");
        match &self.end {
            None => None,
            Some(Ok(())) => Some(Ok(None)),
            Some(Err(e)) => Some(Err(e.clone())),
        }
    }
}

impl<T: Clone> Shared<T> {
    fn ring_answer(&self, cursor: &mut u64) -> Option<Result<Option<T>, PortalError>> {
        self.ring.lock().unwrap().answer(cursor)
    }
}

impl<T: Clone + Send + 'static> BroadcastStream<T> {
    /// A broadcast of `source`'s items, keeping the last `capacity` (at least 1) for
    /// subscribers that are behind; `canceller` is what [`cancel`](Self::cancel) calls.
    /// This is its first subscriber.
    pub(crate) fn new(
        source: Box<dyn Source<T>>,
        canceller: Arc<dyn Canceller>,
        capacity: usize,
    ) -> Self {
        let shared = Shared {
            ring: Mutex::new(Ring {
                items: VecDeque::new(),
                front: 0,
                end: None,
            }),
            source: tokio::sync::Mutex::new(source),
            canceller,
            capacity: capacity.max(1),
            subscribers: AtomicUsize::new(1),
        };
        BroadcastStream {
            shared: Arc::new(shared),
            cursor: 0,
        }
    }

    /// The next item for this subscriber; `Ok(None)` once the stream has ended and this
    /// subscriber has had every item still buffered.
    ///
    /// Waits for the underlying stream only when this subscriber has seen every item so
    /// far; otherwise answers at once from the buffer.
    ///
    /// # Errors
    ///
    /// - [`PortalError::Lagged`] if this subscriber fell more than
    ///   [`capacity`](Self::capacity) items behind: the items it missed are lost for it,
    ///   and the next `recv` returns the oldest item still buffered. Not an end.
    /// - The underlying stream's error (a clone of it), once this subscriber has had the
    ///   items before it; every later `recv` returns it again.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while it waits (for the underlying stream, or for another
    /// subscriber pulling from it), no item is lost for this subscriber or any other.
    pub async fn recv(&mut self) -> Result<Option<T>, PortalError> {
        if let Some(answer) = self.shared.ring_answer(&mut self.cursor) {
            return answer;
        }
        let mut source = self.shared.source.lock().await;
        // Whoever held the lock before us may have pulled the item we came for.
        if let Some(answer) = self.shared.ring_answer(&mut self.cursor) {
            return answer;
        }
        let pulled = source.recv().await;
        // No await from here on: the item is in the ring in the same poll the source gave
        // it, so dropping this future can never lose it.
        match pulled {
            Ok(Some(item)) => {
                // Cloned before locking, so that a panicking `clone` poisons nothing.
                let copy = item.clone();
                self.shared
                    .ring
                    .lock()
                    .unwrap()
                    .push(copy, self.shared.capacity);
                self.cursor += 1;
                Ok(Some(item))
            }
            Ok(None) => {
                self.shared.ring.lock().unwrap().end = Some(Ok(()));
                Ok(None)
            }
            Err(e) => {
                self.shared.ring.lock().unwrap().end = Some(Err(e.clone()));
                Err(e)
            }
        }
    }

    /// A new subscriber that gets the items pulled from now on (and, after the end, the
    /// end at once). Never fails.
    pub fn subscribe(&self) -> Self {
        let cursor = self.shared.ring.lock().unwrap().next();
        self.shared.subscribers.fetch_add(1, Ordering::Relaxed);
        BroadcastStream {
            shared: Arc::clone(&self.shared),
            cursor,
        }
    }

    /// Cancel the underlying call for every subscriber, with `reason`, and wait for the
    /// callee's acknowledgement as [`ReplyStream::cancel`](crate::ReplyStream::cancel)
    /// does.
    ///
    /// Does not wait for a subscriber blocked on the underlying stream: that one, and
    /// every other after the items it has not seen, gets the cancellation
    /// ([`PortalError::ContextCancelled`], side [`This`](crate::CancelSide::This)) from
    /// `recv` soon after.
    ///
    /// # Errors
    ///
    /// [`PortalError::CancelTimedOut`] without an acknowledgement in time,
    /// [`PortalError::Disconnected`] if the actor went away first.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped before it returns, the cancel may not have been asked
    /// for; call it again.
    pub async fn cancel(&self, reason: impl Into<String>) -> Result<(), PortalError> {
        self.shared.canceller.cancel(reason.into()).await
    }
}

impl<T> BroadcastStream<T> {
    /// How many items the broadcast keeps for subscribers that are behind: one more
    /// behind than this and a subscriber lags.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// How many subscribers (this one included) are alive.
    pub fn subscribers(&self) -> usize {
        self.shared.subscribers.load(Ordering::Relaxed)
    }

    /// How many items are buffered now (at most `capacity`).
    pub(crate) fn buffered(&self) -> usize {
        self.shared.ring.lock().unwrap().items.len()
    }
}

impl<T> Clone for BroadcastStream<T> {
    /// Another subscriber at the same place as this one: it gets every item this one has
    /// not received yet.
    fn clone(&self) -> Self {
        self.shared.subscribers.fetch_add(1, Ordering::Relaxed);
        BroadcastStream {
            shared: Arc::clone(&self.shared),
            cursor: self.cursor,
        }
    }
}

impl<T> Drop for BroadcastStream<T> {
    fn drop(&mut self) {
        // The source itself goes with the last `Arc`, which only subscribers hold.
        self.shared.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> fmt::Debug for BroadcastStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BroadcastStream")
            .field("cursor", &self.cursor)
            .field("capacity", &self.capacity())
            .field("subscribers", &self.subscribers())
            .field("buffered", &self.buffered())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicBool;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use tokio::sync::mpsc;

    type Answer = Result<Option<u64>, PortalError>;

    /// A cancel-safe source fed through a channel, counting its `recv` calls and answers.
    struct MockSource {
        rx: mpsc::UnboundedReceiver<Answer>,
        end: Option<Answer>,
        calls: Arc<AtomicUsize>,
        answers: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    impl Source<u64> for MockSource {
        fn recv(&mut self) -> BoxFuture<'_, Answer> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if let Some(end) = &self.end {
                    return end.clone();
                }
                let answer = self.rx.recv().await.unwrap_or(Ok(None));
                if !matches!(answer, Ok(Some(_))) {
                    self.end = Some(answer.clone());
                }
                self.answers.fetch_add(1, Ordering::SeqCst);
                answer
            })
        }
    }

    impl Drop for MockSource {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    /// Cancels by sending an error into the source's channel, as a cancelled call's
    /// stream would end.
    struct MockCanceller {
        tx: mpsc::UnboundedSender<Answer>,
        cancels: Arc<AtomicUsize>,
    }

    impl Canceller for MockCanceller {
        fn cancel(&self, reason: String) -> BoxFuture<'static, Result<(), PortalError>> {
            let tx = self.tx.clone();
            let cancels = Arc::clone(&self.cancels);
            Box::pin(async move {
                cancels.fetch_add(1, Ordering::SeqCst);
                tx.send(Err(PortalError::CallEnded {
                    actor: "mock".into(),
                    how: format!("cancelled: {reason}"),
                }))
                .map_err(|_| PortalError::Disconnected {
                    actor: "mock".into(),
                    reason: "the source is gone".into(),
                })
            })
        }
    }

    struct Mock {
        tx: mpsc::UnboundedSender<Answer>,
        calls: Arc<AtomicUsize>,
        answers: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
        cancels: Arc<AtomicUsize>,
    }

    impl Mock {
        fn items(&self, items: impl IntoIterator<Item = u64>) {
            for item in items {
                self.tx.send(Ok(Some(item))).unwrap();
            }
        }

        fn end(&self) {
            self.tx.send(Ok(None)).unwrap();
        }

        fn fail(&self, reason: &str) {
            self.tx
                .send(Err(PortalError::Disconnected {
                    actor: "mock".into(),
                    reason: reason.into(),
                }))
                .unwrap();
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn dropped(&self) -> bool {
            self.dropped.load(Ordering::SeqCst)
        }

        /// Yields until `n` source `recv`s have been asked for (a spawned subscriber is
        /// then blocked in the source, holding its lock).
        async fn wait_for_calls(&self, n: usize) {
            while self.calls() < n {
                tokio::task::yield_now().await;
            }
        }
    }

    fn mock(capacity: usize) -> (BroadcastStream<u64>, Mock) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mock = Mock {
            tx: tx.clone(),
            calls: Arc::default(),
            answers: Arc::default(),
            dropped: Arc::default(),
            cancels: Arc::default(),
        };
        let source = MockSource {
            rx,
            end: None,
            calls: Arc::clone(&mock.calls),
            answers: Arc::clone(&mock.answers),
            dropped: Arc::clone(&mock.dropped),
        };
        let canceller = MockCanceller {
            tx,
            cancels: Arc::clone(&mock.cancels),
        };
        let stream = BroadcastStream::new(Box::new(source), Arc::new(canceller), capacity);
        (stream, mock)
    }

    /// Polls `f` once: `Some` if it answered at once, without waiting.
    fn now<F: Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        }
    }

    /// `f`'s output, failing the test instead of hanging if it never comes.
    async fn soon<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(120), f)
            .await
            .expect("waited 120s")
    }

    fn item(answer: Answer) -> u64 {
        match answer {
            Ok(Some(item)) => item,
            other => panic!("expected an item, got {other:?}"),
        }
    }

    fn lagged(answer: Answer) -> u64 {
        match answer {
            Err(PortalError::Lagged { missed }) => missed,
            other => panic!("expected Lagged, got {other:?}"),
        }
    }

    fn ended(answer: Answer) {
        match answer {
            Ok(None) => {}
            other => panic!("expected the end, got {other:?}"),
        }
    }

    fn disconnected(answer: Answer) -> String {
        match answer {
            Err(PortalError::Disconnected { reason, .. }) => reason,
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }

    fn call_ended(answer: Answer) -> String {
        match answer {
            Err(PortalError::CallEnded { how, .. }) => how,
            other => panic!("expected CallEnded, got {other:?}"),
        }
    }

    /// Semantics 1: memory stays within `capacity` items even when a subscriber never
    /// reads, and items get consecutive sequence numbers from 0.
    #[tokio::test]
    async fn the_ring_never_holds_more_than_capacity() {
        let (mut fast, mock) = mock(4);
        let mut idle = fast.subscribe();
        assert_eq!(fast.capacity(), 4);
        assert_eq!(fast.buffered(), 0);
        mock.items(0..100);
        mock.end();
        for i in 0..100 {
            assert_eq!(item(fast.recv().await), i);
            assert!(fast.buffered() <= 4, "{} items buffered", fast.buffered());
        }
        ended(fast.recv().await);
        assert_eq!(fast.buffered(), 4);
        assert_eq!(mock.calls(), 101);
        // Items 0..96 left the ring: the idle subscriber missed exactly those.
        assert_eq!(lagged(now(idle.recv()).unwrap()), 96);
        for i in 96..100 {
            assert_eq!(item(now(idle.recv()).unwrap()), i);
        }
        ended(now(idle.recv()).unwrap());
        assert_eq!(mock.calls(), 101);
    }

    #[tokio::test]
    async fn capacity_is_at_least_one() {
        let (mut a, mock) = mock(0);
        let mut b = a.clone();
        assert_eq!(a.capacity(), 1);
        mock.items(0..3);
        for i in 0..3 {
            assert_eq!(item(a.recv().await), i);
            assert_eq!(a.buffered(), 1);
        }
        assert_eq!(lagged(now(b.recv()).unwrap()), 2);
        assert_eq!(item(now(b.recv()).unwrap()), 2);
    }

    /// Semantics 2: a subscriber that fell behind gets `Lagged`, then the oldest buffered
    /// item, and carries on (also pulling, once it is at the head).
    #[tokio::test]
    async fn a_lagging_subscriber_skips_to_the_oldest_buffered_item_and_carries_on() {
        let (mut a, mock) = mock(4);
        let mut b = a.clone();
        mock.items(0..10);
        for i in 0..10 {
            assert_eq!(item(a.recv().await), i);
        }
        assert_eq!(lagged(now(b.recv()).unwrap()), 6);
        for i in 6..10 {
            assert_eq!(item(now(b.recv()).unwrap()), i);
        }
        // Not an end: b is at the head now, so it pulls the next item itself.
        mock.items(10..11);
        assert_eq!(item(b.recv().await), 10);
        assert_eq!(item(now(a.recv()).unwrap()), 10);
        // And it can lag again.
        mock.items(11..20);
        for i in 11..20 {
            assert_eq!(item(a.recv().await), i);
        }
        assert_eq!(lagged(now(b.recv()).unwrap()), 5);
        assert_eq!(item(now(b.recv()).unwrap()), 16);
        assert_eq!(mock.calls(), 20);
    }

    /// Semantics 2: the end reaches every subscriber after the items it has not seen, at
    /// once and every time, and the source is not asked again.
    #[tokio::test]
    async fn the_end_reaches_every_subscriber_after_its_items() {
        let (mut a, mock) = mock(2);
        let mut b = a.clone();
        let mut c = a.clone();
        mock.items(0..5);
        mock.end();
        for i in 0..5 {
            assert_eq!(item(a.recv().await), i);
            if i == 1 {
                assert_eq!(item(now(b.recv()).unwrap()), 0);
            }
        }
        ended(a.recv().await);
        assert_eq!(mock.calls(), 6);
        ended(now(a.recv()).unwrap());
        // b read item 0 before items 1 and 2 left the ring.
        assert_eq!(lagged(now(b.recv()).unwrap()), 2);
        assert_eq!(item(now(b.recv()).unwrap()), 3);
        assert_eq!(item(now(b.recv()).unwrap()), 4);
        ended(now(b.recv()).unwrap());
        ended(now(b.recv()).unwrap());
        assert_eq!(lagged(now(c.recv()).unwrap()), 3);
        assert_eq!(item(now(c.recv()).unwrap()), 3);
        assert_eq!(item(now(c.recv()).unwrap()), 4);
        ended(now(c.recv()).unwrap());
        assert_eq!(mock.calls(), 6);
    }

    /// Semantics 2: an error from the source ends the stream the same way, as a clone of
    /// the error for every subscriber.
    #[tokio::test]
    async fn an_error_ends_the_stream_for_every_subscriber() {
        let (mut a, mock) = mock(8);
        let mut b = a.clone();
        mock.items([7]);
        mock.fail("boom");
        assert_eq!(item(a.recv().await), 7);
        assert_eq!(disconnected(a.recv().await), "boom");
        assert_eq!(disconnected(now(a.recv()).unwrap()), "boom");
        assert_eq!(item(now(b.recv()).unwrap()), 7);
        assert_eq!(disconnected(now(b.recv()).unwrap()), "boom");
        assert_eq!(disconnected(now(b.recv()).unwrap()), "boom");
        let mut late = b.subscribe();
        assert_eq!(disconnected(now(late.recv()).unwrap()), "boom");
        assert_eq!(mock.calls(), 2);
    }

    /// Semantics 3: a `recv` dropped while the source waits loses nothing.
    #[tokio::test(start_paused = true)]
    async fn recv_dropped_while_the_source_waits_loses_nothing() {
        let (mut a, mock) = mock(4);
        let b = a.clone();
        tokio::select! {
            answer = a.recv() => panic!("nothing was sent, got {answer:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        assert_eq!(mock.calls(), 1);
        mock.items([42]);
        assert_eq!(item(a.recv().await), 42);
        let mut b = b;
        assert_eq!(item(now(b.recv()).unwrap()), 42);
    }

    /// Semantics 3: the item is in the ring in the very poll in which the source gives it,
    /// so there is no moment at which dropping `recv` could lose it.
    #[tokio::test(start_paused = true)]
    async fn recv_dropped_as_soon_as_the_source_answered_loses_nothing() {
        let (mut a, mock) = mock(4);
        let mut b = a.clone();
        let mut a_got = None;
        {
            let mut recv = std::pin::pin!(a.recv());
            tokio::spawn({
                let tx = mock.tx.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    tx.send(Ok(Some(9))).unwrap();
                }
            });
            // Poll until the source has answered, then drop the `recv` whatever its state.
            while mock.answers.load(Ordering::SeqCst) == 0 {
                if let Poll::Ready(answer) =
                    recv.as_mut().poll(&mut Context::from_waker(Waker::noop()))
                {
                    a_got = Some(item(answer));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(item(soon(b.recv()).await), 9);
        assert_eq!(a_got, Some(9));
        assert_eq!(mock.calls(), 1);
    }

    /// Semantics 3: a `recv` dropped while another subscriber pulls (it waits for the
    /// source's lock) loses nothing either, and does not disturb the puller.
    #[tokio::test(start_paused = true)]
    async fn recv_dropped_while_waiting_for_the_lock_loses_nothing() {
        let (mut a, mock) = mock(4);
        let mut b = a.clone();
        let puller = tokio::spawn(async move {
            let answer = a.recv().await;
            (a, answer)
        });
        mock.wait_for_calls(1).await;
        tokio::select! {
            answer = b.recv() => panic!("nothing was sent, got {answer:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        mock.items([42]);
        let (_a, answer) = soon(puller).await.unwrap();
        assert_eq!(item(answer), 42);
        assert_eq!(item(now(b.recv()).unwrap()), 42);
        assert_eq!(mock.calls(), 1);
    }

    /// Semantics 4: `subscribe` starts at the next item to pull, `clone` where the
    /// original is.
    #[tokio::test]
    async fn subscribe_starts_at_the_next_item_and_clone_where_the_original_is() {
        let (mut a, mock) = mock(8);
        let mut b = a.clone();
        mock.items(0..3);
        for i in 0..3 {
            assert_eq!(item(a.recv().await), i);
        }
        assert_eq!(item(now(b.recv()).unwrap()), 0);
        let mut cloned = b.clone();
        let mut subscribed = b.subscribe();
        mock.items([3]);
        mock.end();
        for mut s in [b, cloned.clone()] {
            for i in 1..4 {
                assert_eq!(item(s.recv().await), i);
            }
            ended(s.recv().await);
        }
        assert_eq!(item(now(subscribed.recv()).unwrap()), 3);
        ended(now(subscribed.recv()).unwrap());
        assert_eq!(item(now(cloned.recv()).unwrap()), 1);
        // After the end a new subscriber gets the end at once.
        let mut late = a.subscribe();
        ended(now(late.recv()).unwrap());
        assert_eq!(mock.calls(), 5);
    }

    /// Semantics 5: the source goes with the last subscriber, however it was made.
    #[tokio::test]
    async fn the_source_is_dropped_with_the_last_subscriber() {
        let (a, mock) = mock(4);
        assert_eq!(a.subscribers(), 1);
        let b = a.clone();
        let c = b.subscribe();
        assert_eq!(a.subscribers(), 3);
        drop(a);
        assert_eq!(b.subscribers(), 2);
        assert!(!mock.dropped());
        drop(b);
        assert_eq!(c.subscribers(), 1);
        assert!(!mock.dropped());
        drop(c);
        assert!(mock.dropped());
    }

    /// Semantics 6: `cancel` reaches a source whose lock a blocked subscriber holds, and
    /// every subscriber then gets the cancellation error.
    #[tokio::test(start_paused = true)]
    async fn cancel_reaches_a_subscriber_blocked_in_the_source() {
        let (mut a, mock) = mock(4);
        let b = a.clone();
        let blocked = tokio::spawn(async move {
            let answer = a.recv().await;
            (a, answer)
        });
        mock.wait_for_calls(1).await;
        // Would hang here if `cancel` took the source's lock.
        soon(b.cancel("enough")).await.unwrap();
        assert_eq!(mock.cancels.load(Ordering::SeqCst), 1);
        let (mut a, answer) = soon(blocked).await.unwrap();
        assert_eq!(call_ended(answer), "cancelled: enough");
        assert_eq!(call_ended(now(a.recv()).unwrap()), "cancelled: enough");
        let mut b = b;
        assert_eq!(call_ended(now(b.recv()).unwrap()), "cancelled: enough");
        let mut late = b.subscribe();
        assert_eq!(call_ended(now(late.recv()).unwrap()), "cancelled: enough");
        assert_eq!(mock.calls(), 1);
    }

    /// `cancel` fails when the cancel cannot be asked for, with the canceller's error.
    #[tokio::test]
    async fn cancel_reports_the_cancellers_failure() {
        let (_tx, rx) = mpsc::unbounded_channel();
        let (closed, _) = mpsc::unbounded_channel();
        let source = MockSource {
            rx,
            end: None,
            calls: Arc::default(),
            answers: Arc::default(),
            dropped: Arc::default(),
        };
        let canceller = MockCanceller {
            tx: closed,
            cancels: Arc::default(),
        };
        let stream = BroadcastStream::new(Box::new(source), Arc::new(canceller), 4);
        let failed = stream.cancel("why").await.map(|()| None);
        assert_eq!(disconnected(failed), "the source is gone");
    }

    /// Semantics 7: with a fast and a slow subscriber, each item reaches each subscriber
    /// once and in order, except what the slow one missed, which its `Lagged` errors
    /// account for exactly.
    #[tokio::test(start_paused = true)]
    async fn a_slow_subscriber_gets_every_item_or_a_lagged_for_it() {
        const N: u64 = 10_000;
        let (fast, mock) = mock(16);
        let slow = fast.clone();
        mock.items(0..N);
        mock.end();
        let reader = |mut s: BroadcastStream<u64>, pause: Duration| async move {
            let (mut next, mut received, mut missed, mut lags) = (0, 0, 0, 0);
            loop {
                match s.recv().await {
                    Ok(Some(i)) => {
                        // In order, strictly increasing, nothing skipped unannounced.
                        assert_eq!(i, next);
                        next += 1;
                        received += 1;
                    }
                    Ok(None) => break,
                    Err(PortalError::Lagged { missed: m }) => {
                        assert!(m > 0);
                        next += m;
                        missed += m;
                        lags += 1;
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
                assert!(s.buffered() <= 16);
                tokio::time::sleep(pause).await;
            }
            (received, missed, lags)
        };
        let fast = tokio::spawn(reader(fast, Duration::from_millis(1)));
        let slow = tokio::spawn(reader(slow, Duration::from_millis(3)));
        let (fast, slow) = (soon(fast).await.unwrap(), soon(slow).await.unwrap());
        assert_eq!(fast, (N, 0, 0));
        let (received, missed, lags) = slow;
        assert_eq!(received + missed, N);
        assert!(lags > 1, "the slow subscriber lagged {lags} times");
        assert!(
            received > 16,
            "the slow subscriber received {received} items"
        );
        assert_eq!(mock.calls(), N as usize + 1);
    }

    /// Semantics 7, on several threads: subscribers racing at the head never pull an item
    /// twice, and each sees the items in order or a `Lagged` that accounts for them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_subscribers_on_threads_see_every_item_once() {
        const N: u64 = 10_000;
        let (first, mock) = mock(8);
        mock.items(0..N);
        mock.end();
        let tasks: Vec<_> = (0..4u64)
            .map(|k| {
                let mut s = first.clone();
                tokio::spawn(async move {
                    let (mut next, mut received, mut missed) = (0, 0, 0);
                    loop {
                        match s.recv().await {
                            Ok(Some(i)) => {
                                assert_eq!(i, next);
                                next += 1;
                                received += 1;
                                if i % (k + 2) == 0 {
                                    tokio::task::yield_now().await;
                                }
                            }
                            Ok(None) => break,
                            Err(PortalError::Lagged { missed: m }) => {
                                next += m;
                                missed += m;
                            }
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                    received + missed
                })
            })
            .collect();
        drop(first);
        for task in tasks {
            assert_eq!(soon(task).await.unwrap(), N);
        }
        assert_eq!(mock.calls(), N as usize + 1);
        assert!(mock.dropped());
    }

    /// Semantics 8: a subscriber that waited for the lock while another pulled finds the
    /// pulled item in the ring instead of asking the source again.
    #[tokio::test(start_paused = true)]
    async fn subscribers_racing_for_one_item_pull_it_once() {
        let (mut a, mock) = mock(4);
        let mut b = a.clone();
        let first = tokio::spawn(async move {
            let answer = a.recv().await;
            (a, answer)
        });
        mock.wait_for_calls(1).await;
        let second = tokio::spawn(async move {
            let answer = b.recv().await;
            (b, answer)
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!second.is_finished());
        assert_eq!(mock.calls(), 1);
        mock.items([5]);
        let (a, first) = soon(first).await.unwrap();
        let (b, second) = soon(second).await.unwrap();
        assert_eq!((item(first), item(second)), (5, 5));
        assert_eq!(mock.calls(), 1);
        assert_eq!((a.cursor, b.cursor), (1, 1));
    }

    #[test]
    fn subscribers_and_their_futures_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<F: Send>(_: &F) {}
        send_sync::<BroadcastStream<u64>>();
        let (mut a, _mock) = mock(1);
        send(&a.cancel("why"));
        send(&a.recv());
    }

    #[tokio::test]
    async fn debug_shows_the_state_and_no_items() {
        let (mut a, mock) = mock(3);
        let _b = a.subscribe();
        mock.items([424_242]);
        assert_eq!(item(a.recv().await), 424_242);
        let shown = format!("{a:?}");
        assert!(!shown.contains("424242"), "{shown}");
        for field in ["cursor: 1", "capacity: 3", "subscribers: 2", "buffered: 1"] {
            assert!(shown.contains(field), "{field} not in {shown}");
        }
    }
}
