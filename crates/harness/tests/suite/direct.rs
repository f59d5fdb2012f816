//! Direct portals (`ActorCx::connect`): an actor reaches a sibling, a cousin or the root
//! straight at its address, on the cell's backend and transport, with the tree's
//! handshake; a dead target or a foreign tree gives a typed error, never a hang.

use std::time::Duration;

use brood::ActorOptions;
use harness::Failed;
use harness::functions::*;

use crate::common::*;

crate::tests!(
    a_child_calls_its_sibling_directly,
    a_grandchild_calls_its_cousin_and_the_root_directly,
    a_direct_portal_to_a_killed_actor_fails_typed_and_a_dead_address_is_unreachable,
    an_actor_of_another_tree_is_refused_by_the_handshake,
    two_hundred_direct_portals_opened_and_closed_leave_nothing_behind,
);

/// The callee sees the sibling itself as its caller: the call was not relayed.
fn a_child_calls_its_sibling_directly() -> Result<(), Failed> {
    with_root(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let b = n.start_actor("b", ActorOptions::new()).await?;
        let b_addr = b.run(WhoAmI, ()).await?.addr;
        let (sum, caller) = a.run(AddVia, (b_addr, 40, 2)).await?;
        assert_eq!(sum, 42);
        assert_eq!(
            caller, "a",
            "b was called by a itself, not through the root"
        );
        Ok(())
    })?;
    Ok(())
}

/// Across two levels: a grandchild under `left` reaches `right` and the root.
fn a_grandchild_calls_its_cousin_and_the_root_directly() -> Result<(), Failed> {
    with_root(async |n| {
        let right = n.start_actor("right", ActorOptions::new()).await?;
        let left = n.start_actor("left", ActorOptions::new()).await?;
        let right_addr = right.run(WhoAmI, ()).await?.addr;
        let root_addr = runtime_vars::current()
            .root_addr
            .clone()
            .expect("a root address");
        // `left` starts a child (a grandchild of the root), which opens the portals.
        let via_child = left
            .run(RelayAddVia, ("leaf".to_owned(), right_addr, 1, 2))
            .await?;
        assert_eq!(via_child, (3, "leaf".to_owned()));
        let to_root = left
            .run(RelayAddVia, ("leaf2".to_owned(), root_addr, 5, 6))
            .await?;
        assert_eq!(to_root, (11, "leaf2".to_owned()));
        Ok(())
    })?;
    Ok(())
}

/// The target dies while a portal to it is open: the next call fails with a typed
/// error within the bound; an address nobody listens at is `Unreachable`.
fn a_direct_portal_to_a_killed_actor_fails_typed_and_a_dead_address_is_unreachable()
-> Result<(), Failed> {
    let r = with_root(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let b = n.start_actor("b", ActorOptions::new()).await?;
        let b_addr = b.run(WhoAmI, ()).await?.addr;
        assert_eq!(a.run(TryConnect, b_addr.clone()).await?, "");
        let _ = tokio::time::timeout(scaled(Duration::from_secs(2)), b.run(Crash, ())).await;
        let err = poll_until_async(
            Duration::from_secs(5),
            "a connect to the killed actor fails",
            async || {
                let e = a.run(TryConnect, b_addr.clone()).await.ok()?;
                (!e.is_empty()).then_some(e)
            },
        )
        .await;
        // Which one depends on how far the dying actor got: its socket gone (cannot
        // reach), accepted and then reset mid-handshake (an in-process actor's listener
        // outlives it briefly), or a call cut off (lost contact).
        assert!(
            err.contains("cannot reach")
                || err.contains("handshake")
                || err.contains("lost contact"),
            "a typed error naming the failure: {err}"
        );
        Ok(())
    });
    // b was killed on purpose: the root reports it, and nothing else.
    match r {
        Err(e) => killed_alone(&e, "root/b"),
        Ok(()) => Err(Failed::from("the killed child was not reported")),
    }
}

/// Two trees in one process: an actor of one cannot open a portal to an actor of the
/// other (it cannot prove the other tree's secret).
fn an_actor_of_another_tree_is_refused_by_the_handshake() -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let other = std::thread::spawn(move || {
        rt.block_on(harness::root().name("other").run(async |n| {
            let c = n.start_actor("stranger", ActorOptions::new()).await?;
            tx.send(c.run(WhoAmI, ()).await?.addr)
                .expect("the test waits");
            let _ = done_rx.await;
            Ok(())
        }))
    });
    let stranger = rx
        .recv_timeout(scaled(Duration::from_secs(20)))
        .map_err(|e| Failed::from(format!("the other tree did not start: {e}")))?;
    let r = with_root(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let err = a.run(TryConnect, stranger.clone()).await?;
        assert!(
            err.contains("handshake") || err.contains("refused"),
            "refused by the handshake: {err}"
        );
        Ok(())
    });
    let _ = done_tx.send(());
    other
        .join()
        .map_err(|_| Failed::from("the other tree panicked"))?
        .map_err(|e| Failed::from(format!("the other tree failed: {e}")))?;
    r?;
    Ok(())
}

/// Opened and closed one after another, 200 portals cost the target nothing lasting:
/// each close frees its slot (the target's limit is 256), and the leak checks after the
/// test see no channel left.
fn two_hundred_direct_portals_opened_and_closed_leave_nothing_behind() -> Result<(), Failed> {
    with_root(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let b = n.start_actor("b", ActorOptions::new()).await?;
        let b_addr = b.run(WhoAmI, ()).await?.addr;
        assert_eq!(a.run(ConnectMany, (b_addr.clone(), 200)).await?, 200);
        assert_eq!(a.run(ConnectMany, (b_addr, 200)).await?, 200, "slots freed");
        Ok(())
    })?;
    Ok(())
}
