//! A small supervised service: workers killed at random while a client keeps calling.
//!
//! `cargo run --release --example supervisor` (add `-- --seconds 10` to run longer,
//! `-- --backend fork` or `subint` for another backend)
//!
//! The root supervises three `worker` actors (one-for-one, at most 100 restarts in 5 s,
//! no backoff). A client task calls the workers round-robin through their supervised
//! handles, which wait up to a second for a restart; a chaos task kills a random worker
//! every 100 ms, in turns by a panic, a non-zero exit and a SIGKILL from outside. At the
//! end the demo prints the calls served and failed, the restarts, and how long a restart
//! took (from the crash to the new incarnation answering).

use std::time::{Duration, Instant};

use brood::supervision::{ChildSpec, Strategy, Supervised, SupervisorSpec};
use brood::{ActorOptions, ChildStdio, PortalError, Registry};

brood::call!(
    /// Squares a number; answers with the worker's process id too.
    Square = "demo.square": u64 => (u64, u32)
);
brood::call!(
    /// Ends the worker: 0 panics, 1 exits with code 3, 2 is killed with SIGKILL (a
    /// sub-interpreter worker panics instead: a signal would take the whole process).
    Die = "demo.die": u8 => ()
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let brood = brood::setup(
        Registry::new()
            .call(Square, |_cx, n: u64| async move {
                Ok((n.wrapping_mul(n), std::process::id()))
            })
            .call(Die, |cx, how: u8| async move {
                let own_process = cx.vars().backend != "subint";
                match how {
                    1 if own_process => std::process::exit(3),
                    2 if own_process => {
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", &std::process::id().to_string()])
                            .status();
                    }
                    _ => {}
                }
                panic!("worker told to die ({how})");
            }),
    );
    brood.enter();

    let mut seconds = 3u64;
    let mut backend = "proc".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().ok_or("--seconds needs a number")?.parse()?,
            "--backend" => backend = args.next().ok_or("--backend needs a key")?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let run_for = Duration::from_secs(seconds);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(brood.root().run(async |n| {
        let mut spec = SupervisorSpec::new(Strategy::OneForOne)
            .name("workers")
            .intensity(100, Duration::from_secs(5));
        for i in 0..3 {
            spec = spec.child(
                ChildSpec::new(format!("worker{i}")).options(
                    // A dying worker's last words are not the demo's output.
                    ActorOptions::new()
                        .backend(backend.as_str())
                        .stdio(ChildStdio::Null),
                ),
            );
        }
        let sup = n.supervise(spec).await?;
        let workers: Vec<Supervised> = (0..3)
            .map(|i| {
                sup.child(&format!("worker{i}"))
                    .expect("a worker")
                    .waiting(Duration::from_secs(1))
            })
            .collect();
        println!(
            "supervising 3 {backend} workers for {run_for:?}; a worker is killed every 100 ms"
        );

        let until = Instant::now() + run_for;
        let client = async {
            let (mut served, mut failed, mut n) = (0u64, 0u64, 0u64);
            while Instant::now() < until {
                let w = &workers[(n % 3) as usize];
                match w.run(Square, n).await {
                    Ok(a) if a.value.0 == n.wrapping_mul(n) => served += 1,
                    Ok(_) => failed += 1,
                    // Its incarnation died while serving (or is still restarting).
                    Err(PortalError::Restarted { .. } | PortalError::Restarting { .. }) => {
                        failed += 1
                    }
                    Err(e) => return Err(e),
                }
                n += 1;
            }
            Ok::<_, PortalError>((served, failed))
        };
        let chaos = async {
            let mut restart_times = Vec::new();
            let mut k = 0u8;
            while Instant::now() + Duration::from_millis(100) < until {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let w = &workers[(k as usize * 7 + 1) % 3];
                let Ok((portal, before)) = w.portal().await else {
                    continue;
                };
                let t = Instant::now();
                let _ = portal.run(Die, k % 3).await;
                // The restart took this long: the crash until the next incarnation answers
                // (a call that still reached the dying one, or failed with it, is retried).
                while t.elapsed() < Duration::from_secs(2) {
                    match w.run(Square, 1).await {
                        Ok(a) if a.incarnation > before => {
                            restart_times.push(t.elapsed());
                            break;
                        }
                        _ => tokio::task::yield_now().await,
                    }
                }
                k = k.wrapping_add(1);
            }
            restart_times
        };
        let (served_failed, mut restart_times) = tokio::join!(client, chaos);
        let (served, failed) = served_failed?;
        restart_times.sort();
        let median = restart_times
            .get(restart_times.len() / 2)
            .copied()
            .unwrap_or_default();
        println!("calls served: {served}, failed across a restart: {failed}");
        println!(
            "restarts: {} (median crash-to-answer {median:?})",
            sup.restarts()
        );
        for r in sup.history().iter().rev().take(3).rev() {
            println!("  {} #{} ended: {}", r.child, r.incarnation, r.why);
        }
        sup.stop().await;
        Ok(())
    }))?;
    Ok(())
}
