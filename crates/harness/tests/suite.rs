//! The integration suite: runs on the backend and transport named by `BROOD_BACKEND` and
//! `BROOD_TRANSPORT` (see `cargo xtask test`). Every test runs in a root actor with a
//! deadline and is checked for leaked processes, descriptors and socket files.

use std::io::{BufRead, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::functions::*;
use harness::{Failed, Scenario, Test, leaks, with_root};
use spawn_api::codec::{encode_frame, read_frame_blocking};
use spawn_api::{
    ActorId, ActorOptions, ChildError, ChildExit, Frame, Msg, PROTOCOL_VERSION, PortalError,
    RemoteError, RuntimeFlavor, RuntimeVars, SpawnError, Step, TeardownHook, TeardownPolicy, kinds,
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
    if harness::backend() != "proc" {
        return Err("this test replaces the proc backend's executable".into());
    }
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
