//! # sandbox: put the current process into a brood actor sandbox
//!
//! The process backends (`spawn-proc`, `spawn-fork`) call [`enter`] in a new child
//! process, before it becomes an actor: the child restricts *itself*, so nothing runs
//! between `fork` and `exec` in the parent, and both backends share one implementation.
//! What to apply is a [`Sandbox`] (plain data, from `runtime-vars`); what was applied
//! comes back as a [`SandboxReport`], or the first part refused as a [`Refusal`].
//!
//! In order:
//!
//! 1. a cgroup v2 for the actor, when [`Limits::cgroup`] asks (made now, joined by the actor);
//! 2. a user namespace in which the process keeps its own uid and gid (so peers' credentials
//!    read the same inside and out, and an unprivileged user can do the rest);
//! 3. mount, network, ipc, uts and pid namespaces, each on its own, so a refusal names one;
//! 4. with a pid namespace, a fork: the new process is the namespace's pid 1 and goes on to
//!    be the actor; the old one stays outside as its *keeper* (see below) and never
//!    returns from [`enter`];
//! 5. the host name, the loopback interface, the read-only filesystem view with `/proc`
//!    for the pid namespace, the namespace's `pid_max`;
//! 6. resource limits (`setrlimit`, soft and hard);
//! 7. every capability given up (with the securebits locked so that an exec by uid 0
//!    regains none), then `no_new_privs` and the seccomp filter.
//!
//! ## The keeper
//!
//! The process the parent started, and supervises through a pidfd, is the keeper: it
//! forwards every catchable signal to the actor's process group, and when the actor ends
//! it ends the same way (same exit code, or killed by the same signal), so the parent sees
//! no difference. If the keeper is killed, the actor's parent-death signal kills the
//! namespace's pid 1, and the kernel kills every other process in the namespace.
//!
//! ## Who should depend on this crate
//!
//! Process backends: `spawn-proc` and `spawn-fork` call [`enter`] in the child and
//! [`parent::Plan`] and [`parent::judge`] in the parent. Programs never do: they ask for a
//! sandbox with `ActorOptions::sandbox` and read what was applied in the actor's vars. The
//! crate depends on the contract (`spawn-api`) and `runtime-vars` for its data, never on
//! the runtime or on a backend.
//!
//! ## Requirements
//!
//! [`enter`] must be called while the process runs a single thread (before any runtime is
//! built), as `unshare(CLONE_NEWUSER)` and a safe `fork` require; it checks.
//!
//! ```no_run
//! use runtime_vars::sandbox::{Network, Sandbox};
//! let sandbox = Sandbox::new().network(Network::Loopback).memory(256 << 20);
//! let entry = sandbox::Entry {
//!     sandbox: &sandbox,
//!     keep: vec!["/run/user/1000/brood".into()],
//!     name: "parser",
//! };
//! match sandbox::enter(&entry) {
//!     Ok(report) => println!("sandboxed:\n{report}"),
//!     Err(refusal) => eprintln!("{refusal}"),
//! }
//! ```

mod cgroup;
mod keeper;
mod mounts;
pub mod parent;
mod seccomp;
mod sys;

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::resource::{Resource, setrlimit};
use runtime_vars::sandbox::{Filesystem, Network, Piece, Refusal, Sandbox, SandboxReport};

pub use runtime_vars::sandbox;

/// What [`enter`] needs to know.
#[derive(Debug)]
pub struct Entry<'a> {
    /// What to apply.
    pub sandbox: &'a Sandbox,
    /// Directories that must stay reachable and writable whatever the filesystem view:
    /// where the actor's parent listens and where the actor will listen.
    pub keep: Vec<PathBuf>,
    /// The actor's name: its host name in a uts namespace.
    pub name: &'a str,
}

/// Collects what was applied, and decides what a refusal means.
struct Progress {
    report: SandboxReport,
    best_effort: bool,
}

impl Progress {
    fn applied(&mut self, piece: Piece, detail: impl Into<String>) {
        self.report.applied.push((piece, detail.into()));
    }

    /// A part was refused: fail, unless the sandbox is `best_effort`.
    fn refused(&mut self, piece: Piece, reason: impl Into<String>) -> Result<(), Refusal> {
        let refusal = Refusal {
            piece,
            reason: reason.into(),
        };
        if !self.best_effort {
            return Err(refusal);
        }
        self.report.refused.push(refusal);
        Ok(())
    }
}

/// Put this process into `entry.sandbox` (see the crate's documentation for the steps).
///
/// Returns in the process that is to become the actor, with what was applied. With a pid
/// namespace that is a new process, the namespace's pid 1; the calling process keeps it
/// and never returns.
///
/// # Errors
/// The first part the kernel or the caller's privileges refused, unless the sandbox is
/// `best_effort` (then the report lists it). A few failures end the sandbox even then,
/// because what was done cannot be undone and the process could not run well: a user
/// namespace whose ids cannot be mapped, a fork that fails after the pid namespace was
/// made. On an error the process may already be partly restricted: it should report the
/// refusal and exit.
pub fn enter(entry: &Entry<'_>) -> Result<SandboxReport, Refusal> {
    let s = entry.sandbox;
    let mut p = Progress {
        report: SandboxReport::default(),
        best_effort: s.best_effort,
    };
    let wants_pid = s.namespaces.pid;
    // The namespaces one `unshare` makes after the user namespace.
    let wanted: Vec<(CloneFlags, Piece)> = [
        (
            s.filesystem != Filesystem::Host,
            CloneFlags::CLONE_NEWNS,
            Piece::MountNamespace,
        ),
        (
            s.network != Network::Host,
            CloneFlags::CLONE_NEWNET,
            Piece::NetworkNamespace,
        ),
        (
            s.namespaces.ipc,
            CloneFlags::CLONE_NEWIPC,
            Piece::IpcNamespace,
        ),
        (
            s.namespaces.uts,
            CloneFlags::CLONE_NEWUTS,
            Piece::UtsNamespace,
        ),
        (wants_pid, CloneFlags::CLONE_NEWPID, Piece::PidNamespace),
    ]
    .into_iter()
    .filter_map(|(wanted, flag, piece)| wanted.then_some((flag, piece)))
    .collect();
    let wants_ns = s.namespaces.user || !wanted.is_empty();
    if wants_ns {
        match sys::thread_count() {
            Ok(1) => {}
            Ok(n) => {
                return Err(Refusal {
                    piece: Piece::UserNamespace,
                    reason: format!(
                        "the process runs {n} threads; a sandbox must be entered before any starts"
                    ),
                });
            }
            Err(e) => p.refused(Piece::UserNamespace, format!("counting threads: {e}"))?,
        }
    }

    let mut cgroup = None;
    if s.limits.cgroup && (s.limits.address_space.is_some() || s.limits.tasks.is_some()) {
        if !wants_pid {
            p.refused(
                Piece::Cgroup,
                "a cgroup needs the pid namespace (its keeper removes the cgroup)",
            )?;
        } else {
            match cgroup::Cgroup::create(s.limits.address_space, s.limits.tasks) {
                Ok(c) => cgroup = Some(c),
                Err(e) => p.refused(Piece::Cgroup, e)?,
            }
        }
    }

    if s.namespaces.user {
        user_namespace(&mut p)?;
    }
    let mut entered = Vec::new();
    let all = wanted
        .iter()
        .fold(CloneFlags::empty(), |acc, (f, _)| acc | *f);
    // One call for all of them (each call copies the process's namespace set); one at
    // a time only to find which is refused.
    if !all.is_empty() && nix::sched::unshare(all).is_ok() {
        entered.extend(wanted.iter().map(|(_, piece)| *piece));
    } else {
        for (flag, piece) in wanted {
            match nix::sched::unshare(flag) {
                Ok(()) => entered.push(piece),
                Err(e) => p.refused(piece, format!("unshare({flag:?}): {e}"))?,
            }
        }
    }
    let has = |piece| entered.contains(&piece);

    if has(Piece::PidNamespace) {
        become_pid_one(cgroup.take())?;
        p.applied(
            Piece::PidNamespace,
            "pid 1 of its own pid namespace, behind a keeper",
        );
    }
    if let Some(c) = cgroup.take() {
        // The pid namespace was refused (best effort): nobody would remove the cgroup.
        c.remove();
        p.refused(
            Piece::Cgroup,
            "the pid namespace, whose keeper removes the cgroup, was refused",
        )?;
    }

    if has(Piece::UtsNamespace) {
        match nix::unistd::sethostname(entry.name) {
            Ok(()) => p.applied(Piece::UtsNamespace, format!("host name {:?}", entry.name)),
            Err(e) => p.refused(Piece::UtsNamespace, format!("sethostname: {e}"))?,
        }
    }
    if has(Piece::NetworkNamespace) {
        p.applied(Piece::NetworkNamespace, "no interface of the host");
        if s.network == Network::Loopback {
            match sys::loopback_up() {
                Ok(()) => p.applied(Piece::Loopback, "lo up"),
                Err(e) => p.refused(Piece::Loopback, format!("bringing lo up: {e}"))?,
            }
        }
    }
    if has(Piece::IpcNamespace) {
        p.applied(
            Piece::IpcNamespace,
            "System V IPC and message queues of its own",
        );
    }

    let mut proc_mounted = false;
    if has(Piece::MountNamespace) {
        if let Filesystem::ReadOnly { writable, hidden } = &s.filesystem {
            let mut path_refusals = Vec::new();
            match mounts::read_only_view(
                &entry.keep,
                writable,
                hidden,
                has(Piece::PidNamespace),
                &mut path_refusals,
            ) {
                Ok(done) => {
                    proc_mounted = done.iter().any(|(piece, _)| *piece == Piece::Proc);
                    p.report.applied.extend(done);
                }
                Err((piece, reason)) => p.refused(piece, reason)?,
            }
            for (piece, reason) in path_refusals {
                p.refused(piece, reason)?;
            }
        }
    } else if has(Piece::PidNamespace) {
        p.applied(
            Piece::PidNamespace,
            "/proc still shows the host's processes (no mount namespace)",
        );
    }

    limits(s, proc_mounted, &mut p)?;

    if s.restricts_anything() {
        match sys::drop_capabilities() {
            Ok(()) => p.applied(Piece::Capabilities, "none held; an exec regains none"),
            Err(e) => p.refused(Piece::Capabilities, format!("dropping capabilities: {e}"))?,
        }
    }
    if s.no_new_privs || s.seccomp {
        match sys::set_no_new_privs() {
            Ok(()) => p.applied(Piece::NoNewPrivs, "set"),
            Err(e) => p.refused(Piece::NoNewPrivs, format!("prctl: {e}"))?,
        }
    }
    if s.seccomp {
        match seccomp::install() {
            Ok(detail) => p.applied(Piece::Seccomp, detail),
            Err(e) => p.refused(Piece::Seccomp, e)?,
        }
    }
    Ok(p.report)
}

/// Enter a user namespace mapping this process's uid and gid to themselves.
fn user_namespace(p: &mut Progress) -> Result<(), Refusal> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    // The kernel maps the host's uid 0 into a new user namespace only for a creator
    // holding CAP_SETFCAP (otherwise files written inside could carry capabilities valid
    // on the host). A sandboxed root actor gave it up: say so before anything is done,
    // so that a best-effort sandbox can go on without the namespace.
    if uid.is_root() && !effective_capability(CAP_SETFCAP) {
        return p.refused(
            Piece::UserNamespace,
            "mapping uid 0 into a new user namespace needs CAP_SETFCAP, which this process \
             does not hold (a sandboxed actor running as root cannot add namespaces for its \
             children)",
        );
    }
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
        return p.refused(Piece::UserNamespace, format!("unshare(CLONE_NEWUSER): {e}"));
    }
    // Inside a namespace with no mapping the process is nobody, and cannot go back:
    // this is an error even for a best-effort sandbox.
    let map = |file: &str, content: String| {
        std::fs::write(format!("/proc/self/{file}"), &content).map_err(|e| Refusal {
            piece: Piece::UserNamespace,
            reason: format!("writing {content:?} to /proc/self/{file}: {e}"),
        })
    };
    map("setgroups", "deny".into())?;
    map("uid_map", format!("{uid} {uid} 1"))?;
    map("gid_map", format!("{gid} {gid} 1"))?;
    p.applied(
        Piece::UserNamespace,
        format!("uid {uid} and gid {gid} mapped to themselves"),
    );
    Ok(())
}

/// `CAP_SETFCAP`'s number.
const CAP_SETFCAP: u32 = 31;

/// Whether this process holds capability `cap` in its effective set (`CapEff` of
/// `/proc/self/status`).
fn effective_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|bits| bits & (1 << cap) != 0)
}

/// Fork the namespace's pid 1 and keep it (see the crate's documentation). Returns in
/// the new process.
fn become_pid_one(cgroup: Option<cgroup::Cgroup>) -> Result<(), Refusal> {
    let fail = |reason: String| Refusal {
        piece: Piece::PidNamespace,
        reason,
    };
    let old_mask = keeper::block().map_err(|e| fail(format!("blocking signals: {e}")))?;
    let (alive_r, alive_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;
    let (note_r, note_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;
    match sys::fork_single_threaded().map_err(|e| fail(format!("fork: {e}")))? {
        sys::Forked::Parent(actor) => {
            drop((alive_r, note_w));
            keeper::keep(actor, alive_w, note_r, move || {
                if let Some(c) = cgroup {
                    c.remove();
                }
            })
        }
        sys::Forked::Child => {
            drop((alive_w, note_r));
            // The keeper is the parent now: die with it. Armed, then checked, so that a
            // keeper already gone is seen.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| fail(format!("arming the parent-death signal: {e}")))?;
            let mut fds = [nix::poll::PollFd::new(
                alive_r.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap_or(0) > 0 {
                sys::exit_now(spawn_api::EXIT_SETUP);
            }
            drop(alive_r);
            sys::report_abort_to(note_w.as_raw_fd())
                .map_err(|e| fail(format!("installing the SIGABRT handler: {e}")))?;
            // Open as long as the process: the handler writes to it.
            std::mem::forget(note_w);
            // Its own group, which the keeper signals.
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))
                .map_err(|e| fail(format!("setpgid: {e}")))?;
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&old_mask),
                None,
            )
            .map_err(|e| fail(format!("restoring the signal mask: {e}")))?;
            if let Some(c) = &cgroup {
                c.join().map_err(|e| Refusal {
                    piece: Piece::Cgroup,
                    reason: format!("joining {}: {e}", c.dir().display()),
                })?;
            }
            // The keeper removes it; this process must not.
            std::mem::forget(cgroup);
            Ok(())
        }
    }
}

/// The resource limits, soft and hard (a limit the actor could raise again limits
/// nothing).
fn limits(s: &Sandbox, proc_mounted: bool, p: &mut Progress) -> Result<(), Refusal> {
    let l = &s.limits;
    for (value, resource, piece, name) in [
        (
            l.address_space,
            Resource::RLIMIT_AS,
            Piece::AddressSpace,
            "RLIMIT_AS",
        ),
        (
            l.cpu_seconds,
            Resource::RLIMIT_CPU,
            Piece::CpuTime,
            "RLIMIT_CPU",
        ),
        (
            l.open_files,
            Resource::RLIMIT_NOFILE,
            Piece::OpenFiles,
            "RLIMIT_NOFILE",
        ),
    ] {
        let Some(value) = value else { continue };
        match set_limit(resource, value) {
            Ok(got) => p.applied(piece, format!("{name} {got}")),
            Err(e) => p.refused(piece, format!("setrlimit({name}, {value}): {e}"))?,
        }
    }
    let Some(tasks) = l.tasks else {
        return Ok(());
    };
    let mut bound = Vec::new();
    match set_limit(Resource::RLIMIT_NPROC, tasks) {
        // The kernel does not apply RLIMIT_NPROC to a real uid of 0 (in any namespace
        // that maps it to the host's root).
        Ok(got) if nix::unistd::getuid().is_root() => {
            let _ = got;
        }
        Ok(got) => bound.push(format!("RLIMIT_NPROC {got}")),
        Err(e) => p.refused(
            Piece::Tasks,
            format!("setrlimit(RLIMIT_NPROC, {tasks}): {e}"),
        )?,
    }
    if proc_mounted {
        // The kernel's floor for pid_max is 301; pids of this namespace stay below it.
        let pid_max = (tasks + 1).max(301);
        match std::fs::write("/proc/sys/kernel/pid_max", pid_max.to_string()) {
            Ok(()) => bound.push(format!("pid_max {pid_max} ({} tasks)", pid_max - 1)),
            Err(e) if bound.is_empty() => p.refused(
                Piece::Tasks,
                format!("writing pid_max of the pid namespace: {e}"),
            )?,
            Err(_) => {}
        }
    }
    if bound.is_empty() {
        return p.refused(
            Piece::Tasks,
            "RLIMIT_NPROC does not bind uid 0, and no pid namespace of ours has /proc to set \
             pid_max in",
        );
    }
    p.applied(Piece::Tasks, bound.join(", "));
    Ok(())
}

/// Set a limit's soft and hard values to `value`, or to the present hard value if that is
/// lower (a limit is never raised). Returns the value set.
fn set_limit(resource: Resource, value: u64) -> nix::Result<u64> {
    let (_, hard) = nix::sys::resource::getrlimit(resource)?;
    let value = value.min(hard);
    setrlimit(resource, value, value)?;
    Ok(value)
}

/// In a new child process, before it becomes an actor: enter the sandbox `boot` asks for
/// (if any, [`enter`]) and hand the encoded [`Outcome`] to `report`, the backend's way back
/// to the parent. Returns whether the process may go on to become the actor; if not (a
/// refusal, or a report that could not be sent), it must exit with
/// [`EXIT_SETUP`](spawn_api::EXIT_SETUP).
///
/// With a pid namespace this returns in a new process, the namespace's pid 1; the calling
/// process stays behind as its keeper and never returns.
pub fn enter_boot(
    boot: &spawn_api::ChildBoot,
    report: impl FnOnce(&[u8]) -> std::io::Result<()>,
) -> bool {
    let Some(sandbox) = &boot.sandbox else {
        return true;
    };
    let outcome = enter(&Entry {
        sandbox,
        keep: boot.runtime_dirs(),
        name: boot.id.name(),
    });
    if let Err(e) = report(&encode_outcome(&outcome)) {
        eprintln!("brood: cannot report the sandbox to the parent: {e}");
        return false;
    }
    outcome.is_ok()
}

/// What a sandboxed child tells its parent: what it runs under, or what was refused.
pub type Outcome = Result<SandboxReport, Refusal>;

/// Encode an [`Outcome`] for the backend's way back to the parent.
///
/// ```
/// use runtime_vars::sandbox::{Piece, Refusal};
/// let refused: sandbox::Outcome = Err(Refusal { piece: Piece::UserNamespace, reason: "EPERM".into() });
/// assert_eq!(sandbox::decode_outcome(&sandbox::encode_outcome(&refused)).unwrap(), refused);
/// assert!(sandbox::decode_outcome(b"\xff").is_err());
/// ```
pub fn encode_outcome(outcome: &Outcome) -> Vec<u8> {
    postcard::to_allocvec(outcome).expect("an outcome always encodes")
}

/// Decode what [`encode_outcome`] made.
///
/// # Errors
/// Bytes that are not an outcome (a child that is not ours, or a truncated message).
pub fn decode_outcome(bytes: &[u8]) -> Result<Outcome, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((outcome, [])) => Ok(outcome),
        Ok((_, rest)) => Err(format!("{} bytes after the sandbox report", rest.len())),
        Err(e) => Err(format!("a sandbox report that does not decode: {e}")),
    }
}
