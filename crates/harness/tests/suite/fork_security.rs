//! The forkserver trusts no one it did not start: impersonation, forged replies, foreign descriptors.
//!
//! The server's abstract socket name is visible to every process (`/proc/net/unix`), and
//! free for anyone to bind once the server is gone. These tests kill a tree's server, have
//! another process take its name, and check that an actor connecting by name (a child
//! spawning its first grandchild; the root's own connection is a socketpair) refuses it
//! before sending anything: no boot (it carries the tree's secret), no stdout or stderr.
//! Always on the fork backend.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use brood::{ActorOptions, Portal, RemoteError, RuntimeVars};
use harness::functions::*;
use harness::{Failed, leaks};
use spawn_fork::{ForkService, SERVICE_KEY};

use crate::common::*;

crate::tests!(
    the_forkserver_entry_names_the_server_and_its_owner on "fork",
    a_foreign_uid_impostor_of_a_dead_forkserver_is_refused_and_gets_nothing on "fork",
    a_same_uid_impostor_with_another_pid_is_refused_and_gets_nothing on "fork",
);

/// The user the foreign impostor becomes (`nobody`).
const FOREIGN_UID: u32 = 65534;

/// How long the impostor's helpers wait for each other (unscaled: see [`scaled`]).
const BOUND: Duration = Duration::from_secs(10);

fn service_in(vars: &RuntimeVars) -> ForkService {
    let value = vars
        .services
        .get(SERVICE_KEY)
        .expect("a forked actor knows its tree's forkserver");
    value
        .parse()
        .unwrap_or_else(|e| panic!("the forkserver entry {value:?} does not decode: {e}"))
}

async fn service_of(p: &Portal) -> ForkService {
    service_in(&p.run(Vars, ()).await.expect("the child's vars"))
}

/// Every forked actor, grandchildren included, records the same server: the one the
/// root started (`owner`, the process that listened on the socket) and that forked them
/// (`server`, their OS parent), under a name that is bound.
fn the_forkserver_entry_names_the_server_and_its_owner() -> Result<(), Failed> {
    let (child, below, server, listed) =
        within_deadline(harness::root().use_backend("fork").run(async |n| {
            let b = n.start_actor("b", ActorOptions::new()).await?;
            let ib = b.run(ProcSelf, ()).await?;
            let child = service_of(&b).await;
            // b spawns through its own connection by name, and its child through another.
            let (sub, leaf) = b.run(VarsOfSubtree, false).await?;
            let unix = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
            let listed = unix.contains(&format!("@{}", child.name));
            n.cancel().await;
            Ok((
                child,
                [service_in(&sub), service_in(&leaf)],
                ib.ppid,
                listed,
            ))
        }))?;
    assert_eq!(
        child.owner_pid,
        std::process::id(),
        "the root owns the server: {child:?}"
    );
    assert_eq!(
        child.server_pid, server,
        "the server is the child's parent: {child:?}"
    );
    assert!(
        listed,
        "the name is the server's listening socket: @{} not in /proc/net/unix",
        child.name
    );
    assert!(
        below.iter().all(|s| *s == child),
        "inherited unchanged: {below:?} vs {child:?}"
    );
    Ok(())
}

fn a_foreign_uid_impostor_of_a_dead_forkserver_is_refused_and_gets_nothing() -> Result<(), Failed> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run the impostor as another user");
        return Ok(());
    }
    impostor_is_refused(Some(FOREIGN_UID))
}

fn a_same_uid_impostor_with_another_pid_is_refused_and_gets_nothing() -> Result<(), Failed> {
    impostor_is_refused(None)
}

/// Kill the tree's forkserver, let an impostor (of user `uid`, else ours) bind its name,
/// and have a child actor spawn: its connection by name must be refused on the
/// impostor's credentials, with a typed error, and the impostor must receive nothing.
fn impostor_is_refused(uid: Option<u32>) -> Result<(), Failed> {
    let (seen, error, add) = within_deadline(harness::root().use_backend("fork").run(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let service = service_of(&a).await;
        let server = a.run(ProcSelf, ()).await?.ppid;
        assert_eq!(leaks::comm(server).as_deref(), Some("brood-forksrv"));
        kill(server, nix::sys::signal::Signal::SIGKILL);
        poll_until_async(
            Duration::from_secs(5),
            format!("the SIGKILLed forkserver {server} to die"),
            async || leaks::is_dead(server),
        )
        .await;
        let impostor = Impostor::bind(&service.name, uid)
            .unwrap_or_else(|e| panic!("the impostor cannot take the name: {e}"));
        // `a` has not spawned yet, so it has no connection: it connects by name.
        let e = a.run(AddViaChild, ("late".into(), 1, 2)).await.unwrap_err();
        let seen = impostor.finish();
        let error = e.remote().cloned();
        // The actor carries on.
        let add = a.run(Add, (1, 2)).await?;
        n.cancel().await;
        Ok((
            seen,
            error.ok_or_else(|| format!("not a remote error: {e}")),
            add,
        ))
    }))?;
    assert!(
        seen.connections >= 1,
        "the actor did reach the impostor: {seen:?}"
    );
    assert!(
        seen.bytes == 0 && seen.fds == 0,
        "the impostor received nothing: {seen:?}"
    );
    let error: RemoteError = error?;
    assert_eq!(add, 3, "the actor still serves");
    assert!(
        error.kind.ends_with("SpawnError")
            && error.message.starts_with("fork backend unavailable: ")
            && error
                .message
                .contains("refused the forkserver's credentials"),
        "a typed SpawnError::Unavailable naming the refused credentials: {error:?}"
    );
    if let Some(uid) = uid {
        assert!(
            error.message.contains(&format!("of uid {uid}")),
            "the reason names the impostor's user {uid}: {error}"
        );
    }
    Ok(())
}

/// What an impostor received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    connections: u32,
    bytes: u32,
    fds: u32,
}

/// A process that binds an abstract name as a forkserver would (`SOCK_SEQPACKET`),
/// listens, and counts what its clients send until told to stop. It is forked from this
/// multi-threaded process, so it makes raw system calls only, on memory prepared before
/// the fork, and shares no descriptor of ours but its three pipes.
struct Impostor {
    pid: libc::pid_t,
    stop: Option<OwnedFd>,
    report: OwnedFd,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("a pipe")
}

/// Wait up to [`BOUND`] ([`scaled`]) for `fd` to be readable, then read up to
/// `buf.len()` bytes.
fn read_within(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut p = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let millis = i32::try_from(scaled(BOUND).as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `p` is a live array of one pollfd for the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), 1, millis) };
    if r <= 0 {
        return 0;
    }
    // SAFETY: `buf` is live and writable for `buf.len()` bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    n.max(0) as usize
}

impl Impostor {
    fn bind(name: &str, uid: Option<u32>) -> Result<Impostor, String> {
        // Prepared before the fork: the child may not allocate.
        // SAFETY: an all-zero sockaddr_un is a valid (empty) address.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = name.as_bytes();
        if bytes.len() + 1 > sa.sun_path.len() {
            return Err(format!("name too long: {name:?}"));
        }
        // An abstract name: a NUL, then the name, and the length says where it ends.
        for (d, s) in sa.sun_path[1..].iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let sa_len = (std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + bytes.len())
            as libc::socklen_t;
        let (ready_r, ready_w) = pipe();
        let (stop_r, stop_w) = pipe();
        let (report_r, report_w) = pipe();
        let plan = Plan {
            uid,
            sa,
            sa_len,
            ready: ready_w.as_raw_fd(),
            stop: stop_r.as_raw_fd(),
            report: report_w.as_raw_fd(),
        };
        // SAFETY: fork has no memory-safety preconditions; the child below makes only
        // async-signal-safe system calls on memory prepared before the fork, then _exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: this is the single-threaded child: it owns what it touches, and
            // ends with `_exit` without returning into the parent's frames.
            unsafe { impostor_main(&plan) }
        }
        drop((ready_w, stop_r, report_w));
        let mut b = [0u8; 5];
        let n = read_within(&ready_r, &mut b);
        let imp = Impostor {
            pid,
            stop: Some(stop_w),
            report: report_r,
        };
        match (n, b[0]) {
            (1, b'r') => Ok(imp),
            (5, b'e') => Err(format!(
                "the impostor failed: {}",
                std::io::Error::from_raw_os_error(i32::from_le_bytes([b[1], b[2], b[3], b[4]]))
            )),
            _ => Err("the impostor never became ready".to_owned()),
        }
    }

    /// Stop the impostor and return what it received.
    fn finish(mut self) -> Seen {
        drop(self.stop.take());
        let mut b = [0u8; 12];
        let n = read_within(&self.report, &mut b);
        assert_eq!(n, 12, "the impostor's report");
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Seen {
            connections: word(0),
            bytes: word(4),
            fds: word(8),
        }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        drop(self.stop.take());
        let mut status = 0;
        // SAFETY: the pid is our child, waited for only here; `status` is a live int.
        unsafe {
            if libc::waitpid(self.pid, &mut status, libc::WNOHANG) == 0 {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
    }
}

/// What the impostor does, prepared before the fork.
struct Plan {
    /// Become this user first.
    uid: Option<u32>,
    /// The name to bind.
    sa: libc::sockaddr_un,
    sa_len: libc::socklen_t,
    /// Where to say it listens (`r`), or why it cannot (`e` and an errno).
    ready: RawFd,
    /// Its end (EOF) means: report and exit.
    stop: RawFd,
    /// Where the report goes: connections, bytes and descriptors received, three
    /// little-endian `u32`s.
    report: RawFd,
}

/// The impostor's life, in the forked child.
///
/// # Safety
/// Only in the child of a `fork`, before anything else runs in it.
unsafe fn impostor_main(plan: &Plan) -> ! {
    let Plan {
        uid,
        ref sa,
        sa_len,
        ready,
        stop,
        report,
    } = *plan;
    // SAFETY: raw system calls on integers and on memory of this (single-threaded)
    // child; setgid/setuid through `syscall` change this thread only, which is all the
    // child has.
    unsafe {
        let fail = |e: i32| -> ! {
            let mut m = [b'e', 0, 0, 0, 0];
            m[1..].copy_from_slice(&e.to_le_bytes());
            libc::write(ready, m.as_ptr().cast(), m.len());
            libc::_exit(3)
        };
        let errno = nix::errno::Errno::last_raw;
        // Hold nothing of the test process (its actors' sockets, its other pipes).
        let mut keep = [ready, stop, report];
        keep.sort_unstable();
        let mut first: libc::c_uint = 3;
        for k in keep {
            let k = k as libc::c_uint;
            if k > first {
                libc::syscall(libc::SYS_close_range, first, k - 1, 0 as libc::c_uint);
            }
            first = first.max(k + 1);
        }
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
        if let Some(uid) = uid
            && (libc::syscall(libc::SYS_setgid, uid) != 0
                || libc::syscall(libc::SYS_setuid, uid) != 0)
        {
            fail(errno());
        }
        let l = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if l < 0 {
            fail(errno());
        }
        if libc::bind(l, (sa as *const libc::sockaddr_un).cast(), sa_len) != 0
            || libc::listen(l, 16) != 0
        {
            fail(errno());
        }
        libc::write(ready, b"r".as_ptr().cast(), 1);
        let mut conns = [-1 as RawFd; 8];
        let mut seen = [0u32; 3];
        let mut buf = [0u8; 4096];
        let mut cmsg = [0u64; 64];
        loop {
            let mut p = [libc::pollfd {
                fd: -1,
                events: libc::POLLIN,
                revents: 0,
            }; 10];
            p[0].fd = stop;
            p[1].fd = l;
            for (slot, c) in p[2..].iter_mut().zip(conns) {
                slot.fd = c;
            }
            libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, -1);
            let stopping = p[0].revents != 0;
            // Take every pending connection, read everything sent so far.
            loop {
                let c = libc::accept4(
                    l,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK,
                );
                if c < 0 {
                    break;
                }
                seen[0] += 1;
                match conns.iter_mut().find(|s| **s < 0) {
                    Some(s) => *s = c,
                    None => {
                        libc::close(c);
                    }
                }
            }
            for s in conns.iter_mut().filter(|s| **s >= 0) {
                loop {
                    let mut iov = libc::iovec {
                        iov_base: buf.as_mut_ptr().cast(),
                        iov_len: buf.len(),
                    };
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = &mut iov;
                    msg.msg_iovlen = 1;
                    msg.msg_control = cmsg.as_mut_ptr().cast();
                    msg.msg_controllen = std::mem::size_of_val(&cmsg);
                    let n = libc::recvmsg(*s, &mut msg, libc::MSG_DONTWAIT);
                    if n < 0 {
                        break;
                    }
                    seen[1] += n as u32;
                    let mut h = libc::CMSG_FIRSTHDR(&msg);
                    while !h.is_null() {
                        if (*h).cmsg_level == libc::SOL_SOCKET && (*h).cmsg_type == libc::SCM_RIGHTS
                        {
                            let data = libc::CMSG_DATA(h) as *const RawFd;
                            let count = ((*h).cmsg_len - libc::CMSG_LEN(0) as usize)
                                / std::mem::size_of::<RawFd>();
                            for i in 0..count {
                                libc::close(data.add(i).read_unaligned());
                            }
                            seen[2] += count as u32;
                        }
                        h = libc::CMSG_NXTHDR(&msg, h);
                    }
                    if n == 0 && msg.msg_controllen == 0 {
                        // The end of the connection.
                        libc::close(*s);
                        *s = -1;
                        break;
                    }
                }
            }
            if stopping {
                let mut out = [0u8; 12];
                for (i, v) in seen.iter().enumerate() {
                    out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
                }
                libc::write(report, out.as_ptr().cast(), out.len());
                libc::_exit(0);
            }
        }
    }
}
