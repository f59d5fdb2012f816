//! A cgroup v2 per sandboxed actor, for [`Limits::cgroup`](runtime_vars::sandbox::Limits::cgroup).
//!
//! Made below the cgroup the process runs in, before any namespace is entered; the actor
//! joins it first thing after the fork (so the keeper stays out of it), and the keeper
//! removes it once the actor and its whole pid namespace are gone.

use std::fs;
use std::path::{Path, PathBuf};

/// A cgroup made for one actor.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
}

/// Where the cgroup v2 hierarchy is mounted (`/proc/self/mountinfo`).
fn mount_point() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// This process's cgroup v2 directory.
fn own_dir() -> Result<PathBuf, String> {
    let root = mount_point().ok_or("no cgroup v2 hierarchy is mounted")?;
    let own =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2")?;
    Ok(root.join(rel.trim_start_matches('/')))
}

impl Cgroup {
    /// Make a cgroup for an actor below this process's own, with `memory.max` and
    /// `pids.max` set when given.
    ///
    /// # Errors
    /// Why not: no cgroup v2, a controller not enabled for children of this cgroup, a
    /// directory not writable.
    pub(crate) fn create(memory: Option<u64>, tasks: Option<u64>) -> Result<Cgroup, String> {
        let parent = own_dir()?;
        let enabled = fs::read_to_string(parent.join("cgroup.subtree_control"))
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        for (want, controller) in [(memory.is_some(), "memory"), (tasks.is_some(), "pids")] {
            if want && !enabled.split_whitespace().any(|c| c == controller) {
                return Err(format!(
                    "the {controller} controller is not enabled for the children of {} (its \
                     cgroup.subtree_control is {:?})",
                    parent.display(),
                    enabled.trim()
                ));
            }
        }
        let dir = parent.join(format!("brood-{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cgroup = Cgroup { dir };
        if let Some(bytes) = memory {
            cgroup.write("memory.max", &bytes.to_string())?;
            // Past the limit the kernel kills rather than swaps.
            let _ = cgroup.write("memory.swap.max", "0");
        }
        if let Some(n) = tasks {
            cgroup.write("pids.max", &n.to_string())?;
        }
        Ok(cgroup)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|e| format!("writing {value} to {}: {e}", path.display()))
    }

    /// Move the calling process into the cgroup.
    pub(crate) fn join(&self) -> Result<(), String> {
        self.write("cgroup.procs", "0")
    }

    /// Where it is.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Remove it (it must be empty).
    pub(crate) fn remove(self) {
        let _ = fs::remove_dir(&self.dir);
    }
}
