//! What a sandboxed actor is allowed: the [`Sandbox`] a parent asks for, and the
//! [`SandboxReport`] of what the kernel granted.
//!
//! These are plain data. The process backends hand a [`Sandbox`] to their child, which
//! applies it to itself (the `sandbox` crate) before it becomes an actor, and sends back
//! a report; the parent records both in the child's [`RuntimeVars::sandbox`], so the
//! actor, its logs and its own children can see what it runs in.
//!
//! A sandbox only ever tightens: a sandboxed actor's children run inside it whatever
//! they ask, and what a child asks is combined with its parent's by
//! [`Sandbox::tightened_by`], the stricter setting of each part winning.
//!
//! ```
//! use runtime_vars::sandbox::{Network, Sandbox};
//! let parent = Sandbox::new().network(Network::Loopback).memory(512 << 20);
//! let asked = Sandbox::new().network(Network::Host).memory(128 << 20);
//! let child = parent.tightened_by(&asked);
//! assert_eq!(child.network, Network::Loopback); // never more network than the parent
//! assert_eq!(child.limits.address_space, Some(128 << 20)); // the smaller limit
//! ```
//!
//! [`RuntimeVars::sandbox`]: crate::RuntimeVars::sandbox

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The restrictions a process actor runs under (`ActorOptions::sandbox`).
///
/// [`Sandbox::new`] is the least-privilege default: new user, pid, network, ipc, uts and
/// mount namespaces; no network at all; the host's filesystem read-only, with a private
/// `/tmp` and `/dev/shm`, and only the tree's runtime directory (where the actor talks to
/// its parent and listens) writable; `no_new_privs`; the default seccomp deny list. Resource
/// limits are off until set, because the right values depend on the work.
///
/// Each part that the kernel or the caller's privileges refuse fails the spawn with a
/// [`Refusal`] naming it, unless [`best_effort`](Sandbox::best_effort) is set: then the
/// actor runs with what could be applied, and its [`SandboxReport`] lists what was not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Which namespaces the actor gets of its own.
    pub namespaces: Namespaces,
    /// What network the actor sees.
    pub network: Network,
    /// What the actor sees of the filesystem.
    pub filesystem: Filesystem,
    /// Resource limits (`setrlimit`), and whether a cgroup enforces them too.
    pub limits: Limits,
    /// Set `PR_SET_NO_NEW_PRIVS`: no set-uid program or file capability can raise the
    /// actor's privileges. Implied by [`Sandbox::seccomp`].
    pub no_new_privs: bool,
    /// Install the seccomp filter that denies [`SECCOMP_DENIED`] with `EPERM`.
    pub seccomp: bool,
    /// Apply what can be applied and report the rest, instead of failing the spawn.
    pub best_effort: bool,
}

/// The system calls the seccomp filter of [`Sandbox::seccomp`] denies (they fail with
/// `EPERM`): kernel and module loading, rebooting, swap, clocks, accounting, keyrings,
/// BPF, performance counters, `userfaultfd`, tracing and reading or writing other
/// processes' memory, and file handles that bypass path checks.
///
/// The list leaves `unshare`, `mount` and `clone` alone, so a sandboxed actor can still
/// start a child in a tighter sandbox of its own.
pub const SECCOMP_DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "init_module",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "open_by_handle_at",
    "perf_event_open",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "userfaultfd",
];

/// The namespaces a sandboxed actor gets of its own (`unshare(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// A user namespace, in which the actor keeps its own uid and gid and holds the
    /// capabilities the other namespaces need: this is what lets an unprivileged user
    /// sandbox an actor.
    pub user: bool,
    /// A pid namespace: the actor is its pid 1, sees only its own descendants in `/proc`,
    /// and every process in it dies with it.
    pub pid: bool,
    /// A System V IPC and POSIX message-queue namespace.
    pub ipc: bool,
    /// A host-name namespace; the actor's host name is its own name.
    pub uts: bool,
}

impl Namespaces {
    /// Every namespace.
    pub const ALL: Namespaces = Namespaces {
        user: true,
        pid: true,
        ipc: true,
        uts: true,
    };

    /// No namespace.
    pub const NONE: Namespaces = Namespaces {
        user: false,
        pid: false,
        ipc: false,
        uts: false,
    };
}

/// What network a sandboxed actor sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Network {
    /// None at all: a network namespace with no interface up.
    None,
    /// A network namespace with only its own loopback interface up.
    Loopback,
    /// The host's network (no network namespace).
    Host,
}

/// What a sandboxed actor sees of the filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filesystem {
    /// The host's filesystem as it is (no mount namespace).
    Host,
    /// A mount namespace in which the host's filesystem is read-only, `/tmp` and
    /// `/dev/shm` are private and empty, `/proc` shows the actor's own pid namespace,
    /// the tree's runtime directory stays writable, and so do the paths in `writable`;
    /// the paths in `hidden` show as empty read-only directories.
    ReadOnly {
        /// Paths that stay writable (bound over themselves, read-write).
        writable: Vec<PathBuf>,
        /// Paths covered by an empty read-only directory.
        hidden: Vec<PathBuf>,
    },
}

/// Resource limits of a sandboxed actor. Each applies to the actor's process and is
/// inherited by every process it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `RLIMIT_AS`, bytes of address space: an allocation past it fails (a Rust program
    /// aborts, and the parent sees the child killed by `SIGABRT`). Threads' stacks and
    /// mapped files count too.
    pub address_space: Option<u64>,
    /// `RLIMIT_CPU`, seconds of CPU time: past it the kernel sends `SIGXCPU`, then
    /// `SIGKILL`.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_NOFILE`, open descriptors.
    pub open_files: Option<u64>,
    /// Tasks (processes *and threads*, an actor's runtime threads included) the actor may
    /// have: `RLIMIT_NPROC`, and with a pid namespace, the namespace's `pid_max`.
    /// `RLIMIT_NPROC` does not bind a process whose real uid is 0; for root the pid
    /// namespace's `pid_max` is the bound (its kernel floor is 301 tasks).
    pub tasks: Option<u64>,
    /// Also enforce [`address_space`](Limits::address_space) as `memory.max` and
    /// [`tasks`](Limits::tasks) as `pids.max` of a cgroup v2 made for the actor, below
    /// the cgroup its parent runs in (which must be writable, with the `memory` and
    /// `pids` controllers).
    pub cgroup: bool,
}

impl Sandbox {
    /// The least-privilege default (see [`Sandbox`]).
    ///
    /// ```
    /// use runtime_vars::sandbox::{Filesystem, Namespaces, Network, Sandbox};
    /// let s = Sandbox::new();
    /// assert_eq!(s.namespaces, Namespaces::ALL);
    /// assert_eq!(s.network, Network::None);
    /// assert!(matches!(s.filesystem, Filesystem::ReadOnly { .. }));
    /// assert!(s.no_new_privs && s.seccomp && !s.best_effort);
    /// ```
    pub fn new() -> Sandbox {
        Sandbox {
            namespaces: Namespaces::ALL,
            network: Network::None,
            filesystem: Filesystem::ReadOnly {
                writable: Vec::new(),
                hidden: Vec::new(),
            },
            limits: Limits::default(),
            no_new_privs: true,
            seccomp: true,
            best_effort: false,
        }
    }

    /// Nothing restricted: the starting point for a sandbox built piece by piece.
    ///
    /// ```
    /// use runtime_vars::sandbox::{Namespaces, Network, Sandbox};
    /// let s = Sandbox::unrestricted().namespaces(Namespaces { pid: true, ..Namespaces::NONE });
    /// assert_eq!(s.network, Network::Host);
    /// assert!(!s.seccomp);
    /// ```
    pub fn unrestricted() -> Sandbox {
        Sandbox {
            namespaces: Namespaces::NONE,
            network: Network::Host,
            filesystem: Filesystem::Host,
            limits: Limits::default(),
            no_new_privs: false,
            seccomp: false,
            best_effort: false,
        }
    }

    /// Which namespaces the actor gets.
    pub fn namespaces(mut self, namespaces: Namespaces) -> Sandbox {
        self.namespaces = namespaces;
        self
    }

    /// What network the actor sees.
    pub fn network(mut self, network: Network) -> Sandbox {
        self.network = network;
        self
    }

    /// What the actor sees of the filesystem.
    pub fn filesystem(mut self, filesystem: Filesystem) -> Sandbox {
        self.filesystem = filesystem;
        self
    }

    /// Keep `path` writable. Turns a [`Filesystem::Host`] into a read-only one.
    ///
    /// ```
    /// use runtime_vars::sandbox::{Filesystem, Sandbox};
    /// let s = Sandbox::new().writable("/var/cache/parser").hidden("/home");
    /// let Filesystem::ReadOnly { writable, hidden } = &s.filesystem else { unreachable!() };
    /// assert_eq!((writable.len(), hidden.len()), (1, 1));
    /// ```
    pub fn writable(mut self, path: impl Into<PathBuf>) -> Sandbox {
        self.read_only_fs().0.push(path.into());
        self
    }

    /// Cover `path` with an empty read-only directory. Turns a [`Filesystem::Host`]
    /// into a read-only one.
    pub fn hidden(mut self, path: impl Into<PathBuf>) -> Sandbox {
        self.read_only_fs().1.push(path.into());
        self
    }

    fn read_only_fs(&mut self) -> (&mut Vec<PathBuf>, &mut Vec<PathBuf>) {
        if self.filesystem == Filesystem::Host {
            self.filesystem = Filesystem::ReadOnly {
                writable: Vec::new(),
                hidden: Vec::new(),
            };
        }
        match &mut self.filesystem {
            Filesystem::ReadOnly { writable, hidden } => (writable, hidden),
            Filesystem::Host => unreachable!("made read-only above"),
        }
    }

    /// Limit the address space to `bytes` ([`Limits::address_space`]).
    pub fn memory(mut self, bytes: u64) -> Sandbox {
        self.limits.address_space = Some(bytes);
        self
    }

    /// Limit CPU time to `seconds` ([`Limits::cpu_seconds`]).
    pub fn cpu_seconds(mut self, seconds: u64) -> Sandbox {
        self.limits.cpu_seconds = Some(seconds);
        self
    }

    /// Limit open descriptors to `n` ([`Limits::open_files`]).
    pub fn open_files(mut self, n: u64) -> Sandbox {
        self.limits.open_files = Some(n);
        self
    }

    /// Limit processes and threads to `n` ([`Limits::tasks`]).
    pub fn tasks(mut self, n: u64) -> Sandbox {
        self.limits.tasks = Some(n);
        self
    }

    /// Enforce the memory and task limits through a cgroup v2 as well
    /// ([`Limits::cgroup`]).
    pub fn cgroup(mut self, on: bool) -> Sandbox {
        self.limits.cgroup = on;
        self
    }

    /// Set or clear `no_new_privs`.
    pub fn no_new_privs(mut self, on: bool) -> Sandbox {
        self.no_new_privs = on;
        self
    }

    /// Install the seccomp deny list ([`SECCOMP_DENIED`]) or not.
    pub fn seccomp(mut self, on: bool) -> Sandbox {
        self.seccomp = on;
        self
    }

    /// Run with what the kernel grants instead of failing the spawn (see [`Sandbox`]).
    pub fn best_effort(mut self, on: bool) -> Sandbox {
        self.best_effort = on;
        self
    }

    /// Whether `self` restricts exactly what `other` does. `best_effort` is left aside: it
    /// says how a refusal is treated, not what is allowed.
    ///
    /// ```
    /// use runtime_vars::sandbox::Sandbox;
    /// assert!(Sandbox::new().same_restrictions(&Sandbox::new().best_effort(true)));
    /// assert!(!Sandbox::new().same_restrictions(&Sandbox::new().tasks(8)));
    /// ```
    pub fn same_restrictions(&self, other: &Sandbox) -> bool {
        *self
            == Sandbox {
                best_effort: self.best_effort,
                ..other.clone()
            }
    }

    /// Whether anything at all is restricted.
    ///
    /// ```
    /// use runtime_vars::sandbox::Sandbox;
    /// assert!(!Sandbox::unrestricted().restricts_anything());
    /// assert!(Sandbox::unrestricted().memory(1 << 30).restricts_anything());
    /// ```
    pub fn restricts_anything(&self) -> bool {
        let l = &self.limits;
        self.namespaces != Namespaces::NONE
            || self.network != Network::Host
            || self.filesystem != Filesystem::Host
            || l.address_space.is_some()
            || l.cpu_seconds.is_some()
            || l.open_files.is_some()
            || l.tasks.is_some()
            || self.no_new_privs
            || self.seccomp
    }

    /// The sandbox of a child that asked for `asked` while running inside `self`: for
    /// each part, the stricter of the two. Namespaces, `no_new_privs` and seccomp are
    /// kept if either has them; the network is the smaller; the filesystem is read-only
    /// if either is, with only the paths both keep writable writable and every path
    /// either hides hidden; each limit is the smaller. `best_effort` is the child's own
    /// choice (it says how to treat a refusal, not what is allowed).
    ///
    /// ```
    /// use runtime_vars::sandbox::{Filesystem, Sandbox};
    /// let parent = Sandbox::unrestricted().writable("/a").writable("/b").seccomp(true);
    /// let child = Sandbox::unrestricted().writable("/b").writable("/c").tasks(8);
    /// let both = parent.tightened_by(&child);
    /// let Filesystem::ReadOnly { writable, .. } = &both.filesystem else { unreachable!() };
    /// assert_eq!(writable, &[std::path::PathBuf::from("/b")]);
    /// assert!(both.seccomp);
    /// assert_eq!(both.limits.tasks, Some(8));
    /// ```
    pub fn tightened_by(&self, asked: &Sandbox) -> Sandbox {
        let (a, b) = (&self.namespaces, &asked.namespaces);
        let min = |x: Option<u64>, y: Option<u64>| match (x, y) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        let filesystem = match (&self.filesystem, &asked.filesystem) {
            (Filesystem::Host, f) | (f, Filesystem::Host) => f.clone(),
            (
                Filesystem::ReadOnly {
                    writable: w1,
                    hidden: h1,
                },
                Filesystem::ReadOnly {
                    writable: w2,
                    hidden: h2,
                },
            ) => Filesystem::ReadOnly {
                writable: w1.iter().filter(|p| w2.contains(p)).cloned().collect(),
                hidden: h1
                    .iter()
                    .chain(h2.iter().filter(|p| !h1.contains(p)))
                    .cloned()
                    .collect(),
            },
        };
        Sandbox {
            namespaces: Namespaces {
                user: a.user || b.user,
                pid: a.pid || b.pid,
                ipc: a.ipc || b.ipc,
                uts: a.uts || b.uts,
            },
            network: self.network.min(asked.network),
            filesystem,
            limits: Limits {
                address_space: min(self.limits.address_space, asked.limits.address_space),
                cpu_seconds: min(self.limits.cpu_seconds, asked.limits.cpu_seconds),
                open_files: min(self.limits.open_files, asked.limits.open_files),
                tasks: min(self.limits.tasks, asked.limits.tasks),
                cgroup: self.limits.cgroup || asked.limits.cgroup,
            },
            no_new_privs: self.no_new_privs || asked.no_new_privs,
            seccomp: self.seccomp || asked.seccomp,
            best_effort: asked.best_effort,
        }
    }
}

impl Sandbox {
    /// What a process already inside `parent` must still apply to be in `self` (which
    /// is `parent` tightened, [`Sandbox::tightened_by`]): the namespaces, network and
    /// filesystem view `parent` lacks, the limits that differ, `no_new_privs` and seccomp
    /// if `parent` had none. A user namespace comes with any new namespace (it gives the
    /// capabilities the others need).
    ///
    /// ```
    /// use runtime_vars::sandbox::{Filesystem, Network, Sandbox};
    /// let parent = Sandbox::new();
    /// let child = parent.tightened_by(&Sandbox::unrestricted().memory(64 << 20));
    /// let delta = child.beyond(&parent);
    /// assert_eq!(delta.limits.address_space, Some(64 << 20));
    /// assert!(!delta.namespaces.user && !delta.seccomp);
    /// assert_eq!((delta.network, delta.filesystem), (Network::Host, Filesystem::Host));
    /// assert!(!parent.beyond(&parent).restricts_anything());
    /// ```
    pub fn beyond(&self, parent: &Sandbox) -> Sandbox {
        let (a, p) = (&self.namespaces, &parent.namespaces);
        let network = if self.network < parent.network {
            self.network
        } else {
            Network::Host
        };
        let filesystem = if self.filesystem != parent.filesystem {
            self.filesystem.clone()
        } else {
            Filesystem::Host
        };
        let mut namespaces = Namespaces {
            user: false,
            pid: a.pid && !p.pid,
            ipc: a.ipc && !p.ipc,
            uts: a.uts && !p.uts,
        };
        namespaces.user = (a.user && !p.user)
            || namespaces.pid
            || namespaces.ipc
            || namespaces.uts
            || network != Network::Host
            || filesystem != Filesystem::Host;
        let differs = |x: Option<u64>, y: Option<u64>| if x != y { x } else { None };
        let (l, pl) = (&self.limits, &parent.limits);
        Sandbox {
            namespaces,
            network,
            filesystem,
            limits: Limits {
                address_space: differs(l.address_space, pl.address_space),
                cpu_seconds: differs(l.cpu_seconds, pl.cpu_seconds),
                open_files: differs(l.open_files, pl.open_files),
                tasks: differs(l.tasks, pl.tasks),
                cgroup: l.cgroup && !pl.cgroup,
            },
            no_new_privs: self.no_new_privs && !parent.no_new_privs,
            seccomp: self.seccomp && !parent.seccomp,
            best_effort: self.best_effort,
        }
    }
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::new()
    }
}

/// One part of a sandbox, as named in a [`SandboxReport`] or a [`Refusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Piece {
    /// The user namespace.
    UserNamespace,
    /// The pid namespace.
    PidNamespace,
    /// The network namespace.
    NetworkNamespace,
    /// The loopback interface of [`Network::Loopback`].
    Loopback,
    /// The ipc namespace.
    IpcNamespace,
    /// The uts namespace.
    UtsNamespace,
    /// The mount namespace and the read-only view of [`Filesystem::ReadOnly`].
    MountNamespace,
    /// `/proc` remounted for the pid namespace.
    Proc,
    /// A path of [`Filesystem::ReadOnly`]'s `writable` or `hidden` lists.
    Path,
    /// `RLIMIT_AS`.
    AddressSpace,
    /// `RLIMIT_CPU`.
    CpuTime,
    /// `RLIMIT_NOFILE`.
    OpenFiles,
    /// `RLIMIT_NPROC` and the pid namespace's `pid_max`.
    Tasks,
    /// The cgroup v2 of [`Limits::cgroup`].
    Cgroup,
    /// Every capability given up, for good (an exec regains none).
    Capabilities,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// The seccomp filter.
    Seccomp,
}

impl fmt::Display for Piece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Piece::UserNamespace => "user namespace",
            Piece::PidNamespace => "pid namespace",
            Piece::NetworkNamespace => "network namespace",
            Piece::Loopback => "loopback interface",
            Piece::IpcNamespace => "ipc namespace",
            Piece::UtsNamespace => "uts namespace",
            Piece::MountNamespace => "mount namespace",
            Piece::Proc => "/proc of the pid namespace",
            Piece::Path => "filesystem path",
            Piece::AddressSpace => "address-space limit",
            Piece::CpuTime => "CPU-time limit",
            Piece::OpenFiles => "open-files limit",
            Piece::Tasks => "task limit",
            Piece::Cgroup => "cgroup",
            Piece::Capabilities => "capabilities",
            Piece::NoNewPrivs => "no_new_privs",
            Piece::Seccomp => "seccomp filter",
        })
    }
}

/// A part of a sandbox the kernel or the caller's privileges refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// What was refused.
    pub piece: Piece,
    /// Why, as the kernel said it (`"unshare(CLONE_NEWUSER): Operation not permitted"`).
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} refused: {}", self.piece, self.reason)
    }
}

impl std::error::Error for Refusal {}

/// What a sandboxed actor actually runs under: each part applied, with a detail
/// (`"RLIMIT_AS 268435456"`), and each part refused (only with
/// [`Sandbox::best_effort`]; otherwise a refusal fails the spawn).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// The parts applied, in the order they were.
    pub applied: Vec<(Piece, String)>,
    /// The parts refused.
    pub refused: Vec<Refusal>,
}

impl SandboxReport {
    /// Whether `piece` was applied.
    ///
    /// ```
    /// use runtime_vars::sandbox::{Piece, SandboxReport};
    /// let r = SandboxReport { applied: vec![(Piece::Seccomp, "24 calls".into())], refused: vec![] };
    /// assert!(r.has(Piece::Seccomp) && !r.has(Piece::Cgroup));
    /// ```
    pub fn has(&self, piece: Piece) -> bool {
        self.applied.iter().any(|(p, _)| *p == piece)
    }
}

impl fmt::Display for SandboxReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (piece, detail) in &self.applied {
            writeln!(f, "  applied  {piece}: {detail}")?;
        }
        for r in &self.refused {
            writeln!(f, "  refused  {}: {}", r.piece, r.reason)?;
        }
        Ok(())
    }
}

/// A sandboxed actor's entry in its vars: what was asked (after combining with its
/// parent's) and what it got. Children that ask for nothing inherit their parent's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxVars {
    /// The sandbox the actor runs in.
    pub sandbox: Sandbox,
    /// What was applied when it was entered. A `proc` child of a sandboxed actor is its
    /// descendant, inside its sandbox already: its report lists only what it added.
    pub report: SandboxReport,
    /// The tree path of the actor whose spawn applied it (this actor's own path, or an
    /// ancestor's when inherited).
    pub applied_by: String,
}
