//! What the benches that write files beside criterion's results share: where that
//! directory is, and a process's unique memory.

use std::io;
use std::path::{Path, PathBuf};

/// The unique set size of process `pid`, in bytes.
pub(crate) fn uss(pid: u32) -> io::Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path)?;
    let mut kib = 0u64;
    let mut fields = 0;
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("Private_Clean:")
            .or_else(|| line.strip_prefix("Private_Dirty:"))
        else {
            continue;
        };
        let value = rest.trim().trim_end_matches("kB").trim();
        kib += value.parse::<u64>().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path}: bad value {value:?}: {e}"),
            )
        })?;
        fields += 1;
    }
    if fields != 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: no Private_Clean and Private_Dirty lines"),
        ));
    }
    Ok(kib * 1024)
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The cargo target directory this bench was built into: the ancestor of the
/// executable (`<target>[/<triple>]/<profile>/deps/footprint-<hash>`) that holds the
/// `CACHEDIR.TAG` cargo writes at the root of every target directory.
fn target_dir_of_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// `CARGO_TARGET_DIR` if set (a relative one is cargo's, resolved from where cargo ran,
/// which the executable's location tells best), else the executable's target dir.
fn target_dir() -> PathBuf {
    match env_dir("CARGO_TARGET_DIR") {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => target_dir_of_exe().unwrap_or_else(|| {
            std::env::current_dir()
                .map(|cwd| cwd.join(&dir))
                .unwrap_or(dir)
        }),
        None => target_dir_of_exe().unwrap_or_else(|| PathBuf::from("target")),
    }
}

/// Criterion's directory: `CRITERION_HOME`, else `<target dir>/criterion`.
pub(crate) fn criterion_dir() -> PathBuf {
    env_dir("CRITERION_HOME").unwrap_or_else(|| target_dir().join("criterion"))
}
