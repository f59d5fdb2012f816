//! The messages between a client (a spawning actor) and the forkserver.
//!
//! They travel over `SOCK_SEQPACKET` Unix sockets, so every message is one datagram and
//! descriptors passed with `SCM_RIGHTS` belong to exactly one message. The encoding is
//! fixed-width little-endian integers behind a one-byte tag: the server parses a request
//! without allocating, and the child decodes the boot itself, after the fork.

use spawn_api::ChildExit;

/// Request flag: the child's stdout and stderr are `/dev/null` (no descriptors attached).
/// Without it the request carries the client's stdout and stderr, which become the
/// child's.
pub(crate) const FLAG_NULL_STDIO: u8 = 1;

const TAG_SPAWN: u8 = b'S';
const TAG_SPAWNED: u8 = b'P';
const TAG_FAILED: u8 = b'F';
const TAG_EXIT: u8 = b'X';

/// Longest reply, in bytes.
pub(crate) const REPLY_LEN: usize = 10;

/// Where in the server a spawn failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The request did not parse.
    Request = 1,
    /// Creating the child's parent link.
    Link = 2,
    /// `fork` itself.
    Fork = 3,
    /// Opening the child's pidfd.
    Pidfd = 4,
}

impl Stage {
    fn from_u8(v: u8) -> Option<Stage> {
        Some(match v {
            1 => Stage::Request,
            2 => Stage::Link,
            3 => Stage::Fork,
            4 => Stage::Pidfd,
            _ => return None,
        })
    }

    /// What the server was doing, for error messages.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Stage::Request => "reading the request",
            Stage::Link => "creating the parent link",
            Stage::Fork => "fork",
            Stage::Pidfd => "pidfd_open",
        }
    }
}

/// A spawn request as the server sees it; `boot` borrows the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SpawnReq<'a> {
    pub(crate) req: u32,
    pub(crate) flags: u8,
    pub(crate) boot: &'a [u8],
}

/// Encode a spawn request: the tag, the request id, the flags, then the encoded
/// [`spawn_api::ChildBoot`].
pub(crate) fn encode_spawn(req: u32, flags: u8, boot: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + boot.len());
    v.push(TAG_SPAWN);
    v.extend_from_slice(&req.to_le_bytes());
    v.push(flags);
    v.extend_from_slice(boot);
    v
}

/// Parse a spawn request; `None` if it is not one.
pub(crate) fn decode_spawn(msg: &[u8]) -> Option<SpawnReq<'_>> {
    if msg.len() < 6 || msg[0] != TAG_SPAWN {
        return None;
    }
    Some(SpawnReq {
        req: u32::from_le_bytes(msg[1..5].try_into().ok()?),
        flags: msg[5],
        boot: &msg[6..],
    })
}

/// The request id of something that looks like a spawn request, to answer a malformed
/// one.
pub(crate) fn request_id(msg: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(msg.get(1..5)?.try_into().ok()?))
}

/// What the server tells a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The child of request `req` runs as `pid`; its pidfd and the parent end of its
    /// link come with this message.
    Spawned { req: u32, pid: u32 },
    /// Request `req` failed at `stage` with `errno`.
    Failed { req: u32, stage: Stage, errno: i32 },
    /// Child `pid` (spawned through this connection) ended.
    Exit { pid: u32, exit: ChildExit },
}

/// Encode a reply into a fixed buffer; returns the buffer and the length used.
pub(crate) fn encode_reply(r: &Reply) -> ([u8; REPLY_LEN], usize) {
    let mut b = [0u8; REPLY_LEN];
    match r {
        Reply::Spawned { req, pid } => {
            b[0] = TAG_SPAWNED;
            b[1..5].copy_from_slice(&req.to_le_bytes());
            b[5..9].copy_from_slice(&pid.to_le_bytes());
            (b, 9)
        }
        Reply::Failed { req, stage, errno } => {
            b[0] = TAG_FAILED;
            b[1..5].copy_from_slice(&req.to_le_bytes());
            b[5] = *stage as u8;
            b[6..10].copy_from_slice(&errno.to_le_bytes());
            (b, 10)
        }
        Reply::Exit { pid, exit } => {
            b[0] = TAG_EXIT;
            b[1..5].copy_from_slice(&pid.to_le_bytes());
            let (kind, value) = match exit {
                ChildExit::Exited(c) => (0, *c),
                ChildExit::Signaled {
                    signal,
                    core_dumped: false,
                } => (1, *signal),
                ChildExit::Signaled {
                    signal,
                    core_dumped: true,
                } => (2, *signal),
                // The server only ever reports what waitpid saw.
                _ => (3, 0),
            };
            b[5] = kind;
            b[6..10].copy_from_slice(&value.to_le_bytes());
            (b, 10)
        }
    }
}

/// Decode a reply; `None` if it is malformed.
pub(crate) fn decode_reply(b: &[u8]) -> Option<Reply> {
    let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let i32_at = |i: usize| Some(i32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    match *b.first()? {
        TAG_SPAWNED if b.len() == 9 => Some(Reply::Spawned {
            req: u32_at(1)?,
            pid: u32_at(5)?,
        }),
        TAG_FAILED if b.len() == 10 => Some(Reply::Failed {
            req: u32_at(1)?,
            stage: Stage::from_u8(b[5])?,
            errno: i32_at(6)?,
        }),
        TAG_EXIT if b.len() == 10 => {
            let value = i32_at(6)?;
            let exit = match b[5] {
                0 => ChildExit::Exited(value),
                1 => ChildExit::Signaled {
                    signal: value,
                    core_dumped: false,
                },
                2 => ChildExit::Signaled {
                    signal: value,
                    core_dumped: true,
                },
                _ => ChildExit::Unknown {
                    reason: "the forkserver could not decode the status".to_owned(),
                },
            };
            Some(Reply::Exit {
                pid: u32_at(1)?,
                exit,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let m = encode_spawn(7, FLAG_NULL_STDIO, b"00ff");
        assert_eq!(
            decode_spawn(&m),
            Some(SpawnReq {
                req: 7,
                flags: FLAG_NULL_STDIO,
                boot: b"00ff"
            })
        );
        assert_eq!(request_id(&m), Some(7));
        assert_eq!(decode_spawn(b"S123"), None);
        assert_eq!(decode_spawn(b"Q12345"), None);
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::Spawned { req: 1, pid: 4242 },
            Reply::Failed {
                req: 2,
                stage: Stage::Fork,
                errno: libc::EAGAIN,
            },
            Reply::Exit {
                pid: 9,
                exit: ChildExit::Exited(101),
            },
            Reply::Exit {
                pid: 9,
                exit: ChildExit::Signaled {
                    signal: 9,
                    core_dumped: false,
                },
            },
            Reply::Exit {
                pid: 9,
                exit: ChildExit::Signaled {
                    signal: 11,
                    core_dumped: true,
                },
            },
        ] {
            let (b, n) = encode_reply(&r);
            assert_eq!(decode_reply(&b[..n]), Some(r));
        }
        assert_eq!(decode_reply(b""), None);
        assert_eq!(decode_reply(b"P123"), None);
        assert_eq!(decode_reply(b"F123456789"), None, "stage 0 does not exist");
    }

    /// Every prefix, every one-byte change and some noise, through every decoder: none
    /// panics, and what decodes is consistent.
    #[test]
    fn hostile_bytes_never_panic() {
        let mut samples: Vec<Vec<u8>> = vec![encode_spawn(u32::MAX, 0xff, &[0xff; 40])];
        for r in [
            Reply::Spawned {
                req: u32::MAX,
                pid: u32::MAX,
            },
            Reply::Failed {
                req: 0,
                stage: Stage::Pidfd,
                errno: i32::MIN,
            },
            Reply::Exit {
                pid: 1,
                exit: ChildExit::Exited(-1),
            },
        ] {
            let (b, n) = encode_reply(&r);
            samples.push(b[..n].to_vec());
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            samples.push(x.to_le_bytes().repeat((x % 5) as usize));
        }
        for s in samples {
            let mut variants: Vec<Vec<u8>> = (0..=s.len()).map(|n| s[..n].to_vec()).collect();
            for i in 0..s.len() {
                for v in [0u8, 1, 2, 3, 4, 0x7f, 0x80, 0xff, b'S', b'P', b'F', b'X'] {
                    let mut m = s.clone();
                    m[i] = v;
                    variants.push(m);
                }
            }
            for m in variants {
                if let Some(r) = decode_spawn(&m) {
                    assert_eq!(request_id(&m), Some(r.req));
                    assert_eq!(6 + r.boot.len(), m.len());
                }
                if let Some(r) = decode_reply(&m) {
                    assert!(m.len() <= REPLY_LEN);
                    let (b, n) = encode_reply(&r);
                    assert_eq!(n, m.len(), "{r:?}");
                    let _ = b;
                }
            }
        }
    }

    #[test]
    fn an_unknown_exit_kind_decodes_as_unknown() {
        let mut b = [0u8; 10];
        b[0] = TAG_EXIT;
        b[1..5].copy_from_slice(&7u32.to_le_bytes());
        b[5] = 200;
        assert!(matches!(
            decode_reply(&b),
            Some(Reply::Exit {
                pid: 7,
                exit: ChildExit::Unknown { .. }
            })
        ));
    }
}
