//! Group `spawn`, sub-interpreter rows: start an actor on the `subint` backend, with no
//! Python and with an eager interpreter, call it once, cancel it and wait for its end,
//! next to the floors measured in the same run: a bare thread spawn and join, and the
//! creation and end of a sub-interpreter on a host thread.
//!
//! With `BROOD_BENCH_VARIANT=<name>` every id gets a `-<name>` suffix (`cargo xtask bench
//! --python 3.14` runs it again on the own-GIL tier).

mod common;

use std::time::{Duration, Instant};

use brood::ActorOptions;
use brood::subint::{Interp, Shutdown};
use common::Ping;
use criterion::Criterion;

fn main() {
    let actors = common::enter();
    let rt = common::current_thread_rt();
    let id = common::variant_id;
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("spawn");
    group.sample_size(20);
    for (name, python) in [("brood-subint", "none"), ("brood-subint-py", "eager")] {
        group.bench_function(id(name), |b| {
            b.iter_custom(|iters| {
                common::in_root(&rt, &actors, async |n| {
                    let opts = || {
                        ActorOptions::new()
                            .backend("subint")
                            .backend_option("python", python)
                    };
                    let start = Instant::now();
                    for _ in 0..iters {
                        let p = n.start_actor("b", opts()).await?;
                        p.run(Ping, ()).await?;
                        p.cancel_actor().await;
                    }
                    Ok(start.elapsed())
                })
            })
        });
    }
    group.bench_function(id("floor-thread"), |b| {
        b.iter(|| std::thread::spawn(|| ()).join().expect("thread"))
    });
    group.bench_function(id("floor-subinterp"), |b| {
        b.iter(|| {
            let i = Interp::new_sub(true).expect("a sub-interpreter");
            assert_eq!(i.shutdown(Duration::from_secs(10)), Shutdown::Clean);
        })
    });
    group.finish();
    c.final_summary();
}
