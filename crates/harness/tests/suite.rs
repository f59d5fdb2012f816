//! The integration suite: runs on the backend and transport named by `BROOD_BACKEND` and
//! `BROOD_TRANSPORT` (see `cargo xtask test`). Every test runs in a root actor with a
//! deadline and is checked for leaked processes, descriptors and socket files.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::functions::*;
use harness::{Failed, Scenario, Test, in_process, leaks, wait_gone, with_root};
use spawn_api::codec::{encode_frame, read_frame_blocking};
use spawn_api::{
    ActorId, ActorOptions, CallerContext, ChildError, ChildExit, ChildReport, FnError, Frame, Msg,
    PROTOCOL_VERSION, PortalError, RemoteError, RuntimeFlavor, RuntimeVars, SpawnError, Step,
    TeardownHook, TeardownPolicy, kinds,
};
use spawn_subint::{Eval, Exec, PyValue};

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        const TESTS: &[Test] = &[$(Test { name: stringify!($name), run: $name }),*];
    };
}

tests!(
    spawn_and_call,
    run_in_actor_returns_results,
    run_in_actor_error_fails_the_nursery,
    three_level_tree,
    server_streaming,
    dropping_a_stream_cancels_it_and_the_channel_carries_on,
    bulk_blobs_stream_and_an_oversized_one_is_a_typed_error,
    bidirectional_context,
    remote_error_across_two_hops,
    child_panic_is_a_typed_error,
    child_exit_code_is_a_typed_error,
    child_sigkilled_mid_stream,
    cancelling_a_nursery_cancels_grandchildren,
    child_ignoring_cancellation_is_terminated_within_bounds,
    teardown_hook_sees_the_childs_vars_before_the_kill,
    runtime_vars_derive_and_override,
    two_roots_on_two_threads_see_their_own_vars,
    root_sigkill_takes_every_descendant,
    garbage_truncated_and_oversized_frames_are_typed_protocol_errors,
    one_child_failing_cancels_its_siblings,
    every_child_error_is_collected,
    unknown_function_and_backend_are_typed_errors,
    spawn_failures_are_typed,
    spawn_from_a_root_on_sixteen_worker_threads,
    fifty_actors_spawned_concurrently_all_answer_and_are_reaped,
    forkserver_sigkill_fails_spawns_and_running_actors_carry_on,
    root_sigkill_takes_the_forkserver_and_every_forked_actor,
    a_forked_child_inherits_no_descriptor_of_its_parent_or_the_server,
    a_forked_actor_dies_with_its_parent_actor,
    python_state_is_private_to_each_actor,
    two_actors_in_one_process_see_their_own_vars,
    python_exception_in_a_grandchild_reaches_the_root,
    python_busy_loop_is_interrupted_by_cancellation,
    python_stuck_in_a_native_call_is_abandoned_within_bounds,
    twenty_eager_subint_actors_in_a_loop_leak_nothing,
    ending_the_root_ends_every_interpreter_cleanly,
);

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tree_then_wait",
        run: tree_then_wait,
    },
    Scenario {
        name: "python_actors_then_return",
        run: python_actors_then_return,
    },
];

fn main() {
    harness::main(TESTS, SCENARIOS)
}

fn check(cond: bool, what: &str) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into()) }
}

/// Whether the cell's backend runs actors in the process of their parent (`subint`):
/// tests check the in-process facts there, the separate-process facts elsewhere.
fn in_process_backend() -> bool {
    harness::backend() == spawn_subint::KEY
}

/// How long the thread of a reaped in-process actor may take to end: it reports its exit
/// status just before it returns.
const THREAD_END: Duration = Duration::from_secs(2);

/// Kill the actor `who` behind `portal` as SIGKILL would: from outside with SIGKILL when
/// it is a process of its own, by crashing it through its portal when it runs in ours
/// (a signal would kill the test). Returns at once for a process; for an in-process
/// actor, once its channel closed.
async fn kill_actor(portal: &spawn_api::Portal, who: &Who) {
    if in_process(who) {
        let e = harness::crash(portal).await;
        assert!(matches!(e, PortalError::Disconnected { .. }), "{e:?}");
    } else {
        kill(who.pid, nix::sys::signal::Signal::SIGKILL);
    }
}

fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

fn spawn_and_call() -> Result<(), Failed> {
    let (sum, who) = with_root(async |n| {
        let p = n.start_actor("adder", ActorOptions::new()).await?;
        let who = p.run(WhoAmI, ()).await?;
        Ok((p.run(Add, (40, 2)).await?, who))
    })?;
    check(sum == 42, "40 + 2 == 42")?;
    check(who.path == "root/adder", "the child's tree path")?;
    Ok(())
}

fn run_in_actor_returns_results() -> Result<(), Failed> {
    let (a, b, reports) = with_root(async |n| {
        let h1 = n
            .run_in_actor("one", Add, (1, 2), ActorOptions::new())
            .await?;
        let h2 = n
            .run_in_actor("two", Add, (3, 4), ActorOptions::new())
            .await?;
        let (a, b) = (h1.result().await?, h2.result().await?);
        // The children end once their function returned, without the nursery ending.
        let deadline = Instant::now() + Duration::from_secs(5);
        while n.live_children() > 0 {
            assert!(
                Instant::now() < deadline,
                "run_in_actor children did not end"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok((a, b, n.reports()))
    })?;
    check((a, b) == (3, 7), "both results")?;
    check(
        reports.iter().all(|r| r.exit == ChildExit::Exited(0)),
        "clean exits",
    )?;
    Ok(())
}

fn run_in_actor_error_fails_the_nursery() -> Result<(), Failed> {
    let err = with_root(async |n| {
        let h = n
            .run_in_actor(
                "bad",
                Fail,
                ("ValueError".into(), "nope".into()),
                ActorOptions::new(),
            )
            .await?;
        let e = h.result().await.unwrap_err();
        assert_eq!(e.remote().map(|r| r.kind.as_str()), Some("ValueError"));
        Ok(())
    })
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    check(ne.children.len() == 1, "exactly one child error")?;
    match &ne.children[0] {
        ChildError::Failed { actor, error } => {
            check(actor == "root/bad", "the failed actor's path")?;
            check(
                error.kind == "ValueError" && error.message == "nope",
                "kind and message",
            )?;
        }
        other => return Err(format!("expected Failed, got {other:?}").into()),
    }
    Ok(())
}

fn three_level_tree() -> Result<(), Failed> {
    let sum = with_root(async |n| {
        let child = n.start_actor("child", ActorOptions::new()).await?;
        Ok(child.run(AddViaChild, ("grandchild".into(), 2, 3)).await?)
    })?;
    check(
        sum == 5,
        "the grandchild's sum comes back through the child",
    )
}

fn server_streaming() -> Result<(), Failed> {
    let items = with_root(async |n| {
        let p = n.start_actor("counter", ActorOptions::new()).await?;
        Ok(p.open_stream(Count, 20_000).await?.collect().await?)
    })?;
    check(
        items == (0..20_000).collect::<Vec<u64>>(),
        "every item, in order",
    )
}

fn dropping_a_stream_cancels_it_and_the_channel_carries_on() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("counter", ActorOptions::new()).await?;
        let mut s = p.open_stream(Count, u64::MAX).await?;
        for i in 0..10 {
            assert_eq!(s.recv().await?, Some(i));
        }
        s.cancel();
        // Another stream and a call on the same channel are not held up by the
        // cancelled one.
        let mut t = p.open_stream(Count, 3).await?;
        let mut got = Vec::new();
        while let Some(i) = t.recv().await? {
            got.push(i);
        }
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(p.run(Add, (1, 1)).await?, 2);
        Ok(())
    })?;
    Ok(())
}

fn bulk_blobs_stream_and_an_oversized_one_is_a_typed_error() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("blobs", ActorOptions::new()).await?;
        let mut s = p.open_stream(Blobs, (8, 1 << 20)).await?;
        let mut total = 0;
        while let Some(b) = s.recv().await? {
            assert_eq!(b.len(), 1 << 20);
            assert!(b.iter().all(|&x| x == 0xab));
            total += b.len();
        }
        assert_eq!(total, 8 << 20);

        let mut s = p.open_stream(Blobs, (1, 65 << 20)).await?;
        let e = s.recv().await.unwrap_err();
        let r = e.remote().expect("a remote error");
        assert!(r.message.contains("exceeds the maximum"), "{r}");
        assert_eq!(p.run(Add, (2, 2)).await?, 4, "the actor keeps serving");
        Ok(())
    })?;
    Ok(())
}

fn bidirectional_context() -> Result<(), Failed> {
    let (started, echoed, count) = with_root(async |n| {
        let p = n.start_actor("echo", ActorOptions::new()).await?;
        let (mut ctx, started) = p.open_context(Echo, "hello".into()).await?;
        let mut echoed = Vec::new();
        for w in ["a", "b", "c"] {
            ctx.send(w.into()).await?;
            echoed.push(ctx.recv().await?.expect("an echo"));
        }
        let count = ctx.result().await?;
        Ok((started, echoed, count))
    })?;
    check(started == "hello", "the started value")?;
    check(echoed == ["A", "B", "C"], "echoes in order")?;
    check(count == 3, "the callee's result")
}

fn remote_error_across_two_hops() -> Result<(), Failed> {
    let e = with_root(async |n| {
        let child = n.start_actor("child", ActorOptions::new()).await?;
        let e = child
            .run(FailViaChild, ("KeyError".into(), "missing 'x'".into()))
            .await
            .unwrap_err();
        Ok(e.remote().cloned().expect("a remote error"))
    })?;
    check(
        e.kind == "KeyError",
        &format!("the original kind survives two hops: {e:?}"),
    )?;
    check(e.message == "missing 'x'", "the original message")?;
    check(
        e.origin == "root/child/grandchild",
        "the origin names the grandchild",
    )?;
    check(e.relays == ["root/child"], "the relay names the child")?;
    Ok(())
}

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
            check(actor == "root/crasher", "path")?;
            check(message == "kaboom", "message")?;
            check(
                location
                    .as_deref()
                    .is_some_and(|l| l.contains("functions.rs")),
                "location",
            )?;
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
            // An orderly exit: the call is cancelled by the shutdown, or the channel
            // closes first.
            assert!(
                matches!(e, PortalError::Disconnected { .. })
                    || e.remote().is_some_and(|r| r.kind == kinds::CANCELLED),
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
    check(
        wait_gone(&grandchild, THREAD_END),
        &format!("the grandchild is gone: {grandchild:?}"),
    )?;
    check(
        wait_gone(&child, THREAD_END),
        &format!("the child is gone: {child:?}"),
    )?;
    match reports.as_slice() {
        [r] => check(
            r.step == Step::Cancelled && r.exit == ChildExit::Exited(0),
            &format!("the child shut down on the cancel request: {r:?}"),
        ),
        other => Err(format!("expected one report, got {other:?}").into()),
    }
}

fn child_ignoring_cancellation_is_terminated_within_bounds() -> Result<(), Failed> {
    let policy = TeardownPolicy::default();
    let (took, reports, who) = harness::run(
        harness::DEADLINE,
        harness::root().teardown(policy).run(async |n| {
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
        }),
    )?;
    check(
        in_process(&who) == in_process_backend(),
        "the backend's kind of child",
    )?;
    let r = &reports[0];
    check(r.step == Step::Terminated, &format!("terminated: {r:?}"))?;
    // A process dies of the SIGTERM; an in-process actor's terminate aborts its runtime,
    // which is reported as the SIGKILL a killed process would have died of.
    let signal = if in_process(&who) {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    check(
        matches!(r.exit, ChildExit::Signaled { signal: s, .. } if s == signal),
        &format!("ended by signal {signal}: {r:?}"),
    )?;
    check(
        took >= policy.cancel_timeout && took < policy.cancel_timeout + policy.kill_after,
        &format!("reaped after the cancel timeout, before the kill: {took:?}"),
    )
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(String, bool, Instant)>>);

#[spawn_api::async_trait]
impl TeardownHook for Recorder {
    async fn before_hard_reap(&self, child: &ActorId, vars: &RuntimeVars) {
        self.0
            .lock()
            .unwrap()
            .push((child.name().to_owned(), vars.debug_mode, Instant::now()));
    }
}

/// Keeps what a nursery body saw, for the test to judge after the root returned, even
/// when the body is cancelled (a child failing during `Nursery::cancel` cancels the body
/// of its nursery): the reports so far are taken when the body ends or is dropped.
#[derive(Debug, Default)]
struct Probe {
    who: Option<Who>,
    cancelled_at: Option<Instant>,
    took: Option<Duration>,
    reports: Vec<ChildReport>,
}

struct ReportsOnDrop<'a> {
    nursery: &'a spawn_api::Nursery,
    probe: Arc<Mutex<Probe>>,
}

impl Drop for ReportsOnDrop<'_> {
    fn drop(&mut self) {
        self.probe.lock().unwrap().reports = self.nursery.reports();
    }
}

#[derive(Debug)]
struct Shared(Arc<Recorder>);

#[spawn_api::async_trait]
impl TeardownHook for Shared {
    async fn before_hard_reap(&self, child: &ActorId, vars: &RuntimeVars) {
        self.0.before_hard_reap(child, vars).await
    }
}

/// What blocks a child's teardown in the hook test.
enum Blocked {
    /// A Rust loop that ignores cancellation and SIGTERM (a process child).
    Rust(CallerContext<Stubborn>),
    /// Python stuck in a native call (an in-process child).
    Python(CallerContext<PyRun>),
}

impl Blocked {
    async fn fails(self) -> bool {
        match self {
            Blocked::Rust(c) => c.result().await.is_err(),
            Blocked::Python(c) => c.result().await.is_err(),
        }
    }
}

/// A Python job an in-process actor cannot be stopped from: a blocking native call, long
/// enough to outlast the ladder up to its kill and the backend's 1 s bound on ending an
/// interpreter (so the actor is abandoned rather than ending on its own), and short enough
/// to end (and its interpreter with it) well within the harness's 5 s grace for threads
/// and interpreters after the test.
/// It is blocked in the sleep (in `clock_nanosleep`) by the time `started` arrives.
const PY_STUCK: &str = "import time\nstarted()\ntime.sleep(3)\n";

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
    let result = harness::run(
        harness::DEADLINE,
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
                            .debug_mode(true)
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
            check(
                r.step == Step::Abandoned && matches!(r.exit, ChildExit::Abandoned { .. }),
                &format!("killed, then abandoned: {r:?}"),
            )?;
        }
    } else {
        result?;
        let r = stubborn.ok_or("no report for root/stubborn")?;
        check(r.step == Step::Killed, &format!("killed: {r:?}"))?;
        let took = probe.took.ok_or("no teardown time")?;
        check(
            took >= policy.cancel_timeout + policy.kill_after,
            &format!("the kill came only after both bounds: {took:?}"),
        )?;
    }
    check(
        calm.is_some_and(|r| r.step == Step::Cancelled),
        &format!("calm sibling cancelled: {calm:?}"),
    )?;
    match seen.as_slice() {
        [(name, debug, at)] => {
            check(
                name == "stubborn" && *debug,
                &format!("the hook ran with the child's own vars: {seen:?}"),
            )?;
            let after = at.duration_since(cancelled_at);
            check(
                after >= policy.cancel_timeout + policy.kill_after,
                &format!("the hook ran only after both bounds: {after:?}"),
            )
        }
        _ => Err(format!("the hook ran once: {seen:?}").into()),
    }
}

fn runtime_vars_derive_and_override() -> Result<(), Failed> {
    let backend = harness::backend();
    with_root(async |n| {
        let root = runtime_vars::current();
        assert!(root.is_root && !root.debug_mode);
        let plain = n
            .start_actor("plain", ActorOptions::new().user("team", "blue"))
            .await?;
        let debug = n
            .start_actor("dbg", ActorOptions::new().debug_mode(true))
            .await?;
        let pv = plain.run(Vars, ()).await?;
        let dv = debug.run(Vars, ()).await?;
        assert_eq!(pv.tree_path, ["root", "plain"]);
        assert!(!pv.is_root);
        assert!(
            pv.parent_id
                .as_deref()
                .is_some_and(|p| p.starts_with("root@"))
        );
        assert_eq!(pv.root_addr, root.root_addr);
        assert_eq!(pv.enabled_transports, root.enabled_transports);
        assert_eq!(pv.backend, backend);
        assert_eq!(pv.user.get("team").map(String::as_str), Some("blue"));
        assert!(!pv.debug_mode, "the sibling is not in debug mode");
        assert!(dv.debug_mode, "the override applies to its child");
        assert!(
            !dv.user.contains_key("team"),
            "another child's user var does not leak"
        );
        assert_ne!(pv, dv, "two live actors see their own vars");
        assert!(
            !runtime_vars::current().debug_mode,
            "the parent is unchanged"
        );

        let (sub, leaf) = plain.run(VarsOfSubtree, true).await?;
        assert!(
            sub.debug_mode && leaf.debug_mode,
            "a subtree inherits the override"
        );
        assert_eq!(leaf.tree_path, ["root", "plain", "sub", "leaf"]);
        assert_eq!(leaf.user.get("team").map(String::as_str), Some("blue"));
        Ok(())
    })?;
    Ok(())
}

fn two_roots_on_two_threads_see_their_own_vars() -> Result<(), Failed> {
    let run = |name: &'static str| {
        std::thread::spawn(move || {
            harness::run(
                harness::DEADLINE,
                harness::root().name(name).user("who", name).run(async |n| {
                    let c = n.start_actor("kid", ActorOptions::new()).await?;
                    for _ in 0..20 {
                        assert_eq!(runtime_vars::current().name(), name);
                        let v = c.run(Vars, ()).await?;
                        assert_eq!(v.tree_path, [name, "kid"]);
                        assert_eq!(v.user["who"], name);
                        tokio::task::yield_now().await;
                    }
                    Ok(())
                }),
            )
        })
    };
    let (l, r) = (run("left"), run("right"));
    l.join().unwrap()?;
    r.join().unwrap()?;
    Ok(())
}

/// Scenario: a root with a child and a grandchild; prints their pids (`PIDS root child
/// grandchild`) and thread ids (`TIDS ...`), then waits to be killed. On the subint
/// backend the child runs in the root's process, and its grandchild is a process (`proc`)
/// so that killing the root must still take a process with it.
fn tree_then_wait() {
    let grandchild_backend = in_process_backend().then(|| "proc".to_owned());
    let _ = harness::run(
        Duration::from_secs(120),
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

/// Read a `<tag> n n n` line of a scenario's output.
fn numbers(r: &mut impl BufRead, tag: &str) -> Result<Vec<u32>, Failed> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let rest = line
        .strip_prefix(tag)
        .and_then(|l| l.strip_prefix(' '))
        .ok_or_else(|| format!("expected {tag} in the scenario output, got {line:?}"))?;
    Ok(rest
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect())
}

/// SIGKILL a tree's root: every descendant dies with it within 2 s. Process children die
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
    check(root_pid == root.id(), "the scenario is the root")?;
    // (pid, tid) of the child and the grandchild.
    let descendants: Vec<(u32, u32)> = pids[1..]
        .iter()
        .copied()
        .zip(tids[1..].iter().copied())
        .collect();
    let (child, grandchild) = (descendants[0], descendants[1]);
    if in_process_backend() {
        check(
            child.0 == root_pid && child.1 != tids[0],
            &format!("the child runs on a thread of the root's process: {descendants:?}"),
        )?;
        check(
            leaks::thread_alive(root_pid, child.1),
            "the child's thread is alive",
        )?;
        check(
            grandchild.0 != root_pid && leaks::ppid(grandchild.0) == Some(root_pid),
            &format!("the grandchild is a process of the root's: {descendants:?}"),
        )?;
    } else {
        check(
            descendants.iter().all(|&(p, _)| p != root_pid),
            "descendants are processes of their own",
        )?;
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
    check(
        descendants.iter().all(|&d| !gone(d)),
        "every descendant is alive before the kill",
    )?;
    kill(root_pid, nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    root.wait()?;
    while !descendants.iter().all(|&d| gone(d)) {
        leaks::reap_zombies();
        if killed.elapsed() > Duration::from_secs(2) {
            return Err(format!("descendants {descendants:?} outlived the root by 2 s").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The killed tree could not remove its sockets; the next root in the same runtime
    // directory removes the directory of a tree whose root is dead.
    with_root(async |_n| Ok(()))?;
    Ok(())
}

/// Send raw bytes to an actor's socket and read what it answers before closing.
fn raw_exchange(path: &str, steps: &[&[u8]], shutdown: bool) -> Vec<Frame> {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for b in steps {
        s.write_all(b).unwrap();
    }
    if shutdown {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut frames = Vec::new();
    while let Ok(Some(f)) = read_frame_blocking(&mut s, 1 << 20) {
        frames.push(f);
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    frames
}

fn protocol_error(frames: &[Frame]) -> RemoteError {
    match frames.last() {
        Some(Frame {
            msg: Msg::Error { cid: None, error },
            ..
        }) if error.kind == kinds::PROTOCOL => error.clone(),
        other => panic!("expected a protocol error frame, got {other:?}"),
    }
}

fn garbage_truncated_and_oversized_frames_are_typed_protocol_errors() -> Result<(), Failed> {
    if harness::transport() != "uds" {
        return Err("this test speaks raw Unix-socket frames".into());
    }
    with_root(async |n| {
        let p = n.start_actor("target", ActorOptions::new()).await?;
        let who = p.run(WhoAmI, ()).await?;
        let path = who.addr.strip_prefix("uds:").unwrap().to_owned();
        let handshake = encode_frame(
            &Frame::control(Msg::Handshake {
                id: ActorId::new("probe"),
                protocol: PROTOCOL_VERSION,
            }),
            1 << 20,
        )?;
        let cases: Vec<(Vec<Vec<u8>>, bool, &str)> = vec![
            (
                vec![b"\x05\x00\x00\x00garbage!".to_vec()],
                false,
                "undecodable",
            ),
            (
                vec![b"\x64\x00\x00\x00only-ten!!".to_vec()],
                true,
                "truncated",
            ),
            (
                vec![u32::MAX.to_le_bytes().to_vec()],
                false,
                "exceeds the maximum",
            ),
            (
                vec![handshake.to_vec(), b"\x03\x00\x00\x00\xff\xff\xff".to_vec()],
                false,
                "undecodable",
            ),
            (
                vec![
                    handshake.to_vec(),
                    encode_frame(
                        &Frame::control(Msg::SpawnSpec(Box::new(spawn_api::SpawnSpec {
                            child: ActorId::new("x"),
                            parent: ActorId::new("y"),
                            vars: RuntimeVars::root("r", "proc"),
                            teardown: TeardownPolicy::default(),
                            stream_buffer: 1,
                        }))),
                        1 << 20,
                    )?
                    .to_vec(),
                ],
                false,
                "unexpected SpawnSpec",
            ),
        ];
        for (steps, shutdown, expect) in cases {
            let path = path.clone();
            let frames = tokio::task::spawn_blocking(move || {
                let steps: Vec<&[u8]> = steps.iter().map(Vec::as_slice).collect();
                raw_exchange(&path, &steps, shutdown)
            })
            .await?;
            let e = protocol_error(&frames);
            assert!(e.message.contains(expect), "expected {expect:?} in {e}");
            assert_eq!(e.origin, "root/target");
            // The actor keeps serving its other channels.
            assert_eq!(p.run(Add, (20, 22)).await?, 42);
        }
        Ok(())
    })?;
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
    check(ne.body.is_none(), "the body was cancelled, not failed")?;
    match ne.children.as_slice() {
        [ChildError::Failed { actor, error }] => {
            check(
                actor == "root/failing" && error.kind == "Boom",
                "the failure",
            )?;
        }
        other => return Err(format!("expected one Failed, got {other:?}").into()),
    }
    let sib = sibling.lock().unwrap().clone().unwrap();
    check(
        in_process(&sib) == in_process_backend(),
        "the backend's kind of child",
    )?;
    check(
        wait_gone(&sib, THREAD_END),
        &format!("the sibling was torn down: {sib:?}"),
    )
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
    check(
        actors == ["root/a", "root/b"],
        &format!("both errors: {ne}"),
    )?;
    check(
        ne.children
            .iter()
            .all(|c| matches!(c, ChildError::Signaled { signal: 9, .. })),
        "both were killed by SIGKILL",
    )
}

fn unknown_function_and_backend_are_typed_errors() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("plain", ActorOptions::new()).await?;
        let e = p
            .run_raw("no.such.function", Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(
            e.remote().map(|r| r.kind.as_str()),
            Some(kinds::NO_SUCH_FUNCTION)
        );
        let e = p.open_stream(WrongShape, ()).await.unwrap_err();
        assert_eq!(e.remote().map(|r| r.kind.as_str()), Some(kinds::WRONG_KIND));
        let e = p.run(Add, (1, 2)).await?;
        assert_eq!(e, 3);
        match n
            .start_actor("x", ActorOptions::new().backend("warp"))
            .await
        {
            Err(SpawnError::UnknownBackend { key, known }) => {
                assert_eq!(key, "warp");
                assert!(known.contains("proc"), "{known}");
            }
            other => panic!("expected UnknownBackend, got {other:?}"),
        }
        Ok(())
    })?;
    Ok(())
}

// A stream declared under the name of a one-shot function.
spawn_api::stream!(WrongShape = "t.add": () => u64);

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
        let path = addr
            .strip_prefix("uds:")
            .expect("a Unix socket address")
            .to_owned();
        std::fs::remove_file(&path)?;
        let t = Instant::now();
        match n.start_actor("stray", ActorOptions::new()).await {
            Err(SpawnError::DiedEarly { actor, exit }) => {
                assert_eq!(actor, "root/stray");
                assert_eq!(exit, ChildExit::Exited(spawn_api::child::EXIT_SETUP));
            }
            other => panic!("expected DiedEarly, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
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
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

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
    harness::run(
        harness::DEADLINE,
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
fn spawn_times_out(root: spawn_api::RootBuilder, policy: TeardownPolicy) -> Result<(), Failed> {
    harness::run(
        harness::DEADLINE,
        root.teardown(policy).run(async |n| {
            let t = Instant::now();
            match n.start_actor("mute", ActorOptions::new()).await {
                Err(SpawnError::Timeout { actor, after }) => {
                    assert_eq!(actor, "root/mute");
                    assert_eq!(after, policy.spawn_timeout);
                }
                other => panic!("expected Timeout, got {other:?}"),
            }
            assert!(t.elapsed() < Duration::from_secs(5));
            Ok(())
        }),
    )?;
    Ok(())
}

/// The forkserver is the program that cannot start (`/bin/false`: no child can exist, the
/// backend is unavailable) or never answers (`/bin/sleep`: the spawn times out).
fn fork_spawn_failures_are_typed() -> Result<(), Failed> {
    let policy = TeardownPolicy {
        spawn_timeout: Duration::from_millis(500),
        ..TeardownPolicy::default()
    };
    harness::run(
        harness::DEADLINE,
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
                assert!(t.elapsed() < Duration::from_secs(1));
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

/// Poll every future to completion concurrently, on the calling task.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
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
            harness::DEADLINE,
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
                        assert!(name.starts_with("brood-subint"), "{name:?}");
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
    check(reports.len() == 4, "four children reaped")?;
    check(
        reports
            .iter()
            .all(|r| r.exit == ChildExit::Exited(0) && r.step == Step::Cancelled),
        &format!("clean exits on the cancel request: {reports:?}"),
    )
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
    check(
        sums == (1000..1050).collect::<Vec<i64>>(),
        "every actor answered",
    )?;
    let unique = |ids: Vec<u32>| {
        let mut ids = ids;
        ids.sort();
        ids.dedup();
        ids.len()
    };
    if in_process_backend() {
        check(
            whos.iter().all(in_process),
            "every actor runs in our process",
        )?;
        check(
            unique(whos.iter().map(|w| w.tid).collect()) == 50,
            "fifty threads",
        )?;
    } else {
        check(
            unique(whos.iter().map(|w| w.pid).collect()) == 50,
            "fifty processes",
        )?;
    }
    let lingering: Vec<&Who> = whos.iter().filter(|w| !wait_gone(w, THREAD_END)).collect();
    check(
        lingering.is_empty(),
        &format!("every actor is gone: {lingering:?}"),
    )?;
    check(reports.len() == 50, &format!("{} reports", reports.len()))?;
    check(
        reports.iter().all(|r| r.exit == ChildExit::Exited(0)),
        &format!("clean exits: {reports:?}"),
    )
}

/// Kill the forkserver with SIGKILL while actors run: spawns fail with a typed error and
/// never hang, the running actors keep serving and then exit cleanly, nothing leaks.
/// Always on the fork backend.
fn forkserver_sigkill_fails_spawns_and_running_actors_carry_on() -> Result<(), Failed> {
    let reports = harness::run(
        harness::DEADLINE,
        harness::root().use_backend("fork").run(async |n| {
            let a = n.start_actor("a", ActorOptions::new()).await?;
            let b = n.start_actor("b", ActorOptions::new()).await?;
            let ia = a.run(ProcSelf, ()).await?;
            // b holds a grandchild, spawned through b's own connection to the server.
            let (_ctx, gc) = b
                .open_context(HoldGrandchild, ActorOptionsWire::default())
                .await?;
            let server = ia.ppid;
            assert_ne!(
                server,
                std::process::id(),
                "a forked child's parent is the server"
            );
            assert_eq!(leaks::ppid(gc.pid), Some(server), "one server for the tree");
            assert_eq!(leaks::comm(server).as_deref(), Some("brood-forksrv"));

            kill(server, nix::sys::signal::Signal::SIGKILL);
            let t = Instant::now();
            while !leaks::is_dead(server) {
                assert!(t.elapsed() < Duration::from_secs(5), "the server survived");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }

            let t = Instant::now();
            match n.start_actor("late", ActorOptions::new()).await {
                Err(SpawnError::Unavailable { backend, reason }) => {
                    assert_eq!(backend, "fork");
                    assert!(reason.contains("forkserver"), "{reason}");
                }
                other => panic!("expected Unavailable, got {other:?}"),
            }
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            // A child's own spawn fails the same way, as an error its caller sees.
            let e = a.run(AddViaChild, ("late".into(), 1, 2)).await.unwrap_err();
            let r = e.remote().expect("a remote error");
            assert!(r.message.contains("fork backend unavailable"), "{r}");
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

            // The running actors carry on.
            assert_eq!(a.run(Add, (1, 2)).await?, 3);
            assert_eq!(b.run(Add, (3, 4)).await?, 7);
            assert!(!leaks::is_dead(gc.pid));
            n.cancel().await;
            assert!(
                leaks::is_dead(gc.pid),
                "the grandchild ended with its parent"
            );
            Ok(n.reports())
        }),
    )?;
    check(reports.len() == 2, "two children reaped")?;
    check(
        reports.iter().all(|r| r.exit == ChildExit::Exited(0)),
        &format!("clean exits after the server died: {reports:?}"),
    )
}

/// Kill a fork tree's root with SIGKILL: the forkserver and every forked actor die with
/// it within 2 s. Always on the fork backend (the root runs as a scenario process).
fn root_sigkill_takes_the_forkserver_and_every_forked_actor() -> Result<(), Failed> {
    let mut root = std::process::Command::new(std::env::current_exe()?)
        .env(harness::SCENARIO_ENV, "tree_then_wait")
        .env(harness::TEST_DIR_ENV, harness::test_dir())
        .env(spawn_api::BACKEND_ENV, "fork")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pids = numbers(
        &mut std::io::BufReader::new(root.stdout.take().unwrap()),
        "PIDS",
    )?;
    let root_pid = pids[0];
    let tree = leaks::descendants_of(root_pid);
    let server = leaks::ppid(pids[1]).ok_or("the child is gone already")?;
    check(
        server != root_pid
            && tree
                .iter()
                .any(|&(p, parent)| p == server && parent == root_pid),
        &format!("the root started the forkserver: {tree:?}"),
    )?;
    check(
        pids[1..].iter().all(|&p| leaks::ppid(p) == Some(server)),
        "the server forked both actors",
    )?;
    kill(root_pid, nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    root.wait()?;
    let all: Vec<u32> = tree.iter().map(|&(p, _)| p).collect();
    while !all.iter().all(|&p| leaks::is_dead(p)) {
        leaks::reap_zombies();
        if killed.elapsed() > Duration::from_secs(2) {
            let live: Vec<_> = all.iter().filter(|&&p| !leaks::is_dead(p)).collect();
            return Err(format!("{live:?} of {tree:?} outlived the root by 2 s").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    with_root(async |_n| Ok(()))?;
    Ok(())
}

/// A forked child shares no descriptor with its parent actor or with the forkserver: it
/// holds what an exec'd (`proc`) child of the same program holds (its runtime's
/// descriptors, its listener, its parent channel, the standard streams of its parent;
/// not what that child inherits by exec) plus exactly one socket, its link to its parent
/// actor (how it dies with it).
fn a_forked_child_inherits_no_descriptor_of_its_parent_or_the_server() -> Result<(), Failed> {
    // Sockets and pipes the parent holds while it spawns.
    let (_ra, _wa) = std::io::pipe()?;
    let _pair = std::os::unix::net::UnixStream::pair()?;
    let (fork, proc, ours, server) = with_root(async |n| {
        let f = n
            .start_actor("f", ActorOptions::new().backend("fork"))
            .await?;
        let p = n
            .start_actor("p", ActorOptions::new().backend("proc"))
            .await?;
        let fi = f.run(ProcSelf, ()).await?;
        let pi = p.run(ProcSelf, ()).await?;
        let quiet = n
            .start_actor(
                "quiet",
                ActorOptions::new()
                    .backend("fork")
                    .stdio(spawn_api::ChildStdio::Null),
            )
            .await?;
        let qi = quiet.run(ProcSelf, ()).await?;
        assert_eq!(
            &qi.fds[1..3],
            [(1, "/dev/null".into()), (2, "/dev/null".into())]
        );
        let server = leaks::fds_of(fi.ppid);
        Ok((fi, pi, leaks::open_fds(), server))
    })?;
    check(!server.is_empty(), "the server's descriptors are visible")?;
    // Sockets and pipes are identified by inode: the same target is the same object.
    let shared_object = |t: &String| t.starts_with("socket:[") || t.starts_with("pipe:[");
    let foreign: Vec<_> = fork
        .fds
        .iter()
        .filter(|(fd, t)| {
            *fd > 2
                && shared_object(t)
                && (ours.values().any(|o| o == t) || server.values().any(|s| s == t))
        })
        .collect();
    check(
        foreign.is_empty(),
        &format!("inherited from the parent or the server: {foreign:?} (all: {fork:?})"),
    )?;
    let kinds = |fds: &[(i32, String)]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for (fd, t) in fds {
            if *fd > 2 {
                let kind = if shared_object(t) {
                    t[..t.find('[').unwrap()].to_owned()
                } else {
                    t.clone()
                };
                *m.entry(kind).or_default() += 1;
            }
        }
        m
    };
    // An exec'd child also keeps what its parent holds without close-on-exec (the test
    // runner's descriptors, here): same number, same object. A forked child has none.
    let exec_inherited = |(fd, t): &&(i32, String)| *fd > 2 && ours.get(fd).is_some_and(|o| o == t);
    let proc_own: Vec<(i32, String)> = proc
        .fds
        .iter()
        .filter(|e| !exec_inherited(e))
        .cloned()
        .collect();
    let mut expected = kinds(&proc_own);
    *expected.entry("socket:".to_owned()).or_default() += 1;
    check(
        kinds(&fork.fds) == expected,
        &format!(
            "fork child {:?} = proc child {:?} + its link",
            fork.fds, proc.fds
        ),
    )?;
    let stdio = |fds: &[(i32, String)]| -> Vec<String> {
        fds.iter()
            .filter(|(fd, _)| *fd <= 2)
            .map(|(_, t)| t.clone())
            .collect()
    };
    check(
        stdio(&fork.fds) == stdio(&proc.fds),
        "the same standard streams as an exec'd child",
    )?;
    check(
        fork.pgid == fork.pid && proc.pgid == proc.pid,
        "each child leads its own process group",
    )
}

/// SIGKILL a forked actor that holds a forked grandchild, with the forkserver alive: the
/// grandchild's OS parent is the server, yet it dies with its parent actor within 2 s.
/// Always on the fork backend.
fn a_forked_actor_dies_with_its_parent_actor() -> Result<(), Failed> {
    let gc = Arc::new(Mutex::new(None));
    let gc2 = gc.clone();
    let err = harness::run(
        harness::DEADLINE,
        harness::root().use_backend("fork").run(async move |n| {
            let middle = n.start_actor("middle", ActorOptions::new()).await?;
            let m = middle.run(ProcSelf, ()).await?;
            let (_ctx, grandchild) = middle
                .open_context(HoldGrandchild, ActorOptionsWire::default())
                .await?;
            assert_eq!(
                leaks::ppid(grandchild.pid),
                Some(m.ppid),
                "forked by the server"
            );
            *gc2.lock().unwrap() = Some((grandchild.pid, m.ppid));
            kill(m.pid, nix::sys::signal::Signal::SIGKILL);
            let t = Instant::now();
            while !leaks::is_dead(grandchild.pid) {
                assert!(
                    t.elapsed() < Duration::from_secs(2),
                    "the grandchild outlived its parent actor by 2 s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(!leaks::is_dead(m.ppid), "the server is still up");
            // The tree goes on: the server still forks.
            let other = n.start_actor("other", ActorOptions::new()).await?;
            assert_eq!(other.run(Add, (2, 2)).await?, 4);
            std::future::pending::<()>().await;
            Ok(())
        }),
    )
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [
            ChildError::Signaled {
                actor, signal: 9, ..
            },
        ] if actor == "root/middle" => Ok(()),
        other => Err(format!("expected root/middle killed by SIGKILL, got {other:?}").into()),
    }
}

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
    check(
        in_a == pair(true),
        &format!("set where it was set: {in_a:?}"),
    )?;
    check(
        in_b == pair(false),
        &format!("invisible to the sibling: {in_b:?}"),
    )?;
    check(
        in_root == pair(false),
        &format!("invisible to the parent: {in_root:?}"),
    )
}

/// Two live actors, called in turn while each call yields, see their own runtime vars
/// through `runtime_vars::current()`. Trivially true for processes; on `subint` both run in
/// the test process (one on a current-thread runtime, one on a multi-thread one).
fn two_actors_in_one_process_see_their_own_vars() -> Result<(), Failed> {
    with_root(async |n| {
        let left = n
            .start_actor("left", ActorOptions::new().user("side", "left"))
            .await?;
        let right = n
            .start_actor(
                "right",
                ActorOptions::new()
                    .user("side", "right")
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
    check(e.kind == "ValueError", &format!("the Python type: {e:?}"))?;
    check(e.message == "bad value 42", &format!("the message: {e:?}"))?;
    let tb = e.traceback.as_deref().unwrap_or_default();
    check(
        tb.contains("in outer") && tb.contains("in explode") && tb.contains("ValueError"),
        &format!("the traceback names the raising functions: {tb}"),
    )?;
    check(
        e.origin == "root/child/grandchild",
        &format!("the origin names the grandchild: {e:?}"),
    )?;
    check(
        e.relays == ["root/child"],
        &format!("the relay names the child: {e:?}"),
    )
}

/// Python spinning in `while True: pass` is interrupted (`KeyboardInterrupt`) when its
/// call is cancelled, and then when its actor is: the ladder's cancel request alone stops
/// the actor, well within its bounds.
fn python_busy_loop_is_interrupted_by_cancellation() -> Result<(), Failed> {
    // `started()` inside the `try`: an interrupt cannot land before the handler is set.
    const SPIN: &str = "try:\n    started()\n    while True:\n        pass\n\
                        except KeyboardInterrupt:\n    interrupted += 1\n    raise\n";
    let policy = TeardownPolicy::default();
    let (took, reports) = harness::run(
        harness::DEADLINE,
        harness::root().teardown(policy).run(async |n| {
            let p = n.start_actor("spinner", ActorOptions::new()).await?;
            p.run(Exec, "interrupted = 0".into()).await?;
            // Cancel the call: the loop is interrupted, runs its handler, and the
            // interpreter takes the next job.
            let (ctx, ()) = p.open_context(PyRun, (SPIN.into(), false)).await?;
            ctx.cancel();
            let count =
                tokio::time::timeout(Duration::from_secs(10), p.run(Eval, "interrupted".into()))
                    .await
                    .expect("the loop was not interrupted within 10 s")?;
            assert_eq!(count, PyValue::Int(1));
            // Cancel the actor.
            let (ctx, ()) = p.open_context(PyRun, (SPIN.into(), false)).await?;
            let t = Instant::now();
            n.cancel().await;
            let took = t.elapsed();
            drop(ctx);
            Ok((took, n.reports()))
        }),
    )?;
    match reports.as_slice() {
        [r] => check(
            r.step == Step::Cancelled && r.exit == ChildExit::Exited(0),
            &format!("ended on the cancel request: {r:?}"),
        )?,
        other => return Err(format!("expected one report, got {other:?}").into()),
    }
    check(
        took < policy.cancel_timeout + policy.kill_after,
        &format!("well within the bounds: {took:?}"),
    )
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
    let result = harness::run(
        harness::DEADLINE,
        harness::root().teardown(policy).run(async move |n| {
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
        }),
    );
    let ended = Instant::now();
    let probe = std::mem::take(&mut *probe.lock().unwrap());
    let (Some(who), Some(cancelled_at)) = (probe.who, probe.cancelled_at) else {
        return Err(format!("the body failed before the teardown: {result:?}").into());
    };
    check(
        in_process(&who) == in_process_backend(),
        "the backend's kind of child",
    )?;
    // Up to the root's end (the body may be cancelled before `cancel` returns).
    let took = ended.duration_since(cancelled_at);
    check(
        took < policy.worst_case(),
        &format!("the teardown ended within the ladder's bounds: {took:?}"),
    )?;
    if in_process(&who) {
        if let Some(r) = probe.reports.first() {
            check(
                matches!(r.exit, ChildExit::Abandoned { .. }) && r.step != Step::Finished,
                &format!("abandoned by the ladder: {r:?}"),
            )?;
        }
        match result {
            Err(e) => match e.nursery().map(|ne| ne.children.as_slice()) {
                Some([ChildError::Abandoned { actor, reason }]) if actor == "root/sleeper" => {
                    check(reason.contains("Python"), &format!("why: {reason}"))
                }
                _ => Err(format!("expected root/sleeper abandoned, got {e}").into()),
            },
            Ok(()) => Err("an abandoned child is an error of its nursery".into()),
        }
    } else {
        result?;
        match probe.reports.as_slice() {
            [r] => check(
                (r.step == Step::Cancelled && r.exit == ChildExit::Exited(0))
                    || (r.step == Step::Terminated
                        && matches!(
                            r.exit,
                            ChildExit::Signaled {
                                signal: libc::SIGTERM,
                                ..
                            }
                        )),
                &format!("a clean or terminated end: {r:?}"),
            ),
            other => Err(format!("expected one report, got {other:?}").into()),
        }
    }
}

/// 20 sub-interpreter actors with an eager interpreter, started, used and torn down one
/// after the other (on every cell: they are `subint` actors explicitly), leave no
/// interpreter or host thread behind; the harness then checks threads and descriptors.
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
    check(reports.len() == 20, &format!("{} reports", reports.len()))?;
    check(
        reports
            .iter()
            .all(|r| r.step == Step::Cancelled && r.exit == ChildExit::Exited(0)),
        &format!("clean exits on the cancel request: {reports:?}"),
    )?;
    check(
        spawn_subint::live_interpreters() == interpreters,
        "interpreters back where they started",
    )
}

/// Scenario: a root on the cell's backend with 3 actors that run Python, one of them
/// still spinning in a loop, returns normally. Prints the values the actors computed and
/// how many sub-interpreters are left.
fn python_actors_then_return() {
    const SPIN: &str = "started()\nwhile True:\n    pass\n";
    let (values, spinning) = harness::run(
        Duration::from_secs(60),
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
    let output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(o) => o?,
        Err(_) => {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waiter.join();
            return Err("the root process did not end within 60 s".into());
        }
    };
    waiter.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    check(
        output.status.code() == Some(0),
        &format!("the root exited 0: {:?}\n{stderr}", output.status),
    )?;
    check(
        !stderr.contains("Fatal Python error"),
        &format!("no fatal Python error: {stderr}"),
    )?;
    check(
        stdout.contains(r#"VALUES {"actor": 0} {"actor": 1} {"actor": 2}"#),
        &format!("every actor ran Python: {stdout}"),
    )?;
    check(
        stdout.contains("INTERPRETERS 0\n"),
        &format!("no sub-interpreter left: {stdout}"),
    )
}
