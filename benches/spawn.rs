//! Group `spawn`: start a child actor (through the `proc` and the `fork` backend), call it
//! once, cancel it and reap it, next to the
//! cheapest ways the OS starts a process: a bare `fork` and an exec of `/bin/true`, and
//! next to an exec of this very binary that exits before doing anything (what the
//! program's size and linking cost before brood runs at all). Beside them the peer,
//! procspawn (`peer-procspawn`: a fresh process runs one function, its result comes
//! back, the process is reaped), in the same run.
//!
//! Each backend is measured twice, plain and in the default sandbox
//! (`ActorOptions::sandbox(Sandbox::new())`: its own namespaces, rlimits, no
//! capabilities, `no_new_privs`, seccomp), as `brood-<backend>` and
//! `brood-<backend>-sandbox`: what the sandbox adds to a spawn is the ratio of the two
//! (`cargo xtask bench` checks it).
//!
//! `brood-fork` starts actors back to back, so the forkserver's pool of pre-forked
//! children is used up and each spawn forks on request (a cold spawn);
//! `brood-fork-warm` pauses (untimed) before each spawn so that it finds a pre-forked
//! child (a warm spawn: a hand-off and the handshake).
//!
//! This binary is built with the default features, `subint` included, as a user's
//! program is: a process actor is this program started again, and CPython enters a
//! process only with its first interpreter, so these starts do not load it.
//! `spawn_subint.rs` measures the sub-interpreter backend.
//!
//! With `BROOD_BENCH_VARIANT=<name>` every id gets a `-<name>` suffix, so a second build
//! of this bench (`cargo xtask bench` adds a statically linked one) lands beside the
//! first in the same group.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use brood::ActorOptions;
use brood::sandbox::Sandbox;
use common::Ping;
use criterion::Criterion;

/// `fork`, the child `_exit`s at once, the parent reaps it.
fn fork_exit_wait() {
    // SAFETY: the child does nothing but return its status, which `fork_child` passes
    // to `_exit`: nothing that is not async-signal-safe.
    let pid = common::spawning_on_child_cpu(|| unsafe { common::fork_child(|| 0) });
    common::reap(pid);
}

/// Exec a trivial binary and wait for it.
fn exec_true() {
    let status = common::spawning_on_child_cpu(|| Command::new("/bin/true").status())
        .expect("run /bin/true");
    assert!(status.success(), "/bin/true: {status}");
}

/// Set in a child run by [`exec_self`]: exit before building anything.
const EXIT_AT_ONCE: &str = "BROOD_BENCH_EXIT_AT_ONCE";

/// Exec this binary, which exits at the top of `main`, and wait for it.
fn exec_self() {
    let status = common::spawning_on_child_cpu(|| {
        Command::new("/proc/self/exe")
            .env(EXIT_AT_ONCE, "1")
            .status()
    })
    .expect("run this binary");
    assert!(status.success(), "self: {status}");
}

/// `iters` times: start an actor on `backend` (in the default sandbox if `sandboxed`),
/// call it once, cancel it and wait until it is reaped; the time this took. With `warm`,
/// each spawn comes after a pause (not timed) in which the forkserver refills its pool
/// of pre-forked children; without, spawns follow each other at once, so after the
/// first two each is a fork on request.
fn spawn_call_reap(
    rt: &tokio::runtime::Runtime,
    actors: &brood::Brood,
    backend: &'static str,
    sandboxed: bool,
    warm: bool,
    iters: u64,
) -> Duration {
    let options = || {
        let options = ActorOptions::new().backend(backend);
        if sandboxed {
            options.sandbox(Sandbox::new())
        } else {
            options
        }
    };
    common::in_root(rt, actors, async |n| {
        if backend == "fork" {
            // The tree's forkserver starts with its first actor (an exec): untimed. It
            // inherits the affinity of the thread that starts it, so later forks land
            // on the child CPU like every other row's children.
            let warm = common::on_child_cpu(n.start_actor("warm", options())).await?;
            warm.cancel_actor().await;
        }
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            if warm {
                // Untimed: long enough for the forkserver to see a quiet moment and
                // refill its pool, so that every timed spawn finds a pre-forked child.
                tokio::time::sleep(WARM_GAP).await;
            }
            let start = Instant::now();
            let p = common::on_child_cpu(n.start_actor("b", options())).await?;
            p.run(Ping, ()).await?;
            // Runs the teardown ladder; returns once the child is reaped.
            p.cancel_actor().await;
            total += start.elapsed();
        }
        Ok(total)
    })
}

/// The pause before each spawn of the `brood-fork-warm` row: the forkserver refills its
/// pool after 2 ms without requests; a pre-fork then takes a fraction of a millisecond.
const WARM_GAP: Duration = Duration::from_millis(8);

fn main() {
    if std::env::var_os(EXIT_AT_ONCE).is_some() {
        return;
    }
    let actors = common::enter();
    // A procspawn child runs its function here and exits.
    procspawn::init();
    // Before the runtime exists: its thread inherits the pin.
    common::pin_parent();
    let id = common::variant_id;
    let rt = common::current_thread_rt();
    let mut c = Criterion::default().configure_from_args();

    let mut group = c.benchmark_group("spawn");
    // About a millisecond per iteration: fewer samples keep the group short.
    group.sample_size(20);
    for backend in ["proc", "fork"] {
        for sandboxed in [false, true] {
            let name = if sandboxed {
                format!("brood-{backend}-sandbox")
            } else {
                format!("brood-{backend}")
            };
            group.bench_function(id(&name), |b| {
                b.iter_custom(|iters| {
                    spawn_call_reap(&rt, &actors, backend, sandboxed, false, iters)
                })
            });
        }
    }
    // A fork spawn that finds a pre-forked child waiting: a hand-off and the handshake.
    group.bench_function(id("brood-fork-warm"), |b| {
        b.iter_custom(|iters| spawn_call_reap(&rt, &actors, "fork", false, true, iters))
    });
    // The peer: a fresh process running one function, its result back, reaped.
    group.bench_function(id("peer-procspawn"), |b| {
        b.iter(|| {
            let h = procspawn::spawn((), |()| 1u32);
            assert_eq!(h.join().expect("procspawn join"), 1);
        })
    });
    group.bench_function(id("floor-fork"), |b| b.iter(fork_exit_wait));
    group.bench_function(id("floor-exec"), |b| b.iter(exec_true));
    group.bench_function(id("floor-exec-self"), |b| b.iter(exec_self));
    group.finish();

    c.final_summary();
}
