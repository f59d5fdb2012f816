//! Group `spawn`: start a child actor, call it once, cancel it and reap it, next to the
//! cheapest ways the OS starts a process: a bare `fork` and an exec of `/bin/true`.

mod common;

use std::process::Command;
use std::time::Instant;

use brood::ActorOptions;
use common::Ping;
use criterion::Criterion;

/// `fork`, the child `_exit`s at once, the parent reaps it.
fn fork_exit_wait() {
    // SAFETY: the child does nothing but return its status, which `fork_child` passes
    // to `_exit`: nothing that is not async-signal-safe.
    let pid = unsafe { common::fork_child(|| 0) };
    common::reap(pid);
}

/// Exec a trivial binary and wait for it.
fn exec_true() {
    let status = Command::new("/bin/true").status().expect("run /bin/true");
    assert!(status.success(), "/bin/true: {status}");
}

fn main() {
    let actors = common::enter();
    let rt = common::current_thread_rt();
    let mut c = Criterion::default().configure_from_args();

    let mut group = c.benchmark_group("spawn");
    // About a millisecond per iteration: fewer samples keep the group short.
    group.sample_size(20);
    group.bench_function("brood-proc", |b| {
        b.iter_custom(|iters| {
            common::in_root(&rt, &actors, async |n| {
                let start = Instant::now();
                for _ in 0..iters {
                    let p = n.start_actor("b", ActorOptions::new()).await?;
                    p.run(Ping, ()).await?;
                    // Runs the teardown ladder; returns once the child is reaped.
                    p.cancel_actor().await;
                }
                Ok(start.elapsed())
            })
        })
    });
    group.bench_function("floor-fork", |b| b.iter(fork_exit_wait));
    group.bench_function("floor-exec", |b| b.iter(exec_true));
    group.finish();

    c.final_summary();
}
