//! The read-only view of the filesystem, built inside the actor's own mount namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use runtime_vars::sandbox::Piece;

use crate::sys;

type Failed = (Piece, String);

/// Directories private to the actor: an empty tmpfs each.
const PRIVATE: [&str; 2] = ["/tmp", "/dev/shm"];

/// Build the view: everything read-only, private `/tmp` and `/dev/shm`, `keep` and
/// `writable` bound writable over themselves, `hidden` covered, and with `proc`, `/proc`
/// mounted for this process's pid namespace. Runs in a new mount namespace whose
/// user namespace gives this process `CAP_SYS_ADMIN`.
///
/// A failure about one of the caller's own paths (`writable`, `hidden`) is pushed to
/// `refused` and the rest goes on; any other failure ends the view there.
pub(crate) fn read_only_view(
    keep: &[PathBuf],
    writable: &[PathBuf],
    hidden: &[PathBuf],
    proc: bool,
    refused: &mut Vec<Failed>,
) -> Result<Vec<(Piece, String)>, Failed> {
    let mount_err = |what: &str, e: nix::Error| (Piece::MountNamespace, format!("{what}: {e}"));
    // Nothing mounted here reaches the host's namespace, nor the other way round.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| mount_err("making / private", e))?;
    // Held before anything is mounted over them (a runtime directory under /tmp
    // disappears below the private /tmp).
    let mut binds = Vec::new();
    for (path, piece) in keep
        .iter()
        .map(|p| (p, Piece::MountNamespace))
        .chain(writable.iter().map(|p| (p, Piece::Path)))
    {
        let dir = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| (piece, format!("{}: {e}", path.display())));
        match dir {
            Ok(dir) => binds.push((dir, path.clone(), piece)),
            Err(e) if piece == Piece::Path => refused.push(e),
            Err(e) => return Err(e),
        }
    }
    sys::set_read_only(Path::new("/"), true, true)
        .map_err(|e| (Piece::MountNamespace, format!("making / read-only: {e}")))?;
    let mut done = vec![(
        Piece::MountNamespace,
        "the host's filesystem read-only".into(),
    )];
    for dir in PRIVATE {
        if !Path::new(dir).is_dir() {
            continue;
        }
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        )
        .map_err(|e| mount_err(&format!("a private {dir}"), e))?;
        done.push((Piece::MountNamespace, format!("{dir} private")));
    }
    for (dir, path, piece) in &binds {
        match bind_writable(dir, path) {
            Ok(()) => done.push((*piece, format!("{} writable", path.display()))),
            Err(e) if *piece == Piece::Path => refused.push((*piece, e)),
            Err(e) => return Err((*piece, e)),
        }
    }
    drop(binds);
    for path in hidden {
        if !path.exists() {
            done.push((
                Piece::Path,
                format!("{} absent (nothing to hide)", path.display()),
            ));
            continue;
        }
        let (source, fstype, flags) = if path.is_dir() {
            (
                "tmpfs",
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            )
        } else {
            ("/dev/null", None, MsFlags::MS_BIND)
        };
        let hid = mount(Some(source), path, fstype, flags, None::<&str>)
            .map_err(std::io::Error::from)
            .and_then(|()| match fstype {
                None => sys::set_read_only(path, true, false),
                Some(_) => Ok(()),
            });
        match hid {
            Ok(()) => done.push((Piece::Path, format!("{} hidden", path.display()))),
            Err(e) => refused.push((Piece::Path, format!("hiding {}: {e}", path.display()))),
        }
    }
    if proc {
        mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| (Piece::Proc, format!("mounting /proc: {e}")))?;
        done.push((Piece::Proc, "/proc shows this pid namespace".into()));
    }
    Ok(done)
}

/// Bind `path` (held open as `dir`) writable over itself, making its mount point first if
/// it lies under a private directory.
fn bind_writable(dir: &File, path: &Path) -> Result<(), String> {
    if !path.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let source = format!("/proc/self/fd/{}", dir.as_raw_fd());
    mount(
        Some(source.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("binding {}: {e}", path.display()))?;
    sys::set_read_only(path, false, false)
        .map_err(|e| format!("making {} writable: {e}", path.display()))
}
