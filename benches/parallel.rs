//! Group `parallel-python`: the same CPU-bound Python function split across N = 1, 2, 4
//! actors, per backend. Ids are `<backend>-py<major.minor>/<N>`: the Python tier this
//! binary embeds is part of the name, so runs on both tiers can sit side by side.
//!
//! Speed-up is the time with one actor over the time with N (same total work). Process
//! actors have a CPython each; sub-interpreter actors share the process and scale only
//! with an own-GIL Python (3.12+).

mod common;

use std::time::{Duration, Instant};

use brood::python::{CallPy, Eval, Exec, PyValue};
use brood::{ActorOptions, Portal};
use criterion::{BenchmarkId, Criterion, SamplingMode};

const WORK: &str = "
def work(n):
    s = 0
    for i in range(n):
        s += i * i % 7
    return s
";

/// Loop iterations per timed round, split evenly across the actors.
const TOTAL: i64 = 2_400_000;

fn options(backend: &str) -> ActorOptions {
    let opts = ActorOptions::new().backend(backend);
    if backend == "subint" {
        opts.backend_option("python", "eager")
    } else {
        opts
    }
}

async fn split(actors: &[Portal]) -> Result<Duration, brood::FnError> {
    let share = TOTAL / actors.len() as i64;
    let start = Instant::now();
    let calls: Vec<_> = actors
        .iter()
        .cloned()
        .map(|p| {
            tokio::spawn(async move {
                p.run(
                    CallPy,
                    ("__main__:work".into(), vec![PyValue::Int(share)], vec![]),
                )
                .await
            })
        })
        .collect();
    for c in calls {
        c.await.map_err(brood::FnError::msg)??;
    }
    Ok(start.elapsed())
}

fn main() {
    let actors = common::enter();
    let rt = common::multi_thread_rt(2);
    let version = common::in_root(&rt, &actors, async |n| {
        let p = n.start_actor("probe", options("subint")).await?;
        let v = p
            .run(Eval, "'%d.%d' % __import__('sys').version_info[:2]".into())
            .await?;
        Ok(v.as_str().unwrap_or("unknown").to_owned())
    });
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("parallel-python");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for backend in ["proc", "fork", "subint"] {
        for n in [1usize, 2, 4] {
            let id = BenchmarkId::new(format!("{backend}-py{version}"), n);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    common::in_root(&rt, &actors, async |nursery| {
                        let mut portals = Vec::new();
                        for i in 0..n {
                            let p = nursery
                                .start_actor(&format!("w{i}"), options(backend))
                                .await?;
                            p.run(Exec, WORK.into()).await?;
                            portals.push(p);
                        }
                        // Warm every interpreter's code once, untimed.
                        split(&portals).await?;
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += split(&portals).await?;
                        }
                        Ok(total)
                    })
                })
            });
        }
    }
    group.finish();
    c.final_summary();
}
