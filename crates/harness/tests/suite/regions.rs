//! Shared-memory regions (`ShmRegion`, `FrozenRegion`, the typed ring) handed between
//! actors as arguments, replies and stream items, on the cell's backend and transport:
//! the descriptor travels with the frame (`SCM_RIGHTS` on `uds`, the control socket on
//! `shm`, the value itself in process), and both sides see the same memory. The leak
//! checks after each test include `memfd` mappings, so a region that outlives its last
//! holder fails the test.

use brood::ActorOptions;
use brood::shm::{RegionError, ShmRegion};
use harness::Failed;
use harness::functions::*;

use crate::common::*;

crate::tests!(
    a_region_argument_is_the_same_memory_in_the_child,
    a_region_made_by_a_child_is_a_reply_and_outlives_the_child,
    regions_stream_as_items_and_nest_in_structs,
    a_frozen_region_is_read_in_place_on_both_sides,
    a_ring_in_a_region_carries_a_million_items_between_actors,
    a_grandchild_gets_a_region_through_its_parent,
);

fn region_err(e: RegionError) -> brood::FnError {
    brood::FnError::new("RegionError", e.to_string())
}

fn all(r: &ShmRegion, byte: u8) -> bool {
    let mut buf = vec![0u8; r.len()];
    r.read(0, &mut buf).expect("in bounds");
    buf.iter().all(|&b| b == byte)
}

/// A 1 MiB region filled by the child is what the parent reads, and 200 more small
/// round trips leave no descriptor or mapping behind (the leak checks).
fn a_region_argument_is_the_same_memory_in_the_child() -> Result<(), Failed> {
    with_root(async |n| {
        let c = n.start_actor("filler", ActorOptions::new()).await?;
        let r = ShmRegion::new(1 << 20).map_err(region_err)?;
        assert_eq!(c.run(RegionFill, (r.clone(), 0x5a)).await?, 1 << 20);
        assert!(all(&r, 0x5a), "the child's writes are in our mapping");
        for i in 0..200u32 {
            let small = ShmRegion::new(64).map_err(region_err)?;
            c.run(RegionFill, (small.clone(), i as u8)).await?;
            assert!(all(&small, i as u8));
        }
        Ok(())
    })?;
    Ok(())
}

/// A region the child made comes back as its reply; the memory stays ours after the
/// child is gone.
fn a_region_made_by_a_child_is_a_reply_and_outlives_the_child() -> Result<(), Failed> {
    with_root(async |n| {
        let c = n.start_actor("maker", ActorOptions::new()).await?;
        let who = c.run(WhoAmI, ()).await?;
        let r = c.run(RegionMake, (1 << 20, 7)).await?;
        assert_eq!(r.len(), 1 << 20);
        c.cancel_actor().await;
        assert!(
            harness::wait_gone(&who, scaled(std::time::Duration::from_secs(5))),
            "the maker ended: {who:?}"
        );
        assert!(all(&r, 7), "still mapped and intact after its maker ended");
        r.write(0, b"mine").map_err(region_err)?;
        Ok(())
    })?;
    Ok(())
}

/// Regions arrive as stream items (each a fresh memory file) and inside a serde struct
/// next to other fields.
fn regions_stream_as_items_and_nest_in_structs() -> Result<(), Failed> {
    with_root(async |n| {
        let c = n.start_actor("streamer", ActorOptions::new()).await?;
        let mut s = c.open_stream(RegionStream, (20, 4096)).await?;
        let mut i = 0u8;
        while let Some(r) = s.recv().await? {
            assert_eq!(r.len(), 4096);
            assert!(all(&r, i), "item {i}");
            i += 1;
        }
        assert_eq!(i, 20);

        let input = ShmRegion::new(10).map_err(region_err)?;
        input.write(0, b"0123456789").map_err(region_err)?;
        let output = ShmRegion::new(10).map_err(region_err)?;
        let label = c
            .run(
                RegionReverse,
                RegionJob {
                    label: "rev".into(),
                    input,
                    output: output.clone(),
                },
            )
            .await?;
        assert_eq!(label, "rev");
        let mut got = [0u8; 10];
        output.read(0, &mut got).map_err(region_err)?;
        assert_eq!(&got, b"9876543210");
        Ok(())
    })?;
    Ok(())
}

/// Frozen both ways: the child's frozen region reads as a slice here, ours there.
fn a_frozen_region_is_read_in_place_on_both_sides() -> Result<(), Failed> {
    with_root(async |n| {
        let c = n.start_actor("frozen", ActorOptions::new()).await?;
        let theirs = c.run(FrozenMake, (1 << 20, 3)).await?;
        assert_eq!(theirs.len(), 1 << 20);
        assert!(theirs.iter().all(|&b| b == 3));

        let ours = ShmRegion::new(1000).map_err(region_err)?;
        ours.write(0, &[2u8; 1000]).map_err(region_err)?;
        let ours = ours.freeze().map_err(|e| region_err(e.into()))?;
        assert_eq!(c.run(FrozenSum, ours.clone()).await?, 2000);
        Ok(())
    })?;
    Ok(())
}

/// A `u64` ring the parent made: the child claims the receiving end in its call while
/// the parent sends a million items, then the parent drops its sender and the child's
/// call returns what it got.
fn a_ring_in_a_region_carries_a_million_items_between_actors() -> Result<(), Failed> {
    with_root(async |n| {
        let c = n.start_actor("summer", ActorOptions::new()).await?;
        let region = ShmRegion::new_ring::<u64>(4096).map_err(region_err)?;
        let mut tx = region.ring_sender::<u64>().map_err(region_err)?;
        let total: u64 = 1_000_000;
        let send = async move {
            let items: Vec<u64> = (0..total).collect();
            for chunk in items.chunks(1000) {
                tx.send_slice(chunk).await.map_err(region_err)?;
            }
            drop(tx);
            Ok::<(), brood::FnError>(())
        };
        let (sent, got) = tokio::join!(send, c.run(RingSum, region.clone()));
        sent?;
        let (sum, count) = got?;
        assert_eq!(count, total);
        assert_eq!(sum, total * (total - 1) / 2);
        Ok(())
    })?;
    Ok(())
}

/// Descriptors cross every hop: the root's region reaches a grandchild through a call
/// its child relays.
fn a_grandchild_gets_a_region_through_its_parent() -> Result<(), Failed> {
    with_root(async |n| {
        let c = n.start_actor("middle", ActorOptions::new()).await?;
        let r = c.run(RegionMake, (4096, 1)).await?;
        // The child makes a grandchild and hands it our region's twin: we ask the child
        // to fill a region we pass through the nursery it opens for us.
        let spawned = c.run(SpawnAndFill, (r.clone(), 9)).await?;
        assert!(spawned, "the grandchild ran");
        assert!(
            all(&r, 9),
            "the grandchild's writes reached the root's mapping"
        );
        Ok(())
    })?;
    Ok(())
}
