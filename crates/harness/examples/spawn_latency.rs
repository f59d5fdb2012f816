//! Spawn-to-first-reply of each backend, next to a raw `fork()` + `_exit` + `waitpid`,
//! all measured in the same run from one current-thread root.
//!
//! ```sh
//! cargo run --release -p harness --example spawn_latency [iterations]
//! ```
//!
//! Per backend and iteration: `start_actor` + one `Add` call (spawn-to-first-reply), then
//! `cancel_actor` (the full cycle, until the child is reaped). The forkserver is started
//! by the warm-up, as it is once per tree.

use std::time::{Duration, Instant};

use brood::ActorOptions;
use harness::functions::Add;

fn summary(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    (median, mean)
}

fn raw_fork(iters: usize) -> Vec<Duration> {
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: the child calls only `_exit`, which is async-signal-safe, so forking
            // this multi-threaded process is sound.
            match unsafe { libc::fork() } {
                // SAFETY: in the forked child: `_exit` is async-signal-safe and ends it.
                0 => unsafe { libc::_exit(0) },
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                pid => {
                    let mut status = 0;
                    // SAFETY: `status` is a live int; pid is our unreaped child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                }
            }
            t.elapsed()
        })
        .collect()
}

/// A sub-interpreter actor without Python: the runtime's own cost.
fn opts(backend: &str) -> ActorOptions {
    match backend {
        "subint" => ActorOptions::new().backend_option("python", "none"),
        _ => ActorOptions::new(),
    }
}

fn main() {
    let brood = harness::brood();
    brood.enter();
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for backend in ["proc", "fork", "subint"] {
        let (first, cycle) = rt
            .block_on(brood.root().use_backend(backend).run(async |n| {
                for _ in 0..20 {
                    let p = n.start_actor("warm", opts(backend)).await?;
                    p.run(Add, (1, 1)).await?;
                    p.cancel_actor().await;
                }
                let mut first = Vec::with_capacity(iters);
                let mut cycle = Vec::with_capacity(iters);
                for _ in 0..iters {
                    let t = Instant::now();
                    let p = n.start_actor("b", opts(backend)).await?;
                    p.run(Add, (1, 1)).await?;
                    first.push(t.elapsed());
                    p.cancel_actor().await;
                    cycle.push(t.elapsed());
                }
                Ok((first, cycle))
            }))
            .expect("root");
        rows.push((backend, summary(first), summary(cycle)));
    }
    let (fork_median, fork_mean) = summary(raw_fork(iters.max(100)));
    println!("{iters} iterations; median / mean");
    println!("{:<28} {:>10} {:>10}", "", "median", "mean");
    for (backend, (fm, fa), (cm, ca)) in &rows {
        println!(
            "{:<28} {:>10.1?} {:>10.1?}",
            format!("{backend}: spawn→first reply"),
            fm,
            fa
        );
        println!(
            "{:<28} {:>10.1?} {:>10.1?}",
            format!("{backend}: + cancel + reap"),
            cm,
            ca
        );
    }
    println!(
        "{:<28} {:>10.1?} {:>10.1?}",
        "raw fork+_exit+waitpid", fork_median, fork_mean
    );
    let med = |b: &str| rows.iter().find(|r| r.0 == b).map(|r| r.1.0).unwrap();
    println!(
        "fork/proc (first reply, median): {:.2}; fork/raw-fork: {:.2}",
        med("fork").as_secs_f64() / med("proc").as_secs_f64(),
        med("fork").as_secs_f64() / fork_median.as_secs_f64()
    );
}
