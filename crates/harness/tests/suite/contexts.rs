//! Contexts and streams at tractor's level: cancellation from either side with its
//! acknowledgement and a typed `ContextCancelled`, every accessor after every way of
//! ending, cancellation races, and values whose types differ between the two sides.

use std::time::{Duration, Instant};

use brood::{ActorOptions, CallerContext, CancelSide, MsgSlot, Portal, PortalError, kinds};
use harness::Failed;
use harness::context_fns::*;
use harness::functions::Who;

use crate::common::*;

crate::tests!(
    every_ending_answers_every_caller_accessor_at_once,
    the_callee_sees_who_cancelled_and_every_accessor_answers_at_once,
    a_cancel_waits_for_the_callees_acknowledgement,
    a_callee_ignoring_its_cancellation_is_dropped_after_the_grace,
    cancelling_before_started_reaches_the_callees_started,
    a_callee_cancelling_before_started_fails_the_callers_open,
    both_sides_cancelling_at_once_both_return_at_once,
    a_stream_is_cancelled_from_either_side,
    an_actor_cancel_ends_its_contexts_naming_the_canceller,
    a_panicking_callee_ends_its_context_with_the_panic_for_every_accessor,
    a_killed_callee_ends_its_context_at_once_for_every_accessor,
    a_call_with_other_argument_types_is_a_typed_msg_type_error,
    a_reply_of_another_type_is_a_typed_msg_type_error,
    context_items_of_another_type_are_typed_msg_type_errors_both_ways,
    a_broadcast_stream_gives_every_receiver_every_item,
    a_slow_receiver_lags_with_a_typed_error_and_memory_stays_bounded,
    cancelling_a_broadcast_while_a_receiver_lags,
    a_shared_context_is_opened_once_and_closed_by_the_last_to_leave,
    dropping_every_handle_cancels_a_shared_context,
);

/// How long an accessor that must answer at once may take here (a loaded machine;
/// unscaled: see [`scaled`]).
const AT_ONCE: Duration = Duration::from_secs(2);

/// A key no other test run uses, for a callee's report.
fn key(what: &str) -> String {
    format!("{what}-{}-{:?}", std::process::id(), Instant::now())
}

/// `f`'s answer, which must come within [`AT_ONCE`].
async fn at_once<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(scaled(AT_ONCE), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {AT_ONCE:?}"))
}

/// The report the callee of `key` recorded, once it is complete.
async fn report(p: &Portal, key: &str) -> Vec<(String, String)> {
    poll_until_async(
        Duration::from_secs(10),
        format!("the report {key}"),
        async || p.run(TakeReport, key.to_owned()).await.expect("TakeReport"),
    )
    .await
}

/// The outcome the report gives for `accessor`.
fn line<'a>(report: &'a [(String, String)], accessor: &str) -> &'a str {
    report
        .iter()
        .find(|(a, _)| a == accessor)
        .map(|(_, o)| o.as_str())
        .unwrap_or_else(|| panic!("no {accessor:?} in {report:?}"))
}

/// Open a probe and take its first item.
async fn probe(p: &Portal, key: &str, script: Script) -> CallerContext<Scripted> {
    let (mut ctx, ()) = p
        .open_context(Scripted, (key.to_owned(), script))
        .await
        .expect("open the probe");
    assert_eq!(ctx.recv().await.expect("the first item"), Some(1));
    ctx
}

/// Every caller accessor after the context ended as `ending`: `recv` twice, `send`,
/// `close_send`, `cancel` (nothing left to cancel), then `result`; each must answer at
/// once with `expected` (the `outcome` text; `recv`'s is given separately since a clean
/// end reads `None`).
async fn check_caller(
    ending: &str,
    mut ctx: CallerContext<Scripted>,
    recv: &str,
    expected: &str,
    result: &str,
) {
    for what in ["recv", "recv again"] {
        let got = outcome(&at_once(what, ctx.recv()).await);
        assert_eq!(got, recv, "{ending}: {what}");
    }
    let got = outcome(&at_once("send", ctx.send(5)).await);
    assert_eq!(got, expected, "{ending}: send");
    let got = outcome(&at_once("close_send", async { ctx.close_send() }).await);
    // After a clean end there is nothing to close; after a failure, the failure.
    let closed = if expected == "ended" {
        "ok ()"
    } else {
        expected
    };
    assert_eq!(got, closed, "{ending}: close_send");
    let got = outcome(&at_once("cancel", ctx.cancel("too late")).await);
    assert_eq!(
        got, "ok ()",
        "{ending}: cancel after the end cancels nothing"
    );
    let got = outcome(&at_once("result", ctx.result()).await);
    assert_eq!(got, result, "{ending}: result");
}

/// Returned, failed, cancelled by the callee, cancelled by the caller: every caller
/// accessor answers at once, typed, the same every time.
fn every_ending_answers_every_caller_accessor_at_once() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("probe", ActorOptions::new()).await?;
        let callee = p.path().to_owned();
        let root = "root";

        // Returned: items end cleanly; once the return arrived `send` is refused.
        let mut ctx = probe(&p, &key("return"), Script::Return).await;
        assert_eq!(at_once("recv", ctx.recv()).await?, None);
        poll_until_async(Duration::from_secs(5), "the return to arrive", async || {
            matches!(ctx.send(5).await, Err(PortalError::CallEnded { .. })).then_some(())
        })
        .await;
        check_caller("returned", ctx, "ok None", "ended", "ok 7").await;

        // Failed: the callee's error, every time, from every accessor.
        let mut ctx = probe(&p, &key("fail"), Script::Fail).await;
        let first = outcome(&at_once("recv", ctx.recv()).await);
        assert_eq!(first, "remote Broken");
        check_caller(
            "failed",
            ctx,
            "remote Broken",
            "remote Broken",
            "remote Broken",
        )
        .await;

        // Cancelled by the callee: side Peer, naming the callee and its reason.
        let ctx = probe(&p, &key("callee"), Script::CalleeCancels).await;
        let c = format!("cancelled Peer by {callee}: callee had enough");
        check_caller("callee cancelled", ctx, &c, &c, &c).await;

        // Cancelled here: side This, naming this actor and the reason.
        let mut ctx = probe(&p, &key("caller"), Script::AwaitPeer).await;
        at_once("cancel", ctx.cancel("enough")).await?;
        let c = format!("cancelled This by {root}: enough");
        check_caller("caller cancelled", ctx, &c, &c, &c).await;
        Ok(())
    })?;
    Ok(())
}

/// What the callee's own accessors answer after the caller cancelled (with a reason),
/// after it dropped its end, and after the callee cancelled itself.
fn the_callee_sees_who_cancelled_and_every_accessor_answers_at_once() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("probe", ActorOptions::new()).await?;
        let callee = p.path().to_owned();
        let accessors = ["recv", "recv again", "send", "close_send"];

        let k = key("peer-cancel");
        let mut ctx = probe(&p, &k, Script::AwaitPeer).await;
        at_once("cancel", ctx.cancel("the caller is done")).await?;
        let r = report(&p, &k).await;
        let c = "cancelled Peer by root: the caller is done";
        for a in accessors {
            assert_eq!(line(&r, a), c, "after the caller's cancel: {a} in {r:?}");
        }
        assert_eq!(line(&r, "cancel"), "ok ()", "{r:?}");
        assert_eq!(line(&r, "cancelled"), "Peer by root: the caller is done");

        let k = key("peer-drop");
        let ctx = probe(&p, &k, Script::AwaitPeer).await;
        drop(ctx);
        let r = report(&p, &k).await;
        let c = "cancelled Peer by root: the peer dropped its end without waiting";
        for a in accessors {
            assert_eq!(
                line(&r, a),
                c,
                "after the caller dropped its end: {a} in {r:?}"
            );
        }

        let k = key("own-cancel");
        let mut ctx = probe(&p, &k, Script::CalleeCancels).await;
        let r = report(&p, &k).await;
        assert_eq!(line(&r, "own cancel"), "ok ()", "acknowledged: {r:?}");
        let c = format!("cancelled This by {callee}: callee had enough");
        for a in accessors {
            assert_eq!(line(&r, a), c, "after its own cancel: {a} in {r:?}");
        }
        assert_eq!(line(&r, "cancel"), "ok ()", "a second cancel: {r:?}");
        let e = ctx.recv().await.unwrap_err();
        assert_eq!(e.cancelled().map(|c| c.side), Some(CancelSide::Peer));
        Ok(())
    })?;
    Ok(())
}

/// `cancel` returns once the callee's function has ended: its report is complete by
/// then, with nothing left to wait for.
fn a_cancel_waits_for_the_callees_acknowledgement() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("probe", ActorOptions::new()).await?;
        for round in 0..10 {
            let k = key(&format!("ack-{round}"));
            let mut ctx = probe(&p, &k, Script::AwaitPeer).await;
            at_once("cancel", ctx.cancel("round over")).await?;
            let done = p.run(TakeReport, k.clone()).await?;
            assert!(
                done.is_some(),
                "round {round}: the callee's function had not ended when cancel returned"
            );
        }
        Ok(())
    })?;
    Ok(())
}

/// A callee that never looks at its context (it holds it and waits forever) is dropped
/// after the tree's cancel timeout, and the caller's cancel is acknowledged then: within
/// its bound, not at the callee's leisure.
fn a_callee_ignoring_its_cancellation_is_dropped_after_the_grace() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("holder", ActorOptions::new()).await?;
        let mut ctx = probe(&p, &key("ignore"), Script::Hold).await;
        let t = Instant::now();
        at_once("cancel", ctx.cancel("stop holding")).await?;
        let took = t.elapsed();
        let grace = brood::TeardownPolicy::default().cancel_timeout;
        assert!(
            took >= grace.mul_f64(0.9),
            "acknowledged after {took:?}, before the grace of {grace:?} was over"
        );
        assert!(
            p.run(harness::functions::Add, (1, 2)).await? == 3,
            "the actor serves on"
        );
        Ok(())
    })?;
    Ok(())
}

/// The caller gives up while the callee is still getting ready: the callee's
/// `cancelled` answers at once and its `started` fails with the cancellation, naming
/// the caller.
fn cancelling_before_started_reaches_the_callees_started() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("slow", ActorOptions::new()).await?;
        let k = key("slow-start");
        let open = p.open_context(Scripted, (k.clone(), Script::SlowStart(300)));
        let gave_up = tokio::time::timeout(Duration::from_millis(50), open).await;
        assert!(gave_up.is_err(), "the callee started within 50 ms");
        let r = report(&p, &k).await;
        let c = "Peer by root: the peer dropped its end without waiting";
        assert_eq!(line(&r, "cancelled before started"), c, "{r:?}");
        assert_eq!(line(&r, "started"), format!("cancelled {c}"), "{r:?}");
        Ok(())
    })?;
    Ok(())
}

/// Each side cancels as soon as it can, so the two cancels cross on the wire: both
/// return at once (each answers the other), and neither side waits for anything.
fn both_sides_cancelling_at_once_both_return_at_once() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("racer", ActorOptions::new()).await?;
        let mut crossed = 0;
        for round in 0..20 {
            let k = key(&format!("race-{round}"));
            let mut ctx = probe(&p, &k, Script::Race).await;
            at_once("cancel", ctx.cancel("race")).await?;
            let mine = ctx.cancellation().expect("cancelled");
            let r = report(&p, &k).await;
            assert_eq!(line(&r, "own cancel"), "ok ()", "round {round}: {r:?}");
            let theirs = line(&r, "cancelled");
            if mine.side == CancelSide::This && theirs.starts_with("This") {
                crossed += 1;
            } else if mine.side == CancelSide::This {
                assert!(theirs.starts_with("Peer by root"), "round {round}: {r:?}");
            } else {
                assert_eq!(mine.side, CancelSide::Peer, "round {round}");
                assert!(theirs.starts_with("This"), "round {round}: {r:?}");
            }
        }
        eprintln!("cancels crossed in {crossed} of 20 rounds");
        Ok(())
    })?;
    Ok(())
}

/// The caller cancels a server stream (acknowledged; `recv` then answers the
/// cancellation), and a callee cancels its own stream (the caller's `recv` names it).
fn a_stream_is_cancelled_from_either_side() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("numbers", ActorOptions::new()).await?;
        let callee = p.path().to_owned();
        let mut s = p.open_stream(Numbers, (u64::MAX, 0)).await?;
        assert_eq!(s.recv().await?, Some(0));
        at_once("cancel", s.cancel("enough numbers")).await?;
        for _ in 0..2 {
            let e = at_once("recv", s.recv()).await.unwrap_err();
            let c = e.cancelled().expect("a cancellation");
            assert_eq!(
                (c.side, c.canceller.as_str(), c.reason.as_str()),
                (CancelSide::This, "root", "enough numbers")
            );
        }
        at_once("cancel again", s.cancel("again")).await?;

        let mut s = p.open_stream(NumbersThenCancel, 3).await?;
        for i in 0..3 {
            assert_eq!(s.recv().await?, Some(i));
        }
        for _ in 0..2 {
            let e = at_once("recv", s.recv()).await.unwrap_err();
            let c = e.cancelled().expect("a cancellation");
            assert_eq!(
                (c.side, c.canceller.as_str(), c.reason.as_str()),
                (CancelSide::Peer, callee.as_str(), "sent enough")
            );
        }
        at_once("cancel after the callee's", s.cancel("late")).await?;
        assert_eq!(
            s.collect().await.unwrap_err().cancelled().map(|c| c.side),
            Some(CancelSide::Peer)
        );
        Ok(())
    })?;
    Ok(())
}

/// The root cancels the callee's whole actor: its open context ends with
/// `ContextCancelled`, side `Actor`, naming the root as the canceller; every accessor
/// answers at once.
fn an_actor_cancel_ends_its_contexts_naming_the_canceller() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("held", ActorOptions::new()).await?;
        let ctx = probe(&p, &key("actor-cancel"), Script::Hold).await;
        assert!(p.cancel_actor().await, "the actor went");
        let c = "cancelled Actor by root: actor root tears down its child root/held";
        check_caller("actor cancelled", ctx, c, c, c).await;
        Ok(())
    })?;
    Ok(())
}

/// The callee is killed mid-context: every accessor answers at once that the channel is
/// gone (the root then reports the killed child, which is expected here).
fn a_killed_callee_ends_its_context_at_once_for_every_accessor() -> Result<(), Failed> {
    let r = with_root(async |n| {
        let p = n.start_actor("victim", ActorOptions::new()).await?;
        let who: Who = p.run(harness::functions::WhoAmI, ()).await?;
        let mut ctx = probe(&p, &key("killed"), Script::Hold).await;
        kill_actor(&p, &who).await;
        let first = outcome(&at_once("recv", ctx.recv()).await);
        assert_eq!(first, "disconnected");
        check_caller(
            "killed",
            ctx,
            "disconnected",
            "disconnected",
            "disconnected",
        )
        .await;
        Ok(())
    });
    assert!(r.is_err(), "the killed child is reported: {r:?}");
    Ok(())
}

/// The callee was built with other argument types for the function: the typed error
/// names the function and both sides' types.
fn a_call_with_other_argument_types_is_a_typed_msg_type_error() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("v1", ActorOptions::new()).await?;
        let e = p.run(AddV2, ()).await.unwrap_err();
        let m = e
            .msg_type()
            .unwrap_or_else(|| panic!("a MsgTypeError: {e:?}"));
        assert_eq!(m.function, "harness::versioned::add");
        assert_eq!(m.slot, MsgSlot::Args);
        assert_eq!(
            (m.sender.as_str(), m.receiver.as_str()),
            ("root", "root/v1")
        );
        assert_eq!(
            (m.sent_type.as_str(), m.expected_type.as_str()),
            ("()", "(i64, i64)")
        );
        assert_eq!(p.run(AddV1, (2, 3)).await?, 5, "the right types still work");
        Ok(())
    })?;
    Ok(())
}

/// The callee replies with another type than the caller expects.
fn a_reply_of_another_type_is_a_typed_msg_type_error() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("v1", ActorOptions::new()).await?;
        let e = p.run(AnswerV2, ()).await.unwrap_err();
        let m = e
            .msg_type()
            .unwrap_or_else(|| panic!("a MsgTypeError: {e:?}"));
        assert_eq!(m.slot, MsgSlot::Reply);
        assert_eq!(
            (m.sender.as_str(), m.receiver.as_str()),
            ("root/v1", "root")
        );
        assert_eq!(
            (m.sent_type.as_str(), m.expected_type.as_str()),
            ("u64", "bool")
        );
        assert!(m.to_string().contains("harness::versioned::answer"), "{m}");
        Ok(())
    })?;
    Ok(())
}

/// Items of a context whose types differ: the caller cannot decode the callee's item
/// (typed, with both types), and the callee cannot decode the caller's (its function
/// fails with the runtime's message-type kind).
fn context_items_of_another_type_are_typed_msg_type_errors_both_ways() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("v1", ActorOptions::new()).await?;
        let (mut ctx, ()) = p.open_context(EchoV2, ()).await?;
        let e = ctx.recv().await.unwrap_err();
        let m = e
            .msg_type()
            .unwrap_or_else(|| panic!("a MsgTypeError: {e:?}"));
        assert_eq!(m.slot, MsgSlot::Item);
        assert_eq!(
            (m.sent_type.as_str(), m.expected_type.as_str()),
            ("u64", "bool")
        );
        ctx.send(300).await?;
        let e = ctx.result().await.unwrap_err();
        let r = e
            .remote()
            .unwrap_or_else(|| panic!("the callee's failure: {e:?}"));
        assert_eq!(r.kind, kinds::MSG_TYPE, "{r}");
        assert!(r.message.contains("expects bool"), "{r}");
        Ok(())
    })?;
    Ok(())
}

/// Three receivers of one broadcast stream, each in its own task, each see every item
/// in order (the buffer holds the whole stream, so nobody lags).
fn a_broadcast_stream_gives_every_receiver_every_item() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("numbers", ActorOptions::new()).await?;
        let first = p.open_stream(Numbers, (1000, 0)).await?.broadcast(1000);
        let receivers = vec![first.clone(), first.subscribe(), first];
        let tasks: Vec<_> = receivers
            .into_iter()
            .map(|mut rx| {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(i) = rx.recv().await? {
                        got.push(i);
                    }
                    Ok::<_, PortalError>(got)
                })
            })
            .collect();
        for t in tasks {
            let got = t.await.expect("the receiver's task")?;
            assert!(
                got.iter().copied().eq(0..1000),
                "every item, in order: {} items",
                got.len()
            );
        }
        Ok(())
    })?;
    Ok(())
}

/// A receiver that reads nothing while another reads the whole stream through a buffer
/// of 16: it then gets one `Lagged` saying exactly how many items it lost, the last 16
/// items, and the end. The buffer never held more than 16.
fn a_slow_receiver_lags_with_a_typed_error_and_memory_stays_bounded() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("numbers", ActorOptions::new()).await?;
        let mut fast = p.open_stream(Numbers, (2000, 0)).await?.broadcast(16);
        let mut slow = fast.clone();
        let mut count = 0;
        while fast.recv().await?.is_some() {
            count += 1;
        }
        assert_eq!(count, 2000);
        match slow.recv().await {
            Err(PortalError::Lagged { missed }) => assert_eq!(missed, 2000 - 16),
            other => panic!("expected Lagged, got {other:?}"),
        }
        let mut rest = Vec::new();
        while let Some(i) = slow.recv().await? {
            rest.push(i);
        }
        assert!(rest.iter().copied().eq(1984..2000), "{rest:?}");
        assert_eq!(slow.recv().await?, None, "the end stays the end");
        Ok(())
    })?;
    Ok(())
}

/// A receiver cancels the stream while another lags: the cancel is acknowledged, and the
/// lagging receiver gets its `Lagged`, the items still kept, then the cancellation.
fn cancelling_a_broadcast_while_a_receiver_lags() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("numbers", ActorOptions::new()).await?;
        let mut fast = p.open_stream(Numbers, (u64::MAX, 0)).await?.broadcast(8);
        let mut slow = fast.clone();
        for i in 0..100 {
            assert_eq!(fast.recv().await?, Some(i));
        }
        at_once("cancel", fast.cancel("no more")).await?;
        match slow.recv().await {
            Err(PortalError::Lagged { missed }) => assert_eq!(missed, 92),
            other => panic!("expected Lagged, got {other:?}"),
        }
        for i in 92..100 {
            assert_eq!(slow.recv().await?, Some(i));
        }
        for rx in [&mut slow, &mut fast] {
            let e = at_once("recv", rx.recv()).await.unwrap_err();
            let c = e
                .cancelled()
                .unwrap_or_else(|| panic!("a cancellation: {e:?}"));
            assert_eq!((c.side, c.reason.as_str()), (CancelSide::This, "no more"));
        }
        assert_eq!(p.run(harness::functions::Add, (1, 1)).await?, 2);
        Ok(())
    })?;
    Ok(())
}

/// Five tasks of the root ask for one key at once: one context is opened, every task
/// sees its items, the first four to leave leave it open, the last one closes it and
/// gets its result. Asked for again, the key opens a new context.
fn a_shared_context_is_opened_once_and_closed_by_the_last_to_leave() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("ticker", ActorOptions::new()).await?;
        let cx = n.actor();
        let k = key("shared");
        let opens = (0..5).map(|_| cx.open_shared_context(&p, Ticker, k.clone(), k.clone()));
        let mut handles = Vec::new();
        for h in join_all(opens.collect()).await {
            handles.push(h?);
        }
        let firsts = handles.iter().filter(|h| h.is_first()).count();
        assert_eq!(firsts, 1, "exactly one task opened it");
        assert!(handles.iter().all(|h| *h.started() == 1), "one opening");
        assert_eq!(p.run(TickerOpens, k.clone()).await?, (1, 1));
        assert_eq!(handles[0].users(), 5);
        assert_eq!(cx.shared_contexts(), 1);
        for h in &mut handles {
            for _ in 0..3 {
                match h.recv().await {
                    Ok(Some(_)) | Err(PortalError::Lagged { .. }) => {}
                    other => panic!("an item: {other:?}"),
                }
            }
        }
        let last = handles.pop().expect("five");
        for h in handles {
            assert!(h.leave().await?.is_none(), "not the last");
        }
        assert_eq!(last.users(), 1);
        let sent = last.leave().await?.expect("the last one gets the result");
        assert!(sent >= 3, "the callee sent {sent}");
        assert_eq!(p.run(TickerOpens, k.clone()).await?, (1, 0), "closed");
        assert_eq!(cx.shared_contexts(), 0);

        let again = cx
            .open_shared_context(&p, Ticker, k.clone(), k.clone())
            .await?;
        assert!(again.is_first());
        assert_eq!(*again.started(), 2, "a new context");
        drop(again);
        Ok(())
    })?;
    Ok(())
}

/// Dropping every handle without leaving cancels the shared context: the callee sees
/// the cancellation and ends.
fn dropping_every_handle_cancels_a_shared_context() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("ticker", ActorOptions::new()).await?;
        let cx = n.actor();
        let k = key("dropped");
        let a = cx
            .open_shared_context(&p, Ticker, k.clone(), k.clone())
            .await?;
        let b = cx
            .open_shared_context(&p, Ticker, k.clone(), k.clone())
            .await?;
        assert!(a.is_first() && !b.is_first());
        drop(a);
        assert_eq!(
            p.run(TickerOpens, k.clone()).await?,
            (1, 1),
            "b still holds it"
        );
        drop(b);
        poll_until_async(Duration::from_secs(5), "the callee to end", async || {
            (p.run(TickerOpens, k.clone()).await.expect("TickerOpens") == (1, 0)).then_some(())
        })
        .await;
        assert_eq!(cx.shared_contexts(), 0);
        Ok(())
    })?;
    Ok(())
}

/// The callee cancels before it started: the caller's `open_context` fails with the
/// cancellation, naming the callee and its reason, and the callee's cancel was
/// acknowledged.
fn a_callee_cancelling_before_started_fails_the_callers_open() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n.start_actor("refuser", ActorOptions::new()).await?;
        let k = key("refuse");
        let e = p
            .open_context(Scripted, (k.clone(), Script::RefuseToStart))
            .await
            .unwrap_err();
        let c = e
            .cancelled()
            .unwrap_or_else(|| panic!("a cancellation: {e:?}"));
        assert_eq!(
            (c.side, c.canceller.as_str(), c.reason.as_str()),
            (CancelSide::Peer, "root/refuser", "not today")
        );
        let r = report(&p, &k).await;
        assert_eq!(line(&r, "own cancel"), "ok ()", "acknowledged: {r:?}");
        Ok(())
    })?;
    Ok(())
}

/// The callee panics mid-context: every caller accessor answers the panic, at once and
/// every time (the child then ends as panicked, which the root reports).
fn a_panicking_callee_ends_its_context_with_the_panic_for_every_accessor() -> Result<(), Failed> {
    let r = with_root(async |n| {
        let p = n.start_actor("panicker", ActorOptions::new()).await?;
        let ctx = probe(&p, &key("panic"), Script::Panic).await;
        let panic = format!("remote {}", kinds::PANIC);
        check_caller("panicked", ctx, &panic, &panic, &panic).await;
        Ok(())
    });
    let e = r.expect_err("the panicked child is reported");
    let ne = e.nursery().expect("a nursery error");
    assert!(
        matches!(ne.children.as_slice(), [brood::ChildError::Panicked { actor, .. }] if actor == "root/panicker"),
        "{ne:?}"
    );
    Ok(())
}
