//! Groups `shm-rpc` and `shm-stream`: the shared-memory transport beside the Unix-socket
//! one and beside the floors of shared memory itself (`common::shm_floor`).
//!
//! - `shm-rpc`: one 8-byte request/reply round trip to a running child: `brood-shm`,
//!   `brood-shm-parked` (the same with spinning off, `BROOD_SHM_SPIN_US=0`, in both
//!   processes: every wait sleeps on the doorbell; measured by a copy of this program
//!   started with that environment, which reports its own timing), `brood-uds`, and
//!   `floor-spin` (64 bytes each way through a shared mapping, both sides spinning).
//! - `shm-stream`: a child streams blobs of 64 B, 64 KiB and 1 MiB: `brood-shm`,
//!   `brood-uds`, and `floor-memcpy` (the same bytes copied once, in one process).
//!   Throughput is declared in messages.
//! - `shm-region`: 200 messages of 1 MiB from the parent to a child through a ring of
//!   64 KiB chunks in a `ShmRegion` (`brood-region-ring`; the parent copies each chunk
//!   in, the child copies it out), beside `floor-handoff` (the same through a plain
//!   shared ring between two processes on the two CPUs, both spinning: the bytes must
//!   cross from one CPU's caches to the other's) and `floor-memcpy` (one copy in one
//!   process, hot in its caches).

mod common;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

/// (parameter, message size in bytes, messages per iteration).
const SIZES: [(&str, u64, u64); 3] = [
    ("64B", 64, 20_000),
    ("64KiB", 64 << 10, 2_000),
    ("1MiB", 1 << 20, 200),
];

/// Set in the copy of this program that measures the parked path: how many round trips.
const PARKED_ITERS_ENV: &str = "BROOD_BENCH_PARKED_ITERS";

/// `iters` round trips over `shm` with spinning off in both processes, measured by a
/// copy of this program (the spin time is read from the environment when a process
/// sets its transports up, so it takes a process of its own).
fn parked_round_trips(iters: u64) -> std::time::Duration {
    // Started with both CPUs allowed, so it pins itself and its child as this program
    // does (a copy started from this pinned thread would put both on one CPU).
    let out = common::spawning_unpinned(|| {
        std::process::Command::new(std::env::current_exe().expect("this program"))
            .env(PARKED_ITERS_ENV, iters.to_string())
            .env(brood::shm::SPIN_ENV, "0")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("start the parked-path measurement")
    });
    assert!(out.status.success(), "the parked-path measurement failed");
    let nanos: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("nanoseconds on stdout");
    std::time::Duration::from_nanos(nanos)
}

fn main() {
    let actors = common::enter();
    if let Ok(iters) = std::env::var(PARKED_ITERS_ENV) {
        // The parked-path measurement (see `parked_round_trips`).
        common::pin_parent();
        let rt = common::current_thread_rt();
        let iters = iters.parse().expect("a number of round trips");
        let took = common::ping_round_trips(&rt, &actors, Some("shm"), iters);
        println!("{}", took.as_nanos());
        return;
    }
    common::pin_parent();
    let rt = common::current_thread_rt();
    let mut c = Criterion::default().configure_from_args();

    let mut rpc = c.benchmark_group("shm-rpc");
    for transport in ["shm", "uds"] {
        rpc.bench_function(format!("brood-{transport}"), |b| {
            b.iter_custom(|iters| common::ping_round_trips(&rt, &actors, Some(transport), iters))
        });
    }
    rpc.bench_function("brood-shm-parked", |b| b.iter_custom(parked_round_trips));
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

    let mut region = c.benchmark_group("shm-region");
    region.sampling_mode(SamplingMode::Flat);
    region.sample_size(10);
    let (size, n) = (1u64 << 20, 200u64);
    region.throughput(Throughput::Elements(n));
    region.bench_function(BenchmarkId::new("brood-region-ring", "1MiB"), |b| {
        b.iter_custom(|iters| common::region_ring(&rt, &actors, iters, (size, n)))
    });
    region.bench_function(BenchmarkId::new("floor-handoff", "1MiB"), |b| {
        b.iter_custom(|iters| common::shm_floor::handoff(iters * n * 16))
    });
    let src = vec![0xa5u8; 1 << 20];
    let mut dst = vec![0u8; src.len()];
    region.bench_function(BenchmarkId::new("floor-memcpy", "1MiB"), |b| {
        b.iter_custom(|iters| common::shm_floor::memcpy(iters * n, &src, &mut dst))
    });
    region.finish();

    c.final_summary();
}
