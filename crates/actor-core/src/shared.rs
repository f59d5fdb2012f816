//! Contexts shared by key among the tasks of one actor (tractor's `maybe_open_context`).
//!
//! The first task to ask for a key opens the context; every later one gets a handle on
//! the same context: its `started` value, a receiver of every item it sends (a
//! [`BroadcastStream`]), and a sender. The context stays open while any handle lives;
//! the last handle to leave closes it ([`SharedContext::leave`]: close the sending side
//! and wait for the callee's result) or, if simply dropped, cancels it. A key asked for
//! again after that opens a new context.
//!
//! Handles are per actor: each actor keeps its own table ([`ActorCx`]), never a static.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::broadcast::BroadcastStream;
use crate::error::PortalError;
use crate::portal::Portal;
use crate::stream::ContextSender;
use spawn_api::{ActorId, ContextFn};

/// How many of a shared context's items are kept for its slower handles (see
/// [`ReplyStream::broadcast`](crate::ReplyStream::broadcast) for the lag policy).
pub const SHARED_CAPACITY: usize = 256;

/// What a shared context is found by: the actor it runs in, the function, the key.
type Key = (ActorId, &'static str, String);

/// A slot per key. Its async lock is held while the context is being opened, so the
/// tasks that ask meanwhile wait for that opening instead of opening their own.
type Slot = Arc<tokio::sync::Mutex<Option<Weak<dyn Any + Send + Sync>>>>;

/// One actor's shared contexts, by key.
#[derive(Default)]
pub(crate) struct SharedContexts {
    slots: Arc<Mutex<HashMap<Key, Slot>>>,
}

/// An open shared context: what its handles share.
struct Entry<C: ContextFn> {
    started: C::Started,
    tx: ContextSender<C>,
    /// A receiver kept to make new ones from (it does not read, so it only lags).
    rx: BroadcastStream<C::Out>,
    users: AtomicUsize,
    key: Key,
    slot: Slot,
    table: Weak<Mutex<HashMap<Key, Slot>>>,
}

impl<C: ContextFn> Drop for Entry<C> {
    fn drop(&mut self) {
        // The last handle is gone: forget the key, unless another opening already took
        // the slot's place.
        if let Some(table) = self.table.upgrade() {
            let mut t = table.lock().unwrap();
            if t.get(&self.key).is_some_and(|s| Arc::ptr_eq(s, &self.slot)) {
                t.remove(&self.key);
            }
        }
    }
}

impl SharedContexts {
    /// The handle on the context `C` with `key` at `portal`'s actor: opened with `args`
    /// if it is not open yet in this actor.
    pub(crate) async fn open<C>(
        &self,
        portal: &Portal,
        function: C,
        key: String,
        args: C::Args,
    ) -> Result<SharedContext<C>, PortalError>
    where
        C: ContextFn,
        C::Started: Clone + Send + Sync,
        C::Out: Clone + Sync,
    {
        let key: Key = (portal.actor_id().clone(), C::NAME, key);
        loop {
            let slot = self
                .slots
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .clone();
            let mut held = slot.lock().await;
            // The slot left the table while this task waited (the last handle left):
            // start over with the table's current slot.
            let current = self.slots.lock().unwrap().get(&key).cloned();
            if !current.is_some_and(|s| Arc::ptr_eq(&s, &slot)) {
                continue;
            }
            if let Some(entry) = held.as_ref().and_then(Weak::upgrade) {
                let entry = entry
                    .downcast::<Entry<C>>()
                    .expect("a key names its function, so its entry has that function's type");
                entry.users.fetch_add(1, Ordering::AcqRel);
                return Ok(SharedContext::new(entry, false));
            }
            let (ctx, started) = portal.open_context(function, args).await?;
            let (tx, rx) = ctx.broadcast(SHARED_CAPACITY);
            let entry = Arc::new(Entry::<C> {
                started,
                tx,
                rx,
                users: AtomicUsize::new(1),
                key: key.clone(),
                slot: slot.clone(),
                table: Arc::downgrade(&self.slots),
            });
            let erased: Arc<dyn Any + Send + Sync> = entry.clone();
            *held = Some(Arc::downgrade(&erased));
            return Ok(SharedContext::new(entry, true));
        }
    }

    /// How many shared contexts are open (or being opened).
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }
}

/// One task's handle on a context shared by key ([`ActorCx::open_shared_context`]).
///
/// Every handle receives every item the callee sends (each handle has its own receiver;
/// a slow one lags, see [`PortalError::Lagged`]) and may send. The context closes when
/// the last handle leaves.
///
/// [`ActorCx::open_shared_context`]: crate::ActorCx::open_shared_context
pub struct SharedContext<C: ContextFn> {
    entry: Arc<Entry<C>>,
    rx: BroadcastStream<C::Out>,
    first: bool,
    left: bool,
}

impl<C: ContextFn> std::fmt::Debug for SharedContext<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedContext")
            .field("function", &C::NAME)
            .field("key", &self.entry.key.2)
            .field("first", &self.first)
            .field("users", &self.entry.users.load(Ordering::Acquire))
            .finish()
    }
}

impl<C: ContextFn> SharedContext<C>
where
    C::Out: Clone,
{
    fn new(entry: Arc<Entry<C>>, first: bool) -> SharedContext<C> {
        let rx = entry.rx.subscribe();
        SharedContext {
            entry,
            rx,
            first,
            left: false,
        }
    }

    /// The callee's `started` value (the same for every handle).
    pub fn started(&self) -> &C::Started {
        &self.entry.started
    }

    /// Whether this handle opened the context (the others found it open).
    pub fn is_first(&self) -> bool {
        self.first
    }

    /// How many handles share the context now.
    pub fn users(&self) -> usize {
        self.entry.users.load(Ordering::Acquire)
    }

    /// The next item the callee sent, as every handle sees it (from when this handle was
    /// made); `Ok(None)` once the callee stopped sending.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`BroadcastStream::recv`].
    ///
    /// # Errors
    /// [`PortalError::Lagged`] if this handle fell behind the shared buffer (the next
    /// `recv` goes on from the oldest item kept), and how the context ended otherwise.
    pub async fn recv(&mut self) -> Result<Option<C::Out>, PortalError> {
        self.rx.recv().await
    }

    /// Send one item to the callee.
    ///
    /// # Errors
    /// As [`CallerContext::send`](crate::CallerContext::send).
    pub async fn send(&self, item: C::In) -> Result<(), PortalError> {
        self.entry.tx.send(item).await
    }

    /// Another receiver of the context's items, from now on.
    pub fn subscribe(&self) -> BroadcastStream<C::Out> {
        self.rx.subscribe()
    }

    /// Cancel the context for every handle.
    ///
    /// # Errors
    /// As [`CallerContext::cancel`](crate::CallerContext::cancel).
    pub async fn cancel(&self, reason: impl Into<String>) -> Result<(), PortalError> {
        self.entry.tx.cancel(reason).await
    }

    /// Leave the context. The last handle to leave closes it: it closes the sending
    /// side, reads the items to the end and returns the callee's result (`Some`); any
    /// other handle returns `Ok(None)` at once and the context stays open for the rest.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe for the last handle: dropped while waiting, the context is
    /// cancelled (as when a last handle is dropped) and the result is lost.
    ///
    /// # Errors
    /// For the last handle, how the context failed, if it did.
    pub async fn leave(mut self) -> Result<Option<C::Return>, PortalError> {
        self.left = true;
        if self.entry.users.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(None);
        }
        self.entry.tx.close_send()?;
        loop {
            match self.rx.recv().await {
                Ok(Some(_)) | Err(PortalError::Lagged { .. }) => {}
                Ok(None) => break,
                Err(e) => return Err(e),
            }
        }
        self.entry.tx.result().await.map(Some)
    }
}

impl<C: ContextFn> Drop for SharedContext<C> {
    fn drop(&mut self) {
        if !self.left {
            self.entry.users.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
