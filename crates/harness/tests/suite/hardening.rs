//! Regressions from outside acceptance tests: hangs, silent losses, threads that outlive
//! their nursery.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brood::{
    ActorOptions, ChildError, ChildExit, PortalError, RuntimeFlavor, Step, TeardownPolicy, kinds,
};
use harness::functions::*;
use harness::{Failed, in_process};

use crate::common::*;

crate::tests!(
    an_ended_context_answers_every_accessor_at_once,
    an_ended_stream_answers_every_accessor_at_once,
    a_child_outlives_the_thread_that_spawned_it,
    nested_teardown_runs_the_hook_of_every_descendant,
    a_grandchilds_panic_relayed_by_run_in_actor_stays_a_panic,
    dropping_start_actor_mid_spawn_leaks_nothing,
    a_failed_nursery_carries_its_reports,
    a_task_spawned_by_a_handler_keeps_the_actors_scope,
    an_abandoned_child_is_reported_without_delay,
);

/// How long an accessor that must answer at once may take here (a loaded machine;
/// unscaled: see [`scaled`]).
const AT_ONCE: Duration = Duration::from_secs(2);

/// A callee that sends two items and then fails: `recv` yields the items, then the
/// error, then the same error again; `result` returns it at once (it used to wait on a
/// link that could never resolve); `send` fails at once.
fn an_ended_context_answers_every_accessor_at_once() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("failing", ActorOptions::new()).await?;
        let (mut ctx, ()) = p.open_context(FailAfter, (2, "Broken".into())).await?;
        assert_eq!(ctx.recv().await?, Some(0));
        assert_eq!(ctx.recv().await?, Some(1));
        let first = ctx.recv().await.unwrap_err();
        assert_eq!(first.remote().map(|r| r.kind.as_str()), Some("Broken"));
        let again = tokio::time::timeout(scaled(AT_ONCE), ctx.recv())
            .await
            .expect("recv after the error answers at once")
            .unwrap_err();
        assert_eq!(again.to_string(), first.to_string());
        let sent = tokio::time::timeout(scaled(AT_ONCE), ctx.send(()))
            .await
            .expect("send after the end answers at once");
        assert!(sent.is_err(), "send after the callee failed: {sent:?}");
        let result = tokio::time::timeout(scaled(AT_ONCE), ctx.result())
            .await
            .expect("result after recv saw the error answers at once")
            .unwrap_err();
        assert_eq!(result.to_string(), first.to_string());

        // A callee that returned: `send` fails with `CallEnded` at once.
        let (mut echo, _) = p.open_context(Echo, "hi".into()).await?;
        echo.close_send()?;
        assert_eq!(echo.recv().await?, None);
        // The return follows the callee's `Stop` on the channel: once it is in, sends
        // fail (each answers at once meanwhile).
        let e = poll_until_async(
            Duration::from_secs(2),
            "send to fail once the callee returned",
            async || {
                tokio::time::timeout(scaled(AT_ONCE), echo.send("late".into()))
                    .await
                    .expect("send after the callee's end answers at once")
                    .err()
            },
        )
        .await;
        assert!(matches!(e, PortalError::CallEnded { .. }), "{e:?}");
        assert_eq!(echo.result().await?, 0);
        assert_eq!(p.run(Add, (1, 2)).await?, 3, "the actor carries on");
        Ok(())
    })?;
    Ok(())
}

/// A server stream that fails after its items: `recv` returns the error, then the same
/// error again (it used to pretend the stream ended cleanly).
fn an_ended_stream_answers_every_accessor_at_once() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("failing", ActorOptions::new()).await?;
        let mut s = p.open_stream(CountThenFail, 3).await?;
        for i in 0..3 {
            assert_eq!(s.recv().await?, Some(i));
        }
        let first = s.recv().await.unwrap_err();
        assert_eq!(first.remote().map(|r| r.kind.as_str()), Some("Boom"));
        for _ in 0..3 {
            let again = tokio::time::timeout(scaled(AT_ONCE), s.recv())
                .await
                .expect("recv after the end answers at once");
            assert_eq!(again.unwrap_err().to_string(), first.to_string());
        }
        let mut ok = p.open_stream(Count, 2).await?;
        assert_eq!(ok.recv().await?, Some(0));
        assert_eq!(ok.recv().await?, Some(1));
        assert_eq!(ok.recv().await?, None);
        assert_eq!(ok.recv().await?, None, "a clean end stays a clean end");
        Ok(())
    })?;
    Ok(())
}

/// A child started from a helper thread that then ends keeps running: `proc` children
/// used to die with the spawning *thread* (`PR_SET_PDEATHSIG` follows threads).
fn a_child_outlives_the_thread_that_spawned_it() -> Result<(), Failed> {
    with_root(async |n| {
        let handle = tokio::runtime::Handle::current();
        // A scoped thread that spawns and ends; `block_in_place` lets this worker wait.
        let portal = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| handle.block_on(n.start_actor("orphan-thread", ActorOptions::new())))
                    .join()
                    .expect("the helper thread")
            })
        })?;
        // Give a parent-death signal time to land, had it been armed on that thread.
        tokio::time::sleep(scaled(Duration::from_millis(300))).await;
        assert_eq!(portal.run(Add, (2, 3)).await?, 5, "the child is alive");
        assert_eq!(n.live_children(), 1);
        Ok(())
    })?;
    Ok(())
}

/// The root cancels a middle actor whose grandchild only a kill can stop: the middle
/// actor tears its grandchild down through its own ladder — hook included, with the
/// grandchild's own vars — before the root ever signals it. (The root used to terminate
/// the middle actor at its cancel timeout; the grandchild then died of the parent-death
/// signal and its hook never ran.)
fn nested_teardown_runs_the_hook_of_every_descendant() -> Result<(), Failed> {
    let log = harness::test_dir().with_extension("hooks.log");
    let _ = std::fs::remove_file(&log);
    let policy = TeardownPolicy {
        cancel_timeout: Duration::from_millis(200),
        kill_after: Duration::from_millis(300),
        ..TeardownPolicy::default()
    };
    let probe = Arc::new(Mutex::new(Probe::default()));
    let p2 = probe.clone();
    let result = within_deadline(
        harness::root()
            .teardown(policy)
            .vars(|v| v.user(HOOK_LOG_VAR, log.display().to_string()))
            .run(async move |n| {
                let middle = n
                    .start_actor(
                        "middle",
                        ActorOptions::new().runtime(RuntimeFlavor::MultiThread(2)),
                    )
                    .await?;
                let (_ctx, gc) = middle
                    .open_context(
                        HoldStuckGrandchild,
                        ActorOptionsWire {
                            debug_mode: Some(true),
                            ..ActorOptionsWire::default()
                        },
                    )
                    .await?;
                let _reports = ReportsOnDrop {
                    nursery: n,
                    probe: p2.clone(),
                };
                p2.lock().unwrap().who = Some(gc);
                n.cancel().await;
                Ok(())
            }),
    );
    let probe = std::mem::take(&mut *probe.lock().unwrap());
    let gc = probe
        .who
        .ok_or_else(|| format!("the body failed before the teardown: {result:?}"))?;
    let hooks = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert_eq!(
        hooks.lines().collect::<Vec<_>>(),
        ["root/middle/grandchild\ttrue"],
        "the middle actor ran the grandchild's hook, with the grandchild's vars"
    );
    let middle = probe.reports.iter().find(|r| r.actor == "root/middle");
    if in_process(&gc) {
        // The stuck Python grandchild is abandoned by the middle actor, which reports it.
        let e = result.expect_err("an abandoned grandchild fails the tree");
        let ne = e.nursery().expect("a nursery error");
        match ne.children.as_slice() {
            [ChildError::Failed { actor, error }] => {
                assert_eq!(actor, "root/middle");
                assert_eq!(error.kind, kinds::ABANDONED, "{error}");
                assert_eq!(error.origin, "root/middle/grandchild");
            }
            other => panic!("expected root/middle failed by its abandoned child: {other:?}"),
        }
    } else {
        result?;
        let middle = middle.ok_or("no report for root/middle")?;
        assert_eq!(
            (middle.step, &middle.exit),
            (Step::Cancelled, &ChildExit::Exited(0)),
            "the middle actor ended on the cancel request, after its subtree: {middle:?}"
        );
        assert!(harness::leaks::is_dead(gc.pid), "the grandchild is gone");
    }
    Ok(())
}

/// A grandchild's panic relayed by a `run_in_actor` function's `?` reaches the root as
/// `brood::Panic` from the grandchild, relayed by the child (it used to arrive as a
/// `NurseryError` of the child, the panic only as text).
fn a_grandchilds_panic_relayed_by_run_in_actor_stays_a_panic() -> Result<(), Failed> {
    let err = with_root(async |n| {
        let h = n
            .run_in_actor("child", PanicViaChild, "deep".into(), ActorOptions::new())
            .await?;
        let e = h.result().await.unwrap_err();
        let r = e.remote().expect("a remote error");
        assert_eq!(
            (r.kind.as_str(), r.message.as_str()),
            (kinds::PANIC, "deep")
        );
        Ok(())
    })
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [ChildError::Failed { actor, error }] => {
            assert_eq!(actor, "root/child");
            assert_eq!(error.kind, kinds::PANIC);
            assert_eq!(error.origin, "root/child/grandchild");
            assert_eq!(error.relays, ["root/child"]);
            assert!(
                error
                    .traceback
                    .as_deref()
                    .is_some_and(|l| l.contains("functions.rs")),
                "the panic's location: {error:?}"
            );
        }
        other => panic!("expected root/child failed with the relayed panic: {other:?}"),
    }
    Ok(())
}

/// `start_actor` futures dropped at every point of a spawn leave no pending handshake,
/// endpoint or process behind (the harness checks processes and files after the test),
/// and the nursery spawns normally afterwards.
fn dropping_start_actor_mid_spawn_leaks_nothing() -> Result<(), Failed> {
    with_root(async |n| {
        let mut kept = Vec::new();
        for i in 0..24u64 {
            let name = format!("hasty{i}");
            let spawn = n.start_actor(&name, ActorOptions::new());
            // 0 µs, 250 µs, 500 µs, ... : before, during and after the backend's work.
            if let Ok(p) = tokio::time::timeout(Duration::from_micros(i * 250), spawn).await {
                kept.push(p?);
            }
        }
        let pending = n.spawning();
        poll_until_async(
            Duration::from_secs(10),
            format!("the {pending} pending handshakes of dropped spawns to end"),
            async || n.spawning() == 0,
        )
        .await;
        for p in &kept {
            assert_eq!(p.run(Add, (1, 1)).await?, 2);
        }
        let fresh = n.start_actor("after", ActorOptions::new()).await?;
        assert_eq!(fresh.run(Add, (2, 2)).await?, 4);
        Ok(())
    })?;
    Ok(())
}

/// After a nursery fails, what became of each child is in its error (it used to be
/// unreachable once the body was cancelled).
fn a_failed_nursery_carries_its_reports() -> Result<(), Failed> {
    let err = with_root(async |n| {
        n.start_actor("bystander", ActorOptions::new()).await?;
        n.run_in_actor(
            "failing",
            Fail,
            ("Boom".into(), "x".into()),
            ActorOptions::new(),
        )
        .await?;
        std::future::pending::<()>().await;
        Ok(())
    })
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    let mut actors: Vec<&str> = ne.reports.iter().map(|r| r.actor.as_str()).collect();
    actors.sort();
    assert_eq!(
        actors,
        ["root/bystander", "root/failing"],
        "{:?}",
        ne.reports
    );
    let bystander = ne.reports.iter().find(|r| r.actor == "root/bystander");
    assert!(
        bystander.is_some_and(|r| r.step == Step::Cancelled),
        "{bystander:?}"
    );
    Ok(())
}

/// A task a handler starts with `ActorCx::spawn` runs in the actor's scope (a bare
/// `tokio::spawn` does not).
fn a_task_spawned_by_a_handler_keeps_the_actors_scope() -> Result<(), Failed> {
    let path = with_root(async |n| {
        let p = n.start_actor("spawner", ActorOptions::new()).await?;
        Ok(p.run(SpawnedTaskPath, ()).await?)
    })?;
    assert_eq!(path, "root/spawner");
    Ok(())
}

/// A child whose runtime thread is stuck (in a blocking call, here) cannot be stopped:
/// an in-process one is abandoned when the ladder gives up on it, and the nursery reports
/// it at once — it used to wait a further 500 ms for last words from a channel the stuck
/// actor could not close. A process child simply dies of SIGTERM.
fn an_abandoned_child_is_reported_without_delay() -> Result<(), Failed> {
    let policy = TeardownPolicy {
        cancel_timeout: Duration::from_millis(100),
        kill_after: Duration::from_millis(100),
        reap_timeout: Duration::from_millis(500),
        ..TeardownPolicy::default()
    };
    let probe = Arc::new(Mutex::new(Probe::default()));
    let p2 = probe.clone();
    let result = within_deadline(harness::root().teardown(policy).run(async move |n| {
        let c = n.start_actor("stuck", ActorOptions::new()).await?;
        let who = c.run(WhoAmI, ()).await?;
        // Blocks the child's only runtime thread for 3 s: past the ladder, within the
        // harness's grace for threads after the test.
        let blocked = c.run(BlockThread, 3000);
        tokio::pin!(blocked);
        // The call is in flight.
        let _ = tokio::time::timeout(scaled(Duration::from_millis(100)), &mut blocked).await;
        let _reports = ReportsOnDrop {
            nursery: n,
            probe: p2.clone(),
        };
        let t = Instant::now();
        {
            let mut p = p2.lock().unwrap();
            p.who = Some(who);
            p.cancelled_at = Some(t);
        }
        n.cancel().await;
        p2.lock().unwrap().took = Some(t.elapsed());
        Ok(())
    }));
    let ended = Instant::now();
    let probe = std::mem::take(&mut *probe.lock().unwrap());
    let (Some(who), Some(cancelled_at)) = (probe.who, probe.cancelled_at) else {
        return Err(format!("the body failed before the teardown: {result:?}").into());
    };
    let report = probe
        .reports
        .iter()
        .find(|r| r.actor == "root/stuck")
        .ok_or("no report for root/stuck")?;
    // From the order to the end of the body's `cancel` (or of the root, if the error
    // cancelled the body first), beyond the ladder itself.
    let took = probe
        .took
        .unwrap_or_else(|| ended.duration_since(cancelled_at));
    let after_reap = took.saturating_sub(report.teardown);
    if in_process(&who) {
        assert!(
            matches!(report.exit, ChildExit::Abandoned { .. }),
            "{report:?}"
        );
        assert!(result.is_err(), "an abandoned child is an error");
    } else {
        assert_eq!(report.step, Step::Terminated, "{report:?}");
        result?;
    }
    let bound = scaled(Duration::from_millis(400));
    assert!(
        after_reap < bound,
        "the nursery returned {after_reap:?} after the ladder ended, not within {bound:?} \
         ({report:?})"
    );
    Ok(())
}
