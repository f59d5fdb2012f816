//! How a child process receives its boot: over its standard input.
//!
//! The boot carries the tree's secret, so it must not travel on the command line (every
//! user can read `/proc/<pid>/cmdline`) nor stay in the environment (readable in
//! `/proc/<pid>/environ`, and inherited by whatever the actor starts). The parent writes
//! it into a socket that becomes the child's stdin; the environment only says *that* a
//! boot waits there, with a random nonce the boot must start with. The child reads it,
//! then puts `/dev/null` on its stdin.
//!
//! The marker stays in the environment (removing it would be unsound once threads exist),
//! so a program the actor starts may inherit it. That program is not fooled: its stdin
//! is not a socket whose first bytes are this marker's magic and nonce (checked with
//! `MSG_PEEK`, so nothing is consumed from a stdin that is not ours).

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::MsgFlags;

/// Environment variable marking a process as a child actor: the hex nonce its boot
/// starts with.
pub const BOOT_ENV: &str = "BROOD_ACTOR";

const MAGIC: &[u8; 8] = b"brood-b1";
const HEADER: usize = MAGIC.len() + 16 + 4 + 4;

/// What a parent hands its child process.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// The parent's pid: a child whose parent is already gone must not run.
    pub(crate) parent_pid: u32,
    /// The encoded [`spawn_api::ChildBoot`].
    pub(crate) boot: Vec<u8>,
}

/// The child's stdin with the boot in it, the environment marker that goes with it, and
/// the parent's end of the socket (the way back for a sandbox report; dropping it marks
/// the end of the boot).
pub(crate) fn prepare(envelope: &Envelope) -> io::Result<(OwnedFd, String, UnixStream)> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    let len = u32::try_from(envelope.boot.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "boot too large"))?;
    let mut bytes = Vec::with_capacity(HEADER + envelope.boot.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&envelope.parent_pid.to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&envelope.boot);
    let (mut ours, theirs) = UnixStream::pair()?;
    // A boot is a few hundred bytes (at most 16 KiB): it fits in the socket's buffer, so
    // this does not block. The length prefix marks its end.
    ours.write_all(&bytes)?;
    Ok((theirs.into(), hex(&nonce), ours))
}

/// Take the boot from stdin if `marker` (the value of [`BOOT_ENV`]) says one waits
/// there and stdin holds it; `Ok(None)` if this process is not a child actor after all.
/// With the boot comes the socket it came on (no longer stdin), the way back to the
/// parent.
///
/// # Errors
/// A boot that starts right but cannot be read whole.
pub(crate) fn take(marker: &str) -> io::Result<Option<(Envelope, OwnedFd)>> {
    let Some(nonce) = unhex(marker).filter(|n| n.len() == 16) else {
        return Ok(None);
    };
    let stdin = io::stdin();
    let fd = stdin.as_fd();
    let Ok(stat) = nix::sys::stat::fstat(fd) else {
        return Ok(None);
    };
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Ok(None);
    }
    let mut head = [0u8; HEADER];
    let peeked = nix::sys::socket::recv(
        fd.as_raw_fd(),
        &mut head,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    );
    if peeked != Ok(HEADER) || &head[..8] != MAGIC || head[8..24] != nonce[..] {
        return Ok(None);
    }
    let parent_pid = u32::from_le_bytes(head[24..28].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(head[28..32].try_into().expect("4 bytes")) as usize;
    if len > spawn_api::ChildBoot::MAX_ENCODED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a boot of {len} bytes"),
        ));
    }
    let mut all = vec![0u8; HEADER + len];
    read_exact(fd, &mut all)?;
    let back = fd.try_clone_to_owned()?;
    // Stdin was only the boot's way in.
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(null.as_fd()).map_err(io::Error::from)?;
    Ok(Some((
        Envelope {
            parent_pid,
            boot: all.split_off(HEADER),
        },
        back,
    )))
}

fn read_exact(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the boot ended after {got} of {} bytes", buf.len()),
                ));
            }
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decoding_refuses_anything_but_hex_pairs() {
        assert_eq!(unhex("00ff"), Some(vec![0, 255]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        // Multi-byte characters: no panic, no slicing inside a character.
        assert_eq!(unhex("é1"), None);
        assert_eq!(unhex("éé"), None);
    }

    #[test]
    fn an_envelope_round_trips_through_a_socket() {
        let env = Envelope {
            parent_pid: 42,
            boot: vec![1, 2, 3],
        };
        let (fd, marker, ours) = prepare(&env).unwrap();
        drop(ours);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(hex(&bytes[8..24]), marker);
        assert_eq!(&bytes[HEADER..], &[1, 2, 3]);
    }
}
