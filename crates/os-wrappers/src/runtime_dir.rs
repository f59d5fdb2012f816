//! The private runtime directory where brood's socket-based transports (`ipc-uds`,
//! `ipc-shm`) put their endpoints, and the per-tree directories below it.
//!
//! - **Where.** The directory given explicitly ([`Location::Explicit`]: a transport's
//!   `with_dir`, or `BROOD_RUNTIME_DIR`), else `$XDG_RUNTIME_DIR/brood`, else
//!   `/tmp/brood-<uid>` (`/dev/shm/brood-<uid>` when `/tmp` is on disk and `/dev/shm` in
//!   memory): see [`default_runtime_dir`].
//! - **Checked on every step.** [`resolve`] opens the directory one component at a time
//!   from `/` (`openat` with `O_NOFOLLOW`, each entry looked at with `lstat` first): every
//!   directory above it must be owned by root or us and, if others may write it, sticky; a
//!   symbolic link on the way is followed only if root or we own it; the directory itself
//!   must be a real directory of ours with mode 0700 (a missing one is created so).
//! - **Squatted defaults.** When another user took the *default* name first, a fresh
//!   private directory `<name>-XXXXXXXX` is made beside it (with a warning) and swept once
//!   its tree ends or its root died; an explicit directory is never replaced.
//! - **Trees.** [`TreeDirs`] gives each root a tree directory `t<root pid>-<tag>` that its
//!   whole tree shares, removes the trees of dead roots, and removes a tree (its `*.sock`
//!   files, then the directory) at its end.
//!
//! Errors are plain data ([`DirError`]: the directory and what is wrong with it); the
//! transports turn them into their own error type. No `unsafe` here: every call goes
//! through `nix`'s safe wrappers.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// Environment variable naming the runtime directory (for tests and sandboxes).
pub const RUNTIME_DIR_ENV: &str = "BROOD_RUNTIME_DIR";

/// A runtime directory (or a tree directory) that cannot be used: which, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirError {
    /// The directory.
    pub path: PathBuf,
    /// What is wrong with it (naming the component at fault).
    pub reason: String,
}

impl fmt::Display for DirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "runtime directory {}: {}",
            self.path.display(),
            self.reason
        )
    }
}

impl std::error::Error for DirError {}

fn dir_error(dir: &Path, reason: impl Into<String>) -> DirError {
    DirError {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

impl Location {
    /// The location the environment asks for: `BROOD_RUNTIME_DIR` (explicit), else the
    /// default (see [`default_runtime_dir`]).
    pub fn from_env() -> Location {
        default_location()
    }
}

/// The tree directories of one transport value: where roots put their trees, which
/// trees live in a fallback directory this value made (removed with the tree), and the
/// sweeping of dead roots' trees. Cheap to clone; clones share what they know. Holds no
/// process-global state.
#[derive(Clone, Debug, Default)]
pub struct TreeDirs {
    /// `None`: the default location, read from the environment when a root needs it.
    location: Option<Location>,
    /// Tree directories placed in a fallback directory made here (the default location
    /// was taken): at the tree's end that directory goes too, and only that one.
    fallback_trees: Arc<Mutex<HashSet<PathBuf>>>,
}

impl TreeDirs {
    /// Trees in the environment's location ([`Location::from_env`], read when a root
    /// needs it).
    pub fn new() -> TreeDirs {
        TreeDirs::default()
    }

    /// Trees in `loc` instead of the environment's location.
    pub fn with_location(mut self, loc: Location) -> TreeDirs {
        self.location = Some(loc);
        self
    }

    /// The location roots use (`None`: the environment's, read when needed).
    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    /// The runtime directory, created and checked (see [`resolve`]).
    ///
    /// # Errors
    /// As [`resolve`].
    pub fn resolve(&self) -> Result<Resolved, DirError> {
        let loc = self.location.clone().unwrap_or_else(default_location);
        resolve(&loc, crate::peercred::effective_uid())
    }

    /// A new root's tree directory `t<pid>-<tag>` in the (checked) runtime directory.
    /// `make` is given the tree's path first (to build and check an endpoint name in it,
    /// a path length say) and its error is returned as it is; then the directory is
    /// created private (0700) and `make`'s value returned. Trees of dead roots are
    /// removed on the way. In a fallback directory the tree is remembered, so that
    /// [`end_tree`](TreeDirs::end_tree) removes that directory too; if anything fails
    /// there, the fresh directories are removed at once.
    ///
    /// # Errors
    /// `make`'s error, or a [`DirError`] for the runtime or tree directory, turned into
    /// the caller's error type by `dir_error`.
    pub fn new_tree<T, E>(
        &self,
        tag: u32,
        make: impl FnOnce(&Path) -> Result<T, E>,
        dir_error_into: impl Fn(DirError) -> E,
    ) -> Result<T, E> {
        let rd = self.resolve().map_err(&dir_error_into)?;
        if !rd.fallback {
            remove_stale_trees(&rd.path);
        }
        let name = format!("t{}-{tag:08x}", std::process::id());
        let tree = rd.path.join(&name);
        let made = make(&tree).and_then(|v| {
            open_private(
                rd.dir.as_fd(),
                OsStr::new(&name),
                crate::peercred::effective_uid(),
            )
            .map_err(|r| dir_error_into(dir_error(&tree, r.reason())))?;
            Ok(v)
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

    /// Remove the tree directory `tree` (its `*.sock` files, then the directory; a
    /// foreign file keeps it), and the fallback directory it was in if this value made
    /// that one for it.
    pub fn end_tree(&self, tree: &Path) {
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
}

/// Where the runtime directory is to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
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
    pub fn path(&self) -> PathBuf {
        match self {
            Location::Explicit(p) => p.clone(),
            Location::Default { base, name } => base.join(name),
        }
    }
}

/// A checked runtime directory.
#[derive(Debug)]
pub struct Resolved {
    /// Absolute; sockets of trees go below it.
    pub path: PathBuf,
    /// The directory itself, opened while it was checked: trees are created from it,
    /// not by path.
    pub dir: OwnedFd,
    /// Whether this is a fresh fallback directory made because the default one was taken.
    pub fallback: bool,
}

/// The runtime directory `loc` names for user `uid`, created and checked (see the crate
/// docs for what is checked). A default location that is taken is replaced by a fresh
/// private directory beside it, with a warning; an explicit one is refused.
pub fn resolve(loc: &Location, uid: u32) -> Result<Resolved, DirError> {
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
    Location::from_env().path()
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
pub fn in_memory(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Remove tree directories whose root process no longer exists; how many were removed.
pub fn remove_stale_trees(dir: &Path) -> usize {
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
pub fn remove_tree_dir(tree: &Path) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh scratch directory (mode 0755), removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "rtdir-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn trees_are_made_private_in_an_explicit_directory_and_removed_at_their_end() {
        let tmp = Scratch::new();
        let rt = tmp.0.join("rt");
        let dirs = TreeDirs::new().with_location(Location::Explicit(rt.clone()));
        assert_eq!(dirs.location(), Some(&Location::Explicit(rt.clone())));
        assert_eq!(dirs.resolve().unwrap().path, rt);
        assert_eq!(mode(&rt), 0o700);

        let tree = dirs
            .new_tree(0xabc, |t| Ok::<_, DirError>(t.to_path_buf()), |e| e)
            .unwrap();
        assert_eq!(tree.parent(), Some(rt.as_path()));
        let name = tree.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name, format!("t{}-00000abc", std::process::id()));
        assert_eq!(mode(&tree), 0o700);
        fs::write(tree.join("1.sock"), b"").unwrap();
        dirs.end_tree(&tree);
        assert!(!tree.exists(), "sockets and the tree are removed");
        assert!(rt.exists(), "the runtime directory stays");

        // `make` refuses: its error comes back and no tree is made.
        let r: Result<(), String> = dirs.new_tree(1, |_| Err("no".into()), |e| e.reason);
        assert_eq!(r, Err("no".into()));
        assert_eq!(fs::read_dir(&rt).unwrap().count(), 0);
    }

    #[test]
    fn trees_of_dead_roots_are_swept_and_foreign_files_are_kept() {
        let tmp = Scratch::new();
        let dirs = TreeDirs::new().with_location(Location::Explicit(tmp.0.join("rt")));
        let rt = dirs.resolve().unwrap().path;
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let stale = rt.join(format!("t{dead_pid}-0000beef"));
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join("0.sock"), b"").unwrap();
        let kept = rt.join(format!("t{dead_pid}-0000cafe"));
        fs::create_dir(&kept).unwrap();
        fs::write(kept.join("notes.txt"), b"").unwrap();
        let tree = dirs
            .new_tree(2, |t| Ok::<_, DirError>(t.to_path_buf()), |e| e)
            .unwrap();
        assert!(!stale.exists(), "a dead root's tree is removed");
        assert!(
            kept.join("notes.txt").exists(),
            "a foreign file keeps its tree"
        );
        dirs.end_tree(&tree);
    }

    #[test]
    fn a_squatted_default_location_gets_a_fallback_that_goes_with_its_tree() {
        let tmp = Scratch::new();
        let name = format!("brood-{}", crate::peercred::effective_uid());
        let expected = tmp.0.join(&name);
        fs::write(&expected, b"squat").unwrap();
        let dirs = TreeDirs::new().with_location(Location::Default {
            base: tmp.0.clone(),
            name,
        });
        let tree = dirs
            .new_tree(3, |t| Ok::<_, DirError>(t.to_path_buf()), |e| e)
            .unwrap();
        let fallback = tree.parent().unwrap().to_path_buf();
        assert_ne!(fallback, expected);
        assert_eq!(fallback.parent(), Some(tmp.0.as_path()));
        assert_eq!(mode(&fallback), 0o700);
        dirs.end_tree(&tree);
        assert!(
            !fallback.exists(),
            "the fallback made for the tree is removed with it"
        );
        assert_eq!(fs::read(&expected).unwrap(), b"squat");

        // An explicit location is never replaced: a typed error names it.
        let open = tmp.0.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = resolve(
            &Location::Explicit(open.clone()),
            crate::peercred::effective_uid(),
        )
        .unwrap_err();
        assert_eq!(e.path, open);
        assert!(e.reason.contains("777"), "{e}");
        assert!(e.to_string().contains(&open.display().to_string()));
    }

    #[test]
    fn the_environment_names_the_default() {
        let loc = Location::from_env();
        assert_eq!(loc.path(), default_runtime_dir());
        assert!(loc.path().is_absolute() || std::env::var_os(RUNTIME_DIR_ENV).is_some());
    }
}
