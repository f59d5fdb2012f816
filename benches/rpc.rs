//! Group `rpc`: one request/reply round trip to a child actor over the uds transport,
//! next to the floor: 64 bytes each way between two processes over a socketpair.

mod common;

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

fn main() {
    let actors = common::enter();
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
    group.finish();

    c.final_summary();
}
