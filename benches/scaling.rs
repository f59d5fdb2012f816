//! Group `scaling`: how costs grow with the size of a tree. A root starts N children on
//! one backend, calls every one of them at once, and tears them all down:
//!
//! - `<backend>-spawn/N`: starting the N children, one after another (each
//!   `start_actor` returns once its child answered the handshake);
//! - `<backend>-fanout/N`: one `Ping` to every child, all in flight together;
//! - `<backend>-teardown/N`: from the nursery's end to the last child reaped.
//!
//! N is 1, 10, 100 and 1000 for `subint` (threads with their own interpreter), and 1,
//! 10, 100 and 200 for `fork` and `proc`. Throughput is declared in actors, so criterion
//! reports actors per second and `cargo xtask bench` checks that the time per actor at
//! the largest N stays within 1.5x of its time at N = 10, and that 1000 subint actors
//! are torn down within a second.
//!
//! Before the timed groups, the bench prints the memory each actor adds (unique set
//! size: a process actor's own private pages, read from `/proc/<pid>/smaps_rollup`; a
//! subint actor's growth of the root process) and writes it to
//! `<criterion dir>/scaling-memory.json`.

mod common;

use std::time::{Duration, Instant};

use brood::{ActorOptions, Brood, FnError, Portal};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use tokio::runtime::Runtime;

/// The tree sizes per backend.
const SIZES: [(&str, &[u64]); 3] = [
    ("subint", &[1, 10, 100, 1000]),
    ("fork", &[1, 10, 100, 200]),
    ("proc", &[1, 10, 100, 200]),
];

/// What one cycle (start N, call all, tear down) took, phase by phase.
#[derive(Clone, Copy, Default)]
struct Phases {
    spawn: Duration,
    fanout: Duration,
    teardown: Duration,
}

/// Start `n` children on `backend`, call each once (all in flight together), then end
/// the root; `probe` runs while they are all alive.
fn cycle(
    rt: &Runtime,
    actors: &Brood,
    backend: &str,
    n: u64,
    probe: impl AsyncFnOnce(&[Portal]),
) -> Phases {
    let (mut phases, body_end) = common::in_root_on(rt, actors, None, async |nursery| {
        let mut phases = Phases::default();
        let start = Instant::now();
        let mut portals = Vec::with_capacity(n as usize);
        for i in 0..n {
            let opts = ActorOptions::new().backend(backend);
            portals.push(nursery.start_actor(&format!("a{i}"), opts).await?);
        }
        phases.spawn = start.elapsed();
        let start = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for p in &portals {
            let p = p.clone();
            calls.spawn(async move { p.run(common::Ping, ()).await });
        }
        while let Some(done) = calls.join_next().await {
            done.map_err(|e| FnError::msg(format!("a call task failed: {e}")))??;
        }
        phases.fanout = start.elapsed();
        probe(&portals).await;
        Ok((phases, Instant::now()))
    });
    phases.teardown = body_end.elapsed();
    phases
}

/// Which phase of a cycle a row times.
type Pick = fn(&Phases) -> Duration;

/// `iters` cycles; the time of the phase `pick` chooses.
fn timed(rt: &Runtime, actors: &Brood, backend: &str, n: u64, iters: u64, pick: Pick) -> Duration {
    (0..iters)
        .map(|_| pick(&cycle(rt, actors, backend, n, async |_| {})))
        .sum()
}

/// The memory one actor adds, per backend and N: printed, and written for the report.
fn memory_per_actor(rt: &Runtime, actors: &Brood) {
    // A process gone before it was read counts as nothing (the row shows it).
    let uss = |pid: u32| common::files::uss(pid).unwrap_or(0);
    let mut rows = Vec::new();
    for (backend, sizes) in SIZES {
        for &n in sizes.iter().filter(|&&n| n >= 10) {
            let before = uss(std::process::id());
            let mut per_actor = 0u64;
            cycle(rt, actors, backend, n, async |portals| {
                let me = std::process::id();
                let total: u64 = match portals.first().and_then(Portal::peer_pid) {
                    Some(pid) if pid != me => {
                        portals.iter().filter_map(Portal::peer_pid).map(uss).sum()
                    }
                    // In-process children (their peer is this process): what the
                    // root's process grew by.
                    _ => uss(me).saturating_sub(before),
                };
                per_actor = total / n;
            });
            println!(
                "scaling memory: {backend} N={n}: {} KiB per actor",
                per_actor / 1024
            );
            rows.push(format!("  \"{backend}/{n}\": {per_actor}"));
        }
    }
    let dir = common::files::criterion_dir();
    let _ = std::fs::create_dir_all(&dir);
    let json = format!("{{\n{}\n}}\n", rows.join(",\n"));
    if let Err(e) = std::fs::write(dir.join("scaling-memory.json"), json) {
        eprintln!("scaling: cannot write the memory report: {e}");
    }
}

/// Raise the soft limit on open files to the hard one: a thousand in-process actors
/// hold a few descriptors each.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limits into `lim`, a valid, owned struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads `lim`; raising the soft limit up to the hard one is
        // always allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

fn main() {
    let actors = common::enter();
    raise_fd_limit();
    common::pin_parent();
    let rt = common::current_thread_rt();
    memory_per_actor(&rt, &actors);
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("scaling");
    // A cycle of a big tree takes up to seconds: equal, few iterations per sample.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    let phases: [(&str, Pick); 3] = [
        ("spawn", |p| p.spawn),
        ("fanout", |p| p.fanout),
        ("teardown", |p| p.teardown),
    ];
    for (backend, sizes) in SIZES {
        for &n in sizes {
            group.throughput(Throughput::Elements(n));
            for (phase, pick) in phases {
                let id = BenchmarkId::new(format!("{backend}-{phase}"), n);
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| timed(&rt, &actors, backend, n, iters, pick))
                });
            }
        }
    }
    group.finish();
    c.final_summary();
}
