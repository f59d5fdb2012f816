//! Sleeping and waking: one side's doorbell (an eventfd the peer rings), the peer's
//! doorbell (which we ring), and the control socket whose end means the peer is gone.
//!
//! Both halves of a channel (the reader waiting for bytes, the writer waiting for space)
//! sleep on the same doorbell. tokio keeps one waker per descriptor and direction, so
//! the bell registers a waker of its own that wakes both halves, and the half that
//! drains the eventfd bumps a *generation*. A half reads the generation before it parks
//! (sets its flag in the ring, fences, checks again) and sleeps only while the
//! generation is unchanged: a ring drained by the other half after that point is seen,
//! so no wake-up is lost between two local waiters either.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use os_wrappers::eventfd;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;

/// Which half of the channel waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The reader, for bytes.
    Reader = 0,
    /// The writer, for space.
    Writer = 1,
}

impl Role {
    fn other(self) -> Role {
        match self {
            Role::Reader => Role::Writer,
            Role::Writer => Role::Reader,
        }
    }
}

/// The waker given to tokio for the doorbell and the control socket: wakes whichever
/// halves wait.
#[derive(Debug, Default)]
struct Fanout {
    wakers: Mutex<[Option<Waker>; 2]>,
}

impl Fanout {
    fn set(&self, role: Role, waker: &Waker) {
        let mut w = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut w[role as usize];
        if !slot.as_ref().is_some_and(|s| s.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn forget(&self, role: Role) {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)[role as usize] = None;
    }

    fn wake_one(&self, role: Role) {
        let w = self.wakers.lock().unwrap_or_else(PoisonError::into_inner)[role as usize].clone();
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl Wake for Fanout {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let w = self
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for w in w.into_iter().flatten() {
            w.wake();
        }
    }
}

/// One side's doorbells and liveness signal.
#[derive(Debug)]
pub(crate) struct Bell {
    /// Ours: the peer rings it.
    ours: AsyncFd<OwnedFd>,
    /// The peer's: we ring it.
    theirs: OwnedFd,
    /// The connected control socket; its end is the peer's.
    control: UnixStream,
    /// Bumped whenever a wake-up was consumed (a drained ring, the peer's end).
    generation: AtomicU64,
    /// The control socket ended (or failed): the peer is gone.
    gone: AtomicBool,
    /// The peer wrote on the control socket after the setup, which the protocol does
    /// not allow.
    broken: AtomicBool,
    /// Serialises polling, draining and clearing readiness between the two halves.
    poll_lock: Mutex<()>,
    fanout: Arc<Fanout>,
    fanout_waker: Waker,
}

impl Bell {
    /// A bell over our eventfd, the peer's and the control socket. Must be called in a
    /// tokio runtime (the descriptors are registered with its reactor).
    ///
    /// # Errors
    /// The reactor's registration error.
    pub(crate) fn new(ours: OwnedFd, theirs: OwnedFd, control: UnixStream) -> io::Result<Bell> {
        let fanout = Arc::new(Fanout::default());
        Ok(Bell {
            ours: os_wrappers::pidfd::register(ours, tokio::io::Interest::READABLE)?,
            theirs,
            control,
            generation: AtomicU64::new(0),
            gone: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            poll_lock: Mutex::new(()),
            fanout_waker: Waker::from(fanout.clone()),
            fanout,
        })
    }

    /// The current generation: read it *before* parking.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether the peer is known to be gone (its control socket ended).
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Whether the peer broke the protocol on the control socket (the channel is then
    /// gone too).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Wake the peer.
    pub(crate) fn ring_peer(&self) {
        if let Err(e) = eventfd::ring(self.theirs.as_fd()) {
            tracing::debug!(error = %e, "cannot ring the peer's doorbell");
        }
    }

    /// Forget `role`'s waker (its half is dropped).
    pub(crate) fn forget(&self, role: Role) {
        self.fanout.forget(role);
    }

    fn mark_gone(&self) {
        self.gone.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Sleep until something happened since generation `seen`: a ring, the peer's end.
    /// `Ready` means "check again", not that the awaited condition holds.
    pub(crate) fn poll_wait(&self, role: Role, seen: u64, cx: &mut Context<'_>) -> Poll<()> {
        self.fanout.set(role, cx.waker());
        let _serial = self
            .poll_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut fcx = Context::from_waker(&self.fanout_waker);
        loop {
            if self.generation() != seen || self.is_gone() {
                return Poll::Ready(());
            }
            // The control socket: readable at its end, or if the peer wrote on it, which
            // the protocol does not allow after the setup.
            match self.control.poll_read_ready(&mut fcx) {
                Poll::Ready(Ok(())) => {
                    let mut sink = [0u8; 64];
                    match self.control.try_read(&mut sink) {
                        Ok(0) => {
                            self.mark_gone();
                            self.fanout.wake_one(role.other());
                            return Poll::Ready(());
                        }
                        Ok(_) => {
                            tracing::debug!("the peer wrote on the control socket after the setup");
                            self.broken.store(true, Ordering::SeqCst);
                            self.mark_gone();
                            self.fanout.wake_one(role.other());
                            return Poll::Ready(());
                        }
                        // Readiness was stale and is cleared now: poll again to register.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::debug!(error = %e, "control socket failed: the peer is gone");
                            self.mark_gone();
                            self.fanout.wake_one(role.other());
                            return Poll::Ready(());
                        }
                    }
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "control socket failed: the peer is gone");
                    self.mark_gone();
                    self.fanout.wake_one(role.other());
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
            match self.ours.poll_read_ready(&mut fcx) {
                Poll::Ready(Ok(mut guard)) => {
                    let drained = guard.try_io(|fd| match eventfd::drain(fd.get_ref()) {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(io::ErrorKind::WouldBlock.into()),
                        Err(e) => Err(e),
                    });
                    match drained {
                        Ok(Ok(())) => {
                            self.generation.fetch_add(1, Ordering::SeqCst);
                            // The ring may have been for the other half.
                            self.fanout.wake_one(role.other());
                            return Poll::Ready(());
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "cannot read the doorbell: closing the channel");
                            self.mark_gone();
                            self.fanout.wake_one(role.other());
                            return Poll::Ready(());
                        }
                        // Nothing there: readiness cleared, poll again to register.
                        Err(_would_block) => continue,
                    }
                }
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "doorbell failed: closing the channel");
                    self.mark_gone();
                    self.fanout.wake_one(role.other());
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
