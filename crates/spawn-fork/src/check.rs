//! What a client checks before it trusts the forkserver: the credentials of the socket it
//! reached, and the descriptors of every child reply.
//!
//! The server's socket is abstract, so its name is visible to everyone in the network
//! namespace (`/proc/net/unix`), and anyone may bind it once the server is gone. A client
//! that took whoever answers for the server would hand it the boot (the tree's secret
//! inside) and its stdout and stderr, and would signal whatever process a forged
//! `Spawned` reply names. So nothing is sent before the peer's credentials match, and no
//! descriptor of a reply is used before it is shown to be what the reply says.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;

use crate::ForkService;
use crate::sys;

/// Why a connection to the forkserver was not used.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The socket could not be reached.
    Io(io::Error),
    /// Something answered under the server's name, but not with its credentials.
    Refused {
        /// The credentials the kernel reported for the listening socket (pid 0: its
        /// process is gone or outside our pid namespace).
        pid: i32,
        uid: u32,
        /// What they had to be: the server's owner, of our own user.
        expected_pid: u32,
        expected_uid: u32,
        name: String,
    },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "cannot reach the forkserver: {e}"),
            ConnectError::Refused {
                pid,
                uid,
                expected_pid,
                expected_uid,
                name,
            } => write!(
                f,
                "refused the forkserver's credentials: the socket {name:?} was set up by pid \
                 {pid} of uid {uid}, not by pid {expected_pid} of uid {expected_uid} (the \
                 server is gone and another process holds its name); nothing was sent"
            ),
        }
    }
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> ConnectError {
        ConnectError::Io(e)
    }
}

/// Check that `sock`, just connected to `service`'s name, reached a socket that
/// `service`'s owner listened on, as our own user.
///
/// The kernel reports for a connection the credentials `listen()` captured, and the owner
/// (not the server it started) called `listen()`: its pid is the one to expect. The
/// owner outlives every actor that holds this service value (when it dies its subtree is
/// torn down), so its pid is not free for another process to take meanwhile.
pub(crate) fn server_credentials(
    sock: BorrowedFd<'_>,
    service: &ForkService,
) -> Result<(), ConnectError> {
    let (pid, uid) = sys::peer_credentials(sock)?;
    let expected_uid = nix::unistd::geteuid().as_raw();
    if uid == expected_uid && u32::try_from(pid).is_ok_and(|p| p == service.owner_pid) {
        return Ok(());
    }
    Err(ConnectError::Refused {
        pid,
        uid,
        expected_pid: service.owner_pid,
        expected_uid,
        name: service.name.clone(),
    })
}

/// What the descriptors of a `Spawned` reply turned out to be.
#[derive(Debug)]
pub(crate) enum ChildCheck {
    /// A pidfd of the claimed pid, a child of the server, and a link the server made.
    Ours,
    /// A pidfd whose process has already exited, so that it names no live process and
    /// its parent can no longer be read: what a child that failed at once looks like once
    /// the server reaped it. It must not be signalled; the request learns the child's
    /// end from the server's exit report.
    Gone,
    /// Not what the reply claims.
    Forged(String),
    /// Our own reading failed (no `/proc`, no descriptor left): nothing is known either
    /// way, so nothing is used.
    Unchecked(io::Error),
}

/// Check a `Spawned` reply's `pidfd` and `link`, said to be for child `pid` of the server
/// `server_pid`.
pub(crate) fn child(
    pidfd: BorrowedFd<'_>,
    link: BorrowedFd<'_>,
    pid: u32,
    server_pid: u32,
) -> ChildCheck {
    // The link first: it does not change while we look.
    match sys::socket_kind(link) {
        Ok((libc::AF_UNIX, libc::SOCK_SEQPACKET)) => {}
        Ok((domain, ty)) => {
            return ChildCheck::Forged(format!(
                "the child's link is not a Unix seqpacket socket (domain {domain}, type {ty})"
            ));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            return ChildCheck::Forged("the child's link is not a socket".to_owned());
        }
        Err(e) => return ChildCheck::Unchecked(e),
    }
    // The server makes each link with socketpair(), which records its credentials.
    let euid = nix::unistd::geteuid().as_raw();
    match sys::peer_credentials(link) {
        Ok((p, u)) if u == euid && u32::try_from(p).is_ok_and(|p| p == server_pid) => {}
        Ok((p, u)) => {
            return ChildCheck::Forged(format!(
                "the child's link was made by pid {p} of uid {u}, not by the forkserver \
                 (pid {server_pid} of uid {euid})"
            ));
        }
        Err(e) => return ChildCheck::Unchecked(e),
    }
    let claimed = i64::from(pid);
    let seen = match sys::pidfd_pid(pidfd) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return ChildCheck::Forged("the child's pidfd is not a pidfd".to_owned());
        }
        Err(e) => return ChildCheck::Unchecked(e),
    };
    if pid == 0 || seen != claimed {
        return gone_or_forged(pidfd, seen, pid);
    }
    let parent = sys::parent_of(pid);
    // While the pidfd still names its process under `pid`, that process was `pid`
    // throughout, so the status just read was its own and not a successor's.
    match sys::pidfd_pid(pidfd) {
        Ok(Some(p)) if p == claimed => {}
        Ok(Some(p)) => return gone_or_forged(pidfd, p, pid),
        Ok(None) => return ChildCheck::Forged("the child's pidfd is not a pidfd".to_owned()),
        Err(e) => return ChildCheck::Unchecked(e),
    }
    match parent {
        Ok(Some(p)) if p == server_pid => ChildCheck::Ours,
        Ok(Some(p)) => ChildCheck::Forged(format!(
            "pid {pid} is a child of pid {p}, not of the forkserver (pid {server_pid})"
        )),
        Ok(None) => ChildCheck::Unchecked(io::Error::other(format!(
            "/proc/{pid}/status has no PPid line"
        ))),
        Err(e) => ChildCheck::Unchecked(e),
    }
}

/// The pidfd does not name `claimed` (it names `seen`, `-1` or `0` when no process of
/// ours): harmless if its process has exited, a forgery if it still runs.
fn gone_or_forged(pidfd: BorrowedFd<'_>, seen: i64, claimed: u32) -> ChildCheck {
    if seen > 0 {
        return ChildCheck::Forged(format!(
            "the child's pidfd is for pid {seen}, the reply says {claimed}"
        ));
    }
    // A pidfd never moves to another process, so once its process has exited it can
    // reach nobody; a live process that we cannot see (another pid namespace) is not a
    // child of our server.
    match os_wrappers::pidfd::has_exited(pidfd) {
        Ok(true) => ChildCheck::Gone,
        Ok(false) => ChildCheck::Forged(format!(
            "the child's pidfd is for a live process outside our pid namespace, not pid \
             {claimed}"
        )),
        Err(e) => ChildCheck::Unchecked(e),
    }
}
