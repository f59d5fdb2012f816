//! Who is at the other end of a Unix socket, as the kernel says (`SO_PEERCRED`), and the
//! check brood's transports make on every connection: the peer must run as our user.

use std::fmt;
use std::io;
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// The credentials the kernel recorded for a socket's peer when it connected (or created
/// the pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Its process id, as seen from our pid namespace (`None` if it does not fit a `u32`).
    pub pid: Option<u32>,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// The peer credentials of the connected Unix socket `sock`.
///
/// # Errors
/// The OS error of `getsockopt` (`ENOTSOCK`, `ENOTCONN`...).
pub fn peer_cred(sock: impl AsFd) -> io::Result<PeerCred> {
    let c = getsockopt(&sock.as_fd(), PeerCredentials).map_err(io::Error::from)?;
    Ok(PeerCred {
        pid: u32::try_from(c.pid()).ok(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Why [`check_same_user`] refused a peer.
#[derive(Debug)]
pub enum PeerCheckError {
    /// The credentials could not be read.
    Io(io::Error),
    /// The peer runs as another user.
    OtherUser {
        /// The peer's uid.
        peer_uid: u32,
        /// Ours.
        our_uid: u32,
    },
}

impl fmt::Display for PeerCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerCheckError::Io(e) => write!(f, "reading the peer's credentials: {e}"),
            PeerCheckError::OtherUser { peer_uid, our_uid } => {
                write!(
                    f,
                    "the peer runs as uid {peer_uid}, we run as uid {our_uid}"
                )
            }
        }
    }
}

impl std::error::Error for PeerCheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PeerCheckError::Io(e) => Some(e),
            PeerCheckError::OtherUser { .. } => None,
        }
    }
}

/// The peer credentials of `sock`, if the peer runs as our effective user.
///
/// # Errors
/// [`PeerCheckError::OtherUser`] for a peer of another user, [`PeerCheckError::Io`] if
/// the kernel did not say.
pub fn check_same_user(sock: impl AsFd) -> Result<PeerCred, PeerCheckError> {
    let cred = peer_cred(sock).map_err(PeerCheckError::Io)?;
    let ours = effective_uid();
    if cred.uid != ours {
        return Err(PeerCheckError::OtherUser {
            peer_uid: cred.uid,
            our_uid: ours,
        });
    }
    Ok(cred)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_socket_pair_names_this_process_and_user() {
        let (a, b) = UnixStream::pair().unwrap();
        let cred = check_same_user(&a).unwrap();
        assert_eq!(cred.pid, Some(std::process::id()));
        assert_eq!(cred.uid, effective_uid());
        assert_eq!(peer_cred(&b).unwrap(), cred);
    }

    #[test]
    fn a_file_has_no_peer() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(matches!(check_same_user(&f), Err(PeerCheckError::Io(_))));
    }
}
