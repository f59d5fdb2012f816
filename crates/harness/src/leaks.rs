//! What a test may leave behind, and how to find it: descendant processes, open file
//! descriptors, socket files, shared-memory mappings.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A process below this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: u32,
    /// Its state letter from `/proc/<pid>/stat` (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Its command name.
    pub comm: String,
}

/// Parse `/proc/<pid>/stat`: (pid, comm, state, ppid). The command name may contain
/// spaces and parentheses, so fields are read after its last `)`.
fn stat(pid: u32) -> Option<(String, char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Every live (or zombie) process descending from this one.
pub fn descendants() -> Vec<Proc> {
    let me = std::process::id();
    let mut children: HashMap<u32, Vec<(u32, String, char)>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((comm, state, ppid)) = stat(pid) {
                children.entry(ppid).or_default().push((pid, comm, state));
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![me];
    while let Some(p) = todo.pop() {
        for (pid, comm, state) in children.remove(&p).unwrap_or_default() {
            todo.push(pid);
            out.push(Proc { pid, state, comm });
        }
    }
    out
}

/// Every live (or zombie) process descending from `root`, with its parent:
/// `(pid, ppid)`.
pub fn descendants_of(root: u32) -> Vec<(u32, u32)> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((_, _, ppid)) = stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for pid in children.remove(&p).unwrap_or_default() {
            todo.push(pid);
            out.push((pid, p));
        }
    }
    out
}

/// The parent of `pid`, if it exists.
pub fn ppid(pid: u32) -> Option<u32> {
    stat(pid).map(|(_, _, ppid)| ppid)
}

/// The command name of `pid`, if it exists.
pub fn comm(pid: u32) -> Option<String> {
    stat(pid).map(|(comm, _, _)| comm)
}

/// The open descriptors of another process of ours and what they point at.
pub fn fds_of(pid: u32) -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in entries.flatten() {
            if let (Some(fd), Ok(target)) = (
                e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()),
                std::fs::read_link(e.path()),
            ) {
                out.insert(fd, target.display().to_string());
            }
        }
    }
    out
}

/// Whether `pid` is gone or a zombie (dead, only its status left).
pub fn is_dead(pid: u32) -> bool {
    stat(pid).is_none_or(|(_, state, _)| state == 'Z' || state == 'X')
}

/// Reap every exited child of this process without blocking.
pub fn reap_zombies() {
    loop {
        match nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(-1),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Wait up to `grace` for every descendant to end (reaping the ones re-parented to us);
/// returns those still alive, after killing them so they do not disturb later tests.
pub fn live_descendants_after(grace: Duration) -> Vec<Proc> {
    let deadline = Instant::now() + grace;
    loop {
        reap_zombies();
        let live: Vec<Proc> = descendants()
            .into_iter()
            .filter(|p| p.state != 'Z')
            .collect();
        if live.is_empty() {
            reap_zombies();
            return live;
        }
        if Instant::now() >= deadline {
            for p in &live {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
            reap_zombies();
            return live;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many threads this process runs.
pub fn thread_count() -> usize {
    thread_ids().len()
}

/// The names of this process's threads.
pub fn thread_names() -> Vec<String> {
    thread_ids()
        .into_iter()
        .map(|tid| thread_name(tid).unwrap_or_default())
        .collect()
}

/// The names of this process's threads that have not begun to exit: a thread the
/// kernel is still tearing down (`PF_EXITING` in its flags, set when it entered its exit
/// path: its own code, thread-local destructors included, has finished) is left out. A
/// thread that was joined can still be listed for a moment while the kernel releases it.
pub fn live_thread_names() -> Vec<String> {
    thread_ids()
        .into_iter()
        .filter(|&tid| !thread_exiting(tid))
        .map(|tid| thread_name(tid).unwrap_or_default())
        .collect()
}

/// Whether thread `tid` of this process has entered its exit (`PF_EXITING`), or is gone.
pub fn thread_exiting(tid: u32) -> bool {
    /// The kernel's `PF_EXITING` task flag.
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return true;
    };
    // After the command name (which may hold spaces and parentheses): state is the
    // first field, flags the seventh.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    rest.split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0)
}

/// Wait up to `grace` for the thread count to come back to `before`; `None` if it did,
/// else a description of the extra threads.
pub fn threads_settle(before: usize, grace: Duration) -> Option<String> {
    let deadline = Instant::now() + grace;
    loop {
        let now = thread_count();
        if now <= before {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(format!(
                "{} threads, {before} before the test: {:?}",
                now,
                thread_names()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the thread `tid` of this process has ended.
pub fn thread_gone(tid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// Whether thread `tid` of process `pid` exists (a zombie process's threads count as
/// gone).
pub fn thread_alive(pid: u32, tid: u32) -> bool {
    !is_dead(pid) && std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

/// The ids of this process's threads.
pub fn thread_ids() -> Vec<u32> {
    let Ok(d) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    d.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// The name of thread `tid` of this process (at most 15 bytes, as the kernel keeps it).
pub fn thread_name(tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// This process's open descriptors and what they point at.
pub fn open_fds() -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        for e in entries.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let target = std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            // The directory handle of this very listing.
            if target.starts_with("/proc/") && target.ends_with("/fd") {
                continue;
            }
            out.insert(fd, target);
        }
    }
    out
}

/// Descriptors open now that were not open in `before`.
pub fn new_fds(before: &BTreeMap<i32, String>) -> Vec<(i32, String)> {
    open_fds()
        .into_iter()
        .filter(|(fd, target)| before.get(fd) != Some(target))
        .collect()
}

/// The name prefix of the memory files brood's shared memory is made of, as
/// `/proc/self/maps` shows them (`/memfd:<name> (deleted)`): `ipc-shm` names each of its
/// `memfd`s starting with it.
pub const MEMFD_PREFIX: &str = "memfd:brood";

/// This process's mappings of brood's memory files ([`MEMFD_PREFIX`]), one per line of
/// `/proc/self/maps`: the address range and the file.
pub fn memfd_mappings() -> std::collections::BTreeSet<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            // address perms offset dev inode path (which may hold spaces: " (deleted)")
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let first = fields.nth(4)?;
            let path = line[line.find(first)?..].trim_end();
            let named = first
                .strip_prefix('/')
                .is_some_and(|p| p.starts_with(MEMFD_PREFIX));
            named.then(|| format!("{range} {path}"))
        })
        .collect()
}

/// Mappings of brood's memory files present now that were not in `before`.
pub fn new_memfd_mappings(before: &std::collections::BTreeSet<String>) -> Vec<String> {
    memfd_mappings().difference(before).cloned().collect()
}

/// Every file (not directory) below `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeping_child_is_a_descendant_until_it_is_killed() {
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = c.id();
        assert!(
            descendants()
                .iter()
                .any(|p| p.pid == pid && p.comm == "sleep")
        );
        assert!(!is_dead(pid));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(is_dead(pid));
        assert!(!descendants().iter().any(|p| p.pid == pid));
    }

    #[test]
    fn a_thread_is_seen_by_id_and_name_until_it_ends() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("leaks-probe".into())
            .spawn(move || {
                tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
                let _ = stop_rx.recv();
            })
            .unwrap();
        let tid = rx.recv().unwrap();
        let me = std::process::id();
        assert!(thread_ids().contains(&tid));
        assert_eq!(thread_name(tid).as_deref(), Some("leaks-probe"));
        assert!(thread_alive(me, tid) && !thread_gone(tid));
        assert!(
            !thread_exiting(tid),
            "a thread blocked in its code is not exiting"
        );
        assert!(live_thread_names().iter().any(|n| n == "leaks-probe"));
        drop(stop_tx);
        t.join().unwrap();
        // Joined: gone, or still listed while the kernel releases it, and then exiting.
        assert!(thread_exiting(tid));
        assert!(!live_thread_names().iter().any(|n| n == "leaks-probe"));
        // `join` returns once the kernel cleared the thread's id, a moment before it is
        // released.
        let deadline = Instant::now() + Duration::from_secs(2);
        while thread_ids().contains(&tid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!thread_ids().contains(&tid));
        assert!(!thread_alive(me, tid) && thread_gone(tid));
    }

    #[test]
    fn a_mapped_memfd_is_seen_until_it_is_unmapped() {
        use std::os::fd::AsRawFd;
        let before = memfd_mappings();
        let name = format!("{}-leak-probe", &MEMFD_PREFIX["memfd:".len()..]);
        let fd =
            nix::sys::memfd::memfd_create(name.as_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        // SAFETY: a fresh shared mapping of a 4096-byte file we own, nothing else aliases
        // it; it is unmapped below, and never dereferenced.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        drop(fd);
        let new = new_memfd_mappings(&before);
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(new[0].contains("/memfd:brood-leak-probe"), "{new:?}");
        // SAFETY: the mapping made above, of that length, unused since.
        assert_eq!(unsafe { libc::munmap(p, 4096) }, 0);
        assert!(new_memfd_mappings(&before).is_empty());
    }

    #[test]
    fn a_new_descriptor_is_seen() {
        let before = open_fds();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let new = new_fds(&before);
        assert_eq!(new.len(), 1, "{new:?}");
        drop(f);
        assert!(new_fds(&before).is_empty());
    }
}
