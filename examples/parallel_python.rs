//! Parallel Python: the same CPU-bound Python function split across 1, 2 and 4 actors,
//! per backend.
//!
//! `cargo run --release --example parallel_python`
//!
//! Process actors (`proc`, `fork`) each have a whole CPython and scale with cores.
//! Sub-interpreter actors (`subint`) share one process: on Python 3.12 and later each has
//! its own GIL, so they scale too; on 3.11 they share one GIL and do not. The table says
//! which Python this build embeds (pick 3.14 with `cargo xtask test --python 3.14`'s set-up,
//! see the README).

use std::time::{Duration, Instant};

use brood::python::{CallPy, Exec, PyValue};
use brood::{ActorOptions, Portal, Registry};

/// The work: a pure-Python loop, so only the interpreter's GIL can serialise it.
const WORK: &str = "
def work(n):
    s = 0
    for i in range(n):
        s += i * i % 7
    return s
";

/// Loop iterations in total, split evenly across the actors of a run.
const TOTAL: i64 = 12_000_000;

const BACKENDS: [&str; 3] = ["proc", "fork", "subint"];
const ACTORS: [usize; 3] = [1, 2, 4];

fn options(backend: &str) -> ActorOptions {
    let opts = ActorOptions::new().backend(backend);
    if backend == "subint" {
        opts.backend_option("python", "eager")
    } else {
        opts
    }
}

/// Run `TOTAL` iterations split across the actors, all at once; the wall time.
async fn run_split(actors: &[Portal]) -> Result<Duration, brood::FnError> {
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let actors = brood::setup(Registry::new());
    actors.enter();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (version, rows) = rt.block_on(actors.root().run(async |n| {
        let mut version = String::new();
        let mut rows = Vec::new();
        for backend in BACKENDS {
            let mut times = Vec::new();
            for count in ACTORS {
                let mut portals = Vec::new();
                for i in 0..count {
                    let p = n
                        .start_actor(&format!("{backend}{count}-{i}"), options(backend))
                        .await?;
                    p.run(Exec, WORK.into()).await?;
                    portals.push(p);
                }
                if version.is_empty() {
                    let v = portals[0]
                        .run(
                            brood::python::Eval,
                            "__import__('sys').version.split()[0]".into(),
                        )
                        .await?;
                    version = v.as_str().unwrap_or("?").to_owned();
                }
                // One untimed round so every interpreter has warmed up its code.
                let _ = run_split(&portals).await?;
                times.push(run_split(&portals).await?);
                for p in portals {
                    p.cancel_actor().await;
                }
            }
            rows.push((backend, times));
        }
        Ok((version, rows))
    }))?;

    let gil = match version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
    {
        Some(minor) if minor >= 12 => "own GIL per sub-interpreter",
        _ => "one GIL shared by all sub-interpreters",
    };
    println!(
        "parallel Python: {TOTAL} loop iterations split across N actors\nCPython {version} ({gil}); {} CPUs\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "backend", "N=1", "N=2", "N=4", "speed-up 2", "speed-up 4"
    );
    for (backend, t) in rows {
        let ms = |d: &Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        let up = |i: usize| format!("{:.2}x", t[0].as_secs_f64() / t[i].as_secs_f64());
        println!(
            "{:<8} {:>10} {:>10} {:>10} {:>12} {:>12}",
            backend,
            ms(&t[0]),
            ms(&t[1]),
            ms(&t[2]),
            up(1),
            up(2)
        );
    }
    println!("\nspeed-up = time with one actor / time with N actors (same total work).");
    Ok(())
}
