//! Passing descriptors over a Unix socket (`SCM_RIGHTS`).
//!
//! Both calls are non-blocking (callers wait for readiness themselves, with tokio or
//! `poll`). Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`) and owned by the
//! caller at once; more descriptors than [`MAX_FDS`] are closed by the kernel and the
//! message is reported truncated.
//!
//! [`FdReadHalf`] and [`FdWriteHalf`] are the two halves of a tokio Unix stream that
//! carry descriptors beside their bytes: every read is a `recvmsg` that keeps what
//! arrives, and a write can attach descriptors to its first byte. (A plain `read` of a
//! Unix stream silently closes descriptors that arrive with the bytes it reads.)

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 8;

/// Send `bytes` (at least one byte: descriptors ride on data) with `fds` attached,
/// without blocking and without `SIGPIPE`. Returns how many bytes went.
///
/// # Errors
/// `InvalidInput` for no bytes or more than [`MAX_FDS`] descriptors; the OS error of
/// `sendmsg` (`WouldBlock` when the socket's buffer is full, `BrokenPipe`...).
pub fn send_with_fds(sock: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if bytes.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        flags,
        None,
    )
    .map_err(io::Error::from)
}

/// What [`recv_with_fds`] received.
#[derive(Debug)]
pub struct Received {
    /// Bytes received (0: the peer closed the connection).
    pub len: usize,
    /// Whether data or descriptors did not fit (`MSG_TRUNC` / `MSG_CTRUNC`).
    pub truncated: bool,
    /// The descriptors that came with the bytes, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Receive into `buf`, with up to [`MAX_FDS`] descriptors, without blocking.
///
/// # Errors
/// The OS error of `recvmsg` (`WouldBlock` when nothing is there).
pub fn recv_with_fds(sock: impl AsFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the callee only ever writes
    // initialised bytes (what the kernel received) into the buffer, never
    // uninitialised ones, so `buf` stays initialised.
    let uninit = unsafe {
        std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<MaybeUninit<u8>>(), buf.len())
    };
    recv_with_fds_uninit(sock, uninit)
}

/// Receive into `buf` (memory that need not be initialised), with up to [`MAX_FDS`]
/// descriptors, without blocking. Returns what [`recv_with_fds`] does; the first `len`
/// bytes of `buf` are then initialised.
///
/// # Errors
/// The OS error of `recvmsg` (`WouldBlock` when nothing is there).
pub fn recv_with_fds_uninit(sock: impl AsFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<Received> {
    const SPACE: usize = cmsg_space(MAX_FDS);
    // u64s, so the control buffer is aligned as `struct cmsghdr` needs.
    let mut control = [0u64; SPACE.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid "no name, no iovecs, no control" value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = SPACE;
    // SAFETY: every pointer in `msg` is to live memory of the length given (the iovec to
    // `buf`, which the kernel only writes, the control buffer to `control`), and both
    // outlive the call.
    let n = unsafe {
        libc::recvmsg(
            sock.as_fd().as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    let mut other = false;
    // SAFETY: `msg` is what recvmsg filled in; CMSG_FIRSTHDR/NXTHDR stay within its
    // control buffer (the kernel set msg_controllen to what it wrote).
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: `c` is a header inside the control buffer, as CMSG_FIRSTHDR/NXTHDR
        // give them.
        let hdr = unsafe { &*c };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a constant computation.
            let data_len = hdr.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            let count = data_len / std::mem::size_of::<RawFd>();
            // SAFETY: the header's data holds `count` descriptors (its length says so);
            // they may be unaligned, so each is read unaligned.
            let data = unsafe { libc::CMSG_DATA(c) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `i < count`, within the data; SCM_RIGHTS installed these
                // descriptors for this message only, so each is owned once, here.
                fds.push(unsafe { OwnedFd::from_raw_fd(data.add(i).read_unaligned()) });
            }
        } else {
            other = true;
        }
        // SAFETY: as above; NXTHDR returns null past the last header.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    Ok(Received {
        len: n as usize,
        truncated: other || msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0,
        fds,
    })
}

/// Bytes of control buffer for `n` descriptors.
const fn cmsg_space(n: usize) -> usize {
    // CMSG_SPACE is not const in libc; this is its definition on Linux: the header
    // rounded to the word size, then the data rounded likewise.
    let word = std::mem::size_of::<usize>();
    let hdr = std::mem::size_of::<libc::cmsghdr>().div_ceil(word) * word;
    hdr + (n * std::mem::size_of::<RawFd>()).div_ceil(word) * word
}

/// The most descriptors an [`FdReadHalf`] holds that no frame has claimed yet; past
/// it the peer is flooding us and reads fail.
pub const MAX_QUEUED_FDS: usize = 64;

/// The read half of a Unix stream that keeps the descriptors arriving with its bytes,
/// in order, until [`take_fds`](FdReadHalf::take_fds).
#[derive(Debug)]
pub struct FdReadHalf {
    half: OwnedReadHalf,
    fds: VecDeque<OwnedFd>,
}

impl FdReadHalf {
    /// Wrap `half`.
    pub fn new(half: OwnedReadHalf) -> FdReadHalf {
        FdReadHalf {
            half,
            fds: VecDeque::new(),
        }
    }

    /// The next `n` descriptors that arrived, in order.
    ///
    /// # Errors
    /// `InvalidData` if fewer than `n` are here (what is here stays).
    pub fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>> {
        if self.fds.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} descriptors arrived, {n} expected", self.fds.len()),
            ));
        }
        Ok(self.fds.drain(..n).collect())
    }
}

impl AsyncRead for FdReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let stream = this.half.as_ref();
        loop {
            ready!(stream.poll_read_ready(cx))?;
            // SAFETY: recvmsg only writes into the unfilled part, and we mark as filled
            // exactly the bytes it reports written.
            let unfilled = unsafe { buf.unfilled_mut() };
            match stream.try_io(Interest::READABLE, || {
                recv_with_fds_uninit(stream, unfilled)
            }) {
                Ok(got) => {
                    this.fds.extend(got.fds);
                    if got.truncated {
                        // Descriptors were cut off by the kernel: the stream and its
                        // descriptors no longer agree.
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "descriptors were truncated",
                        )));
                    }
                    if this.fds.len() > MAX_QUEUED_FDS {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("more than {MAX_QUEUED_FDS} descriptors nobody asked for"),
                        )));
                    }
                    // SAFETY: recvmsg initialised the first `got.len` bytes of `unfilled`.
                    unsafe { buf.assume_init(got.len) };
                    buf.advance(got.len);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// The write half of a Unix stream that can attach descriptors to a write
/// ([`poll_write_fds`](FdWriteHalf::poll_write_fds)).
#[derive(Debug)]
pub struct FdWriteHalf {
    half: OwnedWriteHalf,
}

impl FdWriteHalf {
    /// Wrap `half`.
    pub fn new(half: OwnedWriteHalf) -> FdWriteHalf {
        FdWriteHalf { half }
    }

    /// Write from `buf` (at least one byte) with `fds` attached to the first byte.
    ///
    /// # Errors
    /// As [`send_with_fds`].
    pub fn poll_write_fds(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = self.half.as_ref();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_io(Interest::WRITABLE, || send_with_fds(stream, buf, fds)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

impl AsyncWrite for FdWriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.half).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.half).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.half.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixStream;

    fn ino(fd: impl AsFd) -> (u64, u64) {
        let st = nix::sys::stat::fstat(fd.as_fd()).unwrap();
        (st.st_dev, st.st_ino)
    }

    #[test]
    fn descriptors_arrive_as_the_same_open_files_and_close_on_exec() {
        let (a, b) = UnixStream::pair().unwrap();
        let f1 = std::fs::File::open("/proc/self/status").unwrap();
        let (mut r, mut w) = UnixStream::pair().unwrap();
        let sent = send_with_fds(&a, b"hello", &[f1.as_fd(), w.as_fd()]).unwrap();
        assert_eq!(sent, 5);
        let mut buf = [0u8; 16];
        let got = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"hello");
        assert!(!got.truncated);
        assert_eq!(got.fds.len(), 2);
        assert_eq!(ino(&got.fds[0]), ino(&f1));
        assert_eq!(
            ino(&got.fds[0]),
            (f1.metadata().unwrap().dev(), f1.metadata().unwrap().ino())
        );
        let flags = nix::fcntl::fcntl(&got.fds[1], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec");
        // The received socket end is the same socket: what goes in comes out at `r`.
        let mut theirs = UnixStream::from(got.fds.into_iter().nth(1).unwrap());
        theirs.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        r.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
        w.flush().unwrap();
    }

    #[test]
    fn nothing_waiting_is_would_block_and_a_closed_peer_is_zero_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 4];
        let e = recv_with_fds(&b, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        let got = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((got.len, got.fds.len()), (0, 0));
        assert_eq!(
            send_with_fds(&b, b"", &[]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            send_with_fds(&b, b"x", &[]).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe,
            "no SIGPIPE, an error"
        );
    }

    #[test]
    fn the_uninit_receive_agrees_with_the_plain_one() {
        let (a, b) = UnixStream::pair().unwrap();
        let f1 = std::fs::File::open("/proc/self/status").unwrap();
        send_with_fds(&a, b"hey", &[f1.as_fd(), f1.as_fd()]).unwrap();
        let mut buf = [MaybeUninit::<u8>::uninit(); 8];
        let got = recv_with_fds_uninit(&b, &mut buf).unwrap();
        assert_eq!((got.len, got.fds.len(), got.truncated), (3, 2, false));
        // SAFETY: the first three bytes were received.
        let bytes: Vec<u8> = buf[..3]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        assert_eq!(bytes, b"hey");
        assert_eq!(ino(&got.fds[1]), ino(&f1));
        let too_many: Vec<_> = (0..MAX_FDS).map(|_| f1.as_fd()).collect();
        send_with_fds(&a, b"x", &too_many).unwrap();
        let got = recv_with_fds_uninit(&b, &mut buf).unwrap();
        assert_eq!(got.fds.len(), MAX_FDS, "the control buffer holds MAX_FDS");
        assert_eq!(
            recv_with_fds_uninit(&b, &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn stream_halves_carry_descriptors_with_the_bytes_they_ride_on() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = tokio::net::UnixStream::pair().unwrap();
            let (_ar, aw) = a.into_split();
            let (br, _bw) = b.into_split();
            let mut w = FdWriteHalf::new(aw);
            let mut r = FdReadHalf::new(br);
            let f1 = std::fs::File::open("/proc/self/status").unwrap();
            w.write_all(b"plain ").await.unwrap();
            let n = std::future::poll_fn(|cx| w.poll_write_fds(cx, b"with", &[f1.as_fd()]))
                .await
                .unwrap();
            assert_eq!(n, 4);
            w.write_all(b" more").await.unwrap();
            let mut got = vec![0u8; 15];
            r.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"plain with more");
            let fds = r.take_fds(1).unwrap();
            assert_eq!(ino(&fds[0]), ino(&f1));
            assert_eq!(
                r.take_fds(1).unwrap_err().kind(),
                io::ErrorKind::InvalidData
            );
        });
    }

    #[test]
    fn a_short_buffer_leaves_the_rest_of_a_stream_for_the_next_read() {
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"abc", &[a.as_fd()]).unwrap();
        let mut buf = [0u8; 2];
        let got = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((got.len, got.fds.len()), (2, 1));
        let rest = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((rest.len, rest.fds.len()), (1, 0));
        assert_eq!(buf[0], b'c');
    }
}
