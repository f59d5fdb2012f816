//! Group `discovery`: what finding an actor by name costs. A child (`seeker`) finds its
//! sibling (`target`) by name through the tree's registrar and calls it on a fresh
//! direct channel (`find+first-call`: the lookup at the root, the connect and handshake,
//! the call), next to a call on a portal that is already open (`call-open-portal`).

mod common;

use std::time::Duration;

use brood::ActorOptions;
use criterion::Criterion;

fn seek(rt: &tokio::runtime::Runtime, actors: &brood::Brood, iters: u64, fresh: bool) -> Duration {
    common::in_root_on(rt, actors, None, async |n| {
        let _target = common::on_child_cpu(n.start_actor("target", ActorOptions::new())).await?;
        let seeker = n.start_actor("seeker", ActorOptions::new()).await?;
        let nanos = seeker
            .run(common::FindAndPing, ("target".to_owned(), iters, fresh))
            .await?;
        Ok(Duration::from_nanos(nanos))
    })
}

fn main() {
    let actors = common::enter();
    common::pin_parent();
    let rt = common::current_thread_rt();
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("discovery");
    group.bench_function("find+first-call", |b| {
        b.iter_custom(|iters| seek(&rt, &actors, iters, true))
    });
    group.bench_function("call-open-portal", |b| {
        b.iter_custom(|iters| seek(&rt, &actors, iters, false))
    });
    group.finish();
    c.final_summary();
}
