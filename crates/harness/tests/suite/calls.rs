//! One-shot calls, `run_in_actor`, errors that cross actors, runtime vars.

use std::time::Duration;

use brood::{ActorOptions, ChildError, ChildExit, SpawnError, kinds};
use bytes::Bytes;
use harness::Failed;
use harness::functions::*;

use crate::common::*;

crate::tests!(
    spawn_and_call,
    run_in_actor_returns_results,
    run_in_actor_error_fails_the_nursery,
    three_level_tree,
    remote_error_across_two_hops,
    unknown_function_and_backend_are_typed_errors,
    runtime_vars_derive_and_override,
    two_roots_on_two_threads_see_their_own_vars,
);

fn spawn_and_call() -> Result<(), Failed> {
    let (sum, who) = with_root(async |n| {
        let p = n.start_actor("adder", ActorOptions::new()).await?;
        let who = p.run(WhoAmI, ()).await?;
        Ok((p.run(Add, (40, 2)).await?, who))
    })?;
    assert_eq!(sum, 42, "40 + 2");
    assert_eq!(who.path, "root/adder", "the child's tree path");
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
        poll_until_async(
            Duration::from_secs(5),
            "the run_in_actor children to end",
            async || n.live_children() == 0,
        )
        .await;
        Ok((a, b, n.reports()))
    })?;
    assert_eq!((a, b), (3, 7), "both results");
    assert!(
        reports.iter().all(|r| r.exit == ChildExit::Exited(0)),
        "clean exits: {reports:?}"
    );
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
    match ne.children.as_slice() {
        [ChildError::Failed { actor, error }] => {
            assert_eq!(actor, "root/bad", "the failed actor's path");
            assert_eq!(
                (error.kind.as_str(), error.message.as_str()),
                ("ValueError", "nope"),
                "kind and message: {error:?}"
            );
        }
        other => panic!("expected exactly one Failed, got {other:?}"),
    }
    Ok(())
}

fn three_level_tree() -> Result<(), Failed> {
    let sum = with_root(async |n| {
        let child = n.start_actor("child", ActorOptions::new()).await?;
        Ok(child.run(AddViaChild, ("grandchild".into(), 2, 3)).await?)
    })?;
    assert_eq!(sum, 5, "the grandchild's sum comes back through the child");
    Ok(())
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
    assert_eq!(
        e.kind, "KeyError",
        "the original kind survives two hops: {e:?}"
    );
    assert_eq!(e.message, "missing 'x'", "the original message: {e:?}");
    assert_eq!(
        e.origin, "root/child/grandchild",
        "the origin names the grandchild: {e:?}"
    );
    assert_eq!(e.relays, ["root/child"], "the relay names the child: {e:?}");
    Ok(())
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
brood::stream!(WrongShape = "t.add": () => u64);

fn runtime_vars_derive_and_override() -> Result<(), Failed> {
    let backend = harness::backend();
    with_root(async |n| {
        let root = runtime_vars::current();
        assert!(root.is_root && !root.debug_mode);
        let plain = n
            .start_actor(
                "plain",
                ActorOptions::new().vars(|v| v.user("team", "blue")),
            )
            .await?;
        let debug = n
            .start_actor("dbg", ActorOptions::new().vars(|v| v.debug_mode(true)))
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
            within_deadline(
                harness::root()
                    .name(name)
                    .vars(|v| v.user("who", name))
                    .run(async |n| {
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
