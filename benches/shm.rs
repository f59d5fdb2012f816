//! Groups `shm-rpc` and `shm-stream`: the shared-memory transport beside the Unix-socket
//! one and beside the floors of shared memory itself (`common::shm_floor`).
//!
//! - `shm-rpc`: one 8-byte request/reply round trip to a running child: `brood-shm`,
//!   `brood-uds`, and `floor-spin` (64 bytes each way through a shared mapping, both
//!   sides spinning).
//! - `shm-stream`: a child streams blobs of 64 B, 64 KiB and 1 MiB: `brood-shm`,
//!   `brood-uds`, and `floor-memcpy` (the same bytes copied once, in one process).
//!   Throughput is declared in messages.

mod common;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

/// (parameter, message size in bytes, messages per iteration).
const SIZES: [(&str, u64, u64); 3] = [
    ("64B", 64, 20_000),
    ("64KiB", 64 << 10, 2_000),
    ("1MiB", 1 << 20, 200),
];

fn main() {
    let actors = common::enter();
    common::pin_parent();
    let rt = common::current_thread_rt();
    let mut c = Criterion::default().configure_from_args();

    let mut rpc = c.benchmark_group("shm-rpc");
    for transport in ["shm", "uds"] {
        rpc.bench_function(format!("brood-{transport}"), |b| {
            b.iter_custom(|iters| common::ping_round_trips(&rt, &actors, Some(transport), iters))
        });
    }
    rpc.bench_function("floor-spin", |b| {
        b.iter_custom(common::shm_floor::spin_round_trips)
    });
    rpc.finish();

    let mut stream = c.benchmark_group("shm-stream");
    stream.sampling_mode(SamplingMode::Flat);
    for (label, size, n) in SIZES {
        if size >= 64 << 10 {
            stream.sample_size(10);
        }
        stream.throughput(Throughput::Elements(n));
        for transport in ["shm", "uds"] {
            stream.bench_function(BenchmarkId::new(format!("brood-{transport}"), label), |b| {
                b.iter_custom(|iters| {
                    common::stream_blobs(&rt, &actors, Some(transport), iters, (size, n))
                })
            });
        }
        let src = vec![0xa5u8; usize::try_from(size).expect("size")];
        let mut dst = vec![0u8; src.len()];
        stream.bench_function(BenchmarkId::new("floor-memcpy", label), |b| {
            b.iter_custom(|iters| common::shm_floor::memcpy(iters * n, &src, &mut dst))
        });
    }
    stream.finish();

    c.final_summary();
}
