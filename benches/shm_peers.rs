//! Groups `peers-rpc` and `peers-stream`: the shared-memory transport beside its peers,
//! ipc-channel and iceoryx2, on `shm`'s workloads and in the same run.
//!
//! - `peers-rpc`: one 8-byte request/reply round trip to a running peer process:
//!   `brood-shm` (a `Ping` call), `ipc-channel` (two byte channels, the peer echoing),
//!   `iceoryx2-reqres` (a request-response service, one request per round trip) and
//!   `iceoryx2-pubsub` (a ping and a pong publish-subscribe service).
//! - `peers-stream`: the peer streams blobs of 64 B ×20000, 64 KiB ×2000 and 1 MiB ×200
//!   per iteration, one request first: `brood-shm` (a `Blobs` stream),
//!   `ipc-channel-bytes` (an `IpcBytesSender`), `ipc-channel-shmem` (an
//!   `IpcSharedMemory::from_bytes` per message over an `IpcSender`) and
//!   `iceoryx2-pubsub` (`loan_slice_uninit`, a copy in, `send`; the publisher waits on a
//!   full subscriber buffer, so nothing is lost). Throughput is declared in messages.
//!   The bench reads each peer's message as a zero-copy receiver at least must: one byte
//!   per 4 KiB page (`peers::touch`); brood and ipc-channel's byte channels copy every
//!   message out of their transport anyway.
//!
//! Waiting: brood-shm spins for 50 µs, then parks on an eventfd; ipc-channel blocks in
//! `recv` on its socket; iceoryx2 busy-polls its ports (`spin_loop`, no WaitSet; see
//! `peers::iox` for why). The bench runs on one CPU and every peer on another, as in the
//! other benches. A peer is this program started again with `BROOD_PEER_BENCH=<role>`;
//! iceoryx2's files live under a root directory and prefix of this run's own, removed at
//! the end.

mod common;
mod peers;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

fn main() {
    // A peer process plays its role and exits here, before anything of brood.
    peers::enter();
    let actors = common::enter();
    common::pin_parent();
    let _cleanup = peers::iox::Cleanup;
    let rt = common::current_thread_rt();
    let mut c = Criterion::default().configure_from_args();

    let mut rpc = c.benchmark_group("peers-rpc");
    rpc.bench_function("brood-shm", |b| {
        b.iter_custom(|iters| common::ping_round_trips(&rt, &actors, Some("shm"), iters))
    });
    rpc.bench_function("ipc-channel", |b| {
        b.iter_custom(peers::ipc::rpc_round_trips)
    });
    rpc.bench_function("iceoryx2-reqres", |b| {
        b.iter_custom(peers::iox::reqres_round_trips)
    });
    rpc.bench_function("iceoryx2-pubsub", |b| {
        b.iter_custom(peers::iox::pubsub_round_trips)
    });
    rpc.finish();

    let mut stream = c.benchmark_group("peers-stream");
    stream.sampling_mode(SamplingMode::Flat);
    for (label, size, n) in peers::SIZES {
        if size >= 64 << 10 {
            stream.sample_size(10);
        }
        stream.throughput(Throughput::Elements(n));
        stream.bench_function(BenchmarkId::new("brood-shm", label), |b| {
            b.iter_custom(|iters| common::stream_blobs(&rt, &actors, Some("shm"), iters, (size, n)))
        });
        stream.bench_function(BenchmarkId::new("ipc-channel-bytes", label), |b| {
            b.iter_custom(|iters| peers::ipc::bytes_stream(iters, (size, n)))
        });
        stream.bench_function(BenchmarkId::new("ipc-channel-shmem", label), |b| {
            b.iter_custom(|iters| peers::ipc::shmem_stream(iters, (size, n)))
        });
        stream.bench_function(BenchmarkId::new("iceoryx2-pubsub", label), |b| {
            b.iter_custom(|iters| peers::iox::pubsub_stream(iters, (size, n)))
        });
    }
    stream.finish();

    c.final_summary();
}
