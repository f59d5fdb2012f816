//! The peers of `shm_peers`: the processes on the other side of the ipc-channel and
//! iceoryx2 rows, and what their rows share.
//!
//! A peer is this bench program started again (`std::env::current_exe`) with
//! [`ROLE_ENV`] naming its role and the rest of what it needs as arguments; `main` calls
//! [`enter`] before anything else, so a peer never builds a brood or runs criterion. It
//! pins itself to the child CPU, as brood's children are pinned, and dies with the bench
//! (`PR_SET_PDEATHSIG`).

pub(crate) mod iox;
pub(crate) mod ipc;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable naming a peer's role; unset in the bench itself.
pub(crate) const ROLE_ENV: &str = "BROOD_PEER_BENCH";

/// The CPU a peer pins itself to.
const CPU_ENV: &str = "BROOD_PEER_CPU";

/// (parameter, message size in bytes, messages per iteration): `shm`'s stream sizes.
pub(crate) const SIZES: [(&str, u64, u64); 3] = [
    ("64B", 64, 20_000),
    ("64KiB", 64 << 10, 2_000),
    ("1MiB", 1 << 20, 200),
];

/// The control message that ends a peer.
pub(crate) const STOP: u64 = u64::MAX;

/// If this process was started as a peer, play its role and exit; otherwise return.
pub(crate) fn enter() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    // The bench waits for its peers; a peer whose bench is gone (killed, say) must not
    // spin on forever.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if let Some(cpu) = std::env::var(CPU_ENV).ok().and_then(|c| c.parse().ok()) {
        super::common::pin(cpu);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match role.as_str() {
        ipc::RPC => ipc::rpc_peer(&args),
        ipc::BYTES => ipc::bytes_peer(&args),
        ipc::SHMEM => ipc::shmem_peer(&args),
        iox::REQRES => iox::reqres_peer(&args),
        iox::PUBSUB_RPC => iox::pubsub_rpc_peer(&args),
        iox::PUBSUB_STREAM => iox::pubsub_stream_peer(&args),
        other => panic!("{ROLE_ENV}={other}: no such peer role"),
    }
    std::process::exit(0);
}

/// A running peer process: killed and reaped if dropped before [`Peer::finish`] (a
/// panicking bench leaves no process behind).
pub(crate) struct Peer {
    child: Option<Child>,
}

impl Peer {
    /// Start this program again as the peer `role` with `args`, on the child CPU.
    pub(crate) fn spawn(role: &str, args: &[&str]) -> Peer {
        let exe = std::env::current_exe().expect("the bench's own path");
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, role).args(args).stdin(Stdio::null());
        if let Some((_, cpu)) = super::common::cpus() {
            cmd.env(CPU_ENV, cpu.to_string());
        }
        let child = super::common::spawning_on_child_cpu(|| cmd.spawn())
            .unwrap_or_else(|e| panic!("cannot start peer {role}: {e}"));
        Peer { child: Some(child) }
    }

    /// Wait for the peer to exit (it has been told to) and check that it succeeded.
    pub(crate) fn finish(mut self) {
        let mut child = self.child.take().expect("peer already finished");
        let status = child.wait().expect("waiting for a peer");
        assert!(status.success(), "peer ended with {status}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Busy-poll `poll` until it yields, with `spin_loop` between polls. Panics after 30 s
/// without an answer (a lost message or a dead peer), rather than hanging the bench.
pub(crate) fn spin_until<T>(mut poll: impl FnMut() -> Option<T>) -> T {
    let mut polls = 0u32;
    let mut since: Option<Instant> = None;
    loop {
        if let Some(v) = poll() {
            return v;
        }
        std::hint::spin_loop();
        polls = polls.wrapping_add(1);
        // The clock is read once every 64 Ki polls only, to keep it off the hot path.
        if polls.is_multiple_of(1 << 16) {
            let since = *since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "no message for 30 s"
            );
        }
    }
}

/// Read a received message the way a receiver that looks at it at least must: one byte
/// of every 4 KiB page, and the last. A zero-copy receiver (a shared mapping) thereby
/// faults its pages in, but copies nothing.
pub(crate) fn touch(bytes: &[u8]) -> u64 {
    let pages: u64 = bytes.iter().step_by(4096).map(|&b| u64::from(b)).sum();
    pages + bytes.last().map_or(0, |&b| u64::from(b))
}

/// The message a streaming peer sends, `size` bytes (made once, sent many times).
pub(crate) fn blob(size: &str) -> Vec<u8> {
    vec![0xa5u8; size.parse().expect("message size")]
}
