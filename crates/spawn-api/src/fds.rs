//! Descriptors that travel beside a frame's bytes.
//!
//! Some values are more than bytes: a shared-memory region (`ipc_shm::ShmRegion`) is a
//! memory file, and what
//! reaches the peer must be the file itself, not a number that means nothing in its
//! process. Such a value puts its descriptor in the frame's [`Fds`] and writes only the
//! descriptor's *index* into its encoded bytes; the transport delivers the descriptors
//! with the frame (`SCM_RIGHTS` on a Unix socket, the control socket of a shared-memory
//! channel, the value itself in memory) and the receiving side's decoder claims them by
//! index.
//!
//! Types that carry a descriptor implement `Serialize`/`Deserialize` with
//! [`attach`] and [`claim`] (reporting failures with [`ser_error`] and [`de_error`], whose
//! messages survive formats that drop serde's), which work while a value is encoded by
//! [`Wire::encode_with`](crate::Wire::encode_with) or decoded by
//! [`Wire::decode_with`](crate::Wire::decode_with) on the same thread (the runtime does
//! both for every argument, reply and item). Outside of that (plain
//! [`Wire::encode`](crate::Wire::encode), a JSON dump) they fail with a serde error
//! rather than send a number that would name another file at the peer.
//!
//! ```
//! use std::os::fd::OwnedFd;
//! use std::sync::Arc;
//! use spawn_api::fds::{self, Fds};
//!
//! /// A file handed to the peer.
//! struct Handle(Arc<OwnedFd>);
//!
//! impl serde::Serialize for Handle {
//!     fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
//!         let i = fds::attach(self.0.clone()).map_err(fds::ser_error)?;
//!         s.serialize_u32(i)
//!     }
//! }
//! impl<'de> serde::Deserialize<'de> for Handle {
//!     fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Handle, D::Error> {
//!         let i = u32::deserialize(d)?;
//!         fds::claim(i).map(Handle).map_err(fds::de_error)
//!     }
//! }
//!
//! use spawn_api::Wire;
//! let file: OwnedFd = std::fs::File::open("/proc/self/status").unwrap().into();
//! let v = (7u8, Handle(Arc::new(file)));
//! let mut out = Fds::new();
//! let bytes = v.encode_with(&mut out).unwrap();
//! assert_eq!(out.len(), 1);
//! let (n, h) = <(u8, Handle)>::decode_with(bytes.clone(), out).unwrap();
//! assert_eq!(n, 7);
//! // Without a frame's descriptors the index claims nothing: a typed error.
//! assert!(<(u8, Handle)>::decode_with(bytes, Fds::new()).is_err());
//! // And a plain encode refuses to send a bare descriptor number.
//! assert!((1u8, h).encode().is_err());
//! ```

use std::cell::RefCell;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// The most descriptors one frame carries.
pub const MAX_FRAME_FDS: usize = 8;

/// The descriptors of one frame, in order. Cheap to clone (each is shared, not
/// duplicated); a descriptor is closed when its last holder drops it.
#[derive(Clone, Default)]
pub struct Fds(Vec<Arc<OwnedFd>>);

impl Fds {
    /// No descriptors.
    pub const fn new() -> Fds {
        Fds(Vec::new())
    }

    /// Append `fd`, returning its index.
    pub fn push(&mut self, fd: Arc<OwnedFd>) -> u32 {
        self.0.push(fd);
        u32::try_from(self.0.len() - 1).expect("fewer than 2^32 descriptors")
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (the common case: most frames are only bytes).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The descriptors, borrowed, in order (for `sendmsg`).
    pub fn borrowed(&self) -> Vec<BorrowedFd<'_>> {
        self.0.iter().map(|f| f.as_fd()).collect()
    }

    /// Move every descriptor of `other` to the end of `self`.
    pub fn append(&mut self, other: &mut Fds) {
        self.0.append(&mut other.0);
    }
}

impl From<Vec<OwnedFd>> for Fds {
    fn from(v: Vec<OwnedFd>) -> Fds {
        Fds(v.into_iter().map(Arc::new).collect())
    }
}

impl fmt::Debug for Fds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|d| d.as_raw_fd()))
            .finish()
    }
}

/// Two lists are equal when they hold the same open descriptors (by number) in order.
impl PartialEq for Fds {
    fn eq(&self, other: &Fds) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.as_raw_fd() == b.as_raw_fd())
    }
}

/// Why a descriptor could not be attached or claimed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FdError {
    /// A descriptor-carrying value was encoded outside
    /// [`Wire::encode_with`](crate::Wire::encode_with), or decoded outside
    /// [`Wire::decode_with`](crate::Wire::decode_with): it can only travel in a brood
    /// message.
    #[error(
        "a value that carries a descriptor can only travel as a brood call argument, reply or item"
    )]
    NoFrame,
    /// A value asked for more descriptors than a frame carries.
    #[error("a frame carries at most {MAX_FRAME_FDS} descriptors")]
    TooMany,
    /// The encoded index names no descriptor of the frame (or one already claimed): the
    /// peer's bytes and descriptors disagree.
    #[error("descriptor #{index} is not in the frame (it has {count}) or was claimed twice")]
    Missing {
        /// The index the bytes gave.
        index: u32,
        /// How many descriptors the frame brought.
        count: usize,
    },
}

/// One value being encoded: the descriptors it attached, and why it failed (serde
/// formats such as postcard drop a custom error's message, so it is kept here).
#[derive(Default)]
struct Encoding {
    fds: Fds,
    why: Option<String>,
}

/// One frame being decoded: its descriptors (`None` once claimed), and why it failed.
#[derive(Default)]
struct Decoding {
    fds: Vec<Option<Arc<OwnedFd>>>,
    why: Option<String>,
}

thread_local! {
    /// The values being encoded on this thread, innermost last.
    static ENCODING: RefCell<Vec<Encoding>> = const { RefCell::new(Vec::new()) };
    /// The frames being decoded on this thread, innermost last.
    static DECODING: RefCell<Vec<Decoding>> = const { RefCell::new(Vec::new()) };
}

/// A serde serialisation error whose message survives formats that drop it: use it in
/// the `Serialize` impl of a descriptor-carrying type.
pub fn ser_error<E: serde::ser::Error>(why: impl fmt::Display) -> E {
    let why = why.to_string();
    ENCODING.with(|e| {
        if let Some(top) = e.borrow_mut().last_mut() {
            top.why.get_or_insert_with(|| why.clone());
        }
    });
    E::custom(why)
}

/// A serde deserialisation error whose message survives formats that drop it: use it
/// in the `Deserialize` impl of a descriptor-carrying type.
pub fn de_error<E: serde::de::Error>(why: impl fmt::Display) -> E {
    let why = why.to_string();
    DECODING.with(|d| {
        if let Some(top) = d.borrow_mut().last_mut() {
            top.why.get_or_insert_with(|| why.clone());
        }
    });
    E::custom(why)
}

/// Add `fd` to the frame of the value being encoded on this thread; returns the index
/// to write into the encoded bytes.
///
/// # Errors
/// [`FdError::NoFrame`] outside [`Wire::encode_with`](crate::Wire::encode_with);
/// [`FdError::TooMany`] past [`MAX_FRAME_FDS`].
pub fn attach(fd: Arc<OwnedFd>) -> Result<u32, FdError> {
    ENCODING.with(|e| {
        let mut e = e.borrow_mut();
        let top = e.last_mut().ok_or(FdError::NoFrame)?;
        if top.fds.len() >= MAX_FRAME_FDS {
            return Err(FdError::TooMany);
        }
        Ok(top.fds.push(fd))
    })
}

/// Take descriptor `index` of the frame being decoded on this thread.
///
/// # Errors
/// [`FdError::NoFrame`] outside [`Wire::decode_with`](crate::Wire::decode_with);
/// [`FdError::Missing`] if the frame has no such descriptor or it was claimed already.
pub fn claim(index: u32) -> Result<Arc<OwnedFd>, FdError> {
    DECODING.with(|d| {
        let mut d = d.borrow_mut();
        let top = d.last_mut().ok_or(FdError::NoFrame)?;
        let count = top.fds.len();
        top.fds
            .get_mut(index as usize)
            .and_then(Option::take)
            .ok_or(FdError::Missing { index, count })
    })
}

/// Run `encode` with [`attach`] collecting into `out`; also returns the message a
/// failing `Serialize` left with [`ser_error`].
pub(crate) fn encoding<R>(out: &mut Fds, encode: impl FnOnce() -> R) -> (R, Option<String>) {
    ENCODING.with(|e| e.borrow_mut().push(Encoding::default()));
    // Pops even if `encode` panics, so a caught panic leaves the thread clean.
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            ENCODING.with(|e| e.borrow_mut().pop());
        }
    }
    let pop = Pop;
    let r = encode();
    let top = ENCODING.with(|e| e.borrow_mut().last_mut().map(std::mem::take));
    drop(pop);
    let mut top = top.unwrap_or_default();
    out.append(&mut top.fds);
    (r, top.why)
}

/// Run `decode` with [`claim`] taking from `fds` (what it does not claim is closed);
/// also returns the message a failing `Deserialize` left with [`de_error`].
pub(crate) fn decoding<R>(fds: Fds, decode: impl FnOnce() -> R) -> (R, Option<String>) {
    DECODING.with(|d| {
        d.borrow_mut().push(Decoding {
            fds: fds.0.into_iter().map(Some).collect(),
            why: None,
        })
    });
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            DECODING.with(|d| d.borrow_mut().pop());
        }
    }
    let pop = Pop;
    let r = decode();
    let why = DECODING.with(|d| d.borrow_mut().last_mut().and_then(|t| t.why.take()));
    drop(pop);
    (r, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<OwnedFd> {
        Arc::new(std::fs::File::open("/proc/self/status").unwrap().into())
    }

    #[test]
    fn attach_and_claim_need_a_frame() {
        assert_eq!(attach(file()), Err(FdError::NoFrame));
        assert_eq!(claim(0).unwrap_err(), FdError::NoFrame);
    }

    #[test]
    fn indices_are_per_frame_and_nest() {
        let mut outer = Fds::new();
        let mut inner = Fds::new();
        let _ = encoding(&mut outer, || {
            assert_eq!(attach(file()), Ok(0));
            let _ = encoding(&mut inner, || assert_eq!(attach(file()), Ok(0)));
            assert_eq!(attach(file()), Ok(1));
        });
        assert_eq!((outer.len(), inner.len()), (2, 1));
        assert_eq!(attach(file()), Err(FdError::NoFrame), "popped");
    }

    #[test]
    fn a_frame_holds_at_most_max_frame_fds() {
        let mut out = Fds::new();
        let _ = encoding(&mut out, || {
            for _ in 0..MAX_FRAME_FDS {
                attach(file()).unwrap();
            }
            assert_eq!(attach(file()), Err(FdError::TooMany));
        });
    }

    #[test]
    fn each_descriptor_is_claimed_once() {
        let fds = Fds::from(vec![OwnedFd::from(
            std::fs::File::open("/proc/self/status").unwrap(),
        )]);
        let _ = decoding(fds, || {
            assert!(claim(0).is_ok());
            assert_eq!(
                claim(0).unwrap_err(),
                FdError::Missing { index: 0, count: 1 }
            );
            assert_eq!(
                claim(5).unwrap_err(),
                FdError::Missing { index: 5, count: 1 }
            );
        });
        assert_eq!(claim(0).unwrap_err(), FdError::NoFrame);
    }
}
