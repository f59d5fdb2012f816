//! Per-child transports (`ActorOptions::transport`): trees that mix `uds` and `shm`.
//!
//! Every test runs on the cell's transport and puts children on the *other* one (`shm`
//! in the `uds` column, `uds` in the `shm` column), so each column checks a mixed tree
//! from both sides. The harness's leak checks cover what the parent's extra listener
//! leaves behind (socket files, descriptors, `memfd` mappings).

use std::time::Duration;

use brood::{ActorOptions, ChildError, ChildExit, PortalError, SpawnError, Step};
use harness::functions::*;
use harness::{Failed, in_process, wait_gone};

use crate::common::*;

crate::tests!(
    a_child_on_the_other_transport_listens_and_is_reached_there,
    grandchildren_inherit_their_parents_transport_or_choose_their_own,
    siblings_on_the_other_transport_share_their_parents_listener,
    an_unknown_transport_is_a_typed_error,
    a_killed_child_on_the_other_transport_is_reaped_and_leaves_nothing,
    a_mixed_tree_is_torn_down_through_the_ladder,
);

/// The transport the cell's root does not use.
fn other() -> &'static str {
    match harness::transport().as_str() {
        "uds" => "shm",
        _ => "uds",
    }
}

/// The key of an address in its display form (`uds:/run/...`).
fn key_of(addr: &str) -> &str {
    addr.split_once(':').map_or("", |(k, _)| k)
}

/// The child listens on the transport it was given, its vars say so, and calls, streams
/// (small items and 1 MiB blobs) and contexts all cross the channel its parent reaches
/// it by.
fn a_child_on_the_other_transport_listens_and_is_reached_there() -> Result<(), Failed> {
    let (cell, other) = (harness::transport(), other());
    with_root(async |n| {
        let root_addr = runtime_vars::current()
            .root_addr
            .clone()
            .expect("a root address");
        assert_eq!(key_of(&root_addr), cell);

        let c = n
            .start_actor("far", ActorOptions::new().transport(other))
            .await?;
        let who = c.run(WhoAmI, ()).await?;
        assert_eq!(key_of(&who.addr), other, "it listens on {other}: {who:?}");
        assert_eq!(in_process(&who), in_process_backend());
        let vars = c.run(Vars, ()).await?;
        assert_eq!(vars.enabled_transports, [other, cell.as_str()]);
        assert_eq!(
            vars.services.get(&format!("transport.{cell}")),
            Some(&root_addr),
            "where its parent listens on the parent's own transport"
        );
        let parent_there = vars
            .services
            .get(&format!("transport.{other}"))
            .expect("where its parent listens on the child's transport");
        assert_eq!(key_of(parent_there), other);
        assert_ne!(parent_there, &who.addr);

        assert_eq!(c.run(Add, (40, 2)).await?, 42);
        let mut s = c.open_stream(Count, 2000).await?;
        let mut next = 0;
        while let Some(i) = s.recv().await? {
            assert_eq!(i, next);
            next += 1;
        }
        assert_eq!(next, 2000);
        let mut blobs = c.open_stream(Blobs, (8, 1 << 20)).await?;
        let mut got = 0;
        while let Some(b) = blobs.recv().await? {
            assert_eq!(b.len(), 1 << 20);
            assert!(b.iter().all(|&x| x == 0xab));
            got += 1;
        }
        assert_eq!(got, 8);
        let (mut ctx, started) = c.open_context(Echo, "hi".into()).await?;
        assert_eq!(started, "hi");
        for word in ["one", "two", "three"] {
            ctx.send(word.to_owned()).await?;
            assert_eq!(ctx.recv().await?, Some(word.to_uppercase()));
        }
        assert_eq!(ctx.result().await?, 3);
        Ok(())
    })?;
    Ok(())
}

/// A child's children use its transport unless they choose another; one back on the
/// root's transport is placed next to the root.
fn grandchildren_inherit_their_parents_transport_or_choose_their_own() -> Result<(), Failed> {
    let (cell, other) = (harness::transport(), other());
    with_root(async |n| {
        let root_addr = runtime_vars::current()
            .root_addr
            .clone()
            .expect("a root address");
        let c = n
            .start_actor("far", ActorOptions::new().transport(other))
            .await?;

        let (who, vars, sum) = c.run(AskViaChild, ActorOptionsWire::default()).await?;
        assert_eq!(sum, 42);
        assert_eq!(who.path, "root/far/grandchild");
        assert_eq!(key_of(&who.addr), other, "inherited: {who:?}");
        assert_eq!(vars.enabled_transports, [other, cell.as_str()]);

        let back = ActorOptionsWire {
            transport: Some(cell.clone()),
            ..ActorOptionsWire::default()
        };
        let (who, vars, sum) = c.run(AskViaChild, back).await?;
        assert_eq!(sum, 42);
        assert_eq!(key_of(&who.addr), cell, "chosen: {who:?}");
        assert_eq!(vars.enabled_transports, [cell.as_str(), other]);
        if cell == "uds" {
            // Socket files: the grandchild's is in the root's tree directory.
            let dir = |a: &str| {
                std::path::Path::new(a.trim_start_matches("uds:"))
                    .parent()
                    .map(std::path::Path::to_path_buf)
            };
            assert_eq!(
                dir(&who.addr),
                dir(&root_addr),
                "{who:?} next to {root_addr}"
            );
        }
        Ok(())
    })?;
    Ok(())
}

/// Several children on the other transport, started concurrently, all answer: the
/// parent binds its listener there once, for all of them.
fn siblings_on_the_other_transport_share_their_parents_listener() -> Result<(), Failed> {
    let other = other();
    with_root(async |n| {
        let starts = (0..4)
            .map(|i| async move {
                n.start_actor(&format!("s{i}"), ActorOptions::new().transport(other))
                    .await
            })
            .collect::<Vec<_>>();
        let portals = join_all(starts).await;
        let mut parents = Vec::new();
        for (i, p) in portals.into_iter().enumerate() {
            let p = p?;
            assert_eq!(p.run(Add, (i as i64, 1)).await?, i as i64 + 1);
            let vars = p.run(Vars, ()).await?;
            parents.push(vars.services[&format!("transport.{other}")].clone());
        }
        parents.dedup();
        assert_eq!(parents.len(), 1, "one listener for all: {parents:?}");
        Ok(())
    })?;
    Ok(())
}

/// A key no transport has fails the spawn at once with the configured keys; the
/// nursery goes on.
fn an_unknown_transport_is_a_typed_error() -> Result<(), Failed> {
    with_root(async |n| {
        match n
            .start_actor("lost", ActorOptions::new().transport("carrier-pigeon"))
            .await
        {
            Err(SpawnError::UnknownTransport { key, known }) => {
                assert_eq!(key, "carrier-pigeon");
                assert_eq!(known, "uds, shm");
            }
            other => panic!("expected UnknownTransport, got {other:?}"),
        }
        assert_eq!(n.live_children(), 0);
        let c = n
            .start_actor("found", ActorOptions::new().transport(other()))
            .await?;
        assert_eq!(c.run(Add, (1, 1)).await?, 2);
        Ok(())
    })?;
    Ok(())
}

/// A child on the other transport killed mid-stream: the stream ends `Disconnected`, the
/// nursery reports the kill, and nothing of it or of its parent's extra listener is left
/// (the harness checks files, descriptors and mappings).
fn a_killed_child_on_the_other_transport_is_reaped_and_leaves_nothing() -> Result<(), Failed> {
    let other = other();
    let err = with_root(async |n| {
        let c = n
            .start_actor("victim", ActorOptions::new().transport(other))
            .await?;
        let who = c.run(WhoAmI, ()).await?;
        let mut s = c.open_stream(Count, u64::MAX).await?;
        for _ in 0..100 {
            s.recv().await?.expect("an item");
        }
        kill_actor(&c, &who).await;
        let t = std::time::Instant::now();
        let e = loop {
            match s.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended cleanly after a kill"),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, PortalError::Disconnected { .. }), "{e:?}");
        let bound = scaled(Duration::from_secs(2));
        assert!(t.elapsed() < bound, "seen gone after {:?}", t.elapsed());
        std::future::pending::<()>().await;
        Ok(())
    })
    .unwrap_err();
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [ChildError::Signaled { signal: 9, .. }] => Ok(()),
        other => Err(format!("expected Signaled(SIGKILL), got {other:?}").into()),
    }
}

/// Root on the cell's transport, a child on the other, a grandchild back on the cell's:
/// cancelling the nursery tears the whole tree down through the ladder (the child shuts
/// down on the cancel request, having torn its own child down first).
fn a_mixed_tree_is_torn_down_through_the_ladder() -> Result<(), Failed> {
    let (cell, other) = (harness::transport(), other());
    let (child, grandchild, reports) = with_root(async |n| {
        let c = n
            .start_actor("middle", ActorOptions::new().transport(other))
            .await?;
        let child = c.run(WhoAmI, ()).await?;
        let opts = ActorOptionsWire {
            transport: Some(cell.clone()),
            ..ActorOptionsWire::default()
        };
        let (_ctx, grandchild) = c.open_context(HoldGrandchild, opts).await?;
        assert_eq!(grandchild.path, "root/middle/grandchild");
        assert_eq!(key_of(&child.addr), other);
        assert_eq!(key_of(&grandchild.addr), cell);
        assert!(!harness::is_gone(&grandchild));
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
