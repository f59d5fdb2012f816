//! A tour of brood: a small tree of process actors over Unix sockets.
//!
//! `cargo run --release --example tour`
//!
//! It spawns a child and a grandchild, calls, streams, opens a context, provokes a
//! remote error that crosses two actors, cancels a child that ignores cancellation,
//! lets a child panic to show one-cancels-all, and prints what it measured.

use std::time::{Duration, Instant};

use brood::{
    ActorCx, ActorOptions, Blob, CalleeContext, ChildError, FnError, Registry, RuntimeFlavor,
    StreamTx,
};

brood::call!(
    /// Adds two numbers.
    Add = "tour.add": (i64, i64) => i64
);
brood::call!(
    /// Spawns a helper (a grandchild of the root) and asks it to multiply.
    MulViaHelper = "tour.mul_via_helper": (i64, i64) => i64
);
brood::call!(
    /// Multiplies two numbers.
    Mul = "tour.mul": (i64, i64) => i64
);
brood::call!(
    /// Looks a key up in a helper, which fails: the error crosses two actors.
    LookupViaHelper = "tour.lookup_via_helper": String => String
);
brood::call!(
    /// Fails with a `KeyError`.
    Lookup = "tour.lookup": String => String
);
brood::call!(
    /// This actor's process id.
    Pid = "tour.pid": () => u32
);
brood::call!(
    /// Panics.
    Explode = "tour.explode": () => ()
);
brood::stream!(
    /// Streams `0..n`.
    Count = "tour.count": u64 => u64
);
brood::stream!(
    /// Streams `n` blobs of `size` bytes.
    Blobs = "tour.blobs": (u64, u64) => Blob
);
brood::context!(
    /// Echoes words upper-cased, then returns how many.
    Shout = "tour.shout": () => started String, in String, out String, return u64
);
brood::context!(
    /// Blocks its thread after `started`: it ignores cancellation.
    Stubborn = "tour.stubborn": () => started (), in (), out (), return ()
);

fn registry() -> Registry {
    Registry::new()
        .call(Add, |_cx, (a, b)| async move { Ok(a + b) })
        .call(Mul, |_cx, (a, b)| async move { Ok(a * b) })
        .call(MulViaHelper, |cx: ActorCx, (a, b)| async move {
            let product = cx
                .open_nursery(async |n| {
                    let helper = n.start_actor("helper", ActorOptions::new()).await?;
                    Ok(helper.run(Mul, (a, b)).await?)
                })
                .await?;
            Ok(product)
        })
        .call(Lookup, |_cx, key: String| async move {
            Err::<String, _>(FnError::new("KeyError", format!("no key {key:?}")))
        })
        .call(LookupViaHelper, |cx: ActorCx, key: String| async move {
            let value = cx
                .open_nursery(async |n| {
                    let helper = n.start_actor("helper", ActorOptions::new()).await?;
                    Ok(helper.run(Lookup, key).await?)
                })
                .await?;
            Ok(value)
        })
        .call(Pid, |_cx, ()| async move { Ok(std::process::id()) })
        .call(Explode, |_cx, ()| async move {
            if std::hint::black_box(true) {
                panic!("the tour asked for it");
            }
            Ok(())
        })
        .stream(Count, |_cx, n, tx: StreamTx<u64>| async move {
            for i in 0..n {
                tx.send(i).await?;
            }
            Ok(())
        })
        .stream(Blobs, |_cx, (n, size), tx: StreamTx<Blob>| async move {
            let blob = Blob::from(vec![7u8; size as usize]);
            for _ in 0..n {
                tx.send(blob.clone()).await?;
            }
            Ok(())
        })
        .context(Shout, |_cx, (), ctx: CalleeContext<Shout>| async move {
            let mut s = ctx.started("ready".to_owned()).await?;
            let mut n = 0;
            while let Some(word) = s.recv().await? {
                s.send(word.to_uppercase()).await?;
                n += 1;
            }
            Ok(n)
        })
        .context(
            Stubborn,
            |_cx, (), ctx: CalleeContext<Stubborn>| async move {
                let _s = ctx.started(()).await?;
                // A handler stuck in synchronous code: no cancellation reaches it.
                tokio::task::block_in_place(|| {
                    loop {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
            },
        )
}

/// One line of the closing table.
struct Row {
    what: &'static str,
    value: String,
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let actors = brood::setup(registry());
    // A spawned child runs its actor here and never returns.
    actors.enter();

    println!("brood tour: process actors over Unix sockets\n");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();

    let table = rt.block_on(actors.root().name("root").run(async |n| {
        let mut rows = Vec::new();

        let t = Instant::now();
        let worker = n.start_actor("worker", ActorOptions::new()).await?;
        let sum = worker.run(Add, (40, 2)).await?;
        let spawn = t.elapsed();
        let pid = worker.run(Pid, ()).await?;
        println!("1. spawned {} (pid {pid}); Add(40, 2) = {sum}", worker.path());
        rows.push(Row { what: "spawn + first reply", value: fmt_dur(spawn) });

        let calls = 2_000;
        let t = Instant::now();
        for i in 0..calls {
            worker.run(Add, (i, 1)).await?;
        }
        let per_call = t.elapsed() / calls as u32;
        rows.push(Row { what: "call round trip (mean)", value: fmt_dur(per_call) });

        let t = Instant::now();
        let product = worker.run(MulViaHelper, (6, 7)).await?;
        println!("2. the worker spawned root/worker/helper, which computed 6 × 7 = {product}");
        rows.push(Row {
            what: "call that spawns a grandchild",
            value: fmt_dur(t.elapsed()),
        });

        let items = 200_000u64;
        let t = Instant::now();
        let mut s = worker.open_stream(Count, items).await?;
        let mut seen = 0u64;
        while let Some(i) = s.recv().await? {
            assert_eq!(i, seen);
            seen += 1;
        }
        let rate = items as f64 / t.elapsed().as_secs_f64();
        println!("3. streamed {seen} integers in order");
        rows.push(Row { what: "stream of small items", value: format!("{:.0}k items/s", rate / 1e3) });

        let (blobs, size) = (128u64, 1u64 << 20);
        let t = Instant::now();
        let mut s = worker.open_stream(Blobs, (blobs, size)).await?;
        let mut bytes = 0u64;
        while let Some(b) = s.recv().await? {
            bytes += b.len() as u64;
        }
        let gbps = bytes as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("4. streamed {} MiB as 1 MiB blobs", bytes >> 20);
        rows.push(Row { what: "stream of 1 MiB blobs", value: format!("{gbps:.2} GB/s") });

        let (mut ctx, hello) = worker.open_context(Shout, ()).await?;
        let mut loud = Vec::new();
        for w in ["nurseries", "portals", "ladders"] {
            ctx.send(w.to_owned()).await?;
            loud.push(ctx.recv().await?.unwrap_or_default());
        }
        let count = ctx.result().await?;
        println!("5. context: started with {hello:?}, echoed {loud:?}, returned {count}");

        match worker.run(LookupViaHelper, "x".to_owned()).await {
            Err(e) => {
                let r = e.remote().expect("a remote error");
                println!(
                    "6. remote error: {}: {} — raised in {}, relayed by {}",
                    r.kind,
                    r.message,
                    r.origin,
                    r.relays.join(", ")
                );
            }
            Ok(v) => println!("6. unexpectedly found {v}"),
        }

        let stubborn = n
            .start_actor("stubborn", ActorOptions::new().runtime(RuntimeFlavor::MultiThread(2)))
            .await?;
        let (_blocked, ()) = stubborn.open_context(Stubborn, ()).await?;
        let t = Instant::now();
        stubborn.cancel_actor().await;
        let report = n.reports().into_iter().find(|r| r.actor == "root/stubborn");
        if let Some(r) = report {
            println!(
                "7. a child stuck in blocking code ignored its cancel request; the ladder ended it: {} at step {:?} after {}",
                r.exit,
                r.step,
                fmt_dur(t.elapsed())
            );
            rows.push(Row { what: "teardown of a stubborn child", value: fmt_dur(t.elapsed()) });
        }

        Ok(rows)
    }));
    rows.extend(table?);

    // A child that panics fails its nursery: its siblings are cancelled and the error
    // says which actor panicked, where.
    let t = Instant::now();
    let outcome = rt.block_on(actors.root().name("root").run(async |n| {
        let sibling = n.start_actor("sibling", ActorOptions::new()).await?;
        let crasher = n.start_actor("crasher", ActorOptions::new()).await?;
        let _ = crasher.run(Explode, ()).await;
        // Only the failure can end this body: one-cancels-all does.
        sibling.run(Add, (1, 1)).await?;
        std::future::pending::<()>().await;
        Ok(())
    }));
    match outcome {
        Err(e) => {
            let nursery = e.nursery().expect("a nursery error");
            for c in &nursery.children {
                if let ChildError::Panicked {
                    actor,
                    message,
                    location,
                } = c
                {
                    println!(
                        "8. {actor} panicked ({message:?} at {}); its sibling was cancelled and the nursery failed",
                        location.as_deref().unwrap_or("?")
                    );
                }
            }
            rows.push(Row {
                what: "one-cancels-all after a panic",
                value: fmt_dur(t.elapsed()),
            });
        }
        Ok(()) => println!("8. unexpectedly, nothing failed"),
    }

    println!("\nevery child was reaped before its nursery returned.\n");
    println!("{:<32} {:>14}", "measured", "value");
    println!("{}", "-".repeat(47));
    for r in rows {
        println!("{:<32} {:>14}", r.what, r.value);
    }
    Ok(())
}
