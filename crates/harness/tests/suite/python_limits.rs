//! Python values and jobs at their limits: deep and cyclic values, late interrupts, actor threads that end before their nursery returns.

use std::time::{Duration, Instant};

use brood::{ActorOptions, ChildError, PortalError, RemoteError, RootError};
use harness::Failed;
use harness::functions::*;
use spawn_subint::{Eval, Exec, PyValue};

use crate::common::*;

// The last three are about `subint` actors, which they start explicitly: they run in the
// `subint` cell only.
crate::tests!(
    python_eval_of_a_cyclic_value_is_a_typed_error,
    python_eval_of_a_deeply_nested_value_is_a_typed_error,
    ten_subint_siblings_leave_no_thread_once_the_root_returns on "subint",
    a_stuck_grandchild_of_an_aborted_subint_child_is_reported on "subint",
    a_stuck_subint_grandchild_is_reported_when_the_root_cancels on "subint",
);

/// The remote error a call ended with.
fn remote(r: Result<PyValue, PortalError>, what: &str) -> Result<RemoteError, Failed> {
    match r {
        Err(PortalError::Remote(e)) => Ok(*e),
        other => Err(format!("{what}: expected a remote error, got {other:?}").into()),
    }
}

/// `python.eval` of a list that contains itself (directly, twice, and through a dict)
/// ends the call with a typed `ValueError` (converting it used to recurse until the
/// host thread's stack overflowed: SIGABRT for a process actor, the whole test process
/// under `subint`), and the actor keeps serving.
fn python_eval_of_a_cyclic_value_is_a_typed_error() -> Result<(), Failed> {
    let (errors, sum, len) = with_root(async |n| {
        let p = n.start_actor("cyclic", ActorOptions::new()).await?;
        p.run(
            Exec,
            "l = []\nl.append(l)\nw = [l, l]\nd = {}\nd['me'] = [d]\n".into(),
        )
        .await?;
        let mut errors = Vec::new();
        for name in ["l", "w", "d"] {
            errors.push((name, p.run(Eval, name.into()).await));
        }
        let sum = p.run(Add, (1, 2)).await?;
        let len = p.run(Eval, "len(w)".into()).await?;
        Ok((errors, sum, len))
    })?;
    for (name, r) in errors {
        let e = remote(r, name)?;
        assert!(
            e.kind == "ValueError" && e.message.contains("circular reference"),
            "{name}: a typed error: {e:?}"
        );
    }
    assert_eq!(sum, 3, "the actor serves the next call");
    assert_eq!(len, PyValue::Int(2), "and its Python state is intact");
    Ok(())
}

/// `python.eval` of a list nested 100 000 deep (and of one just past
/// `PyValue::MAX_DEPTH`) ends the call with a typed `RecursionError` naming the limit;
/// one exactly at the limit converts; the actor keeps serving.
fn python_eval_of_a_deeply_nested_value_is_a_typed_error() -> Result<(), Failed> {
    let max = PyValue::MAX_DEPTH;
    let (deep, over, edge, sum) = with_root(async |n| {
        let p = n.start_actor("deep", ActorOptions::new()).await?;
        p.run(
            Exec,
            format!(
                "deep = []\nfor _ in range(100000):\n    deep = [deep]\n\
                 edge = None\nfor _ in range({max}):\n    edge = [edge]\n\
                 over = [edge]\n"
            ),
        )
        .await?;
        let deep = p.run(Eval, "deep".into()).await;
        let over = p.run(Eval, "over".into()).await;
        let edge = p.run(Eval, "edge".into()).await?;
        let sum = p.run(Add, (2, 3)).await?;
        Ok((deep, over, edge, sum))
    })?;
    for (name, r) in [("deep", deep), ("over", over)] {
        let e = remote(r, name)?;
        assert!(
            e.kind == "RecursionError" && e.message.contains(&max.to_string()),
            "{name}: a typed error naming the limit {max}: {e:?}"
        );
    }
    let mut levels = 0;
    let mut v = &edge;
    while let PyValue::List(items) = v {
        levels += 1;
        v = &items[0];
    }
    assert_eq!(levels, max, "{max} levels convert");
    assert_eq!(sum, 5, "the actor serves the next call");
    Ok(())
}

/// Whether a thread of this process named `name` (as the kernel keeps it: 15 bytes) is
/// an actor thread or the Python host thread of an actor. `brood-py-main` (the process's
/// main interpreter, for life) and `brood-py-interrupt` helpers are not.
fn actor_thread(name: &str) -> bool {
    name.starts_with("brood:") || name == "brood-py" || name.starts_with("brood-py ")
}

/// Ten times: a root with 10 `subint` siblings and one `run_in_actor` child that fails,
/// so one-cancels-all tears the siblings down. Right after the root returns, no thread of
/// any of them is left: `SubintChild::wait` resolves once the actor thread (and its
/// Python host thread) has ended, not when it sent its status.
fn ten_subint_siblings_leave_no_thread_once_the_root_returns() -> Result<(), Failed> {
    // Threads that compete for the CPUs: an ending actor thread is then often preempted
    // between reporting its status and ending, which is the window this test looks into
    // (microseconds on an idle machine).
    let _hogs = CpuHogs::start(2);
    for round in 0..10 {
        let (result, left) = within_deadline(async {
            let r = harness::root()
                .run(async |n| {
                    for i in 0..10 {
                        n.start_actor(&format!("s{i}"), ActorOptions::new().backend("subint"))
                            .await?;
                    }
                    n.run_in_actor(
                        "failing",
                        Fail,
                        ("Boom".into(), "one cancels all".into()),
                        ActorOptions::new(),
                    )
                    .await?;
                    // The failure cancels this body.
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await;
            // Threads already in the kernel's exit path are gone for this purpose: their
            // code has finished, and a joined thread may still be listed for a moment.
            let left: Vec<String> = harness::leaks::live_thread_names()
                .into_iter()
                .filter(|n| actor_thread(n))
                .collect();
            (r, left)
        });
        let failed = result.as_ref().err().and_then(RootError::nursery).is_some_and(|ne| {
            ne.children.iter().any(
                |c| matches!(c, ChildError::Failed { actor, error } if actor == "root/failing" && error.kind == "Boom"),
            )
        });
        assert!(failed, "round {round}: the failure is reported: {result:?}");
        let reaped = result
            .as_ref()
            .err()
            .and_then(RootError::nursery)
            .map_or(0, |ne| {
                ne.reports
                    .iter()
                    .filter(|r| r.actor.starts_with("root/s"))
                    .count()
            });
        assert_eq!(
            reaped, 10,
            "round {round}: every sibling reaped: {result:?}"
        );
        assert!(
            left.is_empty(),
            "round {round}: actor threads left after the root returned: {left:?}"
        );
        // The same, looked at the moment the nursery has reaped them (no root teardown
        // in between to give a late thread time to end).
        let left = with_root(async |n| {
            for i in 0..10 {
                n.start_actor(&format!("s{i}"), ActorOptions::new().backend("subint"))
                    .await?;
            }
            n.cancel().await;
            Ok(harness::leaks::live_thread_names()
                .into_iter()
                .filter(|n| actor_thread(n))
                .collect::<Vec<_>>())
        })?;
        assert!(
            left.is_empty(),
            "round {round}: actor threads left once the nursery reaped them: {left:?}"
        );
    }
    Ok(())
}

/// Busy threads, stopped and joined when dropped (before the harness counts threads).
struct CpuHogs {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHogs {
    fn start(n: usize) -> CpuHogs {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        CpuHogs { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Whether `e` is the root's nursery error with `root/child` abandoned because of
/// `root/child/grandchild`.
fn names_the_stuck_grandchild(e: &RootError) -> bool {
    e.nursery().is_some_and(|ne| {
        ne.children.iter().any(|c| {
            let text = c.to_string();
            text.contains("root/child/grandchild")
                && (text.contains("abandoned") || text.contains("Abandoned"))
        })
    })
}

/// A `subint` child whose `subint` grandchild runs Python stuck in a native call
/// (`time.sleep`) is aborted (its runtime dropped, as a kill would): its supervisor of
/// the grandchild goes with it. The child's thread still accounts for the grandchild (it
/// waits for it within bounds and reports it left running in its own exit status), so
/// the root's nursery fails naming `root/child/grandchild`, abandoned, while its thread
/// still runs, instead of seeing a child killed by its own hand.
fn a_stuck_grandchild_of_an_aborted_subint_child_is_reported() -> Result<(), Failed> {
    let crashed = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let c2 = crashed.clone();
    let (result, ended) = within_deadline(async {
        let r = harness::root()
            .run(async |n| {
                let child = n
                    .start_actor("child", ActorOptions::new().backend("subint"))
                    .await?;
                let (ctx, gc) = child
                    .open_context(
                        HoldStuckGrandchild,
                        ActorOptionsWire {
                            backend: Some("subint".into()),
                            ..ActorOptionsWire::default()
                        },
                    )
                    .await?;
                assert!(harness::in_process(&gc), "{gc:?}");
                // The grandchild is blocked in `time.sleep` now. Abort the child.
                *c2.lock().unwrap() = Some(Instant::now());
                let e = harness::crash(&child).await;
                assert!(matches!(e, PortalError::Disconnected { .. }), "{e:?}");
                drop(ctx);
                // The child's end fails the nursery, which cancels this body.
                tokio::time::sleep(scaled(Duration::from_secs(30))).await;
                Ok(())
            })
            .await;
        (r, Instant::now())
    });
    let Some(crashed) = *crashed.lock().unwrap() else {
        return Err(format!("the body failed before the crash: {result:?}").into());
    };
    let took = ended.duration_since(crashed);
    match &result {
        Ok(()) => panic!("the root returned Ok after {took:?}: the grandchild went unreported"),
        Err(e) => assert!(
            names_the_stuck_grandchild(e),
            "the root's error names the abandoned grandchild: {e}"
        ),
    }
    // The grandchild sleeps 3 s from before the crash: it was reported while it still
    // ran, within the child's bound on waiting for it (1.25 s) and some room.
    let bound = scaled(Duration::from_millis(2500));
    assert!(
        took < bound,
        "reported within {bound:?}, while the grandchild still ran: {took:?}"
    );
    Ok(())
}

/// The same tree, cancelled by the root: the child tears its subtree down, the
/// grandchild is abandoned by the child's ladder, and the root's nursery reports it (never
/// `Ok(())` while the grandchild's thread still runs).
fn a_stuck_subint_grandchild_is_reported_when_the_root_cancels() -> Result<(), Failed> {
    let started = Instant::now();
    let (result, took) = within_deadline(async {
        let r = harness::root()
            .run(async |n| {
                let child = n
                    .start_actor("child", ActorOptions::new().backend("subint"))
                    .await?;
                let (_ctx, _gc) = child
                    .open_context(
                        HoldStuckGrandchild,
                        ActorOptionsWire {
                            backend: Some("subint".into()),
                            ..ActorOptionsWire::default()
                        },
                    )
                    .await?;
                n.cancel().await;
                Ok(())
            })
            .await;
        (r, started.elapsed())
    });
    match &result {
        Ok(()) => panic!("the root returned Ok after {took:?}: the grandchild went unreported"),
        Err(e) => assert!(
            names_the_stuck_grandchild(e),
            "the root's error names the abandoned grandchild: {e}"
        ),
    }
    Ok(())
}
