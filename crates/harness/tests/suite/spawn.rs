//! Spawning: typed failures, many threads, many actors at once.

use std::time::{Duration, Instant};

use brood::{ActorOptions, ChildExit, FnError, RootBuilder, SpawnError, Step, TeardownPolicy};
use harness::functions::*;
use harness::{Failed, in_process, leaks, wait_gone};
use spawn_subint::{Eval, PyValue};

use crate::common::*;

crate::tests!(
    spawn_failures_are_typed,
    spawn_from_a_root_on_sixteen_worker_threads,
    fifty_actors_spawned_concurrently_all_answer_and_are_reaped,
);

fn spawn_failures_are_typed() -> Result<(), Failed> {
    match harness::backend().as_str() {
        "proc" => proc_spawn_failures_are_typed(),
        "fork" => fork_spawn_failures_are_typed(),
        "subint" => subint_spawn_failures_are_typed(),
        other => return Err(format!("no spawn failure cases for backend {other:?}").into()),
    }?;
    a_child_that_cannot_reach_its_parent_died_early()
}

/// The parent's endpoint vanished (its socket file removed): a new child cannot connect
/// back, exits with the setup-failure status, and the spawn fails with `DiedEarly`. Every
/// backend.
fn a_child_that_cannot_reach_its_parent_died_early() -> Result<(), Failed> {
    with_root(async |n| {
        let addr = runtime_vars::current()
            .root_addr
            .clone()
            .expect("a root address");
        // Both transports listen on a socket file (`shm` for its control socket).
        let (_, path) = addr.split_once(':').expect("a transport address");
        assert!(matches!(harness::transport().as_str(), "uds" | "shm"));
        std::fs::remove_file(path)?;
        let t = Instant::now();
        match n.start_actor("stray", ActorOptions::new()).await {
            Err(SpawnError::DiedEarly { actor, exit }) => {
                assert_eq!(actor, "root/stray");
                // The child entry point's status: internal to brood.
                assert_eq!(exit, ChildExit::Exited(spawn_api::EXIT_SETUP));
            }
            other => panic!("expected DiedEarly, got {other:?}"),
        }
        let bound = scaled(Duration::from_secs(5));
        assert!(
            t.elapsed() < bound,
            "failed in {:?}, not within {bound:?}",
            t.elapsed()
        );
        Ok(())
    })?;
    Ok(())
}

/// A `python` option the backend does not know is a typed `Unavailable` at once; an
/// eager interpreter exists by the time the spawn returns; an actor started without
/// Python answers Python calls with a typed error.
fn subint_spawn_failures_are_typed() -> Result<(), Failed> {
    with_root(async |n| {
        let t = Instant::now();
        match n
            .start_actor(
                "odd",
                ActorOptions::new()
                    .backend("subint")
                    .backend_option("python", "sometimes"),
            )
            .await
        {
            Err(SpawnError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "subint");
                assert!(reason.contains("sometimes"), "{reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        let bound = scaled(Duration::from_secs(1));
        assert!(
            t.elapsed() < bound,
            "refused in {:?}, not within {bound:?}",
            t.elapsed()
        );

        let before = spawn_subint::live_interpreters();
        let eager = n
            .start_actor(
                "eager",
                ActorOptions::new()
                    .backend("subint")
                    .backend_option("python", "eager"),
            )
            .await?;
        assert_eq!(
            spawn_subint::live_interpreters(),
            before + 1,
            "the interpreter exists once the spawn returns"
        );
        assert_eq!(eager.run(Eval, "6 * 7".into()).await?, PyValue::Int(42));

        let rust_only = n
            .start_actor(
                "rust-only",
                ActorOptions::new()
                    .backend("subint")
                    .backend_option("python", "none"),
            )
            .await?;
        let e = rust_only.run(Eval, "1".into()).await.unwrap_err();
        assert_eq!(
            e.remote().map(|r| r.kind.as_str()),
            Some("brood::NoPython"),
            "{e:?}"
        );
        assert_eq!(rust_only.run(Add, (1, 1)).await?, 2);
        assert_eq!(
            spawn_subint::live_interpreters(),
            before + 1,
            "no interpreter for an actor without Python"
        );
        Ok(())
    })?;
    Ok(())
}

fn proc_spawn_failures_are_typed() -> Result<(), Failed> {
    let policy = TeardownPolicy {
        spawn_timeout: Duration::from_millis(500),
        ..TeardownPolicy::default()
    };
    within_deadline(
        harness::root()
            .backend(spawn_proc::ProcBackend::new().with_exe("/bin/false"))
            .run(async |n| {
                match n.start_actor("dud", ActorOptions::new()).await {
                    Err(SpawnError::DiedEarly { actor, exit }) => {
                        assert_eq!(actor, "root/dud");
                        assert_eq!(exit, ChildExit::Exited(1));
                    }
                    other => panic!("expected DiedEarly, got {other:?}"),
                }
                Ok(())
            }),
    )?;
    spawn_times_out(
        harness::root().backend(
            spawn_proc::ProcBackend::new()
                .with_exe("/bin/sleep")
                .with_args(["30"]),
        ),
        policy,
    )
}

/// A child that never connects back (`/bin/sleep` as the program) fails its spawn with
/// a typed timeout after `policy.spawn_timeout`, and is killed.
fn spawn_times_out(root: RootBuilder, policy: TeardownPolicy) -> Result<(), Failed> {
    within_deadline(root.teardown(policy).run(async |n| {
        let t = Instant::now();
        match n.start_actor("mute", ActorOptions::new()).await {
            Err(SpawnError::Timeout { actor, after }) => {
                assert_eq!(actor, "root/mute");
                assert_eq!(after, policy.spawn_timeout);
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        let bound = scaled(Duration::from_secs(5));
        assert!(
            t.elapsed() < bound,
            "timed out in {:?}, not within {bound:?}",
            t.elapsed()
        );
        Ok(())
    }))?;
    Ok(())
}

/// The forkserver is the program that cannot start (`/bin/false`: no child can exist, the
/// backend is unavailable) or never answers (`/bin/sleep`: the spawn times out).
fn fork_spawn_failures_are_typed() -> Result<(), Failed> {
    let policy = TeardownPolicy {
        spawn_timeout: Duration::from_millis(500),
        ..TeardownPolicy::default()
    };
    within_deadline(
        harness::root()
            .backend(spawn_fork::ForkBackend::new().with_exe("/bin/false"))
            .run(async |n| {
                match n.start_actor("dud", ActorOptions::new()).await {
                    Err(SpawnError::Unavailable { backend, reason }) => {
                        assert_eq!(backend, "fork");
                        assert!(reason.contains("forkserver"), "{reason}");
                    }
                    other => panic!("expected Unavailable, got {other:?}"),
                }
                // The tree's server is gone for good: later spawns fail at once.
                let t = Instant::now();
                let again = n.start_actor("dud2", ActorOptions::new()).await;
                assert!(
                    matches!(again, Err(SpawnError::Unavailable { .. })),
                    "{again:?}"
                );
                let bound = scaled(Duration::from_secs(1));
                assert!(
                    t.elapsed() < bound,
                    "failed in {:?}, not within {bound:?}",
                    t.elapsed()
                );
                Ok(())
            }),
    )?;
    spawn_times_out(
        harness::root().backend(
            spawn_fork::ForkBackend::new()
                .with_exe("/bin/sleep")
                .with_args(["30"]),
        ),
        policy,
    )
}

/// A root whose runtime runs 16 worker threads (all started before the first spawn)
/// still gets healthy children: they answer, stream, spawn and end cleanly, and run
/// none of the parent's threads.
fn spawn_from_a_root_on_sixteen_worker_threads() -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(16)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        tokio::time::timeout(
            scaled(harness::DEADLINE),
            harness::root().run(async |n| {
                let ours = ProcInfo::of_self();
                assert!(ours.threads >= 17, "the root runs {} threads", ours.threads);
                let our_threads = leaks::thread_ids();
                // Keep the workers busy while the children start.
                let busy: Vec<_> = (0..32)
                    .map(|_| {
                        tokio::spawn(async {
                            for _ in 0..200 {
                                tokio::task::yield_now().await;
                            }
                        })
                    })
                    .collect();
                let kids: Vec<_> = join_all(
                    (0..4)
                        .map(|i| async move {
                            n.start_actor(&format!("kid{i}"), ActorOptions::new()).await
                        })
                        .collect(),
                )
                .await;
                for (i, kid) in kids.into_iter().enumerate() {
                    let kid = kid?;
                    let i = i as i64;
                    assert_eq!(kid.run(Add, (i, 1)).await?, i + 1);
                    let who = kid.run(WhoAmI, ()).await?;
                    assert_eq!(in_process(&who), in_process_backend());
                    if in_process(&who) {
                        // Our process, but a thread of its own, started for it.
                        assert!(
                            !our_threads.contains(&who.tid),
                            "a child runs on a thread of the root's"
                        );
                        let name = leaks::thread_name(who.tid).unwrap_or_default();
                        assert!(name.starts_with("brood:"), "{name:?}");
                    } else {
                        let me = kid.run(ProcSelf, ()).await?;
                        assert_ne!(me.pid, ours.pid);
                        assert!(me.threads <= 2, "a child runs {} threads", me.threads);
                    }
                    let items = kid.open_stream(Count, 1000).await?.collect().await?;
                    assert_eq!(items.len(), 1000);
                    let sum = kid.run(AddViaChild, (format!("grandkid{i}"), i, 2)).await?;
                    assert_eq!(sum, i + 2);
                }
                for b in busy {
                    b.await?;
                }
                n.cancel().await;
                Ok(n.reports())
            }),
        )
        .await
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let reports = result.map_err(|_| "the test did not finish in time")??;
    assert_eq!(reports.len(), 4, "four children reaped: {reports:?}");
    assert!(
        reports
            .iter()
            .all(|r| r.exit == ChildExit::Exited(0) && r.step == Step::Cancelled),
        "clean exits on the cancel request: {reports:?}"
    );
    Ok(())
}

/// 50 actors started at once from one parent all answer a call, and all are reaped:
/// fifty processes, or (in process) fifty threads of ours.
fn fifty_actors_spawned_concurrently_all_answer_and_are_reaped() -> Result<(), Failed> {
    let (sums, whos, reports) = with_root(async |n| {
        let started = join_all(
            (0..50i64)
                .map(|i| async move {
                    let p = n.start_actor(&format!("a{i}"), ActorOptions::new()).await?;
                    let sum = p.run(Add, (i, 1000)).await?;
                    let who = p.run(WhoAmI, ()).await?;
                    Ok::<_, FnError>((sum, who))
                })
                .collect(),
        )
        .await;
        let mut sums = Vec::new();
        let mut whos = Vec::new();
        for r in started {
            let (sum, who) = r?;
            sums.push(sum);
            whos.push(who);
        }
        n.cancel().await;
        Ok((sums, whos, n.reports()))
    })?;
    assert_eq!(
        sums,
        (1000..1050).collect::<Vec<i64>>(),
        "every actor answered"
    );
    let unique = |ids: Vec<u32>| {
        let mut ids = ids;
        ids.sort();
        ids.dedup();
        ids.len()
    };
    if in_process_backend() {
        let outside: Vec<&Who> = whos.iter().filter(|w| !in_process(w)).collect();
        assert!(
            outside.is_empty(),
            "every actor runs in our process: {outside:?}"
        );
        assert_eq!(
            unique(whos.iter().map(|w| w.tid).collect()),
            50,
            "fifty threads: {whos:?}"
        );
    } else {
        assert_eq!(
            unique(whos.iter().map(|w| w.pid).collect()),
            50,
            "fifty processes: {whos:?}"
        );
    }
    let lingering: Vec<&Who> = whos
        .iter()
        .filter(|w| !wait_gone(w, scaled(THREAD_END)))
        .collect();
    assert!(lingering.is_empty(), "every actor is gone: {lingering:?}");
    assert_eq!(reports.len(), 50, "a report per actor: {reports:?}");
    assert!(
        reports.iter().all(|r| r.exit == ChildExit::Exited(0)),
        "clean exits: {reports:?}"
    );
    Ok(())
}
