//! Group `rpc`: one request/reply round trip to a child actor over the uds transport,
//! next to the floor: 64 bytes each way between two processes over a socketpair; and
//! beside them the peers, in the same run: ipc-channel (`peer-ipc-channel`: an 8-byte
//! request and reply over two byte channels to a running process) and procspawn
//! (`peer-procspawn-pool`: a call into a one-process `Pool`, its result back).

mod common;
#[allow(dead_code)]
mod peers;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use criterion::Criterion;

/// Size of the floor's request and reply.
const MSG: usize = 64;

/// `iters` round trips of `MSG` bytes with a forked echo child over a socketpair. The
/// child is set up before and reaped after the timed loop.
fn socketpair_round_trips(iters: u64) -> Duration {
    let (ours, theirs) = common::socketpair();
    let (our_fd, their_fd) = (ours.as_raw_fd(), theirs.as_fd());
    // SAFETY: the child only closes, reads and writes raw descriptors into a stack
    // buffer: all async-signal-safe.
    let pid = common::spawning_on_child_cpu(|| unsafe {
        common::fork_child(|| {
            // Close the parent's end, so that the parent closing its copy is our EOF.
            common::raw_close(our_fd);
            let mut buf = [0u8; MSG];
            while common::raw_read_exact(their_fd, &mut buf) {
                if !common::raw_write_all(their_fd, &buf) {
                    return 1;
                }
            }
            0
        })
    });
    drop(theirs);
    let mut sock = ours;
    let request = [0x5au8; MSG];
    let mut reply = [0u8; MSG];
    let start = Instant::now();
    for _ in 0..iters {
        sock.write_all(&request).expect("floor write");
        sock.read_exact(&mut reply).expect("floor read");
    }
    let elapsed = start.elapsed();
    drop(sock);
    common::reap(pid);
    elapsed
}

/// `iters` calls into a procspawn pool of one process (started before timing).
fn procspawn_pool_calls(iters: u64) -> Duration {
    // Its process on the child CPU, as brood's children and the floor's are.
    let pool = common::spawning_on_child_cpu(|| procspawn::Pool::new(1)).expect("a procspawn pool");
    pool.spawn((), |()| 0u64).join().expect("warm-up call");
    let start = Instant::now();
    for i in 0..iters {
        let got = pool.spawn(i, |i| i + 1).join().expect("pool call");
        assert_eq!(got, i + 1);
    }
    let elapsed = start.elapsed();
    pool.kill();
    elapsed
}

fn main() {
    // A peer process plays its role and exits here, before anything of brood.
    peers::enter();
    let actors = common::enter();
    // A procspawn child runs its function here and exits.
    procspawn::init();
    // Before the runtimes exist: their threads inherit the pin.
    common::pin_parent();
    let rt = common::current_thread_rt();
    let rt_mt = common::multi_thread_rt(2);
    let mut c = Criterion::default().configure_from_args();

    let mut group = c.benchmark_group("rpc");
    group.bench_function("brood-uds", |b| {
        b.iter_custom(|iters| common::ping_round_trips(&rt, &actors, None, iters))
    });
    // Informational: the same round trip with the root on a two-worker runtime.
    group.bench_function("brood-uds-mt", |b| {
        b.iter_custom(|iters| common::ping_round_trips(&rt_mt, &actors, None, iters))
    });
    group.bench_function("floor-socketpair", |b| {
        b.iter_custom(socketpair_round_trips)
    });
    group.bench_function("peer-ipc-channel", |b| {
        b.iter_custom(peers::ipc::rpc_round_trips)
    });
    group.bench_function("peer-procspawn-pool", |b| {
        b.iter_custom(procspawn_pool_calls)
    });
    group.finish();

    c.final_summary();
}
