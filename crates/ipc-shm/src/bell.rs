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

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use os_wrappers::{eventfd, fdpass};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;

/// The byte of a control message that carries descriptors.
const FDS_MARK: u8 = b'F';

/// What one look at the control socket found.
enum Control {
    /// Descriptors, now queued.
    Fds,
    /// Nothing (yet).
    Nothing,
    /// The channel's end.
    Ended,
}

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
    /// Descriptors the peer sent ahead of the frames that carry them, in order.
    fds: Mutex<VecDeque<OwnedFd>>,
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
            fds: Mutex::new(VecDeque::new()),
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

    /// One message from the control socket, without blocking: descriptors (kept, in
    /// order), nothing, or the channel's end (the peer's close, an error, or a message
    /// the protocol does not allow, which also marks the channel broken).
    ///
    /// `direct` reads the socket whatever tokio last heard of its readiness (the
    /// descriptors of a frame already read are there even if the reactor has not said
    /// so yet); otherwise a `WouldBlock` also clears the stale readiness, so the next
    /// poll registers for a wake-up.
    fn receive_control(&self, direct: bool) -> Control {
        let mut byte = [0u8; 16];
        let got = if direct {
            fdpass::recv_with_fds(&self.control, &mut byte)
        } else {
            self.control.try_io(Interest::READABLE, || {
                fdpass::recv_with_fds(&self.control, &mut byte)
            })
        };
        match got {
            Ok(r) if r.len == 0 => {
                self.mark_gone();
                Control::Ended
            }
            Ok(r) => {
                let mut queue = self.fds.lock().unwrap_or_else(PoisonError::into_inner);
                let well_formed = !r.truncated
                    && r.len == 1
                    && byte[0] == FDS_MARK
                    && !r.fds.is_empty()
                    && queue.len() + r.fds.len() <= fdpass::MAX_QUEUED_FDS;
                if well_formed {
                    queue.extend(r.fds);
                    Control::Fds
                } else {
                    tracing::debug!(
                        bytes = r.len,
                        fds = r.fds.len(),
                        "the peer sent the control socket something other than descriptors"
                    );
                    self.broken.store(true, Ordering::SeqCst);
                    self.mark_gone();
                    Control::Ended
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Control::Nothing,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Control::Nothing,
            Err(e) => {
                tracing::debug!(error = %e, "control socket failed: the peer is gone");
                self.mark_gone();
                Control::Ended
            }
        }
    }

    /// Send `fds` to the peer ahead of the frame that carries them: one message, the
    /// byte [`FDS_MARK`] with the descriptors attached.
    pub(crate) fn poll_send_fds(
        &self,
        cx: &mut Context<'_>,
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.control.poll_write_ready(cx))?;
            match self.control.try_io(Interest::WRITABLE, || {
                fdpass::send_with_fds(&self.control, &[FDS_MARK], fds)
            }) {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The next `n` descriptors the peer sent. The peer sends them before it writes the
    /// frame that announces them, so they are in the control socket by the time that
    /// frame is read: nothing is waited for.
    ///
    /// # Errors
    /// `InvalidData` if they are not there (the peer's frame lies, or the peer broke
    /// the control protocol).
    pub(crate) fn take_fds(&self, n: usize) -> io::Result<Vec<OwnedFd>> {
        let _serial = self
            .poll_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let have = self
                .fds
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            if have >= n {
                break;
            }
            match self.receive_control(true) {
                Control::Fds => continue,
                Control::Nothing | Control::Ended => break,
            }
        }
        let mut queue = self.fds.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} descriptors arrived, {n} expected", queue.len()),
            ));
        }
        Ok(queue.drain(..n).collect())
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
            // The control socket: readable at its end, or with descriptors the peer
            // sends ahead of a frame that carries them.
            match self.control.poll_read_ready(&mut fcx) {
                Poll::Ready(Ok(())) => match self.receive_control(false) {
                    Control::Fds => continue,
                    // Readiness was stale and is cleared now: poll again to register.
                    Control::Nothing => continue,
                    Control::Ended => {
                        self.fanout.wake_one(role.other());
                        return Poll::Ready(());
                    }
                },
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
                            // A read resets the counter, so the eventfd is empty now:
                            // forget the readiness instead of learning it from a read
                            // that fails (tokio keeps a ring that came after this guard
                            // was made).
                            guard.clear_ready();
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
