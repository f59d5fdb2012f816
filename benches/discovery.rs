//! Group `discovery`: what finding an actor by name costs. A child (`seeker`) finds its
//! sibling (`target`) by name through the tree's registrar and calls it: on a fresh
//! direct channel (`find+first-call`: the lookup at the root, the connect and handshake,
//! the call), on the channel an earlier lookup opened (`find+call-reused`: the lookup
//! and the call), and, for reference, on a portal already in hand (`call-open-portal`);
//! `lookup` is the registrar's answer alone (one round trip to the root).

mod common;

use std::time::Duration;

use brood::ActorOptions;
use criterion::Criterion;

fn seek(
    rt: &tokio::runtime::Runtime,
    actors: &brood::Brood,
    iters: u64,
    how: common::Seek,
) -> Duration {
    common::in_root_on(rt, actors, None, async |n| {
        let _target = common::on_child_cpu(n.start_actor("target", ActorOptions::new())).await?;
        let seeker = common::on_child_cpu(n.start_actor("seeker", ActorOptions::new())).await?;
        let nanos = seeker
            .run(common::FindAndPing, ("target".to_owned(), iters, how))
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
    for (id, how) in [
        ("find+first-call", common::Seek::Fresh),
        ("find+call-reused", common::Seek::Reused),
        ("call-open-portal", common::Seek::Open),
        ("lookup", common::Seek::Lookup),
    ] {
        group.bench_function(id, |b| {
            b.iter_custom(|iters| seek(&rt, &actors, iters, how))
        });
    }
    group.finish();
    c.final_summary();
}
