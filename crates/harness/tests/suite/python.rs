//! Python in actors: on `subint` each actor has a sub-interpreter of its own in the test
//! process; on `proc` and `fork` the `python` service uses each child process's main
//! interpreter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brood::{ActorOptions, ChildError, ChildExit, RuntimeFlavor, Step, TeardownPolicy};
use harness::functions::*;
use harness::{Failed, in_process};
use spawn_subint::{Eval, Exec, PyValue};

use crate::common::*;

crate::tests!(
    python_state_is_private_to_each_actor,
    two_actors_in_one_process_see_their_own_vars,
    python_exception_in_a_grandchild_reaches_the_root,
    python_busy_loop_is_interrupted_by_cancellation,
    python_stuck_in_a_native_call_is_abandoned_within_bounds,
    twenty_eager_subint_actors_in_a_loop_leak_nothing on "subint",
    ending_the_root_ends_every_interpreter_cleanly,
);

// ---------------------------------------------------------------------------------------
// Python in actors: on `subint` each actor has a sub-interpreter of its own in the test
// process; on `proc` and `fork` the `python` service uses each child process's main
// interpreter.
/// Python state is private to an actor: a module global and a `sys.modules` entry set in
/// one are invisible to a sibling and to the parent (the test process's own main
/// interpreter), and the same global name holds each actor's own value.
fn python_state_is_private_to_each_actor() -> Result<(), Failed> {
    const SET: &str = "import sys, types\n\
                       marker = 'a'\n\
                       sys.modules['brood_marker'] = types.ModuleType('brood_marker')\n";
    const PROBE: &str = "('marker' in globals(), 'brood_marker' in __import__('sys').modules)";
    let (in_a, in_b, in_root) = with_root(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let b = n.start_actor("b", ActorOptions::new()).await?;
        // Both interpreters exist (and have run code) before `a` changes its own.
        b.run(Exec, "import sys".into()).await?;
        a.run(Exec, SET.into()).await?;
        let in_a = a.run(Eval, PROBE.into()).await?;
        let in_b = b.run(Eval, PROBE.into()).await?;
        let in_root = spawn_subint::Interp::main()?
            .run(|py| py.eval(PROBE))
            .await??;
        b.run(Exec, "marker = 'b'".into()).await?;
        assert_eq!(a.run(Eval, "marker".into()).await?, "a".into());
        assert_eq!(b.run(Eval, "marker".into()).await?, "b".into());
        Ok((in_a, in_b, in_root))
    })?;
    let pair = |x: bool| PyValue::List(vec![x.into(), x.into()]);
    assert_eq!(in_a, pair(true), "set where it was set");
    assert_eq!(in_b, pair(false), "invisible to the sibling");
    assert_eq!(in_root, pair(false), "invisible to the parent");
    Ok(())
}

/// Two live actors, called in turn while each call yields, see their own runtime vars
/// through `runtime_vars::current()`. Trivially true for processes; on `subint` both run in
/// the test process (one on a current-thread runtime, one on a multi-thread one).
fn two_actors_in_one_process_see_their_own_vars() -> Result<(), Failed> {
    with_root(async |n| {
        let left = n
            .start_actor("left", ActorOptions::new().vars(|v| v.user("side", "left")))
            .await?;
        let right = n
            .start_actor(
                "right",
                ActorOptions::new()
                    .vars(|v| v.user("side", "right"))
                    .runtime(RuntimeFlavor::MultiThread(2)),
            )
            .await?;
        let (wl, wr) = (left.run(WhoAmI, ()).await?, right.run(WhoAmI, ()).await?);
        if in_process_backend() {
            assert!(in_process(&wl) && in_process(&wr), "{wl:?} {wr:?}");
            assert_ne!(wl.tid, wr.tid, "each actor on a thread of its own");
        } else {
            assert_ne!(wl.pid, wr.pid);
        }
        for round in 0..20 {
            let ms = round % 3;
            let (l, r) = tokio::join!(left.run(VarsAcross, ms), right.run(VarsAcross, ms));
            for ((before, after), side) in [(l?, "left"), (r?, "right")] {
                assert_eq!(before, after, "{side}'s vars changed across an await");
                assert_eq!(before.tree_path, ["root", side]);
                assert_eq!(before.user["side"], side);
            }
            let root = runtime_vars::current();
            assert!(root.is_root && !root.user.contains_key("side"));
        }
        Ok(())
    })?;
    Ok(())
}

/// A Python exception raised in a grandchild reaches the root through the child's `?`
/// with its type, message and traceback, naming its origin and its relay.
fn python_exception_in_a_grandchild_reaches_the_root() -> Result<(), Failed> {
    const CODE: &str = "def explode(x):\n    raise ValueError(f'bad value {x!r}')\n\n\
                        def outer():\n    explode(42)\n";
    let e = with_root(async |n| {
        let child = n.start_actor("child", ActorOptions::new()).await?;
        let e = child
            .run(PyViaChild, (CODE.into(), "__main__:outer".into()))
            .await
            .unwrap_err();
        // The child carries on.
        assert_eq!(child.run(Add, (1, 2)).await?, 3);
        Ok(e.remote().cloned().expect("a remote error"))
    })?;
    assert_eq!(e.kind, "ValueError", "the Python type: {e:?}");
    assert_eq!(e.message, "bad value 42", "the message: {e:?}");
    let tb = e.traceback.as_deref().unwrap_or_default();
    assert!(
        tb.contains("in outer") && tb.contains("in explode") && tb.contains("ValueError"),
        "the traceback names the raising functions: {tb}"
    );
    assert_eq!(
        e.origin, "root/child/grandchild",
        "the origin names the grandchild: {e:?}"
    );
    assert_eq!(e.relays, ["root/child"], "the relay names the child: {e:?}");
    Ok(())
}

/// Python spinning in `while True: pass` is interrupted (`KeyboardInterrupt`) when its
/// call is cancelled, and then when its actor is: the ladder's cancel request alone stops
/// the actor, well within its bounds.
fn python_busy_loop_is_interrupted_by_cancellation() -> Result<(), Failed> {
    // `started()` inside the `try`: an interrupt cannot land before the handler is set.
    const SPIN: &str = "try:\n    started()\n    while True:\n        pass\n\
                        except KeyboardInterrupt:\n    interrupted += 1\n    raise\n";
    let policy = TeardownPolicy::default();
    let (took, reports) = within_deadline(harness::root().teardown(policy).run(async |n| {
        let p = n.start_actor("spinner", ActorOptions::new()).await?;
        p.run(Exec, "interrupted = 0".into()).await?;
        // Cancel the call: the loop is interrupted, runs its handler, and the
        // interpreter takes the next job.
        let (mut ctx, ()) = p.open_context(PyRun, (SPIN.into(), false)).await?;
        ctx.cancel("stop the loop").await?;
        let bound = scaled(Duration::from_secs(10));
        let count = tokio::time::timeout(bound, p.run(Eval, "interrupted".into()))
            .await
            .unwrap_or_else(|_| panic!("the loop was not interrupted within {bound:?}"))?;
        assert_eq!(count, PyValue::Int(1));
        // Cancel the actor.
        let (ctx, ()) = p.open_context(PyRun, (SPIN.into(), false)).await?;
        let t = Instant::now();
        n.cancel().await;
        let took = t.elapsed();
        drop(ctx);
        Ok((took, n.reports()))
    }))?;
    match reports.as_slice() {
        [r] => assert_eq!(
            (r.step, &r.exit),
            (Step::Cancelled, &ChildExit::Exited(0)),
            "ended on the cancel request: {r:?}"
        ),
        other => panic!("expected one report, got {other:?}"),
    }
    let bound = scaled(policy.cancel_timeout + policy.kill_after);
    assert!(took < bound, "well within the bounds ({bound:?}): {took:?}");
    Ok(())
}

/// Python blocked in a native call (`time.sleep`: EINTR is retried, the interrupt waits
/// for the call to return) does not hang its parent. In process, its actor is abandoned
/// (its host thread finishes the call and ends the interpreter on its own later; the
/// harness's thread and interpreter checks see that happen) and the nursery reports it; a
/// process child simply exits, its host thread with it.
fn python_stuck_in_a_native_call_is_abandoned_within_bounds() -> Result<(), Failed> {
    let policy = TeardownPolicy::default();
    let probe = Arc::new(Mutex::new(Probe::default()));
    let p2 = probe.clone();
    let result = within_deadline(harness::root().teardown(policy).run(async move |n| {
        let p = n.start_actor("sleeper", ActorOptions::new()).await?;
        let who = p.run(WhoAmI, ()).await?;
        let (ctx, ()) = p.open_context(PyRun, (PY_STUCK.into(), true)).await?;
        let _reports = ReportsOnDrop {
            nursery: n,
            probe: p2.clone(),
        };
        {
            let mut p = p2.lock().unwrap();
            p.who = Some(who);
            p.cancelled_at = Some(Instant::now());
        }
        n.cancel().await;
        drop(ctx);
        Ok(())
    }));
    let ended = Instant::now();
    let probe = std::mem::take(&mut *probe.lock().unwrap());
    let (Some(who), Some(cancelled_at)) = (probe.who, probe.cancelled_at) else {
        return Err(format!("the body failed before the teardown: {result:?}").into());
    };
    assert_eq!(
        in_process(&who),
        in_process_backend(),
        "the backend's kind of child: {who:?}"
    );
    // Up to the root's end (the body may be cancelled before `cancel` returns).
    let took = ended.duration_since(cancelled_at);
    let bound = scaled(policy.worst_case());
    assert!(
        took < bound,
        "the teardown ended within the ladder's bounds ({bound:?}): {took:?}"
    );
    if in_process(&who) {
        if let Some(r) = probe.reports.first() {
            assert!(
                matches!(r.exit, ChildExit::Abandoned { .. }) && r.step != Step::Finished,
                "abandoned by the ladder: {r:?}"
            );
        }
        match result {
            Err(e) => match e.nursery().map(|ne| ne.children.as_slice()) {
                Some([ChildError::Abandoned { actor, reason }]) if actor == "root/sleeper" => {
                    assert!(reason.contains("Python"), "why: {reason}");
                    Ok(())
                }
                _ => panic!("expected root/sleeper abandoned, got {e}"),
            },
            Ok(()) => panic!("an abandoned child is an error of its nursery"),
        }
    } else {
        result?;
        match probe.reports.as_slice() {
            [r] => assert!(
                (r.step == Step::Cancelled && r.exit == ChildExit::Exited(0))
                    || (r.step == Step::Terminated
                        && matches!(
                            r.exit,
                            ChildExit::Signaled {
                                signal: libc::SIGTERM,
                                ..
                            }
                        )),
                "a clean or terminated end: {r:?}"
            ),
            other => panic!("expected one report, got {other:?}"),
        }
        Ok(())
    }
}

/// 20 sub-interpreter actors with an eager interpreter, started, used and torn down one
/// after the other (they are `subint` actors explicitly, so the test runs in the `subint`
/// cell only), leave no interpreter or host thread behind; the harness then checks
/// threads and descriptors.
fn twenty_eager_subint_actors_in_a_loop_leak_nothing() -> Result<(), Failed> {
    let interpreters = spawn_subint::live_interpreters();
    let hosts = spawn_subint::live_hosts();
    let reports = with_root(async |n| {
        for i in 0..20i64 {
            let p = n
                .start_actor(
                    &format!("py{i}"),
                    ActorOptions::new()
                        .backend("subint")
                        .backend_option("python", "eager"),
                )
                .await?;
            assert_eq!(spawn_subint::live_interpreters(), interpreters + 1);
            p.run(Exec, format!("import json\nv = json.loads('[{i}, 2]')"))
                .await?;
            assert_eq!(
                p.run(Eval, "v[0] * v[1]".into()).await?,
                PyValue::Int(i * 2)
            );
            assert!(p.cancel_actor().await, "reaped");
            assert_eq!(
                spawn_subint::live_interpreters(),
                interpreters,
                "the interpreter ended with its actor"
            );
            assert_eq!(spawn_subint::live_hosts(), hosts, "its host thread too");
        }
        Ok(n.reports())
    })?;
    assert_eq!(reports.len(), 20, "a report per actor: {reports:?}");
    assert!(
        reports
            .iter()
            .all(|r| r.step == Step::Cancelled && r.exit == ChildExit::Exited(0)),
        "clean exits on the cancel request: {reports:?}"
    );
    assert_eq!(
        spawn_subint::live_interpreters(),
        interpreters,
        "interpreters back where they started"
    );
    Ok(())
}

/// Scenario: a root on the cell's backend with 3 actors that run Python, one of them
/// still spinning in a loop, returns normally. Prints the values the actors computed and
/// how many sub-interpreters are left.
pub(crate) fn python_actors_then_return() {
    const SPIN: &str = "started()\nwhile True:\n    pass\n";
    let (values, spinning) = harness::run(
        scaled(Duration::from_secs(60)),
        harness::root().run(async |n| {
            let mut values = Vec::new();
            let mut spinning = None;
            for i in 0..3 {
                let p = n
                    .start_actor(&format!("py{i}"), ActorOptions::new())
                    .await?;
                p.run(
                    Exec,
                    format!("import json\ndata = json.dumps({{'actor': {i}}})"),
                )
                .await?;
                values.push(p.run(Eval, "data".into()).await?);
                if i == 2 {
                    // Still running when the root ends (kept out of the body, so that the
                    // root's teardown, not a cancelled call, has to stop it).
                    spinning = Some(p.open_context(PyRun, (SPIN.into(), false)).await?.0);
                }
            }
            Ok((values, spinning))
        }),
    )
    .expect("the root failed");
    drop(spinning);
    let values: Vec<&str> = values.iter().filter_map(PyValue::as_str).collect();
    println!("VALUES {}", values.join(" "));
    println!("INTERPRETERS {}", spawn_subint::live_interpreters());
}

/// A root process whose actors ran Python (one still running) exits 0 once the root
/// returns, every interpreter ended and no fatal Python error on its stderr.
fn ending_the_root_ends_every_interpreter_cleanly() -> Result<(), Failed> {
    let root = std::process::Command::new(std::env::current_exe()?)
        .env(harness::SCENARIO_ENV, "python_actors_then_return")
        .env(harness::TEST_DIR_ENV, harness::test_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = root.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(root.wait_with_output());
    });
    let bound = scaled(Duration::from_secs(60));
    let output = match rx.recv_timeout(bound) {
        Ok(o) => o?,
        Err(_) => {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waiter.join();
            panic!("the root process did not end within {bound:?}");
        }
    };
    waiter.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the root exited 0: {:?}\n{stderr}",
        output.status
    );
    assert!(
        !stderr.contains("Fatal Python error"),
        "no fatal Python error: {stderr}"
    );
    assert!(
        stdout.contains(r#"VALUES {"actor": 0} {"actor": 1} {"actor": 2}"#),
        "every actor ran Python: {stdout}"
    );
    assert!(
        stdout.contains("INTERPRETERS 0\n"),
        "no sub-interpreter left: {stdout}"
    );
    Ok(())
}
