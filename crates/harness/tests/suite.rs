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
use harness::{Failed, Scenario, Test, leaks, with_root};
use spawn_api::codec::{encode_frame, read_frame_blocking};
use spawn_api::{
    ActorId, ActorOptions, ChildError, ChildExit, FnError, Frame, Msg, PROTOCOL_VERSION,
    PortalError, RemoteError, RuntimeFlavor, RuntimeVars, SpawnError, Step, TeardownHook,
    TeardownPolicy, kinds,
};

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
);

const SCENARIOS: &[Scenario] = &[Scenario {
    name: "tree_then_wait",
    run: tree_then_wait,
}];

fn main() {
    harness::main(TESTS, SCENARIOS)
}

fn check(cond: bool, what: &str) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into()) }
}

/// The pid of a child, refusing backends whose children share our process (their
/// tests that kill a pid need another way in).
fn separate_pid(who: &Who) -> u32 {
    assert_ne!(
        who.pid,
        std::process::id(),
        "this backend runs children in the test process: no pid to signal"
    );
    who.pid
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
        let e = c.run(Exit, 3).await.unwrap_err();
        assert!(matches!(e, PortalError::Disconnected { .. }), "{e:?}");
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
        let pid = separate_pid(&c.run(WhoAmI, ()).await?);
        let mut s = c.open_stream(Count, u64::MAX).await?;
        for _ in 0..100 {
            s.recv().await?.expect("an item");
        }
        kill(pid, nix::sys::signal::Signal::SIGKILL);
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
        assert!(!leaks::is_dead(grandchild.pid));
        n.cancel().await;
        Ok((child, grandchild, n.reports()))
    })?;
    check(leaks::is_dead(grandchild.pid), "the grandchild is gone")?;
    check(leaks::is_dead(child.pid), "the child is gone")?;
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
    let (took, reports) = harness::run(
        harness::DEADLINE,
        harness::root().teardown(policy).run(async |n| {
            let c = n
                .start_actor(
                    "stubborn",
                    ActorOptions::new().runtime(RuntimeFlavor::MultiThread(2)),
                )
                .await?;
            // Once `started` arrives, the child's handler is blocked for good.
            let (ctx, ()) = c.open_context(Stubborn, false).await?;
            let t = Instant::now();
            n.cancel().await;
            let took = t.elapsed();
            assert!(ctx.result().await.is_err(), "the blocked call fails");
            Ok((took, n.reports()))
        }),
    )?;
    let r = &reports[0];
    check(r.step == Step::Terminated, &format!("terminated: {r:?}"))?;
    check(
        took >= policy.cancel_timeout && took < policy.cancel_timeout + policy.kill_after,
        &format!("reaped after the cancel timeout, before the kill: {took:?}"),
    )
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(String, bool)>>);

#[spawn_api::async_trait]
impl TeardownHook for Recorder {
    async fn before_hard_reap(&self, child: &ActorId, vars: &RuntimeVars) {
        self.0
            .lock()
            .unwrap()
            .push((child.name().to_owned(), vars.debug_mode));
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

fn teardown_hook_sees_the_childs_vars_before_the_kill() -> Result<(), Failed> {
    let rec = Arc::new(Recorder::default());
    let policy = TeardownPolicy {
        cancel_timeout: Duration::from_millis(200),
        kill_after: Duration::from_millis(300),
        ..TeardownPolicy::default()
    };
    let (took, reports, root_debug) = harness::run(
        harness::DEADLINE,
        harness::root()
            .teardown(policy)
            .hook(Shared(rec.clone()))
            .run(async |n| {
                let c = n
                    .start_actor(
                        "stubborn",
                        ActorOptions::new()
                            .debug_mode(true)
                            .runtime(RuntimeFlavor::MultiThread(2)),
                    )
                    .await?;
                let calm = n.start_actor("calm", ActorOptions::new()).await?;
                let (ctx, ()) = c.open_context(Stubborn, true).await?;
                let t = Instant::now();
                n.cancel().await;
                drop(calm);
                assert!(ctx.result().await.is_err(), "the blocked call fails");
                Ok((t.elapsed(), n.reports(), runtime_vars::current().debug_mode))
            }),
    )?;
    let stubborn = reports.iter().find(|r| r.actor == "root/stubborn").unwrap();
    let calm = reports.iter().find(|r| r.actor == "root/calm").unwrap();
    check(
        stubborn.step == Step::Killed,
        &format!("killed: {stubborn:?}"),
    )?;
    check(
        calm.step == Step::Cancelled,
        &format!("calm sibling cancelled: {calm:?}"),
    )?;
    check(
        took >= policy.cancel_timeout + policy.kill_after,
        &format!("the kill came only after both bounds: {took:?}"),
    )?;
    check(!root_debug, "the root itself is not in debug mode")?;
    let seen = rec.0.lock().unwrap().clone();
    check(
        seen == [("stubborn".to_owned(), true)],
        &format!("the hook ran once, with the child's own vars: {seen:?}"),
    )
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

/// Scenario: a root with a child and a grandchild; prints their pids, then waits to be
/// killed.
fn tree_then_wait() {
    let _ = harness::run(
        Duration::from_secs(120),
        harness::root().run(async |n| {
            let c = n.start_actor("child", ActorOptions::new()).await?;
            let child = c.run(WhoAmI, ()).await?;
            let (_ctx, gc) = c
                .open_context(HoldGrandchild, ActorOptionsWire::default())
                .await?;
            println!("PIDS {} {} {}", std::process::id(), child.pid, gc.pid);
            std::io::stdout().flush().unwrap();
            std::future::pending::<()>().await;
            Ok(())
        }),
    );
}

fn root_sigkill_takes_every_descendant() -> Result<(), Failed> {
    let mut root = std::process::Command::new(std::env::current_exe()?)
        .env(harness::SCENARIO_ENV, "tree_then_wait")
        .env(harness::TEST_DIR_ENV, harness::test_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(root.stdout.take().unwrap()).read_line(&mut line)?;
    let pids: Vec<u32> = line
        .strip_prefix("PIDS ")
        .ok_or_else(|| format!("unexpected scenario output {line:?}"))?
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (root_pid, descendants) = (pids[0], &pids[1..]);
    check(root_pid == root.id(), "the scenario is the root")?;
    check(
        descendants.iter().all(|&p| p != root_pid),
        "descendants are processes of their own",
    )?;
    kill(root_pid, nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    root.wait()?;
    while !descendants.iter().all(|&p| leaks::is_dead(p)) {
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
    check(leaks::is_dead(sib.pid), "the sibling was torn down")
}

fn every_child_error_is_collected() -> Result<(), Failed> {
    let err = with_root(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let b = n.start_actor("b", ActorOptions::new()).await?;
        let pa = separate_pid(&a.run(WhoAmI, ()).await?);
        let pb = separate_pid(&b.run(WhoAmI, ()).await?);
        kill(pa, nix::sys::signal::Signal::SIGKILL);
        kill(pb, nix::sys::signal::Signal::SIGKILL);
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
        other => Err(format!("no spawn failure cases for backend {other:?}").into()),
    }
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
    harness::run(
        harness::DEADLINE,
        harness::root()
            .teardown(policy)
            .backend(
                spawn_proc::ProcBackend::new()
                    .with_exe("/bin/sleep")
                    .with_args(["30"]),
            )
            .run(async |n| {
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
    harness::run(
        harness::DEADLINE,
        harness::root()
            .teardown(policy)
            .backend(
                spawn_fork::ForkBackend::new()
                    .with_exe("/bin/sleep")
                    .with_args(["30"]),
            )
            .run(async |n| {
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
                    let me = kid.run(ProcSelf, ()).await?;
                    assert_ne!(me.pid, ours.pid);
                    assert!(me.threads <= 2, "a child runs {} threads", me.threads);
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

/// 50 actors started at once from one parent all answer a call, and all are reaped.
fn fifty_actors_spawned_concurrently_all_answer_and_are_reaped() -> Result<(), Failed> {
    let (sums, pids, reports) = with_root(async |n| {
        let started = join_all(
            (0..50i64)
                .map(|i| async move {
                    let p = n.start_actor(&format!("a{i}"), ActorOptions::new()).await?;
                    let sum = p.run(Add, (i, 1000)).await?;
                    let who = p.run(WhoAmI, ()).await?;
                    Ok::<_, FnError>((sum, who.pid))
                })
                .collect(),
        )
        .await;
        let mut sums = Vec::new();
        let mut pids = Vec::new();
        for r in started {
            let (sum, pid) = r?;
            sums.push(sum);
            pids.push(pid);
        }
        n.cancel().await;
        Ok((sums, pids, n.reports()))
    })?;
    check(
        sums == (1000..1050).collect::<Vec<i64>>(),
        "every actor answered",
    )?;
    let mut unique = pids.clone();
    unique.sort();
    unique.dedup();
    check(unique.len() == 50, "fifty processes")?;
    check(
        pids.iter().all(|&p| leaks::is_dead(p)),
        "every actor is gone",
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
    let mut line = String::new();
    std::io::BufReader::new(root.stdout.take().unwrap()).read_line(&mut line)?;
    let pids: Vec<u32> = line
        .strip_prefix("PIDS ")
        .ok_or_else(|| format!("unexpected scenario output {line:?}"))?
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
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
