//! Group `stream`: a child actor streams fixed-size blobs to its parent over the uds
//! transport, next to the floor: a forked process writing the same bytes into a
//! socketpair (its send buffer as large as brood's), one `write` per message, while the
//! parent reads them in 1 MiB chunks.
//!
//! Beside them, the peer a Rust program would otherwise reach for, in the same run and
//! on the same sizes: ipc-channel between two processes, its byte channel
//! (`peer-ipc-channel-bytes`) and its shared-memory transfer (`peer-ipc-channel-shmem`,
//! one `IpcSharedMemory` per message).
//!
//! brood's rows: `brood-uds` (the root on a current-thread runtime), `brood-uds-mt` (on a
//! two-worker runtime, run by `block_on` as `#[tokio::main]` runs its body: not on a
//! worker) and `brood-uds-mt-task` (the same runtime, the root's future spawned as a
//! task, so on a worker).
//!
//! Throughput is declared in messages, so criterion reports messages per second.

mod common;
#[allow(dead_code)]
mod peers;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use brood::Brood;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use tokio::runtime::Runtime;

/// (parameter, message size in bytes, messages per iteration).
const SIZES: [(&str, u64, u64); 3] = [
    ("64B", 64, 20_000),
    ("64KiB", 64 << 10, 2_000),
    ("1MiB", 1 << 20, 200),
];

/// The floor's read buffer.
const READ_BUF: usize = 1 << 20;

/// `iters` transfers of `n` messages of `size` bytes from a forked writer. Each
/// iteration forks its writer untimed; the writer waits for a one-byte "go", so only
/// the transfer itself is timed.
fn floor_transfers(iters: u64, size: u64, n: u64) -> Duration {
    // Prepared before any fork: the writer may not allocate.
    let message = vec![0xa5u8; usize::try_from(size).expect("message size")];
    let mut buf = vec![0u8; READ_BUF];
    let expected = size * n;
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (ours, theirs) = common::socketpair();
        // The writer's send buffer as large as brood's: the floor is the best a raw
        // socket does, not its default.
        nix::sys::socket::setsockopt(
            &theirs,
            nix::sys::socket::sockopt::SndBuf,
            &brood::uds::DEFAULT_SEND_BUFFER,
        )
        .expect("the floor's send buffer");
        let (our_fd, their_fd) = (ours.as_raw_fd(), theirs.as_fd());
        let msg: &[u8] = &message;
        // SAFETY: the child only closes, reads and writes raw descriptors, into a stack
        // byte and from memory allocated before the fork: all async-signal-safe.
        let pid = common::spawning_on_child_cpu(|| unsafe {
            common::fork_child(|| {
                common::raw_close(our_fd);
                let mut go = [0u8; 1];
                if !common::raw_read_exact(their_fd, &mut go) {
                    return 1;
                }
                for _ in 0..n {
                    if !common::raw_write_all(their_fd, msg) {
                        return 2;
                    }
                }
                0
            })
        });
        drop(theirs);
        let mut sock = ours;
        sock.write_all(&[1]).expect("floor go");
        let start = Instant::now();
        let mut got = 0u64;
        while got < expected {
            let r = sock.read(&mut buf).expect("floor read");
            assert!(r > 0, "floor writer ended after {got} of {expected} bytes");
            got += r as u64;
        }
        total += start.elapsed();
        drop(sock);
        common::reap(pid);
    }
    total
}

fn bench_size(
    group: &mut BenchmarkGroup<'_, WallTime>,
    (actors, rt, rt_mt): (&Brood, &Runtime, &Runtime),
    (label, size, n): (&str, u64, u64),
) {
    group.throughput(Throughput::Elements(n));
    group.bench_function(BenchmarkId::new("brood-uds", label), |b| {
        b.iter_custom(|iters| common::stream_blobs(rt, actors, None, iters, (size, n)))
    });
    // Informational: the root on a two-worker runtime.
    group.bench_function(BenchmarkId::new("brood-uds-mt", label), |b| {
        b.iter_custom(|iters| common::stream_blobs(rt_mt, actors, None, iters, (size, n)))
    });
    // The same, the root's future spawned on a worker (`tokio::spawn`) rather than run by
    // `block_on` on the calling thread, as `#[tokio::main]` runs its body.
    group.bench_function(BenchmarkId::new("brood-uds-mt-task", label), |b| {
        b.iter_custom(|iters| common::stream_blobs_in_task(rt_mt, actors, iters, (size, n)))
    });
    group.bench_function(BenchmarkId::new("floor-uds", label), |b| {
        b.iter_custom(|iters| floor_transfers(iters, size, n))
    });
    group.bench_function(BenchmarkId::new("peer-ipc-channel-bytes", label), |b| {
        b.iter_custom(|iters| peers::ipc::bytes_stream(iters, (size, n)))
    });
    group.bench_function(BenchmarkId::new("peer-ipc-channel-shmem", label), |b| {
        b.iter_custom(|iters| peers::ipc::shmem_stream(iters, (size, n)))
    });
}

fn main() {
    // A peer process plays its role and exits here, before anything of brood.
    peers::enter();
    let actors = common::enter();
    // Before the runtimes exist: their threads inherit the pin.
    common::pin_parent();
    let rt = common::current_thread_rt();
    let rt_mt = common::multi_thread_rt(2);
    let mut c = Criterion::default().configure_from_args();

    let mut group = c.benchmark_group("stream");
    // Every iteration moves many messages (tens of ms): equal iterations per sample.
    group.sampling_mode(SamplingMode::Flat);
    for (label, size, n) in SIZES {
        if size >= 64 << 10 {
            // 128-200 MiB per iteration: fewer samples keep a size under a minute.
            group.sample_size(10);
        }
        bench_size(&mut group, (&actors, &rt, &rt_mt), (label, size, n));
    }
    group.finish();

    c.final_summary();
}
