//! Group `restart`: how long a supervised child is away after a crash. A supervisor
//! (one-for-one, no backoff) holds one child; each iteration crashes it (a process
//! child exits at once with code 3; a sub-interpreter child, which shares this process,
//! ends its actor with code 3) and times from the crash to the next incarnation
//! answering a call through the supervised handle (`restart-<backend>`; a call that
//! still reached the dying incarnation is made again, as a client would). Beside it, on
//! the same backend, a plain `start_actor` and its first call (`spawn-<backend>`): the
//! restart's floor, since a restart is a reap, a spawn and a first call.

mod common;

use std::time::{Duration, Instant};

use brood::supervision::{ChildSpec, Strategy, SupervisorSpec};
use brood::{ActorOptions, ChildStdio};
use common::{Crash, Ping};
use criterion::Criterion;

const BACKENDS: [&str; 3] = ["proc", "fork", "subint"];

fn options(backend: &str) -> ActorOptions {
    // A crashing child's last words are not the bench's output.
    ActorOptions::new().backend(backend).stdio(ChildStdio::Null)
}

/// `iters` crashes of one supervised child on `backend`: the time from each crash to its
/// next incarnation answering.
fn crash_to_answer(
    rt: &tokio::runtime::Runtime,
    actors: &brood::Brood,
    backend: &'static str,
    iters: u64,
) -> Duration {
    common::in_root(rt, actors, async |n| {
        let sup = common::on_child_cpu(
            n.supervise(
                SupervisorSpec::new(Strategy::OneForOne)
                    .intensity(u32::MAX, Duration::from_secs(1))
                    .child(ChildSpec::new("phoenix").options(options(backend))),
            ),
        )
        .await?;
        let child = sup
            .child("phoenix")
            .expect("the child")
            .waiting(Duration::from_secs(30));
        child.run(Ping, ()).await?;
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let (portal, before) = child.portal().await?;
            let start = Instant::now();
            // The restart's spawn runs in the supervisor's task on this thread: pinned,
            // like every other row's spawns, to the child CPU meanwhile.
            common::on_child_cpu(async {
                // Fails: the child is gone before it could answer.
                let _ = portal.run(Crash, ()).await;
                // A call that still reached the dying incarnation (an in-process actor
                // winds down in order) fails with `Restarted`: call again.
                loop {
                    match child.run(Ping, ()).await {
                        Ok(a) if a.incarnation > before => return Ok(()),
                        Ok(_) | Err(brood::PortalError::Restarted { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            })
            .await?;
            total += start.elapsed();
        }
        sup.stop().await;
        Ok(total)
    })
}

/// `iters` plain spawns and first calls on `backend` (the teardowns are not timed).
fn spawn_and_call(
    rt: &tokio::runtime::Runtime,
    actors: &brood::Brood,
    backend: &'static str,
    iters: u64,
) -> Duration {
    common::in_root(rt, actors, async |n| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let p = common::on_child_cpu(n.start_actor("b", options(backend))).await?;
            p.run(Ping, ()).await?;
            total += start.elapsed();
            p.cancel_actor().await;
        }
        Ok(total)
    })
}

fn main() {
    let actors = common::enter();
    common::pin_parent();
    let rt = common::current_thread_rt();
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("restart");
    group.sample_size(20);
    for backend in BACKENDS {
        group.bench_function(format!("restart-{backend}"), |b| {
            b.iter_custom(|iters| crash_to_answer(&rt, &actors, backend, iters))
        });
        group.bench_function(format!("spawn-{backend}"), |b| {
            b.iter_custom(|iters| spawn_and_call(&rt, &actors, backend, iters))
        });
    }
    group.finish();
    c.final_summary();
}
