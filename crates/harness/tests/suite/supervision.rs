//! Supervisors: restart strategies and kinds, the restart intensity escalating to the
//! parent, handles that follow a child across its restarts, stop order, and a hundred
//! restarts leaving nothing behind.

use std::time::Duration;

use brood::supervision::{ChildSpec, Restart, Strategy, Supervised, Supervisor, SupervisorSpec};
use brood::{ActorOptions, ChildError, Nursery, PortalError};
use harness::Failed;
use harness::functions::*;
use harness::supervision_fns::SuperviseInside;

use crate::common::*;

crate::tests!(
    one_for_one_restarts_only_the_failed_child_whatever_way_it_died,
    one_for_all_restarts_every_child,
    rest_for_one_restarts_exactly_the_later_siblings,
    transient_permanent_and_temporary_children,
    past_the_restart_intensity_the_supervisor_escalates_to_its_parent,
    a_handle_follows_its_child_across_a_restart,
    children_stop_in_reverse_start_order,
    a_hundred_restarts_leave_nothing_behind,
    a_failing_start_call_fails_the_supervisor_start,
    stopping_or_closing_in_the_middle_of_a_restart_leaves_nothing_behind,
    a_supervisor_inside_an_actor_goes_down_with_it,
    a_supervisor_inside_an_actor_that_gives_up_fails_that_actors_call,
    one_supervisor_mixes_backends_and_restarts_each_on_its_own on "proc",
);

/// How long a supervised call may wait for a restart here (unscaled).
const RESTART_WAIT: Duration = Duration::from_secs(10);

/// The ways a child ends in these tests: three failures and a clean exit.
#[derive(Clone, Copy, Debug)]
enum Death {
    Panic,
    Exit,
    Kill,
    CleanExit,
}

/// Kill the current incarnation of `child` the way `death` says, and return once its
/// supervisor has seen the end (the handle left that incarnation).
async fn kill(child: &Supervised, death: Death) {
    let (portal, before) = child.portal().await.expect("the child is up");
    match death {
        Death::Panic => {
            let _ = portal.run(Panic, "on purpose".into()).await;
        }
        Death::Exit => {
            let _ = portal.run(Exit, 3).await;
        }
        Death::CleanExit => {
            let _ = portal.run(Exit, 0).await;
        }
        Death::Kill => {
            let who = portal.run(WhoAmI, ()).await.expect("who");
            kill_actor(&portal, &who).await;
        }
    }
    poll_until_async(
        RESTART_WAIT,
        format!("{} to leave incarnation {before}", child.name()),
        async || (child.incarnation() != before || !child.is_up()).then_some(()),
    )
    .await;
}

/// The incarnation that answers a call on `child` (waiting for a restart).
async fn answering(child: &Supervised) -> u64 {
    child
        .clone()
        .waiting(scaled(RESTART_WAIT))
        .run(Add, (1, 1))
        .await
        .unwrap_or_else(|e| panic!("{} answers: {e}", child.name()))
        .incarnation
}

async fn three(n: &Nursery, strategy: Strategy) -> Result<Supervisor, brood::FnError> {
    Ok(n.supervise(
        SupervisorSpec::new(strategy)
            .intensity(10, Duration::from_secs(60))
            .child(ChildSpec::new("a"))
            .child(ChildSpec::new("b"))
            .child(ChildSpec::new("c")),
    )
    .await?)
}

fn handles(sup: &Supervisor) -> [Supervised; 3] {
    ["a", "b", "c"].map(|n| sup.child(n).expect("a child"))
}

/// A panic, a non-zero exit and a SIGKILL from outside each end the middle child; only
/// it comes back, each time as a new incarnation, and the history says why.
fn one_for_one_restarts_only_the_failed_child_whatever_way_it_died() -> Result<(), Failed> {
    with_root(async |n| {
        let sup = three(n, Strategy::OneForOne).await?;
        let [a, b, c] = handles(&sup);
        for (k, death) in [Death::Panic, Death::Exit, Death::Kill]
            .into_iter()
            .enumerate()
        {
            kill(&b, death).await;
            assert_eq!(answering(&b).await, k as u64 + 2, "b after {death:?}");
            assert_eq!(
                (answering(&a).await, answering(&c).await),
                (1, 1),
                "after {death:?}"
            );
        }
        let h = sup.history();
        assert_eq!(h.len(), 3, "{h:?}");
        assert!(
            h.iter().all(|r| r.child == "b" && r.failed && r.restarted),
            "{h:?}"
        );
        assert!(h[0].why.contains("on purpose"), "the panic: {}", h[0].why);
        assert_eq!(sup.restarts(), 3);
        Ok(())
    })?;
    Ok(())
}

/// A panic, a non-zero exit and a SIGKILL of the middle child each restart all three; a
/// context open on a sibling's old incarnation ends with `Restarted`, naming it.
fn one_for_all_restarts_every_child() -> Result<(), Failed> {
    with_root(async |n| {
        let sup = three(n, Strategy::OneForAll).await?;
        let [a, b, c] = handles(&sup);
        let (mut ctx, _) = a.open_context(Echo, "hi".into()).await?;
        assert_eq!(ctx.incarnation(), 1);
        for (k, death) in [Death::Panic, Death::Exit, Death::Kill]
            .into_iter()
            .enumerate()
        {
            kill(&b, death).await;
            for h in [&a, &b, &c] {
                assert_eq!(
                    answering(h).await,
                    k as u64 + 2,
                    "{} after {death:?}",
                    h.name()
                );
            }
        }
        let e = ctx.recv().await.unwrap_err();
        assert!(
            matches!(e, PortalError::Restarted { incarnation: 1, .. }),
            "{e:?}"
        );
        let h = sup.history();
        let with: Vec<_> = h
            .iter()
            .filter(|r| !r.failed)
            .map(|r| r.child.as_str())
            .collect();
        assert_eq!(with, ["a", "c", "a", "c", "a", "c"], "{h:?}");
        assert!(
            h.iter().filter(|r| r.failed).all(|r| r.child == "b"),
            "{h:?}"
        );
        assert!(
            h.iter()
                .any(|r| r.child == "a" && r.why.contains("restarted with b")),
            "{h:?}"
        );
        Ok(())
    })?;
    Ok(())
}

fn rest_for_one_restarts_exactly_the_later_siblings() -> Result<(), Failed> {
    with_root(async |n| {
        let sup = three(n, Strategy::RestForOne).await?;
        let [a, b, c] = handles(&sup);
        kill(&b, Death::Exit).await;
        assert_eq!(
            (
                answering(&a).await,
                answering(&b).await,
                answering(&c).await
            ),
            (1, 2, 2)
        );
        kill(&a, Death::Kill).await;
        assert_eq!(
            (
                answering(&a).await,
                answering(&b).await,
                answering(&c).await
            ),
            (2, 3, 3)
        );
        kill(&c, Death::Panic).await;
        assert_eq!(
            (
                answering(&a).await,
                answering(&b).await,
                answering(&c).await
            ),
            (2, 3, 4)
        );
        Ok(())
    })?;
    Ok(())
}

/// Permanent: back after a clean exit too. Transient: back after a failure, not after a
/// clean exit. Temporary: never back; its handle says it is not running.
fn transient_permanent_and_temporary_children() -> Result<(), Failed> {
    with_root(async |n| {
        let sup = n
            .supervise(
                SupervisorSpec::new(Strategy::OneForOne)
                    .intensity(10, Duration::from_secs(60))
                    .child(ChildSpec::new("perm"))
                    .child(ChildSpec::new("trans").restart(Restart::Transient))
                    .child(ChildSpec::new("temp").restart(Restart::Temporary)),
            )
            .await?;
        let [perm, trans, temp] = ["perm", "trans", "temp"].map(|c| sup.child(c).unwrap());

        kill(&perm, Death::CleanExit).await;
        assert_eq!(
            answering(&perm).await,
            2,
            "a permanent child comes back after a clean exit"
        );

        kill(&trans, Death::Panic).await;
        assert_eq!(
            answering(&trans).await,
            2,
            "a transient child comes back after a failure"
        );
        kill(&trans, Death::CleanExit).await;
        let e = trans.run(Add, (1, 1)).await.unwrap_err();
        assert!(
            matches!(e, PortalError::NotRunning { .. }),
            "after a clean exit: {e:?}"
        );

        kill(&temp, Death::Kill).await;
        let e = temp
            .clone()
            .waiting(Duration::from_millis(200))
            .run(Add, (1, 1))
            .await
            .unwrap_err();
        assert!(
            matches!(e, PortalError::NotRunning { .. }),
            "temporary: {e:?}"
        );
        let h = sup.history();
        assert_eq!(
            h.iter()
                .map(|r| (r.child.as_str(), r.restarted))
                .collect::<Vec<_>>(),
            [
                ("perm", true),
                ("trans", true),
                ("trans", false),
                ("temp", false)
            ],
            "{h:?}"
        );
        Ok(())
    })?;
    Ok(())
}

/// Three failures within the window of an intensity of 2: the supervisor stops its
/// children and fails its nursery with a typed error naming the child and its last
/// errors; the root reports it.
fn past_the_restart_intensity_the_supervisor_escalates_to_its_parent() -> Result<(), Failed> {
    let r = with_root(async |n| {
        let sup = n
            .supervise(
                SupervisorSpec::new(Strategy::OneForOne)
                    .name("fragile")
                    .intensity(2, Duration::from_secs(60))
                    .child(ChildSpec::new("steady"))
                    .child(ChildSpec::new("flaky")),
            )
            .await?;
        let flaky = sup.child("flaky").unwrap();
        for _ in 0..2 {
            kill(&flaky, Death::Panic).await;
            answering(&flaky).await;
        }
        kill(&flaky, Death::Panic).await;
        let e = sup.wait().await.unwrap_err();
        assert!(e.to_string().contains("flaky"), "{e}");
        // The nursery fails: this body is cancelled before it gets here.
        std::future::pending::<()>().await;
        Ok(())
    });
    let err = r.expect_err("the supervisor's failure reaches the root");
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [ChildError::GaveUp(e)] => match &**e {
            brood::supervision::SupervisorError::RestartLimit {
                supervisor,
                child,
                max_restarts,
                last_errors,
                ..
            } => {
                assert_eq!(
                    (supervisor.as_str(), child.as_str(), *max_restarts),
                    ("fragile", "flaky", 2)
                );
                assert_eq!(last_errors.len(), 3, "{last_errors:?}");
                assert!(
                    last_errors.iter().all(|e| e.contains("on purpose")),
                    "{last_errors:?}"
                );
            }
            other => panic!("expected RestartLimit, got {other:?}"),
        },
        other => panic!("expected one GaveUp, got {other:?}"),
    }
    // Every child was stopped and reaped before the failure went up.
    assert!(ne.reports.len() >= 4, "{:?}", ne.reports);
    Ok(())
}

/// While the child restarts (a backoff makes it take a second), a call fails at once with
/// `Restarting` unless the handle waits; a call in flight when the incarnation died fails
/// with `Restarted` naming it; a stream of the old incarnation ends with it too.
fn a_handle_follows_its_child_across_a_restart() -> Result<(), Failed> {
    with_root(async |n| {
        let sup = n
            .supervise(
                SupervisorSpec::new(Strategy::OneForOne)
                    .intensity(10, Duration::from_secs(60))
                    .backoff(Duration::from_secs(1), Duration::from_secs(1))
                    .child(ChildSpec::new("svc")),
            )
            .await?;
        let svc = sup.child("svc").unwrap();
        assert_eq!(svc.run(Add, (2, 3)).await?.value, 5);

        let (portal, _) = svc.portal().await?;
        let who = portal.run(WhoAmI, ()).await?;
        let slow = {
            let svc = svc.clone();
            tokio::spawn(async move { svc.run(Sleep, 30_000).await })
        };
        let mut stream = svc.open_stream(Count, u64::MAX).await?;
        assert_eq!(stream.incarnation(), 1);
        assert_eq!(stream.recv().await?, Some(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        kill_actor(&portal, &who).await;

        match slow.await.expect("the task") {
            Err(PortalError::Restarted {
                incarnation: 1,
                actor,
                ..
            }) => assert_eq!(actor, "root/svc"),
            other => panic!("expected Restarted, got {other:?}"),
        }
        let e = loop {
            match stream.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended cleanly"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(e, PortalError::Restarted { incarnation: 1, .. }),
            "{e:?}"
        );

        let e = svc.run(Add, (1, 1)).await.unwrap_err();
        assert!(
            matches!(e, PortalError::Restarting { incarnation: 2, .. }),
            "during the backoff: {e:?}"
        );
        let answer = svc
            .clone()
            .waiting(scaled(RESTART_WAIT))
            .run(Add, (1, 1))
            .await?;
        assert_eq!((answer.value, answer.incarnation), (2, 2));
        Ok(())
    })?;
    Ok(())
}

/// `stop` ends the children one after the other, the last started first.
fn children_stop_in_reverse_start_order() -> Result<(), Failed> {
    with_root(async |n| {
        let sup = three(n, Strategy::OneForOne).await?;
        let [_, b, _] = handles(&sup);
        kill(&b, Death::Panic).await;
        answering(&b).await;
        let before = n.reports().len();
        sup.stop().await;
        let stopped: Vec<String> = n.reports()[before..]
            .iter()
            .map(|r| r.actor.clone())
            .collect();
        assert_eq!(stopped, ["root/c", "root/b", "root/a"]);
        let e = b.run(Add, (1, 1)).await.unwrap_err();
        assert!(matches!(e, PortalError::NotRunning { .. }), "{e:?}");
        sup.wait().await?;
        Ok(())
    })?;
    Ok(())
}

/// A hundred restarts of one child: the leak checks after the test find no process,
/// thread, interpreter, descriptor or socket file left.
fn a_hundred_restarts_leave_nothing_behind() -> Result<(), Failed> {
    with_root(async |n| {
        let sup = n
            .supervise(
                SupervisorSpec::new(Strategy::OneForOne)
                    .intensity(1000, Duration::from_secs(60))
                    .child(ChildSpec::new("phoenix")),
            )
            .await?;
        let phoenix = sup.child("phoenix").unwrap();
        for round in 0..100u64 {
            kill(&phoenix, Death::Panic).await;
            assert_eq!(answering(&phoenix).await, round + 2);
        }
        assert_eq!(sup.restarts(), 100);
        assert_eq!(n.live_children(), 1);
        sup.stop().await;
        assert_eq!(n.live_children(), 0);
        Ok(())
    })?;
    Ok(())
}

/// A child whose start call fails cannot start: the supervisor does not start either,
/// and the children started before it are stopped.
fn a_failing_start_call_fails_the_supervisor_start() -> Result<(), Failed> {
    with_root(async |n| {
        let e = n
            .supervise(
                SupervisorSpec::new(Strategy::OneForOne)
                    .child(ChildSpec::new("fine"))
                    .child(ChildSpec::new("broken").start_call(Fail, ("Bad".into(), "no".into()))),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, brood::supervision::SupervisorError::Start { child, .. } if child == "broken"),
            "{e:?}"
        );
        assert_eq!(n.live_children(), 0, "the first child was stopped again");
        Ok(())
    })?;
    Ok(())
}

/// One supervisor with a process, a fork and a sub-interpreter child: each restarts on
/// its own backend.
fn one_supervisor_mixes_backends_and_restarts_each_on_its_own() -> Result<(), Failed> {
    with_root(async |n| {
        let mut spec =
            SupervisorSpec::new(Strategy::OneForAll).intensity(10, Duration::from_secs(60));
        for b in ["proc", "fork", "subint"] {
            spec = spec.child(ChildSpec::new(b).options(ActorOptions::new().backend(b)));
        }
        let sup = n.supervise(spec).await?;
        let fork = sup.child("fork").unwrap();
        kill(&fork, Death::Kill).await;
        for b in ["proc", "fork", "subint"] {
            let h = sup.child(b).unwrap();
            assert_eq!(answering(&h).await, 2, "{b}");
            let (p, _) = h.portal().await?;
            let vars = p.run(Vars, ()).await?;
            assert_eq!(vars.backend, b);
        }
        Ok(())
    })?;
    Ok(())
}

/// A supervisor held inside a child actor: cancelling that actor takes the supervisor's
/// children with it (the leak checks after the test find none of them).
fn a_supervisor_inside_an_actor_goes_down_with_it() -> Result<(), Failed> {
    with_root(async |n| {
        let middle = n.start_actor("middle", ActorOptions::new()).await?;
        let (mut ctx, who) = middle.open_context(SuperviseInside, (3, 10)).await?;
        assert_eq!(who.len(), 3);
        ctx.send(1).await?;
        assert!(middle.cancel_actor().await, "the middle actor went");
        let e = ctx.recv().await.unwrap_err();
        assert!(
            matches!(
                e,
                PortalError::ContextCancelled(_) | PortalError::Disconnected { .. }
            ),
            "{e:?}"
        );
        for w in &who {
            assert!(
                harness::wait_gone(w, scaled(Duration::from_secs(5))),
                "{} outlived its supervisor's actor",
                w.path
            );
        }
        Ok(())
    })?;
    Ok(())
}

/// The supervisor inside a child actor gives up: the actor's context fails with the
/// supervisor's typed error, relayed to the root.
fn a_supervisor_inside_an_actor_that_gives_up_fails_that_actors_call() -> Result<(), Failed> {
    with_root(async |n| {
        let middle = n.start_actor("middle", ActorOptions::new()).await?;
        let (mut ctx, _who) = middle.open_context(SuperviseInside, (2, 1)).await?;
        ctx.send(0).await?;
        tokio::time::sleep(scaled(Duration::from_millis(500))).await;
        ctx.send(0).await?;
        // The context ends when the supervisor gave up; its caller sees why.
        let e = ctx.recv().await.unwrap_err();
        let r = e
            .remote()
            .unwrap_or_else(|| panic!("a remote error: {e:?}"));
        assert_eq!(r.kind, brood::kinds::RESTART_LIMIT, "{r}");
        assert!(r.message.contains("w0"), "{r}");
        Ok(())
    })?;
    Ok(())
}

/// `stop` while a restart waits out its backoff, and a nursery scope that ends while
/// another supervisor waits out its own: the restarts do not happen (or are undone), and
/// the leak checks after the test find nothing left.
fn stopping_or_closing_in_the_middle_of_a_restart_leaves_nothing_behind() -> Result<(), Failed> {
    let spec = || {
        SupervisorSpec::new(Strategy::OneForAll)
            .intensity(10, Duration::from_secs(60))
            .backoff(Duration::from_millis(300), Duration::from_millis(300))
            .child(ChildSpec::new("a"))
            .child(ChildSpec::new("b"))
    };
    with_root(async |n| {
        let sup = n.supervise(spec()).await?;
        let b = sup.child("b").unwrap();
        kill(&b, Death::Panic).await;
        assert!(!b.is_up(), "restarting, in its backoff");
        sup.stop().await;
        sup.wait().await?;
        let e = b
            .clone()
            .waiting(Duration::from_secs(1))
            .run(Add, (1, 1))
            .await
            .unwrap_err();
        assert!(matches!(e, PortalError::NotRunning { .. }), "{e:?}");
        // Past the backoff: whatever the supervisor started then, it stopped again.
        tokio::time::sleep(scaled(Duration::from_millis(600))).await;
        assert_eq!(n.live_children(), 0);
        Ok(())
    })?;
    with_root(async |n| {
        let sup = n.supervise(spec()).await?;
        let b = sup.child("b").unwrap();
        kill(&b, Death::Exit).await;
        // The scope ends now, in the middle of the restart.
        Ok(())
    })?;
    Ok(())
}
