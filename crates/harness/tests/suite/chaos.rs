//! Chaos: a child killed at every phase of its life, a killed middle actor; the nursery
//! reports it, nothing hangs, nothing leaks (the harness checks processes, threads,
//! descriptors and files after every test).
//!
//! The other phases have tests of their own: mid-stream
//! (`teardown::child_sigkilled_mid_stream`), the forkserver
//! (`fork::forkserver_sigkill_fails_spawns_and_running_actors_carry_on`), the root
//! (`teardown::root_sigkill_takes_every_descendant`).

use std::time::{Duration, Instant};

use brood::{ActorOptions, ChildExit, PortalError, RuntimeFlavor, SpawnError, TeardownPolicy};
use harness::chaos::{ChaosBackend, SlowAccept};
use harness::functions::*;
use harness::{Failed, in_process};

use crate::common::*;

crate::tests!(
    killed_before_its_handshake,
    killed_during_its_handshake,
    killed_mid_call,
    killed_during_its_teardown,
    a_killed_middle_actor_takes_its_subtree,
    a_start_actor_given_up_during_its_handshake_leaves_no_child,
    a_run_in_actor_given_up_during_its_handshake_does_not_hold_the_nursery,
);

/// How a killed child ends: SIGKILL for a process; an aborted in-process actor reports
/// the same.
fn killed(exit: &ChildExit) -> bool {
    matches!(exit, ChildExit::Signaled { signal: 9, .. })
}

/// A child killed right after the backend started it, before its handshake could
/// complete (the root holds accepted channels for a moment, so a fast fork cannot finish
/// it first): the spawn fails with a typed error at once, and the nursery spawns normally
/// after.
fn killed_before_its_handshake() -> Result<(), Failed> {
    let chaos = ChaosBackend::new(harness::cell_backend());
    chaos.kill_next_at_spawn(1);
    let slow = SlowAccept::new(harness::cell_transport(), Duration::from_millis(200));
    within_deadline(
        harness::root()
            .backend(chaos)
            .transport(slow)
            .run(async |n| {
                let t = Instant::now();
                match n.start_actor("doomed", ActorOptions::new()).await {
                    Err(SpawnError::DiedEarly { actor, exit }) => {
                        assert_eq!(actor, "root/doomed");
                        assert!(killed(&exit), "{exit:?}");
                    }
                    other => panic!("expected DiedEarly, got {other:?}"),
                }
                let bound = scaled(Duration::from_secs(5));
                assert!(
                    t.elapsed() < bound,
                    "failed in {:?}, not within {bound:?}",
                    t.elapsed()
                );
                let next = n.start_actor("next", ActorOptions::new()).await?;
                assert_eq!(next.run(Add, (1, 2)).await?, 3);
                Ok(())
            }),
    )?;
    Ok(())
}

/// A child killed while it waits for its parent's answer to its handshake: the spawn
/// fails with a typed error, nothing waits for the dead child.
fn killed_during_its_handshake() -> Result<(), Failed> {
    let chaos = ChaosBackend::new(harness::cell_backend());
    let slow = SlowAccept::new(harness::cell_transport(), Duration::from_millis(500));
    let (c2, s2) = (chaos.clone(), slow.clone());
    within_deadline(
        harness::root()
            .backend(chaos)
            .transport(slow)
            .run(async move |n| {
                let spawn = n.start_actor("doomed", ActorOptions::new());
                tokio::pin!(spawn);
                // The child connected: it has sent its `Hello` and waits for the answer.
                tokio::select! {
                    _ = s2.accepted() => {}
                    r = &mut spawn => panic!("the spawn ended before the handshake: {r:?}"),
                }
                c2.kill_now();
                let t = Instant::now();
                match spawn.await {
                    Err(SpawnError::DiedEarly { exit, .. }) => {
                        assert!(killed(&exit), "{exit:?}")
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
            }),
    )?;
    Ok(())
}

/// A `start_actor` whose future is dropped while its child waits in its handshake
/// leaves no child behind: the child is torn down at once (not kept, with no portal,
/// until the nursery ends); the nursery spawns normally after.
fn a_start_actor_given_up_during_its_handshake_leaves_no_child() -> Result<(), Failed> {
    let slow = SlowAccept::new(harness::cell_transport(), Duration::from_millis(300));
    let s2 = slow.clone();
    within_deadline(harness::root().transport(slow).run(async move |n| {
        {
            let spawn = n.start_actor("given-up", ActorOptions::new());
            tokio::select! {
                _ = s2.accepted() => {}
                r = spawn => panic!("the spawn ended before the handshake: {r:?}"),
            }
        }
        // Given up before the backend returned it (a fork child may connect before its
        // reply is read), the backend kills it; after, its supervisor tears it down. The
        // harness checks that no process or thread is left.
        poll_until_async(
            Duration::from_secs(5),
            "the given-up child to be reaped",
            async || n.live_children() == 0 && n.spawning() == 0,
        )
        .await;
        let next = n.start_actor("next", ActorOptions::new()).await?;
        assert_eq!(next.run(Add, (1, 2)).await?, 3);
        Ok(())
    }))?;
    Ok(())
}

/// A `run_in_actor` whose future is dropped while its child waits in its handshake:
/// the function is never called, and the child that would have run it does not hold
/// the nursery's end (the scope waits for `run_in_actor` children to finish).
fn a_run_in_actor_given_up_during_its_handshake_does_not_hold_the_nursery() -> Result<(), Failed> {
    let slow = SlowAccept::new(harness::cell_transport(), Duration::from_millis(300));
    let s2 = slow.clone();
    let root = harness::root().transport(slow).run(async move |n| {
        let spawn = n.run_in_actor("never-run", Add, (1, 2), ActorOptions::new());
        tokio::select! {
            _ = s2.accepted() => {}
            r = spawn => panic!("the spawn ended before the handshake: {r:?}"),
        }
        Ok(())
    });
    let bound = scaled(Duration::from_secs(10));
    within_deadline(async { tokio::time::timeout(bound, root).await })
        .map_err(|_| format!("the nursery did not end within {bound:?}"))??;
    Ok(())
}

/// A child killed while it serves a call: the call fails with `Disconnected`, the
/// nursery reports the kill.
fn killed_mid_call() -> Result<(), Failed> {
    let err = with_root(async |n| {
        let c = n.start_actor("sleeper", ActorOptions::new()).await?;
        let who = c.run(WhoAmI, ()).await?;
        let call = c.run(Sleep, 60_000);
        tokio::pin!(call);
        // The call is in flight.
        let _ = tokio::time::timeout(scaled(Duration::from_millis(100)), &mut call).await;
        let c2 = c.clone();
        tokio::spawn(async move { kill_actor(&c2, &who).await });
        let bound = scaled(Duration::from_secs(10));
        let e = tokio::time::timeout(bound, call)
            .await
            .unwrap_or_else(|_| {
                panic!("the call did not end within {bound:?} of its actor's death")
            })
            .unwrap_err();
        assert!(matches!(e, PortalError::Disconnected { .. }), "{e:?}");
        std::future::pending::<()>().await;
        Ok(())
    })
    .unwrap_err();
    killed_alone(&err, "root/sleeper")
}

/// A child killed while the ladder waits for it to honour the cancel request: the
/// ladder stops at once and the nursery reports a kill it did not order. (The cancel
/// step is scaled with the bound on the teardown, which must stay below it.)
fn killed_during_its_teardown() -> Result<(), Failed> {
    let policy = TeardownPolicy {
        cancel_timeout: scaled(Duration::from_secs(5)),
        ..TeardownPolicy::default()
    };
    let err = within_deadline(harness::root().teardown(policy).run(async |n| {
        let c = n
            .start_actor(
                "stubborn",
                ActorOptions::new().runtime(RuntimeFlavor::MultiThread(2)),
            )
            .await?;
        let who = c.run(WhoAmI, ()).await?;
        let (_ctx, ()) = c.open_context(Stubborn, false).await?;
        let c2 = c.clone();
        let killer = tokio::spawn(async move {
            // Well inside the 5 s cancel step.
            tokio::time::sleep(Duration::from_millis(300)).await;
            kill_actor(&c2, &who).await;
        });
        let t = Instant::now();
        n.cancel().await;
        let bound = scaled(Duration::from_secs(3));
        assert!(
            t.elapsed() < bound,
            "the ladder went on after the kill: {:?}, not within {bound:?}",
            t.elapsed()
        );
        killer.await?;
        Ok(())
    }))
    .unwrap_err();
    killed_alone(&err, "root/stubborn")
}

/// A middle actor killed while it holds a grandchild: the grandchild goes with it (a
/// process by its parent-death signal or link, an in-process one when the middle
/// actor's runtime is torn down), and the nursery reports the middle actor killed.
fn a_killed_middle_actor_takes_its_subtree() -> Result<(), Failed> {
    let gc = std::sync::Arc::new(std::sync::Mutex::new(None));
    let g2 = gc.clone();
    let err = with_root(async move |n| {
        let middle = n.start_actor("middle", ActorOptions::new()).await?;
        let who = middle.run(WhoAmI, ()).await?;
        let (_ctx, grandchild) = middle
            .open_context(HoldGrandchild, ActorOptionsWire::default())
            .await?;
        assert_eq!(in_process(&grandchild), in_process(&who));
        *g2.lock().unwrap() = Some(grandchild);
        kill_actor(&middle, &who).await;
        std::future::pending::<()>().await;
        Ok(())
    })
    .unwrap_err();
    killed_alone(&err, "root/middle")?;
    let grandchild = gc.lock().unwrap().clone().ok_or("no grandchild")?;
    // Its death is the kernel's (or the dead runtime's) doing, not a reap we waited for.
    poll_until(
        Duration::from_secs(2),
        format_args!("the grandchild to go with its parent: {grandchild:?}"),
        || {
            harness::leaks::reap_zombies();
            harness::is_gone(&grandchild)
        },
    );
    Ok(())
}
