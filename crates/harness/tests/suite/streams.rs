//! Server streams and bidirectional contexts.

use brood::ActorOptions;
use harness::Failed;
use harness::functions::*;

use crate::common::*;

crate::tests!(
    server_streaming,
    dropping_a_stream_cancels_it_and_the_channel_carries_on,
    bulk_blobs_stream_and_an_oversized_one_is_a_typed_error,
    bidirectional_context,
);

fn server_streaming() -> Result<(), Failed> {
    let items = with_root(async |n| {
        let p = n.start_actor("counter", ActorOptions::new()).await?;
        Ok(p.open_stream(Count, 20_000).await?.collect().await?)
    })?;
    // Not `assert_eq!`: on a failure, twenty thousand numbers say less than this.
    let wrong = items.iter().enumerate().find(|&(i, &v)| v != i as u64);
    assert!(
        items.len() == 20_000 && wrong.is_none(),
        "every item, in order: {} items, first wrong (index, item): {wrong:?}",
        items.len()
    );
    Ok(())
}

fn dropping_a_stream_cancels_it_and_the_channel_carries_on() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("counter", ActorOptions::new()).await?;
        let mut s = p.open_stream(Count, u64::MAX).await?;
        for i in 0..10 {
            assert_eq!(s.recv().await?, Some(i));
        }
        s.cancel("ten are enough").await?;
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
    assert_eq!(started, "hello", "the started value");
    assert_eq!(echoed, ["A", "B", "C"], "echoes in order");
    assert_eq!(count, 3, "the callee's result");
    Ok(())
}
