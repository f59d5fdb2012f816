//! tokio byte streams over the ring ends ([`RingReader`], [`RingWriter`]): what the
//! frame codec (`spawn_api::codec`) reads and writes, so that a frame larger than the
//! ring streams through it in pieces and the codec enforces the maximum frame.
//!
//! An empty ring (for the reader) or a full one (for the writer) is first looked at again
//! for up to the configured spin time, without blocking the executor (the task asks to
//! be polled again, so other tasks run in between); then the half *parks*: reads the bell's generation,
//! sets its park flag in the ring (with a `SeqCst` fence), checks the ring again, and
//! only then sleeps on the doorbell (see [`crate::ring`] for why no wake-up is lost).
//! The other side rings the doorbell only when it sees the flag, so a busy channel makes
//! no system call at all.

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use spawn_api::ProtocolError;
use spawn_api::codec::{FdRead, FdWrite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::bell::{Bell, Role};
use crate::ring::{Consumer, Producer};

/// A protocol error carried through tokio's I/O traits (unwrapped again by the sink and
/// the source).
pub(crate) fn protocol_io(e: impl Into<ProtocolError>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.into())
}

fn control_violation() -> io::Error {
    protocol_io(ProtocolError::Decode(
        "shared-memory channel: the peer sent the control socket something other than \
         descriptors"
            .into(),
    ))
}

/// Whether a half that found nothing to do should look again rather than park: while
/// its spin time lasts, it asks to be polled again and returns `Pending`, so the
/// executor runs this actor's other tasks (the one about to answer, say) in between and
/// no system call is made. The spin starts at the first empty look and ends at the next
/// transfer.
fn spin_again(until: &mut Option<Instant>, spin: Duration, cx: &mut Context<'_>) -> bool {
    if spin.is_zero() {
        return false;
    }
    let now = Instant::now();
    if now < *until.get_or_insert(now + spin) {
        std::hint::spin_loop();
        cx.waker().wake_by_ref();
        return true;
    }
    false
}

/// Reads the peer's ring.
#[derive(Debug)]
pub(crate) struct RingReader {
    cons: Consumer,
    bell: Arc<Bell>,
    spin: Duration,
    /// When the current spin ends (`None`: not spinning).
    spin_until: Option<Instant>,
    parked: bool,
}

impl RingReader {
    pub(crate) fn new(cons: Consumer, bell: Arc<Bell>, spin: Duration) -> RingReader {
        RingReader {
            cons,
            bell,
            spin,
            spin_until: None,
            parked: false,
        }
    }

    fn try_read(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
        let n = self.cons.read_buf(buf).map_err(protocol_io)?;
        if n > 0 {
            self.spin_until = None;
            if self.parked {
                self.cons.unpark();
                self.parked = false;
            }
            if self.cons.wake_needed() {
                self.bell.ring_peer();
            }
        }
        Ok(n)
    }
}

impl AsyncRead for RingReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.try_read(buf)? > 0 {
                return Poll::Ready(Ok(()));
            }
            if this.bell.is_broken() {
                return Poll::Ready(Err(control_violation()));
            }
            if this.cons.peer_closed() || this.bell.is_gone() {
                // Bytes published before the close (or before the peer died) are
                // visible now; with none, this is the end of the stream.
                this.try_read(buf)?;
                return Poll::Ready(Ok(()));
            }
            if spin_again(&mut this.spin_until, this.spin, cx) {
                return Poll::Pending;
            }
            let seen = this.bell.generation();
            this.cons.park();
            this.parked = true;
            if !matches!(this.cons.available(), Ok(0))
                || this.cons.peer_closed()
                || this.bell.is_gone()
            {
                continue;
            }
            match this.bell.poll_wait(Role::Reader, seen, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => continue,
            }
        }
    }
}

impl FdRead for RingReader {
    fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>> {
        self.bell.take_fds(n)
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.cons.close();
        if self.cons.wake_needed() {
            self.bell.ring_peer();
        }
        self.bell.forget(Role::Reader);
    }
}

/// Writes our ring.
#[derive(Debug)]
pub(crate) struct RingWriter {
    prod: Producer,
    bell: Arc<Bell>,
    spin: Duration,
    /// When the current spin ends (`None`: not spinning).
    spin_until: Option<Instant>,
    parked: bool,
    shut: bool,
    /// The descriptors of the frame being written went over the control socket; its
    /// bytes have not all gone yet (kept here, not in a future, so a retried write does
    /// not send them twice).
    fds_sent: bool,
}

impl RingWriter {
    pub(crate) fn new(prod: Producer, bell: Arc<Bell>, spin: Duration) -> RingWriter {
        RingWriter {
            prod,
            bell,
            spin,
            spin_until: None,
            parked: false,
            shut: false,
            fds_sent: false,
        }
    }

    fn notify(&self) {
        if self.prod.wake_needed() {
            self.bell.ring_peer();
        }
    }

    fn close(&mut self) {
        if !self.shut {
            self.shut = true;
            self.prod.close();
            self.notify();
        }
    }
}

impl AsyncWrite for RingWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            if this.bell.is_broken() {
                return Poll::Ready(Err(control_violation()));
            }
            if this.prod.peer_closed() || this.bell.is_gone() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let n = this.prod.write(bufs).map_err(protocol_io)?;
            if n > 0 {
                this.spin_until = None;
                if this.parked {
                    this.prod.unpark();
                    this.parked = false;
                }
                this.notify();
                return Poll::Ready(Ok(n));
            }
            if spin_again(&mut this.spin_until, this.spin, cx) {
                return Poll::Pending;
            }
            let seen = this.bell.generation();
            this.prod.park();
            this.parked = true;
            if !matches!(this.prod.free(), Ok(0)) || this.prod.peer_closed() || this.bell.is_gone()
            {
                continue;
            }
            match this.bell.poll_wait(Role::Writer, seen, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => continue,
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every write is published (visible to the peer) before it returns.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().close();
        Poll::Ready(Ok(()))
    }
}

impl FdWrite for RingWriter {
    fn poll_write_fds(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.fds_sent {
            if self.shut || self.bell.is_gone() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            std::task::ready!(self.bell.poll_send_fds(cx, fds))?;
            self.fds_sent = true;
        }
        let n = std::task::ready!(self.as_mut().poll_write(cx, buf))?;
        if n > 0 {
            self.fds_sent = false;
        }
        Poll::Ready(Ok(n))
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        self.close();
        self.bell.forget(Role::Writer);
    }
}
