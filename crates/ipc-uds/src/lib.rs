//! # ipc-uds: brood's Unix-socket transport
//!
//! [`UdsTransport`] carries brood frames (a 4-byte little-endian length, a postcard
//! header, the payload) over Unix stream sockets.
//!
//! - **Where sockets live.** A private runtime directory: the one given with
//!   [`UdsTransport::with_dir`] or `BROOD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/brood`, else
//!   `/tmp/brood-<uid>` (`/dev/shm/brood-<uid>` when `/tmp` is on disk and `/dev/shm` in
//!   memory). Each tree gets its own subdirectory (`t<root pid>-<id>`); every actor of the
//!   tree listens there at `<uid>.sock`, and children find it from the absolute address
//!   their parent gives them. A new root removes the directories of trees whose root
//!   process is gone.
//!
//!   The kernel resolves a socket path again at every `bind` and `connect`, so the
//!   directory is only private if nobody else can change *any* step of that path. The
//!   directory is therefore opened one component at a time from `/` (`openat` with
//!   `O_NOFOLLOW`, each entry looked at with `lstat` first) and checked on the way:
//!   - every directory above it (ancestors, `/` included) must be owned by root or by us
//!     (its owner could rename or replace what is below it), and if group- or
//!     world-writable it must have the sticky bit like `/tmp` (otherwise any writer could
//!     swap the next entry);
//!   - a symbolic link on the way (`/var/run -> /run`) is followed only if root or we own
//!     it: the directory holding it passed the checks, so nobody else can have planted
//!     or changed it (in a sticky directory others can add entries, hence the owner
//!     check);
//!   - the runtime directory itself must be a real directory (not a symlink), ours, mode
//!     0700; a missing one is created with `mkdir` (which never follows a symlink) and
//!     given 0700 whatever the umask.
//!
//!   The checks run on descriptors, so an entry swapped in after it was looked at is not
//!   used. A directory we pass that fails them is a [`TransportError::RuntimeDir`] naming
//!   it and what is wrong.
//!
//!   The *default* location is a name in a shared directory, and another user can create
//!   that name first (a directory of theirs, a file, a symlink) or leave it open. Then a
//!   root does not fail: it makes a fresh private directory beside it with a name nobody
//!   can guess (`/tmp/brood-<uid>-XXXXXXXX`, created atomically by `mkdir`, mode 0700),
//!   uses it for its tree and logs a warning naming the squatted path and its owner. That
//!   directory is removed when the tree ends ([`Transport::cleanup_tree`]); a root that
//!   falls back also sweeps such directories of roots that died before their end. An
//!   *explicit* directory is never replaced: if it is not private the error says why.
//! - **Who may connect.** Both ends check the other's uid with `SO_PEERCRED`; another
//!   user is refused with [`TransportError::PeerRefused`].
//! - **Frame size.** Frames above [`UdsTransport::max_frame`] (64 MiB by default) are
//!   refused before anything is allocated.
//! - **Cleanup.** A listener unlinks its socket when dropped; a parent that reaps a killed
//!   child calls [`Transport::cleanup`], and a root removes its tree directory at the end
//!   ([`Transport::cleanup_tree`]).
//!
//! ## Who should depend on this crate
//!
//! Programs that pick their crates by hand, to add the `uds` transport to a `Brood`:
//! `actor-core` + `spawn-proc` + `ipc-uds` is a complete tree of process actors without
//! Python. Other programs use the `brood` facade (feature `uds`, on by default), which
//! wires this transport in. Tools that speak brood's frames over a socket may use it
//! alone, through [`Transport`]. It depends only on the contract (`spawn-api`), never on
//! the actor runtime or on a backend (`actor-core` appears only among its
//! dev-dependencies, for examples and tests).
//!
//! ```no_run
//! use ipc_uds::UdsTransport;
//! use spawn_api::{ActorId, Transport};
//! # async fn demo() -> Result<(), spawn_api::TransportError> {
//! let uds = UdsTransport::new();
//! let addr = uds.address_for(&ActorId::new("root"), None)?;
//! let mut listener = uds.bind(&addr).await?;
//! let client = uds.connect(&addr).await?;
//! let server = listener.accept().await?;
//! # Ok(()) }
//! ```

// The library has no unsafe code; only its tests call libc directly.
#![cfg_attr(not(test), forbid(unsafe_code))]

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use spawn_api::codec::{DEFAULT_MAX_FRAME, FrameReader, FrameWriter};
use spawn_api::{
    ActorId, Addr, Channel, ChannelError, Frame, FrameSink, FrameSource, Listener, PeerInfo,
    Transport, TransportError, async_trait,
};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The key of this transport in addresses and configuration.
pub const KEY: &str = "uds";

/// Environment variable naming the runtime directory (for tests and sandboxes).
pub const RUNTIME_DIR_ENV: &str = "BROOD_RUNTIME_DIR";

/// Default socket send buffer per channel: 2 MiB, so a 1 MiB frame leaves in one copy.
/// Kernel memory is only used while data waits for the peer.
pub const DEFAULT_SEND_BUFFER: usize = 0;

/// The longest socket path the kernel accepts (`sun_path` less its terminating NUL).
const MAX_PATH: usize = 107;

/// Unix-socket transport. Cheap to clone (clones share what they know); keeps no
/// per-actor state.
#[derive(Clone, Debug)]
pub struct UdsTransport {
    /// `None`: the default location, read from the environment when a root needs it.
    location: Option<Location>,
    max_frame: usize,
    send_buffer: usize,
    /// Tree directories placed in a fallback directory this transport made (the default
    /// location was taken): at the tree's end that directory goes too, and only that one.
    fallback_trees: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Default for UdsTransport {
    fn default() -> Self {
        UdsTransport::new()
    }
}

impl UdsTransport {
    /// The transport with the default runtime directory and a 64 MiB frame limit.
    pub fn new() -> UdsTransport {
        UdsTransport {
            location: None,
            max_frame: DEFAULT_MAX_FRAME,
            send_buffer: DEFAULT_SEND_BUFFER,
            fallback_trees: Arc::default(),
        }
    }

    /// Use `dir` as the runtime directory (it is created with mode 0700 if missing). It
    /// is used as it is or refused, never replaced (see the crate docs).
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> UdsTransport {
        self.location = Some(Location::Explicit(dir.into()));
        self
    }

    /// Use `loc` instead of the environment's location (tests: a default location in a
    /// scratch base instead of `/tmp`).
    #[cfg(test)]
    fn with_location(mut self, loc: Location) -> UdsTransport {
        self.location = Some(loc);
        self
    }

    /// Ask for `bytes` of socket send buffer per channel (0 keeps the system default).
    pub fn with_send_buffer(mut self, bytes: usize) -> UdsTransport {
        self.send_buffer = bytes;
        self
    }

    /// Refuse frames above `bytes`.
    pub fn with_max_frame(mut self, bytes: usize) -> UdsTransport {
        self.max_frame = bytes;
        self
    }

    /// The runtime directory roots of this transport use, created and checked (every
    /// component of its path, see the crate docs).
    ///
    /// When the default location is taken by someone else, every call makes a fresh
    /// private directory beside it and returns that; the caller removes it.
    ///
    /// # Errors
    /// [`TransportError::RuntimeDir`] if it cannot be created, is not a directory, is
    /// owned by another user or is open to others, or a directory above it could let
    /// another user replace it.
    pub fn runtime_dir(&self) -> Result<PathBuf, TransportError> {
        Ok(self.resolve()?.path)
    }

    fn resolve(&self) -> Result<Resolved, TransportError> {
        let loc = self.location.clone().unwrap_or_else(default_location);
        resolve(&loc, our_uid())
    }
}

/// Where the runtime directory is to be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    /// Chosen by the user (`with_dir`, `BROOD_RUNTIME_DIR`): used as it is or refused.
    Explicit(PathBuf),
    /// Ours by convention only: `name` in a shared `base` (`/tmp`, `/dev/shm`,
    /// `$XDG_RUNTIME_DIR`). Anyone may create that name first, so when it is not ours a
    /// fresh `<name>-XXXXXXXX` is made in `base` instead.
    Default {
        /// The shared directory.
        base: PathBuf,
        /// The name we expect in it.
        name: String,
    },
}

impl Location {
    /// The directory this location names (before any fallback).
    fn path(&self) -> PathBuf {
        match self {
            Location::Explicit(p) => p.clone(),
            Location::Default { base, name } => base.join(name),
        }
    }
}

/// A checked runtime directory.
#[derive(Debug)]
struct Resolved {
    /// Absolute; sockets of trees go below it.
    path: PathBuf,
    /// The directory itself, opened while it was checked: trees are created from it,
    /// not by path.
    dir: OwnedFd,
    /// Whether this is a fresh fallback directory made because the default one was taken.
    fallback: bool,
}

/// The runtime directory `loc` names for user `uid`, created and checked (see the crate
/// docs for what is checked). A default location that is taken is replaced by a fresh
/// private directory beside it, with a warning; an explicit one is refused.
fn resolve(loc: &Location, uid: u32) -> Result<Resolved, TransportError> {
    let wanted = loc.path();
    let fail = |reason: String| dir_error(&wanted, reason);
    let abs = if wanted.is_absolute() {
        wanted.clone()
    } else {
        std::env::current_dir()
            .map_err(|e| {
                fail(format!(
                    "relative, and the current directory is unknown: {e}"
                ))
            })?
            .join(&wanted)
    };
    let (Some(base), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(fail("names no directory of its own".to_owned()));
    };
    let base_fd = open_ancestors(base, uid).map_err(fail)?;
    let (problem, owner) = match open_private(base_fd.as_fd(), name, uid) {
        Ok(dir) => {
            return Ok(Resolved {
                path: abs,
                dir,
                fallback: false,
            });
        }
        Err(Refusal::Failed(reason)) => return Err(fail(reason)),
        Err(Refusal::NotOurs { problem, owner }) => match loc {
            Location::Explicit(_) => return Err(fail(problem)),
            Location::Default { .. } => (problem, owner),
        },
    };
    let (path, dir) = make_fallback(base_fd.as_fd(), base, name, uid).map_err(fail)?;
    tracing::warn!(
        squatted = %abs.display(),
        owner,
        %problem,
        using = %path.display(),
        "the default runtime directory is not a private directory of ours (another user may \
         have created it first); this root uses a fresh private directory instead"
    );
    remove_stale_fallbacks(base, name, uid, &path);
    Ok(Resolved {
        path,
        dir,
        fallback: true,
    })
}

/// Open the directory `path` (absolute) one component at a time from `/`, creating
/// missing ones (mode 0700), and check every directory passed with [`check_ancestor`].
/// A symbolic link is followed only if root or `uid` owns it; its target is walked the
/// same way. The error names the component and what is wrong with it.
fn open_ancestors(path: &Path, uid: u32) -> Result<OwnedFd, String> {
    /// As the kernel's limit: more links than this is a loop.
    const MAX_LINKS: usize = 40;
    let open_root = || -> Result<OwnedFd, String> {
        let fd = nix::fcntl::open("/", dir_flags(OFlag::O_PATH), Mode::empty())
            .map_err(|e| format!("cannot open /: {e}"))?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("cannot stat /: {e}"))?;
        check_ancestor(Path::new("/"), &st, uid)?;
        Ok(fd)
    };
    let mut fd = open_root()?;
    // Where `fd` is (for messages): only real directories are entered, so it is the
    // physical path.
    let mut at = PathBuf::from("/");
    let mut todo: VecDeque<OsString> = components(path);
    let mut links = 0;
    while let Some(comp) = todo.pop_front() {
        let here = if comp == ".." {
            at.parent().unwrap_or(&at).to_path_buf()
        } else {
            at.join(&comp)
        };
        let st = match lstat_at(fd.as_fd(), &comp) {
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(fd.as_fd(), comp.as_os_str(), Mode::S_IRWXU) {
                    // EEXIST: made by someone at the same moment; it is checked below.
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(format!("cannot create {}: {e}", here.display())),
                }
                lstat_at(fd.as_fd(), &comp)
            }
            other => other,
        }
        .map_err(|e| format!("cannot look at {}: {e}", here.display()))?;
        match file_type(&st) {
            SFlag::S_IFLNK => {
                if st.st_uid != 0 && st.st_uid != uid {
                    return Err(format!(
                        "{} is a symbolic link owned by uid {}, neither root nor us (uid {uid}): \
                         its owner chose where it leads",
                        here.display(),
                        st.st_uid
                    ));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!(
                        "too many symbolic links at {}: a loop?",
                        here.display()
                    ));
                }
                let target = PathBuf::from(
                    nix::fcntl::readlinkat(fd.as_fd(), comp.as_os_str())
                        .map_err(|e| format!("cannot read the link {}: {e}", here.display()))?,
                );
                if target.is_absolute() {
                    fd = open_root()?;
                    at = PathBuf::from("/");
                }
                for c in components(&target).into_iter().rev() {
                    todo.push_front(c);
                }
            }
            SFlag::S_IFDIR => {
                let next = nix::fcntl::openat(
                    fd.as_fd(),
                    comp.as_os_str(),
                    dir_flags(OFlag::O_PATH),
                    Mode::empty(),
                )
                .map_err(|e| format!("cannot open {}: {e}", here.display()))?;
                // The descriptor's own status, not the lstat above: this is what we use.
                let st = nix::sys::stat::fstat(&next)
                    .map_err(|e| format!("cannot stat {}: {e}", here.display()))?;
                check_ancestor(&here, &st, uid)?;
                fd = next;
                at = here;
            }
            _ => return Err(format!("{} is not a directory", here.display())),
        }
    }
    Ok(fd)
}

/// A directory on the way to the runtime directory: nobody but root and us may be able
/// to replace what is below it.
fn check_ancestor(path: &Path, st: &FileStat, uid: u32) -> Result<(), String> {
    if st.st_uid != 0 && st.st_uid != uid {
        return Err(format!(
            "{} is owned by uid {}, neither root nor us (uid {uid}): its owner could replace \
             what is below it",
            path.display(),
            st.st_uid
        ));
    }
    let mode = st.st_mode & 0o7777;
    let others_write = mode & 0o022 != 0;
    let sticky = mode & Mode::S_ISVTX.bits() != 0;
    if others_write && !sticky {
        return Err(format!(
            "{} is writable by other users (mode {mode:o}) without the sticky bit: they could \
             replace what is below it",
            path.display()
        ));
    }
    Ok(())
}

/// Why a runtime directory (or a tree directory) cannot be used.
#[derive(Debug)]
enum Refusal {
    /// Something is there that is not a private directory of ours: what is wrong, and
    /// whose it is.
    NotOurs { problem: String, owner: u32 },
    /// It could not be created or examined.
    Failed(String),
}

impl Refusal {
    fn reason(self) -> String {
        match self {
            Refusal::NotOurs { problem, .. } | Refusal::Failed(problem) => problem,
        }
    }
}

/// Create `name` in `parent` (mode 0700) if missing, and open it if it is a real
/// directory of `uid` with mode 0700.
fn open_private(parent: BorrowedFd<'_>, name: &OsStr, uid: u32) -> Result<OwnedFd, Refusal> {
    // mkdir never follows a symlink: one at `name` is EEXIST, and is refused below.
    let created = match nix::sys::stat::mkdirat(parent, name, Mode::S_IRWXU) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(Refusal::Failed(format!("cannot create: {e}"))),
    };
    check_private(parent, name, uid, created)
}

/// Open `name` in `parent` if it is a real directory of `uid` with mode 0700; `created`:
/// we just made it, so its mode is what the umask left, and is set to 0700.
fn check_private(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    uid: u32,
    created: bool,
) -> Result<OwnedFd, Refusal> {
    let st = lstat_at(parent, name).map_err(|e| Refusal::Failed(format!("cannot stat: {e}")))?;
    let not_ours = |problem: String| Refusal::NotOurs {
        problem,
        owner: st.st_uid,
    };
    match file_type(&st) {
        SFlag::S_IFDIR => {}
        SFlag::S_IFLNK => {
            return Err(not_ours(format!(
                "a symbolic link (owned by uid {}), not a directory",
                st.st_uid
            )));
        }
        _ => {
            return Err(not_ours(format!(
                "not a directory (owned by uid {})",
                st.st_uid
            )));
        }
    }
    if st.st_uid != uid {
        return Err(not_ours(format!(
            "owned by uid {}, not by us (uid {uid})",
            st.st_uid
        )));
    }
    // Permission bits only: setgid is inherited from a setgid parent and harmless.
    let mode = st.st_mode & 0o777;
    if !created && mode != 0o700 {
        let problem = if mode & 0o077 != 0 {
            format!("mode {mode:o} lets other users in; expected 0700")
        } else {
            format!("mode {mode:o}; expected 0700")
        };
        return Err(not_ours(problem));
    }
    let fd = nix::fcntl::openat(parent, name, dir_flags(OFlag::O_RDONLY), Mode::empty())
        .map_err(|e| Refusal::Failed(format!("cannot open: {e}")))?;
    let now =
        nix::sys::stat::fstat(&fd).map_err(|e| Refusal::Failed(format!("cannot stat: {e}")))?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(Refusal::Failed(
            "replaced while it was being checked".to_owned(),
        ));
    }
    if created {
        nix::sys::stat::fchmod(&fd, Mode::S_IRWXU)
            .map_err(|e| Refusal::Failed(format!("cannot set mode 0700: {e}")))?;
    }
    Ok(fd)
}

/// Make a fresh private directory `<name>-XXXXXXXX` in `base` (already checked and open
/// as `base_fd`). `mkdir` is atomic and never reuses or follows an existing entry, so
/// nobody can have prepared it; the name is unpredictable so that nobody can block it
/// either (a name that exists is simply skipped).
fn make_fallback(
    base_fd: BorrowedFd<'_>,
    base: &Path,
    name: &OsStr,
    uid: u32,
) -> Result<(PathBuf, OwnedFd), String> {
    const ATTEMPTS: usize = 64;
    for _ in 0..ATTEMPTS {
        let mut candidate = name.to_owned();
        candidate.push("-");
        candidate.push(random_suffix());
        match nix::sys::stat::mkdirat(base_fd, candidate.as_os_str(), Mode::S_IRWXU) {
            Ok(()) => {
                let fd = check_private(base_fd, &candidate, uid, true).map_err(|r| {
                    format!(
                        "the fallback directory {}: {}",
                        base.join(&candidate).display(),
                        r.reason()
                    )
                })?;
                return Ok((base.join(candidate), fd));
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => {
                return Err(format!(
                    "not a private directory of ours, and no fallback directory can be made in \
                     {}: {e}",
                    base.display()
                ));
            }
        }
    }
    Err(format!(
        "not a private directory of ours, and {ATTEMPTS} fallback names in {} were all taken",
        base.display()
    ))
}

const SUFFIX_LEN: usize = 8;

/// Eight characters from `[a-z0-9]` nobody can predict: `RandomState` is keyed from the
/// operating system's random source. The name needs to be unguessable, not secret.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
    (0..SUFFIX_LEN)
        .map(|_| {
            let c = ALPHABET[(x % 36) as usize];
            x /= 36;
            char::from(c)
        })
        .collect()
}

/// Whether `file` is a fallback name made from `name`.
fn is_fallback_name(file: &OsStr, name: &OsStr) -> bool {
    let (Some(file), Some(name)) = (file.to_str(), name.to_str()) else {
        return false;
    };
    file.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|s| s.len() == SUFFIX_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Sweep fallback directories of roots that died before their end (killed): in each
/// private directory of ours named `<name>-XXXXXXXX` in `base` (other than `current`),
/// remove the trees of dead roots, then the directory if that emptied it. One with no
/// stale tree is left alone (its root may have made it and not yet its tree). `base`
/// passed the ancestor checks, so nobody else can swap these entries.
fn remove_stale_fallbacks(base: &Path, name: &OsStr, uid: u32, current: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        if !is_fallback_name(&e.file_name(), name) {
            continue;
        }
        let dir = e.path();
        if dir == current {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o777 != 0o700 {
            continue;
        }
        // An error is a directory still in use (a live root's tree, something else):
        // it is kept.
        if remove_stale_trees(&dir) > 0 && fs::remove_dir(&dir).is_ok() {
            tracing::debug!(dir = %dir.display(), "removed a dead root's fallback directory");
        }
    }
}

/// `O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC` with `extra`: a directory, never through a
/// symlink at the last component.
fn dir_flags(extra: OFlag) -> OFlag {
    extra | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The status of `name` in `dir` itself (a symlink is not followed).
fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<FileStat> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// The components of `path` to walk: names and `..` (`/` and `.` need no step).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// `BROOD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/brood`, else `/tmp/brood-<uid>` — unless
/// `/tmp` is on disk and `/dev/shm` is in memory, then `/dev/shm/brood-<uid>`.
///
/// Every actor creates and removes a socket file: on a journalling disk filesystem that
/// costs ~150 µs per actor here (measured on ext4), in memory a few microseconds. The
/// directory is private (0700) wherever it is. This is the expected location: when
/// another user has taken it, roots use a fresh directory beside it (see the crate docs).
pub fn default_runtime_dir() -> PathBuf {
    default_location().path()
}

/// The location of [`default_runtime_dir`]: explicit when `BROOD_RUNTIME_DIR` names it.
fn default_location() -> Location {
    if let Some(d) = std::env::var_os(RUNTIME_DIR_ENV).filter(|d| !d.is_empty()) {
        return Location::Explicit(PathBuf::from(d));
    }
    // The XDG spec: a relative value is to be ignored.
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_absolute()) {
        return Location::Default {
            base: PathBuf::from(d),
            name: "brood".to_owned(),
        };
    }
    let base = if !in_memory(Path::new("/tmp")) && in_memory(Path::new("/dev/shm")) {
        "/dev/shm"
    } else {
        "/tmp"
    };
    Location::Default {
        base: PathBuf::from(base),
        name: format!("brood-{}", nix::unistd::geteuid()),
    }
}

/// Whether `path` lives on a tmpfs.
fn in_memory(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

fn dir_error(dir: &Path, reason: impl Into<String>) -> TransportError {
    TransportError::RuntimeDir {
        path: dir.display().to_string(),
        reason: reason.into(),
    }
}

fn socket_path(addr: &Addr) -> Result<PathBuf, TransportError> {
    if addr.transport() != KEY {
        return Err(TransportError::BadAddr {
            addr: addr.to_string(),
            reason: format!("not a {KEY} address"),
        });
    }
    let p = PathBuf::from(addr.endpoint());
    if !p.is_absolute() {
        return Err(TransportError::BadAddr {
            addr: addr.to_string(),
            reason: "socket path is not absolute".to_owned(),
        });
    }
    Ok(p)
}

fn make_addr(path: &Path) -> Result<Addr, TransportError> {
    let s = path.to_str().ok_or_else(|| TransportError::BadAddr {
        addr: path.display().to_string(),
        reason: "socket path is not UTF-8".to_owned(),
    })?;
    if s.len() > MAX_PATH {
        return Err(TransportError::BadAddr {
            addr: s.to_owned(),
            reason: format!(
                "socket path is {} bytes, the kernel takes at most {MAX_PATH}; use a shorter runtime directory",
                s.len()
            ),
        });
    }
    Ok(Addr::new(KEY, s))
}

/// Remove tree directories whose root process no longer exists; how many were removed.
fn remove_stale_trees(dir: &Path) -> usize {
    let mut removed = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix('t'))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) => true,
            Err(nix::errno::Errno::ESRCH) => false,
            Err(_) => true,
        };
        if !alive {
            tracing::debug!(tree = %e.path().display(), "removing a stale tree directory");
            if remove_tree_dir(&e.path()) {
                removed += 1;
            }
        }
    }
    removed
}

/// Unlink the sockets in a tree directory, then the directory. Foreign files are left
/// (and keep the directory). Whether the directory is gone.
fn remove_tree_dir(tree: &Path) -> bool {
    if let Ok(entries) = fs::read_dir(tree) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".sock") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    match fs::remove_dir(tree) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(tree = %tree.display(), error = %e, "tree directory not removed");
            false
        }
    }
}

fn our_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Ask for a send buffer of `bytes` (the kernel caps it at `net.core.wmem_max`). A Unix
/// stream socket queues what a peer has not read yet against the *sender's* buffer, so a
/// larger one lets a bulk frame go out in fewer, larger copies with fewer wake-ups. Best
/// effort: failing to enlarge it only costs throughput.
fn size_send_buffer(stream: &UnixStream, bytes: usize) {
    if bytes == 0 {
        return;
    }
    if let Err(e) = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::SndBuf, &bytes)
    {
        tracing::debug!(error = %e, "cannot enlarge the socket's send buffer");
    }
}

fn check_peer(stream: &UnixStream) -> Result<PeerInfo, TransportError> {
    let cred = stream
        .peer_cred()
        .map_err(|e| TransportError::io("reading the peer's credentials", e))?;
    let info = PeerInfo {
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
        uid: Some(cred.uid()),
    };
    if cred.uid() != our_uid() {
        return Err(TransportError::PeerRefused {
            peer_uid: cred.uid(),
            our_uid: our_uid(),
        });
    }
    Ok(info)
}

#[async_trait]
impl Transport for UdsTransport {
    fn key(&self) -> &'static str {
        KEY
    }

    fn address_for(&self, id: &ActorId, near: Option<&Addr>) -> Result<Addr, TransportError> {
        let file = format!("{:016x}.sock", id.uid());
        let tree = match near {
            Some(parent) => {
                let p = socket_path(parent)?;
                p.parent()
                    .map(Path::to_path_buf)
                    .ok_or_else(|| TransportError::BadAddr {
                        addr: parent.to_string(),
                        reason: "socket path has no directory".to_owned(),
                    })?
            }
            None => return self.root_address(&file, id),
        };
        make_addr(&tree.join(file))
    }

    async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError> {
        let path = socket_path(addr)?;
        if fs::symlink_metadata(&path).is_ok() {
            // A socket file is left over: reuse the name only if nobody listens there.
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(_) => {
                    return Err(TransportError::io(
                        format!("binding {}", path.display()),
                        io::Error::from(io::ErrorKind::AddrInUse),
                    ));
                }
                Err(_) => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let std_listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| TransportError::io(format!("binding {}", path.display()), e))?;
        // No chmod: the socket sits in a 0700 directory checked above (every actor pays
        // for a chmod at start-up, and the directory already keeps others out).
        let guard = Unlink(path.clone());
        std_listener
            .set_nonblocking(true)
            .map_err(|e| TransportError::io("setting the listener non-blocking", e))?;
        let listener = tokio::net::UnixListener::from_std(std_listener)
            .map_err(|e| TransportError::io("registering the listener", e))?;
        Ok(Box::new(UdsListener {
            listener,
            addr: addr.clone(),
            _unlink: guard,
            max_frame: self.max_frame,
            send_buffer: self.send_buffer,
        }))
    }

    async fn connect(&self, addr: &Addr) -> Result<Box<dyn Channel>, TransportError> {
        let path = socket_path(addr)?;
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| TransportError::io(format!("connecting to {}", path.display()), e))?;
        let peer = check_peer(&stream)?;
        size_send_buffer(&stream, self.send_buffer);
        Ok(Box::new(UdsChannel {
            stream,
            peer,
            max_frame: self.max_frame,
        }))
    }

    fn cleanup(&self, addr: &Addr) {
        if let Ok(path) = socket_path(addr)
            && let Ok(meta) = fs::symlink_metadata(&path)
            && std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
        {
            let _ = fs::remove_file(&path);
        }
    }

    fn cleanup_tree(&self, root: &Addr) {
        let Ok(path) = socket_path(root) else {
            return;
        };
        let Some(tree) = path.parent() else {
            return;
        };
        remove_tree_dir(tree);
        let made_here = self
            .fallback_trees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tree);
        if made_here && let Some(dir) = tree.parent() {
            remove_fallback_dir(dir);
        }
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl UdsTransport {
    /// The address of a new root: a tree directory in the (checked) runtime directory.
    fn root_address(&self, file: &str, id: &ActorId) -> Result<Addr, TransportError> {
        let rd = self.resolve()?;
        if !rd.fallback {
            remove_stale_trees(&rd.path);
        }
        let name = format!("t{}-{:08x}", std::process::id(), id.uid() as u32);
        let tree = rd.path.join(&name);
        let made = make_addr(&tree.join(file)).and_then(|addr| {
            open_private(rd.dir.as_fd(), OsStr::new(&name), our_uid())
                .map_err(|r| dir_error(&tree, r.reason()))?;
            Ok(addr)
        });
        if rd.fallback {
            match &made {
                Ok(_) => {
                    self.fallback_trees
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(tree);
                }
                // No tree will end to remove it: remove the fresh directory now.
                Err(_) => {
                    let _ = fs::remove_dir(&tree);
                    remove_fallback_dir(&rd.path);
                }
            }
        }
        made
    }
}

/// Remove a fallback directory this transport made, if its tree emptied it.
fn remove_fallback_dir(dir: &Path) {
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "fallback runtime directory not removed");
        }
    }
}

/// Removes a socket file when dropped.
#[derive(Debug)]
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A listening Unix socket; unlinks its file when dropped.
#[derive(Debug)]
pub struct UdsListener {
    listener: tokio::net::UnixListener,
    addr: Addr,
    _unlink: Unlink,
    max_frame: usize,
    send_buffer: usize,
}

#[async_trait]
impl Listener for UdsListener {
    fn local_addr(&self) -> &Addr {
        &self.addr
    }

    async fn accept(&mut self) -> Result<Box<dyn Channel>, TransportError> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| TransportError::io("accepting", e))?;
        let peer = check_peer(&stream)?;
        size_send_buffer(&stream, self.send_buffer);
        Ok(Box::new(UdsChannel {
            stream,
            peer,
            max_frame: self.max_frame,
        }))
    }
}

/// One connected Unix stream socket.
#[derive(Debug)]
pub struct UdsChannel {
    stream: UnixStream,
    peer: PeerInfo,
    max_frame: usize,
}

impl Channel for UdsChannel {
    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSink>, Box<dyn FrameSource>) {
        let (r, w) = self.stream.into_split();
        (
            Box::new(UdsSink(FrameWriter::new(w, self.max_frame))),
            Box::new(UdsSource(FrameReader::new(r, self.max_frame))),
        )
    }
}

struct UdsSink(FrameWriter<OwnedWriteHalf>);

#[async_trait]
impl FrameSink for UdsSink {
    fn feed(&mut self, frame: &Frame) -> Result<(), ChannelError> {
        Ok(self.0.feed(frame)?)
    }

    async fn flush(&mut self) -> Result<(), ChannelError> {
        Ok(self.0.flush().await?)
    }

    async fn close(&mut self) -> Result<(), ChannelError> {
        match self.0.shutdown().await {
            Ok(()) => Ok(()),
            // The peer is already gone: nothing is left to close.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

struct UdsSource(FrameReader<OwnedReadHalf>);

#[async_trait]
impl FrameSource for UdsSource {
    async fn recv(&mut self) -> Result<Option<Frame>, ChannelError> {
        self.0.read_frame().await
    }
}

#[cfg(test)]
mod tests;
