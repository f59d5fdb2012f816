//! An in-memory transport: channels between tasks of one process, frames passed as
//! values.
//!
//! [`MemTransport`] implements the whole [`Transport`] contract with no operating system
//! underneath: listeners are names in a table that the transport value owns, a channel is
//! two in-process pipes, and a [`Frame`] crosses as the value it is (its payload is
//! shared, never encoded or copied). It is for two kinds of reader:
//!
//! - **tests**: the runtime's connection tests run two connections over a [`pair`] with
//!   tokio's paused clock, where every wait is deterministic and nothing touches the file
//!   system;
//! - **transport authors**: it is the contract with nothing else in the way, as
//!   `ipc-channel`'s in-process platform is for its platforms. A new transport should
//!   behave as this one does wherever the contract speaks.
//!
//! What it keeps of a real transport, so that code tested over it meets the same cases:
//!
//! - **Frame size.** A frame whose wire size (header and payload, as the
//!   [`codec`](crate::codec) would encode them) is above [`Transport::max_frame`] is
//!   refused by [`FrameSink::feed`] with [`ProtocolError::FrameTooLarge`]; nothing is
//!   queued and the channel stays usable.
//! - **Back-pressure.** Each direction holds at most a buffer's worth of bytes (like a
//!   socket's buffer, [`MemTransport::with_buffer`]); [`FrameSink::flush`] waits for
//!   room, so a peer that stops reading stalls its writer. A frame larger than the whole
//!   buffer goes alone once the buffer is empty.
//! - **Ends.** A sink closed ([`FrameSink::close`]) or dropped ends the peer's source:
//!   [`FrameSource::recv`] returns what was flushed before, then `Ok(None)`. A dropped
//!   source makes the peer's flush fail with [`ChannelError::Io`]
//!   ([`std::io::ErrorKind::BrokenPipe`]); frames fed and not flushed are lost, as in a
//!   socket's user-space buffer.
//! - **Addresses.** `mem:t<n>/<uid>`: a root gets a fresh tree `t<n>`, its descendants
//!   are placed in their parent's tree, and [`Transport::cleanup_tree`] removes the
//!   whole tree. Binding a name in use fails with
//!   [`AddrInUse`](std::io::ErrorKind::AddrInUse); connecting to a name nobody listens
//!   at fails with [`NotFound`](std::io::ErrorKind::NotFound).
//! - **Isolation.** The table of listeners lives inside the [`MemTransport`] value:
//!   clones share it, two transports made by [`MemTransport::new`] never see each
//!   other's listeners, and nothing is kept in statics.
//!
//! Both ends of a channel are this process, so [`Channel::peer`] reports this process's
//! pid and effective uid, and there is no credential to check.
//!
//! ```
//! use spawn_api::mem::{self, MemTransport};
//! use spawn_api::{ActorId, Frame, FrameSink, FrameSource, Msg, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two connected channels, no listener needed.
//! let (a, b) = mem::pair();
//! let (mut to_b, _from_b) = a.split();
//! let (_to_a, mut from_a) = b.split();
//! let hello = Frame::with_payload(Msg::Yield { cid: 1 }, bytes::Bytes::from_static(b"hi"));
//! to_b.feed(&hello)?;
//! to_b.flush().await?;
//! assert_eq!(from_a.recv().await?, Some(hello));
//! to_b.close().await?;
//! assert_eq!(from_a.recv().await?, None, "closed: the peer's source ends");
//!
//! // The whole transport: bind, connect, accept.
//! let t = MemTransport::new();
//! let addr = t.address_for(&ActorId::new("root"), None)?;
//! let mut listener = t.bind(&addr).await?;
//! let client = t.connect(&addr).await?;
//! let server = listener.accept().await?;
//! assert_eq!(server.peer().pid, Some(std::process::id()));
//! # drop(client);
//! // Another transport value has listeners of its own.
//! assert!(MemTransport::new().connect(&addr).await.is_err());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use tokio::sync::{Notify, mpsc};

use crate::codec::{DEFAULT_MAX_FRAME, LEN_PREFIX, encode_header};
use crate::error::{ChannelError, ProtocolError, TransportError};
use crate::id::{ActorId, Addr};
use crate::transport::{Channel, FrameSink, FrameSource, Listener, PeerInfo, Transport};
use crate::wire::Frame;

/// The key of this transport in addresses and configuration.
pub const KEY: &str = "mem";

/// Bytes each direction of a channel holds before its writer waits (the default for
/// [`MemTransport::with_buffer`]): about what a Unix socket buffers.
pub const DEFAULT_BUFFER: usize = 256 << 10;

/// Channels a listener holds for [`Listener::accept`] before a connecting side waits.
const BACKLOG: usize = 128;

/// Two connected channels with the default frame limit and buffer: whatever one side's
/// sink flushes, the other side's source receives.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), spawn_api::ChannelError> {
/// use spawn_api::{Frame, FrameSink, FrameSource, Msg};
/// let (a, b) = spawn_api::mem::pair();
/// let ((mut sink, _), (_, mut source)) = (a.split(), b.split());
/// sink.feed(&Frame::control(Msg::Stop { cid: 2 }))?;
/// sink.flush().await?;
/// assert_eq!(source.recv().await?.map(|f| f.msg), Some(Msg::Stop { cid: 2 }));
/// # Ok(()) }
/// ```
pub fn pair() -> (Box<dyn Channel>, Box<dyn Channel>) {
    MemTransport::new().pair()
}

/// The in-memory transport; see the [module docs](self). Cheap to clone: clones share
/// their listeners.
#[derive(Clone)]
pub struct MemTransport {
    endpoints: Arc<Mutex<Endpoints>>,
    max_frame: usize,
    buffer: usize,
    me: PeerInfo,
}

impl fmt::Debug for MemTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemTransport")
            .field("listeners", &lock(&self.endpoints).by_name.len())
            .field("max_frame", &self.max_frame)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl Default for MemTransport {
    fn default() -> Self {
        MemTransport::new()
    }
}

/// The listeners of one transport value (and its clones).
#[derive(Default)]
struct Endpoints {
    by_name: HashMap<String, Endpoint>,
    /// Numbers the trees of roots, and the listeners (so a dropped listener removes its
    /// own entry and not a newer one bound at the same name).
    next_tree: u64,
    next_listener: u64,
}

struct Endpoint {
    listener: u64,
    incoming: mpsc::Sender<MemChannel>,
}

impl MemTransport {
    /// A transport with listeners of its own, the default frame limit (64 MiB, as Unix
    /// sockets) and [`DEFAULT_BUFFER`].
    pub fn new() -> MemTransport {
        MemTransport {
            endpoints: Arc::default(),
            max_frame: DEFAULT_MAX_FRAME,
            buffer: DEFAULT_BUFFER,
            me: this_process(),
        }
    }

    /// Refuse frames above `bytes` (header and payload).
    pub fn with_max_frame(mut self, bytes: usize) -> MemTransport {
        self.max_frame = bytes;
        self
    }

    /// Let each direction of a channel hold `bytes` (at least one) before its writer
    /// waits. A small buffer makes a peer that does not read felt at once.
    pub fn with_buffer(mut self, bytes: usize) -> MemTransport {
        self.buffer = bytes.max(1);
        self
    }

    /// Two connected channels with this transport's frame limit and buffer, without a
    /// listener.
    pub fn pair(&self) -> (Box<dyn Channel>, Box<dyn Channel>) {
        let (a, b) = self.channels();
        (Box::new(a), Box::new(b))
    }

    fn channels(&self) -> (MemChannel, MemChannel) {
        let ab = Arc::new(Pipe::new(self.buffer));
        let ba = Arc::new(Pipe::new(self.buffer));
        let end = |out: &Arc<Pipe>, inn: &Arc<Pipe>| MemChannel {
            out: out.clone(),
            inn: inn.clone(),
            max_frame: self.max_frame,
            peer: self.me.clone(),
        };
        (end(&ab, &ba), end(&ba, &ab))
    }

    fn check_key(addr: &Addr) -> Result<(), TransportError> {
        if addr.transport() != KEY {
            return Err(TransportError::BadAddr {
                addr: addr.to_string(),
                reason: format!("not a {KEY} address"),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Transport for MemTransport {
    fn key(&self) -> &'static str {
        KEY
    }

    fn address_for(&self, id: &ActorId, near: Option<&Addr>) -> Result<Addr, TransportError> {
        let tree = match near {
            Some(parent) => {
                Self::check_key(parent)?;
                match parent.endpoint().split_once('/') {
                    Some((tree, _)) if !tree.is_empty() => tree.to_owned(),
                    _ => {
                        return Err(TransportError::BadAddr {
                            addr: parent.to_string(),
                            reason: "not of the form t<n>/<uid>".to_owned(),
                        });
                    }
                }
            }
            None => {
                let mut e = lock(&self.endpoints);
                e.next_tree += 1;
                format!("t{}", e.next_tree)
            }
        };
        Ok(Addr::new(KEY, format!("{tree}/{:016x}", id.uid())))
    }

    async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError> {
        Self::check_key(addr)?;
        let mut e = lock(&self.endpoints);
        if e.by_name.contains_key(addr.endpoint()) {
            return Err(TransportError::io(
                format!("binding {addr}"),
                io::Error::from(io::ErrorKind::AddrInUse),
            ));
        }
        e.next_listener += 1;
        let id = e.next_listener;
        let (tx, rx) = mpsc::channel(BACKLOG);
        e.by_name.insert(
            addr.endpoint().to_owned(),
            Endpoint {
                listener: id,
                incoming: tx,
            },
        );
        Ok(Box::new(MemListener {
            addr: addr.clone(),
            incoming: rx,
            endpoints: self.endpoints.clone(),
            id,
        }))
    }

    async fn connect(&self, addr: &Addr) -> Result<Box<dyn Channel>, TransportError> {
        Self::check_key(addr)?;
        let refused = |kind: io::ErrorKind| {
            TransportError::io(format!("connecting to {addr}"), io::Error::from(kind))
        };
        let incoming = lock(&self.endpoints)
            .by_name
            .get(addr.endpoint())
            .map(|e| e.incoming.clone())
            .ok_or_else(|| refused(io::ErrorKind::NotFound))?;
        let (ours, theirs) = self.channels();
        // Waits while the listener's backlog is full, as a socket's connect does.
        incoming
            .send(theirs)
            .await
            .map_err(|_| refused(io::ErrorKind::ConnectionRefused))?;
        Ok(Box::new(ours))
    }

    fn cleanup(&self, addr: &Addr) {
        if addr.transport() == KEY {
            lock(&self.endpoints).by_name.remove(addr.endpoint());
        }
    }

    fn cleanup_tree(&self, root: &Addr) {
        if root.transport() != KEY {
            return;
        }
        let Some((tree, _)) = root.endpoint().split_once('/') else {
            return;
        };
        let prefix = format!("{tree}/");
        lock(&self.endpoints)
            .by_name
            .retain(|name, _| !name.starts_with(&prefix));
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }
}

/// Accepts channels at one name of a [`MemTransport`]; dropping it frees the name.
pub struct MemListener {
    addr: Addr,
    incoming: mpsc::Receiver<MemChannel>,
    endpoints: Arc<Mutex<Endpoints>>,
    id: u64,
}

impl fmt::Debug for MemListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemListener")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        let mut e = lock(&self.endpoints);
        // The name may have been cleaned up and bound again since: only our own entry.
        if e.by_name
            .get(self.addr.endpoint())
            .is_some_and(|ep| ep.listener == self.id)
        {
            e.by_name.remove(self.addr.endpoint());
        }
    }
}

#[async_trait::async_trait]
impl Listener for MemListener {
    fn local_addr(&self) -> &Addr {
        &self.addr
    }

    /// Cancel safety: cancel-safe (a channel is only taken when returned).
    async fn accept(&mut self) -> Result<Box<dyn Channel>, TransportError> {
        // `None`: the name was cleaned up (its sender dropped) and nobody can connect.
        match self.incoming.recv().await {
            Some(ch) => Ok(Box::new(ch)),
            None => Err(TransportError::Closed),
        }
    }
}

/// One end of an in-memory channel.
pub struct MemChannel {
    /// Toward the peer.
    out: Arc<Pipe>,
    /// From the peer.
    inn: Arc<Pipe>,
    max_frame: usize,
    peer: PeerInfo,
}

impl fmt::Debug for MemChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemChannel")
            .field("max_frame", &self.max_frame)
            .field("buffer", &self.out.capacity)
            .finish()
    }
}

impl Channel for MemChannel {
    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSink>, Box<dyn FrameSource>) {
        let MemChannel {
            out,
            inn,
            max_frame,
            peer: _,
        } = *self;
        (
            Box::new(MemSink {
                pipe: out,
                pending: VecDeque::new(),
                max_frame,
                header: BytesMut::new(),
                closed: false,
            }),
            Box::new(MemSource { pipe: inn }),
        )
    }
}

/// One direction of a channel: flushed frames wait here for the reader.
struct Pipe {
    state: Mutex<PipeState>,
    /// A frame arrived or the writer left (one reader waits on it).
    readable: Notify,
    /// Room was made or the reader left (one writer waits on it).
    writable: Notify,
    capacity: usize,
}

#[derive(Default)]
struct PipeState {
    /// Frames and their wire sizes.
    frames: VecDeque<(Frame, usize)>,
    bytes: usize,
    writer_gone: bool,
    reader_gone: bool,
}

impl Pipe {
    fn new(capacity: usize) -> Pipe {
        Pipe {
            state: Mutex::default(),
            readable: Notify::new(),
            writable: Notify::new(),
            capacity,
        }
    }

    fn close_write(&self) {
        lock(&self.state).writer_gone = true;
        self.readable.notify_one();
    }

    fn close_read(&self) {
        let mut st = lock(&self.state);
        st.reader_gone = true;
        st.frames.clear();
        st.bytes = 0;
        drop(st);
        self.writable.notify_one();
    }
}

struct MemSink {
    pipe: Arc<Pipe>,
    /// Fed and not yet flushed, with their wire sizes.
    pending: VecDeque<(Frame, usize)>,
    max_frame: usize,
    /// Scratch space to measure headers.
    header: BytesMut,
    closed: bool,
}

impl Drop for MemSink {
    fn drop(&mut self) {
        self.pipe.close_write();
    }
}

#[async_trait::async_trait]
impl FrameSink for MemSink {
    fn feed(&mut self, frame: &Frame) -> Result<(), ChannelError> {
        if self.closed {
            return Err(ChannelError::Closed);
        }
        self.header.clear();
        encode_header(&frame.msg, &mut self.header)?;
        let len = self.header.len() + frame.payload.len();
        if len > self.max_frame {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.max_frame,
            }
            .into());
        }
        self.pending.push_back((frame.clone(), LEN_PREFIX + len));
        Ok(())
    }

    /// Cancel safety: cancel-safe (frames not yet handed to the peer stay queued for the
    /// next flush).
    async fn flush(&mut self) -> Result<(), ChannelError> {
        loop {
            if self.pending.is_empty() {
                return Ok(());
            }
            {
                let mut st = lock(&self.pipe.state);
                if st.reader_gone {
                    return Err(ChannelError::Io(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the peer's end of the in-memory channel is closed",
                    )));
                }
                let mut moved = false;
                while let Some(&(_, n)) = self.pending.front() {
                    if st.bytes != 0 && st.bytes + n > self.pipe.capacity {
                        break;
                    }
                    let item = self.pending.pop_front().expect("looked at the front");
                    st.bytes += n;
                    st.frames.push_back(item);
                    moved = true;
                }
                drop(st);
                if moved {
                    self.pipe.readable.notify_one();
                }
            }
            if !self.pending.is_empty() {
                self.pipe.writable.notified().await;
            }
        }
    }

    async fn close(&mut self) -> Result<(), ChannelError> {
        if self.closed {
            return Ok(());
        }
        let flushed = self.flush().await;
        self.closed = true;
        self.pipe.close_write();
        flushed
    }
}

struct MemSource {
    pipe: Arc<Pipe>,
}

impl Drop for MemSource {
    fn drop(&mut self) {
        self.pipe.close_read();
    }
}

#[async_trait::async_trait]
impl FrameSource for MemSource {
    /// Cancel safety: cancel-safe (a frame is only taken when returned).
    async fn recv(&mut self) -> Result<Option<Frame>, ChannelError> {
        loop {
            {
                let mut st = lock(&self.pipe.state);
                if let Some((frame, n)) = st.frames.pop_front() {
                    st.bytes -= n;
                    drop(st);
                    self.pipe.writable.notify_one();
                    return Ok(Some(frame));
                }
                if st.writer_gone {
                    return Ok(None);
                }
            }
            // A wake-up between the look above and this wait is kept as a permit.
            self.pipe.readable.notified().await;
        }
    }
}

/// A lock that a panic elsewhere does not poison (the state stays consistent: every
/// change under these locks is complete before anything can panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process, as a peer sees it: its pid and its effective uid (read from
/// `/proc/self/status`; `None` where there is no such file).
fn this_process() -> PeerInfo {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|euid| euid.parse().ok())
        });
    PeerInfo {
        pid: Some(std::process::id()),
        uid,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use bytes::Bytes;

    use super::*;
    use crate::wire::Msg;

    /// Poll `f` once, without a runtime's waker: whether it is ready now.
    fn now<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn item(cid: u64, len: usize) -> Frame {
        Frame::with_payload(Msg::Yield { cid }, Bytes::from(vec![7u8; len]))
    }

    async fn send(sink: &mut dyn FrameSink, frame: &Frame) {
        sink.feed(frame).unwrap();
        sink.flush().await.unwrap();
    }

    #[tokio::test]
    async fn frames_arrive_in_order_as_the_values_sent() {
        let (a, b) = pair();
        let ((mut tx, _rx_a), (_tx_b, mut rx)) = (a.split(), b.split());
        let big = item(1, 100_000);
        let frames = [
            Frame::control(Msg::Stop { cid: 3 }),
            big.clone(),
            item(5, 1),
        ];
        for f in &frames {
            tx.feed(f).unwrap();
        }
        tx.flush().await.unwrap();
        for f in &frames {
            assert_eq!(rx.recv().await.unwrap().as_ref(), Some(f));
        }
        // Passed as a value: the payload is the very buffer sent.
        send(&mut *tx, &big).await;
        let got = rx.recv().await.unwrap().unwrap();
        assert_eq!(got.payload.as_ptr(), big.payload.as_ptr());
    }

    #[tokio::test]
    async fn both_directions_are_independent() {
        let (a, b) = pair();
        let ((mut a_tx, mut a_rx), (mut b_tx, mut b_rx)) = (a.split(), b.split());
        send(&mut *a_tx, &item(1, 3)).await;
        send(&mut *b_tx, &item(2, 4)).await;
        assert_eq!(b_rx.recv().await.unwrap(), Some(item(1, 3)));
        assert_eq!(a_rx.recv().await.unwrap(), Some(item(2, 4)));
    }

    #[tokio::test]
    async fn nothing_arrives_before_a_flush() {
        let (a, b) = pair();
        let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
        tx.feed(&item(1, 1)).unwrap();
        assert!(now(pin!(rx.recv())).is_pending());
        tx.flush().await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Some(item(1, 1)));
    }

    #[tokio::test]
    async fn a_frame_above_the_maximum_is_refused_and_the_channel_goes_on() {
        let t = MemTransport::new().with_max_frame(1000);
        let (a, b) = t.pair();
        let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
        // The header counts: a 1000-byte payload makes a frame above 1000 bytes.
        match tx.feed(&item(1, 1000)) {
            Err(ChannelError::Protocol(ProtocolError::FrameTooLarge { len, max })) => {
                assert!(len > 1000, "{len}");
                assert_eq!(max, 1000);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        send(&mut *tx, &item(1, 990)).await;
        tx.close().await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Some(item(1, 990)));
        assert_eq!(
            rx.recv().await.unwrap(),
            None,
            "the refused frame never went"
        );
    }

    #[tokio::test]
    async fn a_closed_or_dropped_sink_ends_the_peers_source_after_what_was_flushed() {
        let (a, b) = pair();
        let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
        send(&mut *tx, &item(1, 1)).await;
        tx.close().await.unwrap();
        assert!(matches!(tx.feed(&item(1, 1)), Err(ChannelError::Closed)));
        assert_eq!(rx.recv().await.unwrap(), Some(item(1, 1)));
        assert_eq!(rx.recv().await.unwrap(), None);
        assert_eq!(rx.recv().await.unwrap(), None, "and stays ended");

        let (a, b) = pair();
        let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
        send(&mut *tx, &item(2, 1)).await;
        tx.feed(&item(3, 1)).unwrap(); // never flushed: lost with the sink
        drop(tx);
        assert_eq!(rx.recv().await.unwrap(), Some(item(2, 1)));
        assert_eq!(rx.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_dropped_source_breaks_the_peers_flush() {
        let (a, b) = pair();
        let ((mut tx, _), (_, rx)) = (a.split(), b.split());
        drop(rx);
        tx.feed(&item(1, 1)).unwrap();
        match tx.flush().await {
            Err(ChannelError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
            other => panic!("expected a broken pipe, got {other:?}"),
        }
        // Nothing left to write: closing a channel whose peer left is not an error.
        let (a, b) = pair();
        let ((mut tx, _), (_, rx)) = (a.split(), b.split());
        drop(rx);
        tx.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_full_buffer_stalls_the_writer_until_the_peer_reads() {
        let t = MemTransport::new().with_buffer(300);
        let (a, b) = t.pair();
        let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
        for cid in 0..3 {
            tx.feed(&item(cid, 100)).unwrap();
        }
        // Two frames (about 110 bytes each on the wire) fit; the third waits.
        {
            let mut flush = pin!(tx.flush());
            assert!(now(flush.as_mut()).is_pending());
            assert_eq!(rx.recv().await.unwrap().unwrap().msg, Msg::Yield { cid: 0 });
            assert!(matches!(now(flush.as_mut()), Poll::Ready(Ok(()))));
        }
        assert_eq!(rx.recv().await.unwrap().unwrap().msg, Msg::Yield { cid: 1 });
        assert_eq!(rx.recv().await.unwrap().unwrap().msg, Msg::Yield { cid: 2 });
        // A frame larger than the whole buffer goes alone, once the buffer is empty.
        send(&mut *tx, &item(9, 1000)).await;
        assert_eq!(rx.recv().await.unwrap(), Some(item(9, 1000)));
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken_by_a_flush_from_another_task() {
        let (a, b) = pair();
        let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
        let reader = tokio::spawn(async move { rx.recv().await.unwrap() });
        tokio::task::yield_now().await;
        send(&mut *tx, &item(4, 2)).await;
        assert_eq!(reader.await.unwrap(), Some(item(4, 2)));
    }

    #[tokio::test]
    async fn bind_connect_accept_and_the_peer_is_this_process() {
        let t = MemTransport::new();
        let root = t
            .address_for(&ActorId::with_uid("root", 0xab), None)
            .unwrap();
        assert_eq!(root.transport(), KEY);
        assert_eq!(root.endpoint(), "t1/00000000000000ab");
        let mut l = t.bind(&root).await.unwrap();
        assert_eq!(l.local_addr(), &root);
        let client = t.connect(&root).await.unwrap();
        let server = l.accept().await.unwrap();
        let me = server.peer();
        assert_eq!(me.pid, Some(std::process::id()));
        let proc_uid =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        assert_eq!(me.uid, Some(proc_uid));
        assert_eq!(client.peer(), me);
        let ((mut tx, _), (_, mut rx)) = (client.split(), server.split());
        send(&mut *tx, &item(1, 5)).await;
        assert_eq!(rx.recv().await.unwrap(), Some(item(1, 5)));
    }

    #[tokio::test]
    async fn two_transports_never_see_each_others_listeners_but_clones_do() {
        let t = MemTransport::new();
        let addr = t.address_for(&ActorId::new("a"), None).unwrap();
        let mut l = t.bind(&addr).await.unwrap();
        match MemTransport::new().connect(&addr).await {
            Err(TransportError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound)
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        let other = MemTransport::new();
        let _theirs = other.bind(&addr).await.unwrap();
        let clone = t.clone();
        let _ch = clone.connect(&addr).await.unwrap();
        l.accept().await.unwrap();
    }

    #[tokio::test]
    async fn a_name_is_bound_once_and_freed_with_its_listener() {
        let t = MemTransport::new();
        let addr = t.address_for(&ActorId::new("a"), None).unwrap();
        let l = t.bind(&addr).await.unwrap();
        match t.bind(&addr).await {
            Err(TransportError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AddrInUse)
            }
            other => panic!("expected AddrInUse, got {other:?}"),
        }
        drop(l);
        assert!(t.connect(&addr).await.is_err(), "nobody listens any more");
        let _again = t.bind(&addr).await.unwrap();
    }

    #[tokio::test]
    async fn cleanup_removes_a_name_and_an_old_listener_does_not_remove_a_new_one() {
        let t = MemTransport::new();
        let addr = t.address_for(&ActorId::new("a"), None).unwrap();
        let mut old = t.bind(&addr).await.unwrap();
        t.cleanup(&addr);
        t.cleanup(&addr); // nothing to remove: tolerated
        assert!(t.connect(&addr).await.is_err());
        assert!(matches!(old.accept().await, Err(TransportError::Closed)));
        let mut new = t.bind(&addr).await.unwrap();
        drop(old);
        let _ch = t.connect(&addr).await.unwrap();
        new.accept().await.unwrap();
    }

    #[tokio::test]
    async fn children_live_in_their_roots_tree_and_cleanup_tree_removes_it() {
        let t = MemTransport::new();
        let root = t.address_for(&ActorId::new("root"), None).unwrap();
        let child = t.address_for(&ActorId::new("c"), Some(&root)).unwrap();
        let grandchild = t.address_for(&ActorId::new("g"), Some(&child)).unwrap();
        let other_root = t.address_for(&ActorId::new("r2"), None).unwrap();
        let tree = |a: &Addr| a.endpoint().split_once('/').unwrap().0.to_owned();
        assert_eq!(tree(&child), tree(&root));
        assert_eq!(tree(&grandchild), tree(&root));
        assert_ne!(tree(&other_root), tree(&root));
        let mut ls = Vec::new();
        for a in [&root, &child, &grandchild, &other_root] {
            ls.push(t.bind(a).await.unwrap());
        }
        t.cleanup_tree(&root);
        for a in [&root, &child, &grandchild] {
            assert!(t.connect(a).await.is_err(), "{a} was removed");
        }
        let _ch = t.connect(&other_root).await.unwrap();
    }

    #[tokio::test]
    async fn foreign_addresses_are_refused() {
        let t = MemTransport::new();
        let uds = Addr::new("uds", "/tmp/x.sock");
        for r in [
            t.address_for(&ActorId::new("c"), Some(&uds)).map(|_| ()),
            t.address_for(&ActorId::new("c"), Some(&Addr::new(KEY, "flat")))
                .map(|_| ()),
            t.bind(&uds).await.map(|_| ()),
            t.connect(&uds).await.map(|_| ()),
        ] {
            assert!(matches!(r, Err(TransportError::BadAddr { .. })), "{r:?}");
        }
        t.cleanup(&uds);
        t.cleanup_tree(&uds);
        assert_eq!(t.key(), "mem");
        assert_eq!(t.max_frame(), DEFAULT_MAX_FRAME);
    }
}
