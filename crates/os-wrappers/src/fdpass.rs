//! Passing descriptors over a Unix socket (`SCM_RIGHTS`).
//!
//! Both calls are non-blocking (callers wait for readiness themselves, with tokio or
//! `poll`). Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`) and owned by the
//! caller at once; more descriptors than [`MAX_FDS`] are closed by the kernel and the
//! message is reported truncated.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

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
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = recvmsg::<()>(sock.as_fd().as_raw_fd(), &mut iov, Some(&mut space), flags)
        .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    let mut other = false;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::ScmRights(raw) => {
                for r in raw {
                    // SAFETY: SCM_RIGHTS installed these descriptors in our table for
                    // this message only; nothing else knows their numbers, so each is
                    // owned exactly once, here.
                    fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                }
            }
            _ => other = true,
        }
    }
    Ok(Received {
        len: msg.bytes,
        truncated: other
            || msg
                .flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
        fds,
    })
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
