//! Finding actors by name across a tree, and (with a registrar) across programs.
//!
//! `cargo run --release --example discovery` (add `-- --serve 60` to keep the tree up
//! for a minute, busy, for `cargo run --example tree` to look at)
//!
//! The root starts `cashier`, which starts `audit` below it; then `clerk`, which finds
//! `audit` (its cousin) by name and calls it directly, not through the root. The demo
//! prints the tree from the registrar's table and what a lookup costs: a
//! `find_actor` plus its first call on a fresh channel, against a call on a portal that
//! is already open.
//!
//! With `BROOD_REGISTRAR` and `BROOD_SECRET_FILE` set (see `cargo run --example
//! registrar`) the root joins that registrar: run this demo twice under two names
//! (`BROOD_DEMO_NAME=shop2`) and each one's clerk finds the other's actors too.

use std::time::{Duration, Instant};

use brood::{ActorCx, ActorOptions, FnError, Registry};

brood::call!(
    /// Sleeps the given milliseconds; answers with the actor's path.
    Work = "demo.work": u64 => String
);
brood::context!(
    /// Starts a child of each given name and keeps them until the context ends.
    Team = "demo.team": Vec<String> => started (), in (), out (), return ()
);
brood::call!(
    /// Finds the named actor `rounds` times on a fresh channel and calls it, then calls
    /// it `rounds` times on one open portal: the median of each, in microseconds.
    Ask = "demo.ask": (String, u32) => (String, u64, u64)
);

async fn ask(cx: ActorCx, name: String, rounds: u32) -> Result<(String, u64, u64), FnError> {
    let mut cold = Vec::new();
    let mut answered = String::new();
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let portal = cx
            .find_actor(&name)
            .await?
            .ok_or_else(|| FnError::new("NotFound", format!("no actor named {name}")))?;
        answered = portal.run(Work, 0).await?;
        cold.push(t.elapsed());
        // Closed, so that the next round opens a fresh channel again.
        portal.close().await;
    }
    let portal = cx.find_actor(&name).await?.expect("found just now");
    let mut warm = Vec::new();
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        portal.run(Work, 0).await?;
        warm.push(t.elapsed());
    }
    Ok((answered, median_us(cold), median_us(warm)))
}

fn median_us(mut v: Vec<Duration>) -> u64 {
    v.sort();
    v[v.len() / 2].as_micros() as u64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let brood = brood::setup(
        Registry::new()
            .call(Work, |cx, ms| async move {
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Ok(cx.path().to_owned())
            })
            .context(Team, |cx, names: Vec<String>, ctx| async move {
                cx.open_nursery(async |n| {
                    for name in &names {
                        n.start_actor(name, ActorOptions::new()).await?;
                    }
                    let mut s = ctx.started(()).await?;
                    while s.recv().await?.is_some() {}
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .call(Ask, |cx, (name, rounds)| ask(cx, name, rounds)),
    );
    brood.enter();

    let mut serve = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--serve" => {
                serve = Some(Duration::from_secs(
                    args.next().ok_or("--serve needs seconds")?.parse()?,
                ))
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let name = std::env::var("BROOD_DEMO_NAME").unwrap_or_else(|_| "shop".to_owned());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(brood.root().name(name).run(async |n| {
        let cashier = n.start_actor("cashier", ActorOptions::new()).await?;
        let (_team, ()) = cashier.open_context(Team, vec!["audit".to_owned()]).await?;
        let clerk = n.start_actor("clerk", ActorOptions::new()).await?;

        println!("the registrar's table:");
        for a in n.actor().list_actors().await? {
            println!(
                "  {:<24} {:<7} pid {:<8} at {}",
                a.path, a.backend, a.pid, a.addr
            );
        }
        let (answered, cold, warm) = clerk.run(Ask, ("audit".to_owned(), 50)).await?;
        println!("clerk found {answered} by name and called it directly");
        println!(
            "find_actor + first call: {cold} µs; a call on an open portal: {warm} µs ({:.1}x)",
            cold as f64 / warm.max(1) as f64
        );

        if let Some(time) = serve {
            println!("serving for {time:?}: try `cargo run --example tree` meanwhile");
            let audit = n
                .actor()
                .wait_for_actor("audit", Duration::from_secs(5))
                .await?;
            let until = Instant::now() + time;
            let busy = async {
                while Instant::now() < until {
                    // Three calls in flight at a time, for the tree's CALLS column.
                    let (a, b, c) = tokio::join!(
                        audit.run(Work, 500),
                        audit.run(Work, 500),
                        audit.run(Work, 500)
                    );
                    a?;
                    b?;
                    c?;
                }
                Ok::<(), FnError>(())
            };
            busy.await?;
        }
        Ok(())
    }))?;
    Ok(())
}
