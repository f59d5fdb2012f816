//! The forkserver: this program re-executed, single-threaded, forking child actors on
//! request.
//!
//! It never starts a thread or a runtime, so `fork` is sound and the child may run
//! ordinary Rust code straight away. Its loop `poll`s:
//! - a `signalfd` for `SIGCHLD`: it reaps every child and reports the status to the
//!   connection that spawned it;
//! - a pidfd of the actor that started it (the *owner*) and the owner's connection: when
//!   either says the owner is gone, it kills every child it still has and exits, so it
//!   never outlives its tree;
//! - its listening socket, where actors of the tree connect;
//! - each client connection: spawn requests in, replies out. When a connection closes,
//!   the children spawned through it are killed: their parent actor is gone.
//!
//! Per request the server allocates nothing but what descriptor passing needs; the child
//! decodes its own boot after the fork.
//!
//! **The pool.** Once it has had nothing to do for a moment (see `Pool` for why not at
//! once), the server forks idle children until it holds as many as asked
//! ([`ServerArgs::pool`]). An idle
//! child ([`pooled`]) does at once what does not depend on a request: its own process
//! group, closing the server's descriptors, the signal mask. Then it waits on a socket only
//! the server holds the other end of. A spawn request takes an idle child if there is one
//! and sends it an *assignment* over that socket (the boot, the child's end of the link
//! and the stdio descriptors); the reply to the client is the same as for a child forked
//! on request. From the assignment on, a pooled child and a child forked on request run the
//! same code ([`become_actor`]). An idle child is no actor: it dies with the server (its
//! parent-death signal), and when it dies the server drops it from the pool, reports
//! nothing, and forks another.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, accept4, socketpair, sockopt};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use spawn_api::{ActorEntry, ChildBoot, ChildExit, EXIT_PANIC, EXIT_SETUP};

use crate::pool::MAX_POOL;
use crate::proto::{self, FLAG_NULL_STDIO, Reply, Stage};
use crate::sys::{self, Forked, SingleThreaded};

/// The name the server shows in `ps` (at most 15 bytes).
const SERVER_COMM: &CStr = c"brood-forksrv";

/// The command line the server shows in `ps` once started.
const SERVER_TITLE: &str = "brood: forkserver";

/// The bytes of `argv[0]` the server is started with: its children inherit its argument
/// area, and retitle themselves (`brood: <tree path>`) within it.
const TITLE_ROOM: usize = 256;

/// The server's `argv[0]`: its comm padded with spaces to [`TITLE_ROOM`] bytes, the room
/// its children's titles get. The server replaces it with [`SERVER_TITLE`] at once.
pub(crate) fn server_arg0() -> String {
    format!("{:<TITLE_ROOM$}", "brood-forksrv")
}

/// The largest spawn request (an encoded boot is a few hundred bytes).
const MAX_REQUEST: usize = 16 * 1024;

/// How long the server waits for killed children before exiting without reaping them.
const EXIT_REAP_BOUND: Duration = Duration::from_secs(1);

/// How long the server waits before it forks an idle child again after a fork failed or
/// an idle child died: a pool that cannot be kept (no process left under the user's
/// limit, something killing idle children) must not make the server fork in a loop.
const REFILL_BACKOFF: Duration = Duration::from_millis(50);

/// How long the server must have had nothing to do before it forks an idle child (see
/// `Pool`): longer than a child takes to start and answer its parent, so that a refill
/// does not take the CPU from one.
const REFILL_QUIET: Duration = Duration::from_millis(2);

/// The name an idle child shows in `ps` until it is handed a request (at most 15 bytes).
const IDLE_COMM: &CStr = c"brood-idle";

/// The command line an idle child shows in `ps` until it is handed a request.
const IDLE_TITLE: &str = "brood: forkserver (idle child)";

/// Environment variable that starts this program as a forkserver (what it carries is
/// private to this crate). The runtime's `Brood::enter` removes it at once,
/// so neither the server's children nor anything they start see it; in a process that
/// already runs threads it is left alone and the server refuses to start (changing the
/// environment is unsound then, and a forkserver must be single-threaded anyway).
///
/// ```
/// // A program started normally is not a forkserver.
/// assert!(std::env::var_os(spawn_fork::SERVER_ENV).is_none());
/// ```
pub const SERVER_ENV: &str = "BROOD_FORKSERVER";

/// What the process that started the server passed in [`SERVER_ENV`]:
/// `<listener fd>,<owner connection fd>,<owner pid>,pool=<idle children>`. Without the
/// last field (as a starter that predates the pool writes) the pool is empty.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ServerArgs {
    pub(crate) listener: RawFd,
    pub(crate) owner: RawFd,
    pub(crate) owner_pid: u32,
    /// How many idle children to keep forked ahead of requests (at most
    /// [`MAX_POOL`]); 0 forks every child on request.
    pub(crate) pool: usize,
}

impl ServerArgs {
    pub(crate) fn encode(&self) -> String {
        format!(
            "{},{},{},pool={}",
            self.listener, self.owner, self.owner_pid, self.pool
        )
    }

    /// Decode what [`encode`](Self::encode) wrote; `None` for anything else.
    pub(crate) fn decode(s: &str) -> Option<ServerArgs> {
        // Three numbers, a pool field and three commas: anything longer is not ours.
        if s.len() > 64 {
            return None;
        }
        let mut it = s.split(',');
        // Digits only: `str::parse` would take a sign (`-1`, `+3`), and a descriptor or
        // a pid is never negative.
        fn field(f: Option<&str>) -> Option<&str> {
            f.filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        }
        let listener = field(it.next())?.parse().ok()?;
        let owner = field(it.next())?.parse().ok()?;
        let owner_pid = field(it.next())?.parse().ok()?;
        let pool = match it.next() {
            None => 0,
            Some(f) => field(f.strip_prefix("pool="))?
                .parse()
                .ok()
                .filter(|n| *n <= MAX_POOL)?,
        };
        it.next().is_none().then_some(ServerArgs {
            listener,
            owner,
            owner_pid,
            pool,
        })
    }
}

/// Run the forkserver described by [`SERVER_ENV`] until its owner is gone; returns the
/// process exit code. Forked children never return from here.
pub(crate) fn main(entry: &ActorEntry) -> i32 {
    match take_spec().and_then(|(spec, single)| start(&spec, single)) {
        Ok(mut server) => server.run(entry),
        Err(e) => {
            eprintln!("brood forkserver: cannot start: {e}");
            EXIT_SETUP
        }
    }
}

/// Take [`SERVER_ENV`] out of the environment, so that nothing the server forks sees it.
/// Only a single-threaded process may change its environment, and a forkserver must be
/// single-threaded anyway: a multi-threaded one fails here with the environment as it was.
fn take_spec() -> io::Result<(String, SingleThreaded)> {
    let taken = sys::take_env(SERVER_ENV).map_err(|e| {
        io::Error::other(format!(
            "{e}; a forkserver must be single-threaded: call Brood::enter first thing in \
             main, before anything starts a thread ({SERVER_ENV} is left as it was)"
        ))
    })?;
    let (spec, single) =
        taken.ok_or_else(|| io::Error::other(format!("{SERVER_ENV} is not set")))?;
    let spec = spec.into_string().map_err(|v| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{SERVER_ENV} is not UTF-8: {v:?}"),
        )
    })?;
    Ok((spec, single))
}

fn start(spec: &str, single: SingleThreaded) -> io::Result<Server> {
    let args = ServerArgs::decode(spec)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad spec {spec:?}")))?;
    let listener = sys::adopt_inherited_fd(args.listener)?;
    let owner = sys::adopt_inherited_fd(args.owner)?;
    // Whatever else the starter passed down without close-on-exec (a test runner's
    // pipes, a jobserver) is not ours to hold open for the life of the tree.
    sys::close_fds_except(&[listener.as_raw_fd(), owner.as_raw_fd()])?;
    // The owner may have died before we got here: open the pidfd first, then check it
    // is still our parent (a dead owner would have left us to another one).
    let owner_pidfd = os_wrappers::pidfd::open(args.owner_pid)?;
    if nix::unistd::getppid().as_raw() as u32 != args.owner_pid {
        return Err(io::Error::other("the process that started us is gone"));
    }
    for fd in [&listener, &owner] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
    }
    // Blocked so that it queues for the signalfd; children get the mask back.
    let mask_at_start = sys::block_sigchld()?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let sigchld = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let comm = nix::sys::prctl::get_name().unwrap_or_else(|_| c"brood-actor".to_owned());
    let _ = nix::sys::prctl::set_name(SERVER_COMM);
    // Single-threaded, as a forkserver is: the argument area is ours to rewrite.
    let _ = os_wrappers::title::set_cmdline(SERVER_TITLE);
    // What every child's handshake would otherwise detect again (see `warm_up`).
    spawn_api::auth::warm_up();
    Ok(Server {
        pid: std::process::id(),
        pool: Pool::new(args.pool),
        single,
        child_env: ChildEnv {
            comm,
            mask: mask_at_start,
        },
        listener,
        sigchld,
        owner_pidfd,
        conns: vec![Conn::new(owner, 0, true)],
        next_token: 1,
        children: Vec::new(),
        buf: vec![0u8; MAX_REQUEST],
        pollfds: Vec::new(),
        uid: nix::unistd::geteuid().as_raw(),
    })
}

/// One reply waiting for room in a client's socket, with the descriptors it carries.
struct Out {
    bytes: [u8; proto::REPLY_LEN],
    len: usize,
    fds: Option<[OwnedFd; 2]>,
}

struct Conn {
    fd: OwnedFd,
    token: u64,
    owner: bool,
    out: VecDeque<Out>,
    closed: bool,
}

impl Conn {
    fn new(fd: OwnedFd, token: u64, owner: bool) -> Conn {
        Conn {
            fd,
            token,
            owner,
            out: VecDeque::new(),
            closed: false,
        }
    }

    fn queue(&mut self, reply: &Reply, fds: Option<[OwnedFd; 2]>) {
        let (bytes, len) = proto::encode_reply(reply);
        self.out.push_back(Out { bytes, len, fds });
        self.flush();
    }

    /// Send what fits now; the rest waits for `POLLOUT`.
    fn flush(&mut self) {
        while let Some(o) = self.out.front() {
            let bytes = &o.bytes[..o.len];
            let sent = match &o.fds {
                Some([a, b]) => sys::send_with_fds(self.fd.as_fd(), bytes, &[a.as_fd(), b.as_fd()]),
                None => sys::send_with_fds(self.fd.as_fd(), bytes, &[]),
            };
            match sent {
                Ok(_) => {
                    self.out.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    self.out.clear();
                    return;
                }
            }
        }
    }
}

struct Server {
    /// Our own pid, which an idle child checks is still its parent.
    pid: u32,
    pool: Pool,
    single: SingleThreaded,
    child_env: ChildEnv,
    listener: OwnedFd,
    sigchld: SignalFd,
    owner_pidfd: OwnedFd,
    conns: Vec<Conn>,
    next_token: u64,
    /// Children not reaped yet, with the token of the connection that asked for them.
    children: Vec<(u32, u64)>,
    buf: Vec<u8>,
    pollfds: Vec<libc::pollfd>,
    uid: u32,
}

const SIGCHLD_SLOT: usize = 0;
const OWNER_SLOT: usize = 1;
const LISTEN_SLOT: usize = 2;
const FIRST_CONN: usize = 3;

impl Server {
    fn run(&mut self, entry: &ActorEntry) -> i32 {
        loop {
            let pollfd = |fd: RawFd, events| libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            self.pollfds.clear();
            self.pollfds
                .push(pollfd(self.sigchld.as_raw_fd(), libc::POLLIN));
            self.pollfds
                .push(pollfd(self.owner_pidfd.as_raw_fd(), libc::POLLIN));
            self.pollfds
                .push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
            for c in &self.conns {
                let out = if c.out.is_empty() { 0 } else { libc::POLLOUT };
                self.pollfds
                    .push(pollfd(c.fd.as_raw_fd(), libc::POLLIN | out));
            }
            let polled = self.conns.len();
            // With the pool short, only look: nothing to do now is when to refill it.
            let ready = match sys::poll(&mut self.pollfds, self.pool.poll_timeout()) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("brood forkserver: poll failed ({e}); exiting");
                    return self.shut_down();
                }
            };
            if ready == 0 {
                // Quiet for a while, every reply sent: the fork is off every request's
                // path.
                if self.pool.wants_child() {
                    self.pool
                        .refill(&self.single, &self.child_env, entry, self.pid);
                }
                continue;
            }
            self.pool.busy();
            if self.pollfds[OWNER_SLOT].revents != 0 {
                return self.shut_down();
            }
            if self.pollfds[SIGCHLD_SLOT].revents != 0 {
                self.reap();
            }
            if self.pollfds[LISTEN_SLOT].revents != 0 {
                self.accept();
            }
            for i in 0..polled {
                let revents = self.pollfds[FIRST_CONN + i].revents;
                if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read(i, entry);
                }
                if revents & libc::POLLOUT != 0 {
                    self.conns[i].flush();
                }
            }
            if self.conns.iter().any(|c| c.closed && c.owner) {
                return self.shut_down();
            }
            self.drop_closed();
        }
    }

    fn accept(&mut self) {
        loop {
            match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(raw) => {
                    let fd = match sys::adopt_accepted(raw) {
                        Some(fd) => fd,
                        None => continue,
                    };
                    // The socket is abstract, so anyone in this network namespace can
                    // reach it: only our own user may make us fork.
                    let ok = nix::sys::socket::getsockopt(&fd, sockopt::PeerCredentials)
                        .is_ok_and(|c| c.uid() == self.uid);
                    if ok {
                        let token = self.next_token;
                        self.next_token += 1;
                        self.conns.push(Conn::new(fd, token, false));
                    }
                }
                Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => {}
                Err(_) => return,
            }
        }
    }

    fn read(&mut self, i: usize, entry: &ActorEntry) {
        loop {
            let got = sys::recv_with_fds(self.conns[i].fd.as_fd(), &mut self.buf);
            let got = match got {
                Ok(g) if g.len == 0 => {
                    self.conns[i].closed = true;
                    return;
                }
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.conns[i].closed = true;
                    return;
                }
            };
            let reply = match parse_request(&self.buf[..got.len], got.truncated, got.fds) {
                Request::Spawn { req, boot, stdio } => {
                    let spawned = spawn(
                        &self.single,
                        &self.child_env,
                        &mut self.pool,
                        entry,
                        boot,
                        stdio,
                    );
                    match spawned {
                        Ok((pid, pidfd, link)) => {
                            self.children.push((pid, self.conns[i].token));
                            self.conns[i].queue(&Reply::Spawned { req, pid }, Some([pidfd, link]));
                            continue;
                        }
                        Err((stage, errno)) => Reply::Failed { req, stage, errno },
                    }
                }
                Request::Refuse(reply) => reply,
            };
            self.conns[i].queue(&reply, None);
        }
    }

    /// Reap every child that exited and tell the connection that spawned it.
    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sigchld.read_signal() {}
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ChildExit::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, core_dumped)) => (
                    pid,
                    ChildExit::Signaled {
                        signal: sig as i32,
                        core_dumped,
                    },
                ),
                Ok(WaitStatus::StillAlive) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            let pid = pid.as_raw() as u32;
            let Some(at) = self.children.iter().position(|(p, _)| *p == pid) else {
                // No actor: an idle child (killed from outside, or at our shut-down) is
                // only replaced; a child no one will supervise is only reaped.
                if self.pool.reaped(pid) {
                    tracing::debug!(pid, %exit, "an idle child died; it will be replaced");
                }
                continue;
            };
            let (_, token) = self.children.swap_remove(at);
            if let Some(c) = self.conns.iter_mut().find(|c| c.token == token) {
                c.queue(&Reply::Exit { pid, exit }, None);
            }
        }
    }

    /// Forget closed connections, killing the children they spawned: their parent actor
    /// is gone, so they must go too. Killing by group is race-free here: we are the only
    /// one who reaps them, and we have not.
    fn drop_closed(&mut self) {
        if !self.conns.iter().any(|c| c.closed) {
            return;
        }
        let children = &self.children;
        self.conns.retain(|c| {
            if c.closed {
                for (pid, _) in children.iter().filter(|(_, t)| *t == c.token) {
                    let _ = nix::sys::signal::killpg(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                }
            }
            !c.closed
        });
    }

    /// The owner is gone: kill every child left (idle ones too), reap them for a bounded
    /// time, exit.
    fn shut_down(&mut self) -> i32 {
        for (pid, _) in &self.children {
            let _ = nix::sys::signal::killpg(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        self.pool.kill_all();
        self.conns.clear();
        let deadline = Instant::now() + EXIT_REAP_BOUND;
        while !self.children.is_empty() || !self.pool.idle.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut p = [libc::pollfd {
                fd: self.sigchld.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let _ = sys::poll(&mut p, left.as_millis().max(1) as i32);
            self.reap();
        }
        0
    }
}

/// What the server makes of one datagram from a client.
#[derive(Debug)]
pub(crate) enum Request<'a> {
    /// Fork a child that boots with `boot`; its stdout and stderr are `stdio` (`None`:
    /// `/dev/null`).
    Spawn {
        req: u32,
        boot: &'a [u8],
        stdio: Option<[OwnedFd; 2]>,
    },
    /// Answer with this refusal (and fork nothing).
    Refuse(Reply),
}

/// Judge a datagram of `msg` bytes (`truncated` if it did not fit the buffer) that came
/// with `fds`. Anything but a well-formed request with exactly the descriptors its flags
/// call for is refused; the descriptors of a refused request are closed here.
pub(crate) fn parse_request(msg: &[u8], truncated: bool, fds: Vec<OwnedFd>) -> Request<'_> {
    let refuse = |errno| {
        Request::Refuse(Reply::Failed {
            req: proto::request_id(msg).unwrap_or(0),
            stage: Stage::Request,
            errno,
        })
    };
    if truncated {
        return refuse(libc::EMSGSIZE);
    }
    let Some(r) = proto::decode_spawn(msg) else {
        return refuse(libc::EINVAL);
    };
    let Some(stdio) = stdio_of(r.flags, fds) else {
        return refuse(libc::EINVAL);
    };
    Request::Spawn {
        req: r.req,
        boot: r.boot,
        stdio,
    }
}

/// The stdio descriptors a request's `flags` call for, taken from exactly `fds`: none
/// with [`FLAG_NULL_STDIO`] (`/dev/null`), else stdout and stderr. `None` (the
/// descriptors closed) for an unknown flag, which asks for something we would not do,
/// or for any other number of descriptors. The one rule for a client's request and for
/// an idle child's assignment.
fn stdio_of(flags: u8, fds: Vec<OwnedFd>) -> Option<Option<[OwnedFd; 2]>> {
    if flags & !FLAG_NULL_STDIO != 0 {
        return None;
    }
    if flags & FLAG_NULL_STDIO != 0 {
        fds.is_empty().then_some(None)
    } else {
        <[OwnedFd; 2]>::try_from(fds).ok().map(Some)
    }
}

/// What a child restores of the process the server started as.
///
/// The server installs no signal handler and changes no disposition: a child has the
/// dispositions of a freshly started Rust program (std's `SIGPIPE` ignore and
/// stack-overflow handlers) plus any ignore the starter passed down through exec,
/// exactly as an exec'd child. The server only blocks `SIGCHLD` and renames itself; the
/// child restores both, then takes its actor's title (see `retitle`).
struct ChildEnv {
    /// The program's own name.
    comm: CString,
    /// The signal mask the server started with.
    mask: libc::sigset_t,
}

/// Start one child actor: hand the request to an idle child of `pool` if there is one,
/// else fork. In the parent: its pid, pidfd and the parent end of its link. A child
/// forked here never returns.
fn spawn(
    single: &SingleThreaded,
    env: &ChildEnv,
    pool: &mut Pool,
    entry: &ActorEntry,
    boot: &[u8],
    stdio: Option<[OwnedFd; 2]>,
) -> Result<(u32, OwnedFd, OwnedFd), (Stage, i32)> {
    let errno = |e: io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    // The link is how the child knows its parent actor is alive, and where it leaves its
    // exit code for a parent that outlives this server. Made here, for a pooled child
    // too: the client checks that the server made it.
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| (Stage::Link, e as i32))?;
    if let Some((pid, pidfd)) = pool.assign(boot, stdio.as_ref(), &child_end) {
        // The assignment holds its own references to the link and the stdio.
        drop((child_end, stdio));
        return Ok((pid, pidfd, parent_end));
    }
    match sys::fork(single).map_err(|e| (Stage::Fork, errno(e)))? {
        Forked::Child => child(env, entry, boot, stdio, child_end),
        Forked::Parent(pid) => {
            // Both sides set the group so that it exists whichever runs first: the
            // parent may signal it as soon as it hears of the child.
            let _ = nix::unistd::setpgid(Pid::from_raw(pid as i32), Pid::from_raw(pid as i32));
            drop(child_end);
            drop(stdio);
            match os_wrappers::pidfd::open(pid) {
                Ok(pidfd) => Ok((pid, pidfd, parent_end)),
                Err(e) => {
                    // Nobody could supervise it: it must not run. Dropping our end of the
                    // link would kill it too, once it watches.
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    Err((Stage::Pidfd, errno(e)))
                }
            }
        }
    }
}

/// The life of a child forked on request: its own group, then the actor.
fn child(
    env: &ChildEnv,
    entry: &ActorEntry,
    boot: &[u8],
    stdio: Option<[OwnedFd; 2]>,
    link: OwnedFd,
) -> ! {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    become_actor(env, entry, boot, stdio, link)
}

/// What every forked child does once it has its request, pooled or not: die with its
/// parent actor, take its stdio, shed every descriptor but its link, restore what the
/// server changed, become the actor `boot` describes, exit.
///
/// Every descriptor but `link` and the standard streams is closed here; whatever owned
/// one in a frame below (the server's, `stdio`, a pooled child's socket) is never dropped.
fn become_actor(
    env: &ChildEnv,
    entry: &ActorEntry,
    boot: &[u8],
    stdio: Option<[OwnedFd; 2]>,
    link: OwnedFd,
) -> ! {
    let setup = (|| -> io::Result<()> {
        // Die with the parent actor: the kernel kills our group once the parent's end
        // of the link closes (the parent process died, however, or dropped its handle on
        // us). Nothing here has to run for it, not even a thread. Armed first, then
        // checked, so that a parent already gone is seen.
        sys::kill_group_on_input(link.as_fd(), std::process::id())?;
        if os_wrappers::pidfd::has_exited(link.as_fd())? {
            sys::exit_now(EXIT_SETUP);
        }
        match &stdio {
            Some([out, err]) => {
                sys::dup_onto(out.as_fd(), 1)?;
                sys::dup_onto(err.as_fd(), 2)?;
            }
            None => {
                let null = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")?;
                sys::dup_onto(null.as_fd(), 1)?;
                sys::dup_onto(null.as_fd(), 2)?;
            }
        }
        // Everything the server had (its listener, other clients, other children's
        // descriptors; for a pooled child, its socket to the server) is closed here; the
        // frames that own them never run again.
        sys::close_fds_except(&[link.as_raw_fd()])
    })();
    std::mem::forget(stdio);
    let mask = sys::set_signal_mask(&env.mask);
    let _ = nix::sys::prctl::set_name(&env.comm);
    if let Err(e) = setup.and(mask) {
        eprintln!("brood forked child: setup failed: {e}");
        sys::exit_now(EXIT_SETUP);
    }
    let boot = match ChildBoot::from_bytes(boot) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("brood forked child: bad boot: {e}");
            sys::exit_now(EXIT_SETUP);
        }
    };
    retitle(&boot);
    // The report is one datagram on the link, before anything else goes there. With a pid
    // namespace the keeper left behind holds the link armed.
    let report = |bytes: &[u8]| sys::send_with_fds(link.as_fd(), bytes, &[]).map(drop);
    if !sandbox::enter_boot(&boot, report) {
        sys::exit_now(EXIT_SETUP);
    }
    let code = catch_unwind(AssertUnwindSafe(|| entry.run_process(boot))).unwrap_or(EXIT_PANIC);
    // For a parent that outlives the server, which is the only other one who could tell
    // it how we ended.
    let _ = sys::send_with_fds(link.as_fd(), &code.to_le_bytes(), &[]);
    let _ = std::io::stdout().flush();
    sys::exit_now(code)
}

/// Show the forked child in `ps` and `top` as the actor it becomes: its command line
/// `brood: <tree path>` (cut to the room the server's `argv[0]` left), its name
/// `brood:<actor name>` (cut to 15 bytes). Still single-threaded here, as the server was.
/// Cosmetic: an error changes nothing else.
fn retitle(boot: &ChildBoot) {
    let _ = os_wrappers::title::set_cmdline(&format!("brood: {}", boot.path));
    let _ = os_wrappers::title::set_comm(&format!("brood:{}", boot.id.name()));
}

/// The idle children a server keeps forked ahead of requests.
///
/// When to fork a replacement matters as much as having one: a fork takes the server's
/// CPU (and the new child's setup some more) for about as long as a hand-off saves.
/// Right after a hand-off, that CPU is what the child needs to start its runtime and
/// answer its parent; when the next request comes, a fork in progress delays it. So the
/// pool is refilled only once the server has had nothing to do for [`REFILL_QUIET`]:
/// spawns spread out in time each get a pre-forked child, and a burst (or a loop that
/// starts actors back to back) uses up the pool, then is served by forks on request,
/// as without a pool. (Measured on 2 CPUs with the server pinned to one: refilling at
/// once after each reply, or as soon as a child ended, made a loop of spawns 10 to 40%
/// slower than no pool.)
struct Pool {
    /// How many it keeps when it can.
    size: usize,
    idle: Vec<Idle>,
    /// When the server last had something to do.
    busy_at: Instant,
    /// No refill before this: set after a fork failed or an idle child died.
    backoff_until: Option<Instant>,
}

/// A pre-forked child waiting for its assignment (see [`pooled`]).
struct Idle {
    pid: u32,
    /// Opened as it was forked, while it was certainly ours and alive: the pidfd a
    /// client gets for it.
    pidfd: OwnedFd,
    /// Our end of its socket, where its assignment goes; it holds the other.
    sock: OwnedFd,
}

impl Pool {
    fn new(size: usize) -> Pool {
        Pool {
            size: size.min(MAX_POOL),
            idle: Vec::with_capacity(size.min(MAX_POOL)),
            busy_at: Instant::now(),
            backoff_until: None,
        }
    }

    /// When the next idle child may be forked; `None` with the pool full (or off).
    fn due(&self) -> Option<Instant> {
        if self.idle.len() >= self.size {
            return None;
        }
        let t = self.busy_at + REFILL_QUIET;
        Some(self.backoff_until.map_or(t, |b| b.max(t)))
    }

    /// The `poll` timeout of the server's loop: forever with the pool full (or off), the
    /// time until the next refill is due otherwise (0: only look for events).
    fn poll_timeout(&self) -> i32 {
        self.due().map_or(-1, |t| {
            let left = t.saturating_duration_since(Instant::now());
            // Rounded up, so that the wake-up is not early.
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        })
    }

    /// Whether an idle child should be forked now.
    fn wants_child(&self) -> bool {
        self.due().is_some_and(|t| t <= Instant::now())
    }

    /// The server has something to do now (an event came in).
    fn busy(&mut self) {
        self.busy_at = Instant::now();
    }

    /// Fork one idle child into the pool; on failure, try again after a back-off.
    fn refill(
        &mut self,
        single: &SingleThreaded,
        env: &ChildEnv,
        entry: &ActorEntry,
        server_pid: u32,
    ) {
        match prefork(single, env, entry, server_pid) {
            Ok(idle) => {
                self.idle.push(idle);
                self.backoff_until = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fork an idle child; trying again later");
                self.backoff_until = Some(Instant::now() + REFILL_BACKOFF);
            }
        }
    }

    /// Hand the request (`boot`, the child's end of its link, its `stdio` or none for
    /// `/dev/null`) to an idle child: its pid and pidfd, or `None` if no idle child took
    /// it (the caller forks one). An idle child that has died (and is not reaped yet) or
    /// cannot take it is killed and forgotten; its reap reports nothing.
    fn assign(
        &mut self,
        boot: &[u8],
        stdio: Option<&[OwnedFd; 2]>,
        link: &OwnedFd,
    ) -> Option<(u32, OwnedFd)> {
        let header = [if stdio.is_none() { FLAG_NULL_STDIO } else { 0 }];
        // The most recently forked first: the likeliest to be alive and in cache.
        while let Some(Idle { pid, pidfd, sock }) = self.idle.pop() {
            // Its socket alone does not say: a sibling forked a moment ago may still
            // hold the other end, until it closes the server's descriptors.
            if os_wrappers::pidfd::has_exited(pidfd.as_fd()).unwrap_or(true) {
                tracing::debug!(pid, "an idle child died before it was needed");
                continue;
            }
            let sent = match stdio {
                Some([out, err]) => sys::send_parts_with_fds(
                    sock.as_fd(),
                    &[&header, boot],
                    &[link.as_fd(), out.as_fd(), err.as_fd()],
                ),
                None => sys::send_parts_with_fds(sock.as_fd(), &[&header, boot], &[link.as_fd()]),
            };
            match sent {
                // Our end of the socket closes here; the assignment waits in the child's
                // end until it reads it.
                Ok(_) => return Some((pid, pidfd)),
                Err(e) => {
                    tracing::debug!(pid, error = %e, "an idle child cannot take a request");
                    let _ = os_wrappers::pidfd::signal(pidfd.as_fd(), libc::SIGKILL);
                }
            }
        }
        None
    }

    /// Child `pid` was reaped: if it was idle, drop it (and wait a little before the next
    /// refill); whether it was.
    fn reaped(&mut self, pid: u32) -> bool {
        let Some(at) = self.idle.iter().position(|c| c.pid == pid) else {
            return false;
        };
        self.idle.swap_remove(at);
        self.backoff_until = Some(Instant::now() + REFILL_BACKOFF);
        true
    }

    /// Kill every idle child (they stay in the pool until reaped).
    fn kill_all(&self) {
        for c in &self.idle {
            let _ = os_wrappers::pidfd::signal(c.pidfd.as_fd(), libc::SIGKILL);
        }
    }
}

/// Fork an idle child for the pool. The child never returns.
fn prefork(
    single: &SingleThreaded,
    env: &ChildEnv,
    entry: &ActorEntry,
    server_pid: u32,
) -> io::Result<Idle> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    match sys::fork(single)? {
        Forked::Child => pooled(env, entry, server_pid, theirs),
        Forked::Parent(pid) => {
            // As for a child forked on request: the group exists whichever runs first.
            let _ = nix::unistd::setpgid(Pid::from_raw(pid as i32), Pid::from_raw(pid as i32));
            drop(theirs);
            match os_wrappers::pidfd::open(pid) {
                Ok(pidfd) => Ok(Idle {
                    pid,
                    pidfd,
                    sock: ours,
                }),
                Err(e) => {
                    // A child we could not hand a pidfd for must not wait around.
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    Err(e)
                }
            }
        }
    }
}

/// The life of an idle child: set up what does not depend on a request, wait for one on
/// `sock`, then become the actor it describes ([`become_actor`]).
///
/// While idle it belongs to the server alone. It dies with it by its parent-death signal
/// (the server is its parent and has one thread): the kernel sends it however the server
/// ends, `SIGKILL` included, whatever the child is doing. Not the link's mechanism
/// (`kill_group_on_input`): that fires on any input, and the assignment is input. Once
/// assigned, the signal is cleared: an actor outlives its server, and dies with its parent
/// actor through its link instead, as a child forked on request does.
fn pooled(env: &ChildEnv, entry: &ActorEntry, server_pid: u32, sock: OwnedFd) -> ! {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let setup = (|| -> io::Result<bool> {
        // Armed first, then checked: a server already gone has left us to another parent.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        if nix::unistd::getppid().as_raw() as u32 != server_pid {
            return Ok(false);
        }
        // The server's descriptors (its listener, its clients, other children's links
        // and sockets) are not ours to hold while we wait; the frames that own them never
        // run again.
        sys::close_fds_except(&[sock.as_raw_fd()])?;
        sys::set_signal_mask(&env.mask)?;
        Ok(true)
    })();
    match setup {
        Ok(true) => {}
        Ok(false) => sys::exit_now(0),
        Err(e) => {
            eprintln!("brood forked child: idle setup failed: {e}");
            sys::exit_now(EXIT_SETUP);
        }
    }
    // Cosmetic, as `retitle`: not the server, not an actor yet.
    let _ = os_wrappers::title::set_cmdline(IDLE_TITLE);
    let _ = nix::sys::prctl::set_name(IDLE_COMM);
    let mut buf = vec![0u8; MAX_REQUEST];
    let got = loop {
        let mut p = [libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let waited = sys::poll(&mut p, -1).and_then(|_| sys::recv_with_fds(sock.as_fd(), &mut buf));
        match waited {
            Ok(got) => break got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("brood forked child: waiting for a request: {e}");
                sys::exit_now(EXIT_SETUP);
            }
        }
    };
    if got.len == 0 {
        // The server closed our socket unassigned: it is going.
        sys::exit_now(0);
    }
    // From here the link decides: the server may go, the actor stays.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(None) {
        eprintln!("brood forked child: cannot clear the parent-death signal: {e}");
        sys::exit_now(EXIT_SETUP);
    }
    let Some(Assignment { boot, link, stdio }) =
        parse_assignment(&buf[..got.len], got.truncated, got.fds)
    else {
        eprintln!("brood forked child: a malformed assignment from the forkserver");
        sys::exit_now(EXIT_SETUP);
    };
    // Closed with the rest in `become_actor`.
    std::mem::forget(sock);
    become_actor(env, entry, boot, stdio, link)
}

/// What an idle child is handed: the request's boot, the child's end of its link, and
/// its stdout and stderr (`None`: `/dev/null`).
#[derive(Debug)]
pub(crate) struct Assignment<'a> {
    pub(crate) boot: &'a [u8],
    pub(crate) link: OwnedFd,
    pub(crate) stdio: Option<[OwnedFd; 2]>,
}

/// Judge an assignment datagram (`truncated` if it did not fit) that came with `fds`:
/// a flags byte (only [`FLAG_NULL_STDIO`] known), then the boot; the descriptors are the
/// link, then stdout and stderr unless the flag is set. Anything else is `None`, its
/// descriptors closed. Only the server can send one, but a child that would run on a
/// half-understood one is worse than one that exits.
pub(crate) fn parse_assignment(
    msg: &[u8],
    truncated: bool,
    fds: Vec<OwnedFd>,
) -> Option<Assignment<'_>> {
    let (&flags, boot) = msg.split_first()?;
    if truncated || fds.is_empty() {
        return None;
    }
    let mut fds = fds;
    let link = fds.remove(0);
    let stdio = stdio_of(flags, fds)?;
    Some(Assignment { boot, link, stdio })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_args_round_trip() {
        for pool in [0, 2, MAX_POOL] {
            let a = ServerArgs {
                listener: 5,
                owner: 6,
                owner_pid: 4242,
                pool,
            };
            assert_eq!(ServerArgs::decode(&a.encode()), Some(a));
        }
        let widest = ServerArgs {
            listener: i32::MAX,
            owner: i32::MAX,
            owner_pid: u32::MAX,
            pool: MAX_POOL,
        };
        assert_eq!(
            ServerArgs::decode(&widest.encode()),
            Some(widest),
            "fits the bound"
        );
        // What a starter from before the pool wrote: no pool.
        assert_eq!(
            ServerArgs::decode("5,6,7"),
            Some(ServerArgs {
                listener: 5,
                owner: 6,
                owner_pid: 7,
                pool: 0
            })
        );
        assert_eq!(ServerArgs::decode("5,6"), None);
        assert_eq!(ServerArgs::decode("5,6,7,8"), None);
        assert_eq!(ServerArgs::decode("a,6,7"), None);
        // Found by fuzzing: signs are not digits.
        assert_eq!(ServerArgs::decode("-1,4,5"), None);
        assert_eq!(ServerArgs::decode("+3,4,5"), None);
    }

    #[test]
    fn hostile_server_args_do_not_decode() {
        for s in [
            "",
            ",",
            ",,",
            "5,6,",
            "-1,-2,-3",
            "5,6,4294967296",
            "99999999999999999999,6,7",
            "5 ,6,7",
            "5,6,7,",
            "\u{0}",
            "५,6,7",
            "5,6,7,pool=",
            "5,6,7,pool=65",
            "5,6,7,pool=-1",
            "5,6,7,pool=+2",
            "5,6,7,pool= 2",
            "5,6,7,pool=2,",
            "5,6,7,pool=2,pool=3",
            "5,6,7,Pool=2",
            "5,6,7,pool2",
            "5,6,7,=2",
            "5,6,7,pool=18446744073709551616",
            "5,6,7,pool=२",
            "5,6,pool=2",
        ] {
            assert_eq!(ServerArgs::decode(s), None, "{s:?}");
        }
        let long = format!("5,6,{}", "0".repeat(100));
        assert_eq!(ServerArgs::decode(&long), None, "bounded");
        let long = format!("5,6,7,pool={}2", "0".repeat(60));
        assert_eq!(ServerArgs::decode(&long), None, "bounded");
    }

    use crate::sys::seqpacket_pair;

    #[test]
    fn an_assignment_carries_the_link_and_the_stdio_the_flags_call_for() {
        let (r1, link) = probe();
        let (_r2, out) = probe();
        let (_r3, err) = probe();
        let a = parse_assignment(b"\0the boot", false, vec![link, out, err]).unwrap();
        assert_eq!(a.boot, b"the boot");
        assert!(a.stdio.is_some());
        drop(a);
        assert!(closed(r1), "the link belongs to the assignment");
        let (_r, link) = probe();
        let msg = [FLAG_NULL_STDIO];
        let a = parse_assignment(&msg, false, vec![link]).unwrap();
        assert!(a.boot.is_empty() && a.stdio.is_none());
    }

    #[test]
    fn malformed_assignments_are_refused_and_their_descriptors_closed() {
        let with_stdio: &[u8] = b"\0boot";
        let null_stdio: &[u8] = &[FLAG_NULL_STDIO, b'b'];
        let unknown_flag: &[u8] = &[0x80 | FLAG_NULL_STDIO, b'b'];
        for (msg, truncated, n) in [
            (with_stdio, false, 0),
            (with_stdio, false, 1),
            (with_stdio, false, 2),
            (with_stdio, false, 4),
            (null_stdio, false, 0),
            (null_stdio, false, 2),
            (null_stdio, true, 1),
            (with_stdio, true, 3),
            (unknown_flag, false, 1),
            (&[], false, 1),
            (&[], false, 3),
        ] {
            let (readers, fds): (Vec<_>, Vec<_>) = (0..n).map(|_| probe()).unzip();
            assert!(
                parse_assignment(msg, truncated, fds).is_none(),
                "{msg:?}, truncated {truncated}, {n} descriptors"
            );
            assert!(readers.into_iter().all(closed), "closed on refusal");
        }
    }

    /// A process standing in for an idle child: `sleep`, our child, with its pidfd.
    fn idle_stand_in(sock: OwnedFd) -> (Idle, std::process::Child) {
        let c = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = c.id();
        let idle = Idle {
            pid,
            pidfd: os_wrappers::pidfd::open(pid).unwrap(),
            sock,
        };
        (idle, c)
    }

    #[test]
    fn a_request_goes_to_an_idle_child_that_can_take_it() {
        let mut pool = Pool::new(3);
        let (live_ours, live_theirs) = seqpacket_pair();
        let (deaf_ours, deaf_theirs) = seqpacket_pair();
        let (dead_ours, _dead_theirs) = seqpacket_pair();
        let (live, mut live_proc) = idle_stand_in(live_ours);
        let (deaf, mut deaf_proc) = idle_stand_in(deaf_ours);
        let (dead, mut dead_proc) = idle_stand_in(dead_ours);
        // Alive, but its socket takes nothing: it is killed and skipped.
        nix::sys::socket::shutdown(deaf_theirs.as_raw_fd(), nix::sys::socket::Shutdown::Read)
            .unwrap();
        // Dead and not reaped, as an idle child killed a moment ago: skipped, though its
        // socket (held a moment longer by a sibling still closing the server's
        // descriptors, say) would take the request.
        dead_proc.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !os_wrappers::pidfd::has_exited(dead.pidfd.as_fd()).unwrap() {
            assert!(Instant::now() < deadline, "the killed stand-in did not die");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The last pushed is offered the request first.
        pool.idle.extend([live, deaf, dead]);
        let (_lr, link) = probe();
        let (mut out_r, out) = probe();
        let (_er, err) = probe();
        let stdio = [out, err];
        let (pid, _pidfd) = pool.assign(b"boot", Some(&stdio), &link).unwrap();
        assert_eq!(pid, live_proc.id(), "the live one took it");
        assert!(pool.idle.is_empty(), "all three left the pool");
        for p in [&mut dead_proc, &mut deaf_proc] {
            let status = p.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL),
                "the ones that could not take it are dead"
            );
        }
        // What the live one reads: the assignment, then the end (the server keeps no
        // end of the socket once it has sent).
        let mut buf = [0u8; 64];
        let got = sys::recv_with_fds(live_theirs.as_fd(), &mut buf).unwrap();
        let a = parse_assignment(&buf[..got.len], got.truncated, got.fds).unwrap();
        assert_eq!(a.boot, b"boot");
        let [a_out, _a_err] = a.stdio.unwrap();
        drop(stdio);
        let mut w = std::fs::File::from(a_out);
        std::io::Write::write_all(&mut w, b"x").unwrap();
        drop(w);
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out_r, &mut s).unwrap();
        assert_eq!(s, b"x", "the stdout passed on is the client's");
        let end = sys::recv_with_fds(live_theirs.as_fd(), &mut buf).unwrap();
        assert_eq!(end.len, 0);
        let none = pool.assign(b"boot", None, &link).map(|(p, _)| p);
        assert_eq!(none, None, "empty");
        live_proc.kill().unwrap();
        live_proc.wait().unwrap();
    }

    #[test]
    fn an_idle_childs_death_is_not_an_actors_and_delays_the_refill() {
        let mut pool = Pool::new(1);
        pool.busy_at -= REFILL_QUIET;
        assert_eq!(pool.poll_timeout(), 0, "short and quiet: look, do not wait");
        assert!(pool.wants_child());
        let (ours, _theirs) = seqpacket_pair();
        let (idle, mut proc) = idle_stand_in(ours);
        let pid = idle.pid;
        pool.idle.push(idle);
        assert_eq!(pool.poll_timeout(), -1, "full: wait for events only");
        assert!(!pool.wants_child());
        assert!(!pool.reaped(pid + 1), "not one of ours");
        proc.kill().unwrap();
        proc.wait().unwrap();
        assert!(pool.reaped(pid));
        assert!(pool.idle.is_empty());
        assert!(!pool.wants_child(), "backing off");
        let t = pool.poll_timeout();
        assert!(t > 0 && t as u128 <= REFILL_BACKOFF.as_millis(), "{t}");
        assert_eq!(Pool::new(0).poll_timeout(), -1, "no pool: as before");
        assert!(!Pool::new(0).wants_child());
    }

    #[test]
    fn a_refill_waits_until_the_server_has_been_quiet() {
        let mut pool = Pool::new(2);
        pool.busy();
        assert!(
            !pool.wants_child(),
            "not while a request may be starting a child"
        );
        let t = pool.poll_timeout();
        assert!(t > 0 && t as u128 <= REFILL_QUIET.as_millis(), "{t}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pool.wants_child() {
            assert!(
                Instant::now() < deadline,
                "due after {REFILL_QUIET:?} of quiet"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.poll_timeout(), 0);
        pool.busy();
        assert!(!pool.wants_child(), "busy again: wait again");
    }

    /// A pipe's write end to pass as a descriptor, and its read end, which sees EOF once
    /// every copy of the write end is closed.
    fn probe() -> (std::io::PipeReader, OwnedFd) {
        let (r, w) = std::io::pipe().unwrap();
        (r, OwnedFd::from(w))
    }

    fn closed(mut r: std::io::PipeReader) -> bool {
        use std::io::Read;
        let mut b = [0u8; 1];
        matches!(r.read(&mut b), Ok(0))
    }

    fn refused(r: Request<'_>) -> (u32, i32) {
        match r {
            Request::Refuse(Reply::Failed {
                req,
                stage: Stage::Request,
                errno,
            }) => (req, errno),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn requests_with_the_wrong_descriptors_are_refused_and_the_descriptors_closed() {
        let with_stdio = proto::encode_spawn(9, 0, b"boot");
        let null_stdio = proto::encode_spawn(9, FLAG_NULL_STDIO, b"boot");
        let unknown_flag = proto::encode_spawn(9, 0x80 | FLAG_NULL_STDIO, b"boot");
        for (msg, n) in [
            (&with_stdio, 0),
            (&with_stdio, 1),
            (&with_stdio, 3),
            (&null_stdio, 1),
            (&null_stdio, 2),
            (&unknown_flag, 0),
        ] {
            let (readers, fds): (Vec<_>, Vec<_>) = (0..n).map(|_| probe()).unzip();
            assert_eq!(
                refused(parse_request(msg, false, fds)),
                (9, libc::EINVAL),
                "{n} descriptors for flags {}",
                msg[5]
            );
            assert!(readers.into_iter().all(closed), "closed on refusal");
        }
    }

    #[test]
    fn garbage_and_truncated_datagrams_are_refused_and_their_descriptors_closed() {
        let spawn = proto::encode_spawn(4, 0, b"boot");
        let cases: &[(&[u8], bool, u32, i32)] = &[
            (b"", false, 0, libc::EINVAL),
            (b"S", false, 0, libc::EINVAL),
            (b"S1234", false, u32::from_le_bytes(*b"1234"), libc::EINVAL),
            (
                b"Q123456",
                false,
                u32::from_le_bytes(*b"1234"),
                libc::EINVAL,
            ),
            (&[0xff; 300], false, u32::MAX, libc::EINVAL),
            (&spawn, true, 4, libc::EMSGSIZE),
        ];
        for &(msg, truncated, req, errno) in cases {
            let (r1, w1) = probe();
            let (r2, w2) = probe();
            assert_eq!(
                refused(parse_request(msg, truncated, vec![w1, w2])),
                (req, errno),
                "{msg:?}"
            );
            assert!(closed(r1) && closed(r2), "closed on refusal");
        }
    }

    #[test]
    fn a_well_formed_request_keeps_its_descriptors() {
        let msg = proto::encode_spawn(3, 0, b"the boot");
        let (r1, w1) = probe();
        let (_r2, w2) = probe();
        match parse_request(&msg, false, vec![w1, w2]) {
            Request::Spawn {
                req: 3,
                boot: b"the boot",
                stdio: Some([out, err]),
            } => drop((out, err)),
            other => panic!("expected a spawn, got {other:?}"),
        }
        assert!(closed(r1));
        let msg = proto::encode_spawn(4, FLAG_NULL_STDIO, b"");
        assert!(matches!(
            parse_request(&msg, false, Vec::new()),
            Request::Spawn {
                req: 4,
                boot: b"",
                stdio: None
            }
        ));
    }
}
