//! Discovery (`ActorCx::find_actor` and friends): actors find each other by name or tree
//! path through their root (the tree's registrar) and talk directly, on the cell's
//! backend and transport; the registrar's table follows the tree as actors start, are
//! reaped or killed; every actor answers `Status`.
//!
//! Kills: a process actor is SIGKILLed from outside by its pid; an in-process (`subint`)
//! actor, a thread of the test process that no signal can end alone, is crashed through
//! its portal instead (`common::kill_actor`), which its parent reports as the same
//! SIGKILL.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use brood::discovery::Status;
use brood::{ActorInfo, ActorOptions, ChildError, DiscoveryError, Portal, PortalError};
use harness::Failed;
use harness::discovery_fns::*;
use harness::functions::*;

use crate::common::*;

crate::tests!(
    a_child_finds_its_sibling_by_name_and_by_path_and_calls_it_directly,
    a_grandchild_finds_its_cousin_and_the_root_by_name_and_calls_them_directly,
    waiting_for_an_actor_started_later_times_out_or_is_abandoned_cleanly,
    list_actors_shows_the_whole_tree_from_the_root_and_from_a_grandchild,
    a_killed_actor_leaves_the_registrar_with_its_subtree_and_its_portal_fails_typed,
    names_repeat_lookup_answers_oldest_first_and_find_path_the_one,
    three_hundred_lookups_reuse_one_channel_and_leave_nothing_behind,
    status_reports_calls_in_flight_uptime_and_children,
);

/// A sibling found by name (and by path) is reached directly: it sees the finder as its
/// caller, not the root; an unknown name or path is `None`.
fn a_child_finds_its_sibling_by_name_and_by_path_and_calls_it_directly() -> Result<(), Failed> {
    with_root(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let b = n.start_actor("b", ActorOptions::new()).await?;
        let want = Found {
            path: "root/b".to_owned(),
            id: b.actor_id().to_string(),
            sum: 42,
            caller: "a".to_owned(),
        };
        let by_name = a.run(FindAndAdd, (Target::Name("b".into()), 40, 2)).await?;
        assert_eq!(
            by_name.as_ref(),
            Some(&want),
            "b found by name and called by a itself"
        );
        let by_path = a
            .run(FindAndAdd, (Target::Path("root/b".into()), 40, 2))
            .await?;
        assert_eq!(
            by_path.as_ref(),
            Some(&want),
            "b found by path and called by a itself"
        );
        for target in [
            Target::Name("nobody".into()),
            Target::Path("root/nobody".into()),
            // A name is not a path, nor a path a name.
            Target::Path("b".into()),
            Target::Name("root/b".into()),
        ] {
            let r = a.run(FindAndAdd, (target.clone(), 1, 1)).await?;
            assert_eq!(r, None, "{target:?} is not registered");
        }
        Ok(())
    })?;
    Ok(())
}

/// Across two levels: a grandchild under `left` finds its cousin under `right` and the
/// root by name, and each sees the grandchild itself as its caller.
fn a_grandchild_finds_its_cousin_and_the_root_by_name_and_calls_them_directly() -> Result<(), Failed>
{
    with_root(async |n| {
        let right = n.start_actor("right", ActorOptions::new()).await?;
        let left = n.start_actor("left", ActorOptions::new()).await?;
        let (_held, cousin) = right.open_context(HoldNamed, "cousin".into()).await?;
        assert_eq!(cousin.path, "root/right/cousin");
        let to_cousin = left
            .run(
                RelayFindAndAdd,
                ("leaf".into(), Target::Name("cousin".into()), 1, 2),
            )
            .await?
            .expect("the cousin is registered");
        assert_eq!(
            (
                to_cousin.path.as_str(),
                to_cousin.sum,
                to_cousin.caller.as_str()
            ),
            ("root/right/cousin", 3, "leaf"),
            "{to_cousin:?}"
        );
        let to_root = left
            .run(
                RelayFindAndAdd,
                ("leaf2".into(), Target::Name("root".into()), 5, 6),
            )
            .await?
            .expect("the root is registered");
        assert_eq!(
            (to_root.path.as_str(), to_root.sum, to_root.caller.as_str()),
            ("root", 11, "leaf2"),
            "{to_root:?}"
        );
        assert_eq!(to_root.id, n.actor().id().to_string());
        let by_path = left
            .run(
                RelayFindAndAdd,
                (
                    "leaf3".into(),
                    Target::Path("root/right/cousin".into()),
                    0,
                    7,
                ),
            )
            .await?
            .expect("the cousin is registered at its path");
        assert_eq!(
            by_path.id, to_cousin.id,
            "the same actor by name and by path"
        );
        assert_eq!(by_path.caller, "leaf3");
        Ok(())
    })?;
    Ok(())
}

/// `wait_for_actor` returns once an actor of that name is started (from the root's body
/// and from a child), fails with `Timeout` within its bound when none appears, and,
/// dropped while it waits, leaves nothing at the registrar (the root serves no call
/// after it).
fn waiting_for_an_actor_started_later_times_out_or_is_abandoned_cleanly() -> Result<(), Failed> {
    const LATER: Duration = Duration::from_millis(300);
    with_root(async |n| {
        let cx = n.actor();
        // The root's body waits; the actor starts later.
        let t = Instant::now();
        let (found, late) = tokio::join!(
            cx.wait_for_actor("late", scaled(Duration::from_secs(10))),
            async {
                tokio::time::sleep(LATER).await;
                n.start_actor("late", ActorOptions::new()).await
            }
        );
        let late = late?;
        let found = found?;
        assert!(
            t.elapsed() >= LATER,
            "the wait ended after {:?}, before the actor started",
            t.elapsed()
        );
        assert_eq!(found.actor_id(), late.actor_id());
        assert_eq!(found.run(WhoAmI, ()).await?.path, "root/late");
        assert_eq!(found.run(CallerName, ()).await?, "root", "called directly");

        // A child waits; the root starts the actor later.
        let waiter = n.start_actor("waiter", ActorOptions::new()).await?;
        // Both instants are read on the root's clock: the child's own `waited_ms` starts
        // when its handler runs, after the root's sleep began, so it may be short of
        // LATER by the call's transit time without the wait having ended early.
        let (waited, (started, late2)) = tokio::join!(
            async {
                let r = waiter.run(WaitAndAdd, ("late2".into(), 10_000)).await;
                (r, Instant::now())
            },
            async {
                tokio::time::sleep(LATER).await;
                (
                    Instant::now(),
                    n.start_actor("late2", ActorOptions::new()).await,
                )
            }
        );
        let (waited, answered) = waited;
        let late2 = late2?;
        match waited? {
            Waited::Found { found, waited_ms } => {
                assert_eq!(found.path, "root/late2");
                assert_eq!(found.id, late2.actor_id().to_string());
                assert_eq!((found.sum, found.caller.as_str()), (3, "waiter"));
                assert!(
                    answered >= started,
                    "the wait ended {:?} before the actor's start began (child waited {waited_ms} ms)",
                    started - answered
                );
            }
            other => panic!("expected the waiter to find late2, got {other:?}"),
        }

        // Nobody of that name: `Timeout`, not before the bound and well within it.
        let bound = Duration::from_millis(300);
        let t = Instant::now();
        match cx.wait_for_actor("nobody", bound).await {
            Err(DiscoveryError::Timeout { after, .. }) => assert_eq!(after, bound),
            other => panic!("expected Timeout, got {other:?}"),
        }
        let took = t.elapsed();
        assert!(
            took >= bound && took < scaled(Duration::from_secs(2)),
            "the root's wait timed out after {took:?}"
        );
        let t = Instant::now();
        match waiter.run(WaitAndAdd, ("nobody".into(), 300)).await? {
            Waited::TimedOut {
                after_ms,
                waited_ms,
            } => {
                assert_eq!(after_ms, 300);
                assert!(waited_ms >= 300, "timed out after {waited_ms} ms");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            t.elapsed() < scaled(Duration::from_secs(2)),
            "the child's wait timed out after {:?}",
            t.elapsed()
        );

        // Abandoned waits: the root's own (a future dropped) and a child's (a call the
        // registrar served until the child dropped it).
        tokio::select! {
            r = cx.wait_for_actor("ghost", scaled(Duration::from_secs(30))) => {
                panic!("the wait for a ghost ended: {r:?}")
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let serving = waiter.run(AbandonWait, ("ghost".into(), 200)).await?;
        assert!(
            serving >= 1,
            "the root serves the child's pending wait: {serving} calls in flight"
        );
        poll_until_async(
            Duration::from_secs(2),
            "the root to serve no call once the child dropped its wait",
            async || {
                let s = waiter
                    .run(StatusOf, Target::Path("root".into()))
                    .await
                    .ok()??;
                (s.calls_in_flight == 0).then_some(())
            },
        )
        .await;
        // An actor of that name started now is found as usual.
        let ghost = n.start_actor("ghost", ActorOptions::new()).await?;
        let found = cx
            .wait_for_actor("ghost", scaled(Duration::from_secs(5)))
            .await?;
        assert_eq!(found.actor_id(), ghost.actor_id());
        Ok(())
    })?;
    Ok(())
}

/// What a test knows of an actor, to check its entry against.
struct Expect {
    path: &'static str,
    pid: u32,
    addr: String,
}

/// Check `list` (from `list_actors`) against the tree `want`, in path order: paths,
/// names, pids, backends (the cell's), addresses, and each entry's parent the entry of
/// the path above (none for the root).
fn check_tree(list: &[ActorInfo], want: &[Expect], seen_from: &str) {
    let paths: Vec<&str> = list.iter().map(|i| i.path.as_str()).collect();
    let want_paths: Vec<&str> = want.iter().map(|e| e.path).collect();
    assert_eq!(
        paths, want_paths,
        "the whole tree, by path, seen from {seen_from}"
    );
    let backend = harness::backend();
    for (info, e) in list.iter().zip(want) {
        assert_eq!(
            info.name(),
            e.path.rsplit('/').next().unwrap(),
            "{seen_from}: {info:?}"
        );
        assert_eq!(info.pid, e.pid, "{seen_from}: the pid of {}", e.path);
        assert_eq!(
            info.backend, backend,
            "{seen_from}: the backend of {}",
            e.path
        );
        assert_eq!(
            info.addr.to_string(),
            e.addr,
            "{seen_from}: the address of {}",
            e.path
        );
        assert!(info.started_unix_ms > 0, "{seen_from}: {info:?}");
        let parent = e.path.rsplit_once('/').map(|(p, _)| p);
        let parent_id = parent.map(|p| {
            &list
                .iter()
                .find(|i| i.path == p)
                .unwrap_or_else(|| panic!("{seen_from}: no entry for {p}"))
                .id
        });
        assert_eq!(
            info.parent.as_ref(),
            parent_id,
            "{seen_from}: the parent of {}",
            e.path
        );
    }
    let ids: std::collections::HashSet<_> = list.iter().map(|i| &i.id).collect();
    assert_eq!(ids.len(), list.len(), "{seen_from}: ids are unique");
}

/// The pid an actor's entry must name: its own process's, or the test's for an
/// in-process actor (checked against what the actor says of itself).
fn pid_of(who: &Who) -> u32 {
    if in_process_backend() {
        assert_eq!(who.pid, std::process::id(), "{who:?} runs in the test");
    } else {
        assert_ne!(
            who.pid,
            std::process::id(),
            "{who:?} has a process of its own"
        );
    }
    who.pid
}

/// `list_actors` from the root and from a grandchild: the whole tree (root, children,
/// grandchildren), each entry with its path, pid, backend, address and parent.
fn list_actors_shows_the_whole_tree_from_the_root_and_from_a_grandchild() -> Result<(), Failed> {
    with_root(async |n| {
        let cx = n.actor();
        let root_addr = runtime_vars::current()
            .root_addr
            .clone()
            .expect("a root address");
        let left = n.start_actor("left", ActorOptions::new()).await?;
        let right = n.start_actor("right", ActorOptions::new()).await?;
        let lw = left.run(WhoAmI, ()).await?;
        let rw = right.run(WhoAmI, ()).await?;
        if let Some(pid) = left.peer_pid() {
            assert_eq!(pid, lw.pid, "the channel's peer is left's process");
        }
        let (_l, lg) = left.open_context(HoldNamed, "lg".into()).await?;
        let (_r, rg) = right.open_context(HoldNamed, "rg".into()).await?;
        let root = Expect {
            path: "root",
            pid: std::process::id(),
            addr: root_addr,
        };
        let of = |path, who: &Who| Expect {
            path,
            pid: pid_of(who),
            addr: who.addr.clone(),
        };
        let list = cx.list_actors().await?;
        check_tree(
            &list,
            &[
                root,
                of("root/left", &lw),
                of("root/left/lg", &lg),
                of("root/right", &rw),
                of("root/right/rg", &rg),
            ],
            "the root",
        );
        let root_entry = &list[0];
        assert_eq!(&root_entry.id, cx.id());
        let root = Expect {
            path: "root",
            pid: std::process::id(),
            addr: root_entry.addr.to_string(),
        };
        // From a grandchild, `root/left/leaf`, started for the purpose (so it lists
        // itself too).
        let (leaf, from_leaf) = left.run(ListViaChild, "leaf".into()).await?;
        check_tree(
            &from_leaf,
            &[
                root,
                of("root/left", &lw),
                of("root/left/leaf", &leaf),
                of("root/left/lg", &lg),
                of("root/right", &rw),
                of("root/right/rg", &rg),
            ],
            "the grandchild root/left/leaf",
        );
        // The entries are the same the root sees (the leaf's aside).
        let without_leaf: Vec<ActorInfo> = from_leaf
            .into_iter()
            .filter(|i| i.path != "root/left/leaf")
            .collect();
        assert_eq!(without_leaf, list);
        // The leaf was reaped with its nursery: gone from the table.
        assert_eq!(cx.list_actors().await?, list, "the leaf left the table");
        Ok(())
    })?;
    Ok(())
}

/// A call through a portal whose actor died fails with a typed error, within a bound.
async fn fails_typed(portal: &Portal, what: &str) -> PortalError {
    let bound = scaled(Duration::from_secs(2));
    match tokio::time::timeout(bound, portal.run(Add, (1, 1))).await {
        Err(_) => panic!("a call to {what} hung for {bound:?}"),
        Ok(Ok(v)) => panic!("{what} answered {v}"),
        Ok(Err(e)) => {
            assert!(
                matches!(e, PortalError::Disconnected { .. } | PortalError::Remote(_)),
                "a call to {what} failed with a typed error: {e:?}"
            );
            e
        }
    }
}

fn is_under(path: &str, top: &str) -> bool {
    path == top || path.strip_prefix(top).is_some_and(|r| r.starts_with('/'))
}

/// A child killed from outside (SIGKILL by pid; an in-process one crashed as a kill
/// would) goes from the table with its child within 1 s; lookups then answer `None`, and
/// portals lookups returned before fail typed, never hang. The kill happens in a nursery
/// of the root's own (`ActorCx::open_nursery`), which reports it, so the root's body
/// goes on and checks all that.
fn a_killed_actor_leaves_the_registrar_with_its_subtree_and_its_portal_fails_typed()
-> Result<(), Failed> {
    with_root(async |n| {
        let cx = n.actor();
        let watcher = n.start_actor("watcher", ActorOptions::new()).await?;
        let held: Mutex<Option<(Portal, Portal)>> = Mutex::new(None);
        let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
        let nested = cx.open_nursery(async |m| {
            let victim = m.start_actor("victim", ActorOptions::new()).await?;
            let who = victim.run(WhoAmI, ()).await?;
            let (_ctx, gc) = victim
                .open_context(HoldGrandchild, ActorOptionsWire::default())
                .await?;
            assert_eq!(gc.path, "root/victim/grandchild");
            // Found before the kill, by the root and by another actor.
            let found = cx
                .find_actor("victim")
                .await?
                .expect("the victim is registered");
            assert_eq!(found.run(Add, (1, 2)).await?, 3);
            let found_gc = cx
                .find_path("root/victim/grandchild")
                .await?
                .expect("the grandchild is registered");
            assert_eq!(found_gc.run(Add, (2, 2)).await?, 4);
            let seen = watcher
                .run(FindAndAdd, (Target::Name("victim".into()), 1, 1))
                .await?;
            assert_eq!(seen.map(|f| f.caller), Some("watcher".to_owned()));
            *held.lock().unwrap() = Some((found, found_gc));
            kill_actor(&victim, &who).await;
            let _ = killed_tx.send(());
            std::future::pending::<()>().await;
            Ok(())
        });
        let observe = async {
            // Dropped unsent: the body failed before its kill (the nursery's error says).
            if killed_rx.await.is_ok() {
                poll_until_async(
                    Duration::from_secs(1),
                    "the killed actor and its child to leave the table",
                    async || {
                        cx.list_actors()
                            .await
                            .is_ok_and(|l| !l.iter().any(|i| is_under(&i.path, "root/victim")))
                    },
                )
                .await;
            }
        };
        let (nested, ()) = tokio::join!(nested, observe);
        let ne = nested.expect_err("the nursery reports the kill");
        match ne.children.as_slice() {
            [
                ChildError::Signaled {
                    actor, signal: 9, ..
                },
            ] if actor == "root/victim" => {}
            _ => panic!("expected root/victim killed by SIGKILL alone, got {ne:?}"),
        }
        assert!(ne.body.is_none(), "the body failed: {ne:?}");

        // Not found any more, from the root nor from another actor.
        assert!(cx.find_actor("victim").await?.is_none());
        assert!(cx.find_actor("grandchild").await?.is_none());
        assert!(cx.find_path("root/victim/grandchild").await?.is_none());
        assert!(cx.lookup("victim").await?.is_empty());
        for target in [
            Target::Name("victim".into()),
            Target::Path("root/victim/grandchild".into()),
        ] {
            let r = watcher.run(FindAndAdd, (target.clone(), 1, 1)).await?;
            assert_eq!(r, None, "{target:?} after the kill, seen from the watcher");
        }
        let left: Vec<String> = listed_paths(&cx).await?;
        assert_eq!(left, ["root", "root/watcher"]);

        // The portals found before the kill: typed errors, no hang.
        let (found, found_gc) = held.lock().unwrap().take().expect("the portals");
        fails_typed(&found, "the killed actor").await;
        // The grandchild dies with its parent (a process by its parent-death signal, an
        // in-process one with its parent's runtime), maybe a moment after it.
        poll_until_async(
            Duration::from_secs(2),
            "a call to the killed actor's child to fail",
            async || {
                let bound = scaled(Duration::from_secs(2));
                match tokio::time::timeout(bound, found_gc.run(Add, (1, 1))).await {
                    Err(_) => panic!("a call to the killed actor's child hung for {bound:?}"),
                    Ok(r) => r.is_err(),
                }
            },
        )
        .await;
        fails_typed(&found_gc, "the killed actor's child").await;
        Ok(())
    })?;
    Ok(())
}

/// Names repeat: three `twin`s (under the root, `right` and `left`, started in that
/// order) are all returned by `lookup`, oldest first (not in path order), from the root
/// and from a child; `find_actor` answers the oldest, `find_path` exactly the one.
fn names_repeat_lookup_answers_oldest_first_and_find_path_the_one() -> Result<(), Failed> {
    with_root(async |n| {
        let cx = n.actor();
        let twin = n.start_actor("twin", ActorOptions::new()).await?;
        let right = n.start_actor("right", ActorOptions::new()).await?;
        let left = n.start_actor("left", ActorOptions::new()).await?;
        let (_r, right_twin) = right.open_context(HoldNamed, "twin".into()).await?;
        let (_l, left_twin) = left.open_context(HoldNamed, "twin".into()).await?;
        let oldest_first = ["root/twin", "root/right/twin", "root/left/twin"];
        let found = cx.lookup("twin").await?;
        let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, oldest_first, "oldest first, from the root");
        assert!(
            found
                .windows(2)
                .all(|w| w[0].started_unix_ms <= w[1].started_unix_ms),
            "{found:?}"
        );
        assert!(found.iter().all(|i| i.name() == "twin"));
        assert_eq!(&found[0].id, twin.actor_id());
        let from_child = left.run(LookupName, "twin".into()).await?;
        assert_eq!(from_child, found, "the same, from a child");

        // `find_actor`: the oldest.
        let first = cx.find_actor("twin").await?.expect("a twin");
        assert_eq!(first.actor_id(), twin.actor_id());
        // `find_path`: exactly the one at that path, from the root and from a child.
        for (path, who) in [
            ("root/right/twin", &right_twin),
            ("root/left/twin", &left_twin),
        ] {
            let p = cx.find_path(path).await?.expect("registered");
            let w = p.run(WhoAmI, ()).await?;
            assert_eq!((w.path.as_str(), &w.addr), (path, &who.addr));
            let via = left
                .run(FindAndAdd, (Target::Path(path.into()), 2, 3))
                .await?
                .expect("registered");
            assert_eq!(
                (via.path.as_str(), via.sum, via.caller.as_str()),
                (path, 5, "left")
            );
        }
        assert!(cx.find_path("root/twin/twin").await?.is_none());
        assert!(cx.lookup("twi").await?.is_empty(), "names match whole");
        Ok(())
    })?;
    Ok(())
}

/// 300 lookups and calls, one after another, from a child to its sibling: all answer,
/// and the finder keeps one channel to the sibling (its descriptors do not grow with
/// the lookups; 300 channels would also pass the sibling's limit of 256 peers).
fn three_hundred_lookups_reuse_one_channel_and_leave_nothing_behind() -> Result<(), Failed> {
    const N: u32 = 300;
    with_root(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let b = n.start_actor("b", ActorOptions::new()).await?;
        let b_fds = |p: ProcInfo| p.fds.len();
        // The finder's channels to the registrar and to b open first (an in-process
        // actor's count is the whole test process's, both sides of those channels).
        assert_eq!(a.run(FindAndAddMany, ("b".into(), 1)).await?.0, 1);
        let b_before = b_fds(b.run(ProcSelf, ()).await?);
        let (ok, before, after) = a.run(FindAndAddMany, ("b".into(), N)).await?;
        assert_eq!(ok, N, "every lookup found b and every call answered");
        assert!(
            after <= before + 8,
            "the finder's descriptors grew from {before} to {after} over {N} lookups"
        );
        let b_after = b_fds(b.run(ProcSelf, ()).await?);
        assert!(
            b_after <= b_before + 8,
            "the sibling's descriptors grew from {b_before} to {b_after} over {N} lookups"
        );
        // Once more: still one channel.
        let (ok, _, again) = a.run(FindAndAddMany, ("b".into(), N)).await?;
        assert_eq!(ok, N);
        assert!(again <= after + 8, "{after} then {again} descriptors");
        Ok(())
    })?;
    Ok(())
}

/// `Status`: a child serving a slow call reports it in flight (and none once it was
/// cancelled), its path, pid, backend, uptime and children; the root answers too.
fn status_reports_calls_in_flight_uptime_and_children() -> Result<(), Failed> {
    with_root(async |n| {
        let c = n.start_actor("sleeper", ActorOptions::new()).await?;
        let who = c.run(WhoAmI, ()).await?;
        let idle = c.run(Status, ()).await?;
        assert_eq!(idle.calls_in_flight, 0, "{idle:?}");
        assert_eq!(idle.path, "root/sleeper");
        assert_eq!(idle.pid, pid_of(&who));
        assert_eq!(idle.backend, harness::backend());
        assert_eq!(idle.children, 0);

        let c2 = c.clone();
        let sleeping = tokio::spawn(async move { c2.run(Sleep, 60_000).await });
        let busy = poll_until_async(
            Duration::from_secs(2),
            "the sleeper to report its call in flight",
            async || {
                let s = c.run(Status, ()).await.ok()?;
                (s.calls_in_flight >= 1).then_some(s)
            },
        )
        .await;
        assert_eq!(busy.calls_in_flight, 1, "{busy:?}");
        assert!(busy.uptime > Duration::ZERO, "{busy:?}");
        assert!(busy.uptime >= idle.uptime, "{idle:?} then {busy:?}");
        sleeping.abort();
        let _ = sleeping.await;
        poll_until_async(
            Duration::from_secs(2),
            "the cancelled call to leave the count",
            async || {
                c.run(Status, ())
                    .await
                    .is_ok_and(|s| s.calls_in_flight == 0)
            },
        )
        .await;

        // A child, held by a context: one child, one call in flight.
        let (_held, _gc) = c
            .open_context(HoldGrandchild, ActorOptionsWire::default())
            .await?;
        let holding = c.run(Status, ()).await?;
        assert_eq!(
            (holding.children, holding.calls_in_flight),
            (1, 1),
            "{holding:?}"
        );

        // The root, found by path from the child.
        let root = c
            .run(StatusOf, Target::Path("root".into()))
            .await?
            .expect("the root is registered");
        assert_eq!(root.path, "root");
        assert_eq!(root.pid, std::process::id());
        assert_eq!(root.backend, harness::backend());
        assert_eq!(root.children, 1, "{root:?}");
        assert!(root.uptime >= holding.uptime, "{root:?} {holding:?}");
        Ok(())
    })?;
    Ok(())
}
