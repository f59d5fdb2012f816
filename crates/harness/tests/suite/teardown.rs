//! The teardown ladder, one-cancels-all, crashes and kills, hooks.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brood::{
    ActorOptions, ChildError, ChildExit, PortalError, RuntimeFlavor, Step, TeardownPolicy, kinds,
};
use harness::functions::*;
use harness::{Failed, in_process, leaks, wait_gone};

use crate::common::*;

crate::tests!(
    child_panic_is_a_typed_error,
    child_exit_code_is_a_typed_error,
    a_reply_written_just_before_a_clean_exit_arrives,
    child_sigkilled_mid_stream,
    cancelling_a_nursery_cancels_grandchildren,
    child_ignoring_cancellation_is_terminated_within_bounds,
    teardown_hook_sees_the_childs_vars_before_the_kill,
    root_sigkill_takes_every_descendant,
    one_child_failing_cancels_its_siblings,
    every_child_error_is_collected,
);

fn child_panic_is_a_typed_error() -> Result<(), Failed> {
    let err = with_root(async |n| {
        let c = n.start_actor("crasher", ActorOptions::new()).await?;
        let e = c.run(Panic, "kaboom".into()).await.unwrap_err();
        assert_eq!(e.remote().map(|r| r.kind.as_str()), Some(kinds::PANIC));
        Ok(())
    })
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [
            ChildError::Panicked {
                actor,
                message,
                location,
            },
        ] => {
            assert_eq!(actor, "root/crasher", "path");
            assert_eq!(message, "kaboom", "message");
            assert!(
                location
                    .as_deref()
                    .is_some_and(|l| l.contains("functions.rs")),
                "the location is in functions.rs: {location:?}"
            );
            Ok(())
        }
        other => Err(format!("expected one Panicked, got {other:?}").into()),
    }
}

fn child_exit_code_is_a_typed_error() -> Result<(), Failed> {
    let err = with_root(async |n| {
        let c = n.start_actor("quitter", ActorOptions::new()).await?;
        let who = c.run(WhoAmI, ()).await?;
        assert_eq!(in_process(&who), in_process_backend());
        let e = c.run(Exit, 3).await.unwrap_err();
        if in_process(&who) {
            // An orderly exit: the call is cancelled by the shutdown (naming the actor
            // and its exit), or the channel closes first.
            assert!(
                matches!(e, PortalError::Disconnected { .. })
                    || e.cancelled()
                        .is_some_and(|c| c.side == brood::CancelSide::Actor
                            && c.canceller == "root/quitter"
                            && c.reason.contains("code 3")),
                "{e:?}"
            );
        } else {
            assert!(matches!(e, PortalError::Disconnected { .. }), "{e:?}");
        }
        std::future::pending::<()>().await;
        Ok(())
    })
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [ChildError::Exited { actor, code: 3 }] if actor == "root/quitter" => Ok(()),
        other => Err(format!("expected Exited(3), got {other:?}").into()),
    }
}

/// A reply a child writes just before it ends with code 0 reaches the caller: its parent
/// reads the channel to its end before closing it, whatever the exit code. (It closed
/// it at once on a clean exit, and the reply could be lost as "lost contact ... exited
/// with code 0": seen in CI on `debug::a_cancel_request_waits_for_a_shielded_session`.)
fn a_reply_written_just_before_a_clean_exit_arrives() -> Result<(), Failed> {
    with_root(async |n| {
        for i in 0..30u32 {
            let c = n
                .start_actor(&format!("brief{i}"), ActorOptions::new())
                .await?;
            let got = c.run(ReplyThenEnd, i).await;
            match got {
                Ok(v) => assert_eq!(v, i + 1),
                Err(e) => panic!("round {i}: the reply was lost: {e:?}"),
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn child_sigkilled_mid_stream() -> Result<(), Failed> {
    let err = with_root(async |n| {
        let c = n.start_actor("victim", ActorOptions::new()).await?;
        let who = c.run(WhoAmI, ()).await?;
        assert_eq!(in_process(&who), in_process_backend());
        let mut s = c.open_stream(Count, u64::MAX).await?;
        for _ in 0..100 {
            s.recv().await?.expect("an item");
        }
        kill_actor(&c, &who).await;
        let e = loop {
            match s.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended cleanly after a SIGKILL"),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, PortalError::Disconnected { .. }), "{e:?}");
        std::future::pending::<()>().await;
        Ok(())
    })
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [
            ChildError::Signaled {
                signal: 9, name, ..
            },
        ] if name == "SIGKILL" => Ok(()),
        other => Err(format!("expected Signaled(SIGKILL), got {other:?}").into()),
    }
}

fn cancelling_a_nursery_cancels_grandchildren() -> Result<(), Failed> {
    let (child, grandchild, reports) = with_root(async |n| {
        let c = n.start_actor("middle", ActorOptions::new()).await?;
        let child = c.run(WhoAmI, ()).await?;
        let (_ctx, grandchild) = c
            .open_context(HoldGrandchild, ActorOptionsWire::default())
            .await?;
        assert_eq!(grandchild.path, "root/middle/grandchild");
        assert_eq!(in_process(&child), in_process_backend());
        assert_eq!(in_process(&grandchild), in_process_backend());
        assert!(!harness::is_gone(&grandchild));
        assert!(!harness::is_gone(&child));
        n.cancel().await;
        Ok((child, grandchild, n.reports()))
    })?;
    assert!(
        wait_gone(&grandchild, scaled(THREAD_END)),
        "the grandchild is gone: {grandchild:?}"
    );
    assert!(
        wait_gone(&child, scaled(THREAD_END)),
        "the child is gone: {child:?}"
    );
    match reports.as_slice() {
        [r] => assert_eq!(
            (r.step, &r.exit),
            (Step::Cancelled, &ChildExit::Exited(0)),
            "the child shut down on the cancel request: {r:?}"
        ),
        other => panic!("expected one report, got {other:?}"),
    }
    Ok(())
}

fn child_ignoring_cancellation_is_terminated_within_bounds() -> Result<(), Failed> {
    let policy = TeardownPolicy::default();
    let (took, reports, who) = within_deadline(harness::root().teardown(policy).run(async |n| {
        let c = n
            .start_actor(
                "stubborn",
                ActorOptions::new().runtime(RuntimeFlavor::MultiThread(2)),
            )
            .await?;
        let who = c.run(WhoAmI, ()).await?;
        // Once `started` arrives, the child's handler is blocked for good (in process:
        // until its runtime is aborted).
        let (ctx, ()) = c.open_context(Stubborn, false).await?;
        let t = Instant::now();
        n.cancel().await;
        let took = t.elapsed();
        assert!(ctx.result().await.is_err(), "the blocked call fails");
        Ok((took, n.reports(), who))
    }))?;
    assert_eq!(
        in_process(&who),
        in_process_backend(),
        "the backend's kind of child: {who:?}"
    );
    let [r] = reports.as_slice() else {
        panic!("expected one report, got {reports:?}");
    };
    assert_eq!(r.step, Step::Terminated, "terminated: {r:?}");
    // A process dies of the SIGTERM; an in-process actor's terminate aborts its runtime,
    // which is reported as the SIGKILL a killed process would have died of.
    let signal = if in_process(&who) {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    assert!(
        matches!(r.exit, ChildExit::Signaled { signal: s, .. } if s == signal),
        "ended by signal {signal}: {r:?}"
    );
    // The lower bound is the ladder's; the upper one is scaled (the step says there was
    // no kill).
    let bound = scaled(policy.cancel_timeout + policy.kill_after);
    assert!(
        took >= policy.cancel_timeout && took < bound,
        "reaped after the cancel timeout ({:?}), before {bound:?}: {took:?}",
        policy.cancel_timeout
    );
    Ok(())
}

/// Before the hard kill, every hook runs once with the vars the parent built for *that*
/// child, and only after both bounds. A process child ignores the cancel request and
/// SIGTERM (only the kill ends it). An in-process child cannot ignore its terminate (it
/// aborts the actor's runtime) unless its thread is stuck: there it runs Python stuck in a
/// native call, so the ladder reaches the kill, after which the actor is abandoned (an
/// error its nursery reports, which cancels the body).
fn teardown_hook_sees_the_childs_vars_before_the_kill() -> Result<(), Failed> {
    let rec = Arc::new(Recorder::default());
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
            .hook(Shared(rec.clone()))
            .run(async move |n| {
                assert!(
                    !runtime_vars::current().debug_mode,
                    "the root itself is not in debug mode"
                );
                let c = n
                    .start_actor(
                        "stubborn",
                        ActorOptions::new()
                            .vars(|v| v.debug_mode(true))
                            .runtime(RuntimeFlavor::MultiThread(2)),
                    )
                    .await?;
                let who = c.run(WhoAmI, ()).await?;
                assert_eq!(in_process(&who), in_process_backend());
                let calm = n.start_actor("calm", ActorOptions::new()).await?;
                let blocked = if in_process(&who) {
                    Blocked::Python(c.open_context(PyRun, (PY_STUCK.into(), true)).await?.0)
                } else {
                    Blocked::Rust(c.open_context(Stubborn, true).await?.0)
                };
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
                drop(calm);
                assert!(blocked.fails().await, "the blocked call fails");
                Ok(())
            }),
    );
    let probe = std::mem::take(&mut *probe.lock().unwrap());
    let (Some(who), Some(cancelled_at)) = (probe.who, probe.cancelled_at) else {
        return Err(format!("the body failed before the teardown: {result:?}").into());
    };
    let seen = rec.0.lock().unwrap().clone();
    let stubborn = probe.reports.iter().find(|r| r.actor == "root/stubborn");
    let calm = probe.reports.iter().find(|r| r.actor == "root/calm");
    if in_process(&who) {
        match &result {
            Err(e) => match e.nursery().map(|ne| ne.children.as_slice()) {
                Some([ChildError::Abandoned { actor, .. }]) if actor == "root/stubborn" => {}
                _ => return Err(format!("expected root/stubborn abandoned, got {e}").into()),
            },
            Ok(()) => return Err("an abandoned child is an error of its nursery".into()),
        }
        // The body was cancelled by that error, perhaps before the report was filed.
        if let Some(r) = stubborn {
            assert!(
                r.step == Step::Abandoned && matches!(r.exit, ChildExit::Abandoned { .. }),
                "killed, then abandoned: {r:?}"
            );
        }
    } else {
        result?;
        let r = stubborn.ok_or("no report for root/stubborn")?;
        assert_eq!(r.step, Step::Killed, "killed: {r:?}");
        let took = probe.took.ok_or("no teardown time")?;
        assert!(
            took >= policy.cancel_timeout + policy.kill_after,
            "the kill came only after both bounds: {took:?}"
        );
    }
    assert!(
        calm.is_some_and(|r| r.step == Step::Cancelled),
        "calm sibling cancelled: {calm:?}"
    );
    match seen.as_slice() {
        [(name, debug, at)] => {
            assert!(
                name == "stubborn" && *debug,
                "the hook ran with the child's own vars: {seen:?}"
            );
            let after = at.duration_since(cancelled_at);
            assert!(
                after >= policy.cancel_timeout + policy.kill_after,
                "the hook ran only after both bounds: {after:?}"
            );
            Ok(())
        }
        _ => panic!("the hook ran once: {seen:?}"),
    }
}

/// Scenario: a root with a child and a grandchild; prints their pids (`PIDS root child
/// grandchild`) and thread ids (`TIDS ...`), then waits to be killed. On the subint
/// backend the child runs in the root's process, and its grandchild is a process (`proc`)
/// so that killing the root must still take a process with it.
pub(crate) fn tree_then_wait() {
    let grandchild_backend = in_process_backend().then(|| "proc".to_owned());
    let _ = harness::run(
        scaled(Duration::from_secs(120)),
        harness::root().run(async |n| {
            let c = n.start_actor("child", ActorOptions::new()).await?;
            let child = c.run(WhoAmI, ()).await?;
            let (_ctx, gc) = c
                .open_context(
                    HoldGrandchild,
                    ActorOptionsWire {
                        backend: grandchild_backend,
                        ..ActorOptionsWire::default()
                    },
                )
                .await?;
            println!("PIDS {} {} {}", std::process::id(), child.pid, gc.pid);
            println!("TIDS {} {} {}", nix::unistd::gettid(), child.tid, gc.tid);
            std::io::stdout().flush().unwrap();
            std::future::pending::<()>().await;
            Ok(())
        }),
    );
}

/// SIGKILL a tree's root: every descendant dies with it within 2 s ([`scaled`]). Process children die
/// of their parent-death signal; in-process children (subint) die with the root's process
/// itself, and a process below one of them still dies too.
fn root_sigkill_takes_every_descendant() -> Result<(), Failed> {
    let mut root = std::process::Command::new(std::env::current_exe()?)
        .env(harness::SCENARIO_ENV, "tree_then_wait")
        .env(harness::TEST_DIR_ENV, harness::test_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut out = std::io::BufReader::new(root.stdout.take().unwrap());
    let pids = numbers(&mut out, "PIDS")?;
    let tids = numbers(&mut out, "TIDS")?;
    let root_pid = pids[0];
    assert_eq!(root_pid, root.id(), "the scenario is the root");
    // (pid, tid) of the child and the grandchild.
    let descendants: Vec<(u32, u32)> = pids[1..]
        .iter()
        .copied()
        .zip(tids[1..].iter().copied())
        .collect();
    let (child, grandchild) = (descendants[0], descendants[1]);
    if in_process_backend() {
        assert!(
            child.0 == root_pid && child.1 != tids[0],
            "the child runs on a thread of the root's process {root_pid} (tids {tids:?}): \
             {descendants:?}"
        );
        assert!(
            leaks::thread_alive(root_pid, child.1),
            "the child's thread is alive: {child:?}"
        );
        let parent = leaks::ppid(grandchild.0);
        assert!(
            grandchild.0 != root_pid && parent == Some(root_pid),
            "the grandchild is a process of the root's ({root_pid}): {descendants:?}, \
             its parent {parent:?}"
        );
    } else {
        assert!(
            descendants.iter().all(|&(p, _)| p != root_pid),
            "descendants are processes of their own, not {root_pid}: {descendants:?}"
        );
    }
    // A descendant in the root's process is gone when its thread is; any other when its
    // process is.
    let gone = |(pid, tid): (u32, u32)| {
        if pid == root_pid {
            !leaks::thread_alive(pid, tid)
        } else {
            leaks::is_dead(pid)
        }
    };
    let early: Vec<_> = descendants.iter().filter(|&&d| gone(d)).collect();
    assert!(
        early.is_empty(),
        "every descendant is alive before the kill; gone: {early:?}"
    );
    kill(root_pid, nix::sys::signal::Signal::SIGKILL);
    root.wait()?;
    poll_until(
        Duration::from_secs(2),
        format_args!("every descendant of the killed root to die: {descendants:?}"),
        || {
            leaks::reap_zombies();
            descendants.iter().all(|&d| gone(d))
        },
    );
    // The killed tree could not remove its sockets; the next root in the same runtime
    // directory removes the directory of a tree whose root is dead.
    with_root(async |_n| Ok(()))?;
    Ok(())
}

fn one_child_failing_cancels_its_siblings() -> Result<(), Failed> {
    let sibling = Arc::new(Mutex::new(None));
    let s2 = sibling.clone();
    let err = with_root(async move |n| {
        let sib = n.start_actor("sibling", ActorOptions::new()).await?;
        *s2.lock().unwrap() = Some(sib.run(WhoAmI, ()).await?);
        n.run_in_actor(
            "failing",
            Fail,
            ("Boom".into(), "first".into()),
            ActorOptions::new(),
        )
        .await?;
        // Only the failure can end this body.
        std::future::pending::<()>().await;
        Ok(())
    })
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    assert!(
        ne.body.is_none(),
        "the body was cancelled, not failed: {:?}",
        ne.body
    );
    match ne.children.as_slice() {
        [ChildError::Failed { actor, error }] => {
            assert!(
                actor == "root/failing" && error.kind == "Boom",
                "the failure: {actor} {error:?}"
            );
        }
        other => panic!("expected one Failed, got {other:?}"),
    }
    let sib = sibling.lock().unwrap().clone().unwrap();
    assert_eq!(
        in_process(&sib),
        in_process_backend(),
        "the backend's kind of child: {sib:?}"
    );
    assert!(
        wait_gone(&sib, scaled(THREAD_END)),
        "the sibling was torn down: {sib:?}"
    );
    Ok(())
}

fn every_child_error_is_collected() -> Result<(), Failed> {
    let err = with_root(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let b = n.start_actor("b", ActorOptions::new()).await?;
        let wa = a.run(WhoAmI, ()).await?;
        let wb = b.run(WhoAmI, ()).await?;
        assert_eq!(in_process(&wa), in_process_backend());
        // Both at once (the calls leave in one poll): once the first death is seen, the
        // nursery tears the other down. Detached, so that the body being cancelled then
        // does not cancel the second crash.
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            join_all(vec![kill_actor(&a, &wa), kill_actor(&b, &wb)]).await;
        });
        std::future::pending::<()>().await;
        Ok(())
    })
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    let mut actors: Vec<&str> = ne.children.iter().map(|c| c.actor()).collect();
    actors.sort();
    assert_eq!(actors, ["root/a", "root/b"], "both errors: {ne}");
    assert!(
        ne.children
            .iter()
            .all(|c| matches!(c, ChildError::Signaled { signal: 9, .. })),
        "both were killed by SIGKILL: {:?}",
        ne.children
    );
    Ok(())
}
