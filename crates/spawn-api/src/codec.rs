//! The frame codec: a 4-byte little-endian length, then a postcard-encoded [`Msg`]
//! header, then the payload bytes.
//!
//! A frame that carries descriptors ([`Frame::fds`], see [`crate::fds`]) sets the
//! length's top bit ([`FDS_FLAG`]) and its body starts with one byte, the number of
//! descriptors (1 to [`MAX_FRAME_FDS`]). The descriptors themselves travel out of band,
//! so that the reader has them by the time it reads the frame's first byte: how is the
//! stream's business ([`FdWrite`], [`FdRead`]). Frames without descriptors, nearly all of
//! them, are unchanged by this.
//!
//! [`FrameReader`] and [`FrameWriter`] apply it to any tokio byte stream; a stream
//! transport (Unix sockets) is little more than these two over a socket. Every way a
//! peer can break the format is a typed [`ProtocolError`]; nothing here panics on input.
//!
//! ```
//! use spawn_api::codec::{decode_frame, encode_frame};
//! use spawn_api::{Frame, Msg};
//! let frame = Frame::with_payload(Msg::Yield { cid: 3 }, bytes::Bytes::from_static(b"hi"));
//! let wire = encode_frame(&frame, 1 << 20).unwrap();
//! let body = wire.slice(4..); // what follows the length prefix
//! assert_eq!(decode_frame(body).unwrap(), frame);
//! ```

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{ChannelError, ProtocolError};
use crate::fds::{Fds, MAX_FRAME_FDS};
use crate::wire::{Frame, Msg};

/// The length prefix's top bit: the frame carries descriptors, and its body starts with
/// their number.
pub const FDS_FLAG: u32 = 1 << 31;

/// A byte stream that can carry descriptors beside its bytes, for [`FrameWriter`].
///
/// The default refuses: a stream that cannot carry descriptors (an in-memory pipe, a
/// file) still carries every frame without them.
pub trait FdWrite: AsyncWrite + Unpin {
    /// Write from `buf` (at least one byte of it, or fail) such that the peer's
    /// [`FdRead::take_fds`] has `fds`, in order, once it has read the first byte
    /// written. Returns how many bytes of `buf` went.
    ///
    /// # Errors
    /// `Unsupported` by default; the stream's I/O error.
    fn poll_write_fds(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<usize>> {
        let _ = (cx, buf, fds);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this channel cannot carry descriptors",
        )))
    }
}

/// A byte stream that can carry descriptors beside its bytes, for [`FrameReader`].
pub trait FdRead: AsyncRead + Unpin {
    /// The next `n` descriptors the peer sent, in order. Called once the first byte of a
    /// frame that announces them was read, so they must have arrived: a stream that does
    /// not have them fails rather than waits.
    ///
    /// # Errors
    /// `Unsupported` by default; `InvalidData` if fewer than `n` arrived (the peer's
    /// frame lies); the stream's I/O error.
    fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>> {
        let _ = n;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this channel cannot carry descriptors",
        ))
    }
}

impl FdWrite for tokio::io::DuplexStream {}
impl FdRead for tokio::io::DuplexStream {}
impl FdRead for &[u8] {}
impl<T: AsRef<[u8]> + Unpin> FdRead for io::Cursor<T> {}

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Default largest frame (header and payload) a channel accepts: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Payloads at least this large are written from their own buffer (vectored write)
/// instead of being copied next to their header.
const COPY_THRESHOLD: usize = 16 << 10;

/// How much a reader asks the kernel for when it has no frame in progress.
const READ_CHUNK: usize = 64 << 10;

/// Frames at least this large are read into a buffer of their own.
const BIG_FRAME: usize = 64 << 10;

/// How many large-frame buffers a reader keeps for reuse.
const MAX_SPARE: usize = 4;

/// Append `msg`'s header encoding to `out`.
pub fn encode_header(msg: &Msg, out: &mut BytesMut) -> Result<(), ProtocolError> {
    // Most headers are a few bytes: encode into reserved space, and take the allocating
    // path only for the rare large one (a spawn spec, a long error).
    let start = out.len();
    out.resize(start + 256, 0);
    match postcard::to_slice(msg, &mut out[start..]) {
        Ok(used) => {
            let n = used.len();
            out.truncate(start + n);
            Ok(())
        }
        Err(postcard::Error::SerializeBufferFull) => {
            out.truncate(start);
            let v = postcard::to_allocvec(msg).map_err(|e| ProtocolError::Encode(e.to_string()))?;
            out.extend_from_slice(&v);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(ProtocolError::Encode(e.to_string()))
        }
    }
}

/// The whole wire form of `frame`, length prefix included, in one buffer.
///
/// # Errors
/// [`ProtocolError::FrameTooLarge`] if the frame exceeds `max_frame`.
pub fn encode_frame(frame: &Frame, max_frame: usize) -> Result<Bytes, ProtocolError> {
    if !frame.fds.is_empty() {
        return Err(ProtocolError::Encode(
            "a frame with descriptors needs a channel that carries them".to_owned(),
        ));
    }
    let mut out = BytesMut::with_capacity(LEN_PREFIX + 64 + frame.payload.len());
    out.put_u32_le(0);
    encode_header(&frame.msg, &mut out)?;
    out.extend_from_slice(&frame.payload);
    let body = out.len() - LEN_PREFIX;
    if body > max_frame {
        return Err(ProtocolError::FrameTooLarge {
            len: body,
            max: max_frame,
        });
    }
    out[..LEN_PREFIX].copy_from_slice(&(body as u32).to_le_bytes());
    Ok(out.freeze())
}

/// Decode a frame body (what follows the length prefix). The payload is a zero-copy
/// slice of `body`.
pub fn decode_frame(body: Bytes) -> Result<Frame, ProtocolError> {
    if body.is_empty() {
        return Err(ProtocolError::Decode("empty frame".to_owned()));
    }
    let (msg, rest) = postcard::take_from_bytes::<Msg>(&body)
        .map_err(|e| ProtocolError::Decode(e.to_string()))?;
    let offset = body.len() - rest.len();
    Ok(Frame {
        msg,
        payload: body.slice(offset..),
        fds: Fds::new(),
    })
}

/// The length a prefix announces and whether the frame carries descriptors.
fn split_prefix(raw: [u8; LEN_PREFIX]) -> (usize, bool) {
    let raw = u32::from_le_bytes(raw);
    ((raw & !FDS_FLAG) as usize, raw & FDS_FLAG != 0)
}

/// A frame body whose prefix announced descriptors: its count byte, checked, then the
/// frame with the descriptors `take` gives.
fn decode_with_fds(
    mut body: Bytes,
    take: impl FnOnce(usize) -> io::Result<Vec<OwnedFd>>,
) -> Result<Frame, ChannelError> {
    if body.is_empty() {
        return Err(
            ProtocolError::Decode("a descriptor frame without its count".to_owned()).into(),
        );
    }
    let n = usize::from(body[0]);
    if n == 0 || n > MAX_FRAME_FDS {
        return Err(ProtocolError::Decode(format!(
            "a frame announces {n} descriptors; 1 to {MAX_FRAME_FDS} may travel"
        ))
        .into());
    }
    body.advance(1);
    let fds = take(n).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::Unsupported => ChannelError::Protocol(
            ProtocolError::Decode(format!("a frame announces {n} descriptors: {e}")),
        ),
        _ => ChannelError::Io(e),
    })?;
    let mut frame = decode_frame(body)?;
    frame.fds = Fds::from(fds);
    Ok(frame)
}

/// Reads frames from a byte stream.
///
/// Small frames are parsed out of one large read buffer (many frames per system call);
/// a large frame is read straight into a buffer of its exact size, which then becomes
/// the payload without a copy.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_frame: usize,
    /// Allocations of large frames already handed out; one is reused once its payload
    /// has been dropped, so a stream of big frames does not allocate (and fault in) a
    /// fresh buffer per frame.
    spare: VecDeque<BytesMut>,
}

impl<R: FdRead> FrameReader<R> {
    /// A reader over `io` that refuses frames above `max_frame` bytes.
    pub fn new(io: R, max_frame: usize) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
            spare: VecDeque::new(),
        }
    }

    /// The next frame; `Ok(None)` at a clean end of stream (between frames).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe only for frames smaller than 64 KiB (length prefix
    /// included). Such a frame is read into the reader's own buffer, so dropping the
    /// future loses nothing: the bytes read so far stay there and the next call carries
    /// on. A frame of 64 KiB or more that was not already buffered whole is read into a
    /// buffer of its own, which belongs to the future: dropped while it waits for the
    /// rest of such a frame, the bytes of the frame read so far are lost, and the stream
    /// is no longer at a frame boundary: the next call parses the rest of that frame as
    /// new frames (usually a protocol error, possibly a bogus frame). Drop the reader,
    /// not only the future, once a read has been given up.
    ///
    /// # Errors
    /// [`ProtocolError::FrameTooLarge`] for a length above the maximum (checked before
    /// anything is allocated), [`ProtocolError::Truncated`] if the stream ends inside a
    /// frame, [`ProtocolError::Decode`] for a header that does not decode, and I/O
    /// errors as [`ChannelError::Io`]. After an error the stream's position is unknown:
    /// drop the reader.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ChannelError> {
        loop {
            if self.buf.len() >= LEN_PREFIX {
                let (len, fds) = split_prefix(self.buf[..LEN_PREFIX].try_into().unwrap());
                if len > self.max_frame {
                    return Err(ProtocolError::FrameTooLarge {
                        len,
                        max: self.max_frame,
                    }
                    .into());
                }
                let total = LEN_PREFIX + len;
                if self.buf.len() >= total {
                    let mut whole = self.buf.split_to(total);
                    whole.advance(LEN_PREFIX);
                    return self.finish(whole.freeze(), fds).map(Some);
                }
                if total >= BIG_FRAME {
                    return self.read_big(total, fds).await.map(Some);
                }
                // Make room for the rest of this frame (and, for small frames, a full
                // chunk more so the next read can pick up the frames behind it).
                let want = total.max(READ_CHUNK);
                if self.buf.capacity() < want {
                    self.buf.reserve(want - self.buf.len());
                }
            } else if self.buf.capacity() - self.buf.len() < LEN_PREFIX {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let expected = if self.buf.len() >= LEN_PREFIX {
                    LEN_PREFIX + split_prefix(self.buf[..LEN_PREFIX].try_into().unwrap()).0
                } else {
                    LEN_PREFIX
                };
                return Err(ProtocolError::Truncated {
                    expected,
                    received: self.buf.len(),
                }
                .into());
            }
        }
    }

    /// Read the rest of a large frame straight into a buffer of its size (a reused one
    /// when possible), so the payload needs no further copy.
    async fn read_big(&mut self, total: usize, fds: bool) -> Result<Frame, ChannelError> {
        // A spare is reusable once the payload cut from it is gone (it is then the only
        // owner of its allocation); otherwise it stays a spare and we allocate.
        let mut big = match self.spare.iter_mut().position(|b| b.try_reclaim(total)) {
            Some(i) => self.spare.remove(i).expect("index from position"),
            None => BytesMut::with_capacity(total),
        };
        big.extend_from_slice(&self.buf);
        self.buf.clear();
        while big.len() < total {
            let want = total - big.len();
            let n = self.io.read_buf(&mut (&mut big).limit(want)).await?;
            if n == 0 {
                return Err(ProtocolError::Truncated {
                    expected: total,
                    received: big.len(),
                }
                .into());
            }
        }
        let mut whole = big.split_to(total);
        whole.advance(LEN_PREFIX);
        if self.spare.len() == MAX_SPARE {
            self.spare.pop_front();
        }
        self.spare.push_back(big);
        self.finish(whole.freeze(), fds)
    }

    /// A whole frame body: decoded, with its descriptors if its prefix announced some.
    fn finish(&mut self, body: Bytes, fds: bool) -> Result<Frame, ChannelError> {
        if fds {
            decode_with_fds(body, |n| self.io.take_fds(n))
        } else {
            Ok(decode_frame(body)?)
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.io
    }
}

/// Writes frames to a byte stream, batching: [`feed`](FrameWriter::feed) queues,
/// [`flush`](FrameWriter::flush) writes everything queued with vectored writes.
///
/// Headers and small payloads are copied into one contiguous buffer; large payloads are
/// written from their own [`Bytes`] so they are never copied in user space. A frame with
/// descriptors starts a write of its own ([`FdWrite::poll_write_fds`]).
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    max_frame: usize,
    current: BytesMut,
    queue: VecDeque<Chunk>,
    queued: usize,
}

/// Queued bytes, and the descriptors that go with their first byte.
#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    fds: Option<Fds>,
}

impl<W: FdWrite> FrameWriter<W> {
    /// A writer over `io` that refuses to send frames above `max_frame` bytes.
    pub fn new(io: W, max_frame: usize) -> Self {
        FrameWriter {
            io,
            max_frame,
            current: BytesMut::with_capacity(8 << 10),
            queue: VecDeque::new(),
            queued: 0,
        }
    }

    fn push(&mut self, bytes: Bytes, fds: Option<Fds>) {
        self.queued += bytes.len();
        self.queue.push_back(Chunk { bytes, fds });
    }

    /// Queue `frame`.
    ///
    /// # Errors
    /// [`ProtocolError::FrameTooLarge`] if it exceeds the maximum, and
    /// [`ProtocolError::Encode`] if it carries more than [`MAX_FRAME_FDS`] descriptors;
    /// nothing is queued then and the channel stays usable.
    pub fn feed(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let nfds = frame.fds.len();
        if nfds > MAX_FRAME_FDS {
            return Err(ProtocolError::Encode(format!(
                "a frame carries at most {MAX_FRAME_FDS} descriptors, not {nfds}"
            )));
        }
        if nfds > 0 && !self.current.is_empty() {
            // The descriptors go with this frame's first byte: it starts a chunk.
            let before = self.current.split().freeze();
            self.push(before, None);
        }
        let mark = self.current.len();
        self.current.put_u32_le(0);
        if nfds > 0 {
            self.current.put_u8(nfds as u8);
        }
        if let Err(e) = encode_header(&frame.msg, &mut self.current) {
            self.current.truncate(mark);
            return Err(e);
        }
        let header = self.current.len() - mark - LEN_PREFIX;
        let body = header + frame.payload.len();
        if body > self.max_frame || body as u64 >= u64::from(FDS_FLAG) {
            self.current.truncate(mark);
            return Err(ProtocolError::FrameTooLarge {
                len: body,
                max: self.max_frame,
            });
        }
        let prefix = body as u32 | if nfds > 0 { FDS_FLAG } else { 0 };
        self.current[mark..mark + LEN_PREFIX].copy_from_slice(&prefix.to_le_bytes());
        if nfds > 0 {
            let head = self.current.split().freeze();
            self.push(head, Some(frame.fds.clone()));
            if !frame.payload.is_empty() {
                self.push(frame.payload.clone(), None);
            }
        } else if frame.payload.len() >= COPY_THRESHOLD {
            let head = self.current.split().freeze();
            self.push(head, None);
            self.push(frame.payload.clone(), None);
        } else {
            self.current.extend_from_slice(&frame.payload);
        }
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.queued + self.current.len()
    }

    /// Write everything queued.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: each write takes only what the stream accepted off
    /// the queue, so dropping the future loses and repeats nothing. What was not written
    /// stays queued for the next `flush`, which carries on from there. (Until it does, the
    /// peer may have received part of a frame.)
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.current.is_empty() {
            let tail = self.current.split().freeze();
            self.push(tail, None);
        }
        while let Some(front) = self.queue.front() {
            let n = if let Some(fds) = &front.fds {
                let bytes = front.bytes.clone();
                let fds = fds.clone();
                let io = &mut self.io;
                std::future::poll_fn(|cx| {
                    Pin::new(&mut *io).poll_write_fds(cx, &bytes, &fds.borrowed())
                })
                .await?
            } else {
                let slices: Vec<IoSlice<'_>> = self
                    .queue
                    .iter()
                    .take(64)
                    .enumerate()
                    .take_while(|(i, c)| *i == 0 || c.fds.is_none())
                    .map(|(_, c)| IoSlice::new(&c.bytes))
                    .collect();
                self.io.write_vectored(&slices).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.queued -= n;
            let mut left = n;
            while left > 0 {
                let front = self.queue.front_mut().expect("wrote more than was queued");
                // Whatever part of it went, its descriptors went with the first byte.
                front.fds = None;
                if front.bytes.len() <= left {
                    left -= front.bytes.len();
                    self.queue.pop_front();
                } else {
                    front.bytes.advance(left);
                    left = 0;
                }
            }
        }
        self.io.flush().await
    }

    /// Flush, then shut down the write side.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`flush`](FrameWriter::flush): dropped, it may have
    /// written part of what was queued (the rest stays queued) and the write side may or
    /// may not be shut down yet; calling it again finishes the job.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &W {
        &self.io
    }
}

/// Read exactly one frame from a blocking reader (tools and tests that speak the
/// protocol without a runtime).
pub fn read_frame_blocking(
    r: &mut impl io::Read,
    max_frame: usize,
) -> Result<Option<Frame>, ChannelError> {
    let mut len = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        let n = r.read(&mut len[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ProtocolError::Truncated {
                expected: LEN_PREFIX,
                received: got,
            }
            .into());
        }
        got += n;
    }
    let (len, fds) = split_prefix(len);
    if fds {
        return Err(ProtocolError::Decode(
            "a frame with descriptors on a stream that cannot carry them".to_owned(),
        )
        .into());
    }
    if len > max_frame {
        return Err(ProtocolError::FrameTooLarge {
            len,
            max: max_frame,
        }
        .into());
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = r.read(&mut body[got..])?;
        if n == 0 {
            return Err(ProtocolError::Truncated {
                expected: LEN_PREFIX + len,
                received: LEN_PREFIX + got,
            }
            .into());
        }
        got += n;
    }
    Ok(Some(decode_frame(Bytes::from(body))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ActorId;
    use tokio::io::duplex;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn frames_of_every_size_round_trip_in_one_batch() {
        rt().block_on(async {
            let (a, b) = duplex(1 << 16);
            let mut w = FrameWriter::new(a, DEFAULT_MAX_FRAME);
            let mut r = FrameReader::new(b, DEFAULT_MAX_FRAME);
            let sizes = [
                0usize,
                1,
                63,
                64,
                COPY_THRESHOLD - 1,
                COPY_THRESHOLD,
                1 << 20,
            ];
            let frames: Vec<Frame> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    Frame::with_payload(
                        Msg::Yield { cid: i as u64 },
                        Bytes::from((0..n).map(|x| x as u8).collect::<Vec<_>>()),
                    )
                })
                .collect();
            let expect = frames.clone();
            let writer = tokio::spawn(async move {
                for f in &frames {
                    w.feed(f).unwrap();
                }
                w.shutdown().await.unwrap();
            });
            for f in expect {
                assert_eq!(r.read_frame().await.unwrap().unwrap(), f);
            }
            assert!(r.read_frame().await.unwrap().is_none());
            writer.await.unwrap();
        });
    }

    #[test]
    fn a_big_frame_buffer_is_reused_once_its_payload_is_dropped() {
        rt().block_on(async {
            let (a, b) = duplex(1 << 20);
            let mut w = FrameWriter::new(a, DEFAULT_MAX_FRAME);
            let mut r = FrameReader::new(b, DEFAULT_MAX_FRAME);
            let f = Frame::with_payload(Msg::Yield { cid: 1 }, Bytes::from(vec![3u8; 200_000]));
            let writer = tokio::spawn(async move {
                for _ in 0..3 {
                    w.feed(&f).unwrap();
                    w.flush().await.unwrap();
                }
            });
            let first = r.read_frame().await.unwrap().unwrap();
            let first_ptr = first.payload.as_ptr();
            drop(first);
            // Dropped: the same allocation carries the next frame.
            let second = r.read_frame().await.unwrap().unwrap();
            assert_eq!(second.payload.as_ptr(), first_ptr);
            // Still held: the next frame gets a buffer of its own.
            let third = r.read_frame().await.unwrap().unwrap();
            assert_ne!(third.payload.as_ptr(), first_ptr);
            assert!(
                second
                    .payload
                    .iter()
                    .chain(third.payload.iter())
                    .all(|&x| x == 3)
            );
            writer.await.unwrap();
        });
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        rt().block_on(async {
            let (mut a, b) = duplex(64);
            a.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
            let mut r = FrameReader::new(b, 1024);
            match r.read_frame().await {
                Err(ChannelError::Protocol(ProtocolError::FrameTooLarge { len, max })) => {
                    assert_eq!(len, !FDS_FLAG as usize);
                    assert_eq!(max, 1024);
                }
                other => panic!("expected FrameTooLarge, got {other:?}"),
            }
        });
    }

    #[test]
    fn truncated_frame_and_garbage_are_typed() {
        rt().block_on(async {
            let (mut a, b) = duplex(64);
            a.write_all(&10u32.to_le_bytes()).await.unwrap();
            a.write_all(b"abc").await.unwrap();
            drop(a);
            let mut r = FrameReader::new(b, 1024);
            assert!(matches!(
                r.read_frame().await,
                Err(ChannelError::Protocol(ProtocolError::Truncated {
                    expected: 14,
                    received: 7
                }))
            ));

            let (mut a, b) = duplex(64);
            a.write_all(&4u32.to_le_bytes()).await.unwrap();
            a.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
            let mut r = FrameReader::new(b, 1024);
            assert!(matches!(
                r.read_frame().await,
                Err(ChannelError::Protocol(ProtocolError::Decode(_)))
            ));
        });
    }

    #[test]
    fn writer_refuses_oversized_frame_and_stays_usable() {
        rt().block_on(async {
            let (a, b) = duplex(1 << 12);
            let mut w = FrameWriter::new(a, 100);
            let big = Frame::with_payload(Msg::Yield { cid: 1 }, Bytes::from(vec![0u8; 200]));
            assert!(matches!(
                w.feed(&big),
                Err(ProtocolError::FrameTooLarge { .. })
            ));
            let ok = Frame::control(Msg::Hello {
                id: ActorId::new("x"),
                protocol: 1,
                nonce: crate::Nonce([0; 16]),
                proof: None,
            });
            w.feed(&ok).unwrap();
            w.flush().await.unwrap();
            let mut r = FrameReader::new(b, 100);
            assert_eq!(r.read_frame().await.unwrap().unwrap(), ok);
        });
    }

    fn fds(n: usize) -> Fds {
        Fds::from(
            (0..n)
                .map(|_| OwnedFd::from(std::fs::File::open("/proc/self/status").unwrap()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn descriptors_need_a_stream_that_carries_them_and_are_bounded() {
        rt().block_on(async {
            let (a, b) = duplex(1 << 12);
            let mut w = FrameWriter::new(a, 1024);
            let mut f = Frame::control(Msg::Stop { cid: 1 });
            f.fds = fds(MAX_FRAME_FDS + 1);
            assert!(matches!(w.feed(&f), Err(ProtocolError::Encode(_))));
            assert_eq!(w.pending(), 0, "nothing queued");
            f.fds = fds(1);
            w.feed(&f).unwrap();
            let e = w.flush().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            assert!(encode_frame(&f, 1024).is_err());
            // A reader over a stream without descriptors refuses a frame announcing some.
            let mut header = BytesMut::new();
            encode_header(&Msg::Stop { cid: 1 }, &mut header).unwrap();
            let mut wire = ((header.len() + 1) as u32 | FDS_FLAG)
                .to_le_bytes()
                .to_vec();
            wire.push(1);
            wire.extend_from_slice(&header);
            drop(b);
            let mut r = FrameReader::new(&wire[..], 1024);
            assert!(matches!(
                r.read_frame().await,
                Err(ChannelError::Protocol(ProtocolError::Decode(_)))
            ));
            assert!(read_frame_blocking(&mut io::Cursor::new(wire), 1024).is_err());
        });
    }

    #[test]
    fn blocking_reader_agrees_with_async_writer() {
        let f = Frame::with_payload(Msg::Return { cid: 9 }, Bytes::from_static(b"xyz"));
        let wire = encode_frame(&f, 1024).unwrap();
        let mut cur = io::Cursor::new(wire.to_vec());
        assert_eq!(read_frame_blocking(&mut cur, 1024).unwrap().unwrap(), f);
        assert!(read_frame_blocking(&mut cur, 1024).unwrap().is_none());
        let mut short = io::Cursor::new(wire[..wire.len() - 1].to_vec());
        assert!(matches!(
            read_frame_blocking(&mut short, 1024),
            Err(ChannelError::Protocol(ProtocolError::Truncated { .. }))
        ));
    }
}
