//! Hostile peers: outsiders of the same user, a peer posing as the parent, lying windows,
//! credit floods, peers that do not read, too many and idle connections. Every test runs
//! its root with a secret it knows, plays the peer with [`RawPeer`], and checks that the
//! actor under attack keeps serving its parent.

use std::time::{Duration, Instant};

use brood::{ActorId, ActorOptions, ChannelLimits, FnError, Portal, TreeSecret, kinds};
use harness::functions::*;
use harness::raw::{RawHandshake, RawPeer};
use harness::{Failed, in_process};
// The wire, spoken by hand: internal to brood.
use spawn_api::{Blob, CallKind, Frame, Msg, Window};

use crate::common::*;

crate::tests!(
    an_outsider_without_the_tree_secret_is_refused,
    a_peer_posing_as_the_parent_cannot_stop_an_actor,
    the_secret_is_in_no_childs_environment_or_command_line,
    a_lying_window_and_a_credit_flood_cannot_grow_an_actor,
    a_peer_that_does_not_read_cannot_grow_an_actor,
    calls_and_received_items_per_channel_are_bounded,
    excess_and_idle_peer_connections_are_closed,
);

/// Open a root with `secret` and `limits`, start one child, and run `attack` on a
/// blocking thread with the child's address (on the cell's transport: the raw peer speaks
/// both); then check the child still serves.
fn attack<R: Send + 'static>(
    secret: &TreeSecret,
    limits: ChannelLimits,
    attack: impl FnOnce(String, Who) -> R + Send + 'static,
    after: impl AsyncFnOnce(&Portal, &Who, R) -> Result<(), Failed>,
) -> Result<(), Failed> {
    let result = within_deadline(harness::root().secret(secret.clone()).limits(limits).run(
        async |n| {
            let p = n.start_actor("target", ActorOptions::new()).await?;
            let who = p.run(WhoAmI, ()).await?;
            let path = who.addr.clone();
            let w2 = who.clone();
            let r = tokio::task::spawn_blocking(move || attack(path, w2)).await?;
            after(&p, &who, r)
                .await
                .map_err(|e| FnError::msg(format!("{e:?}")))?;
            assert_eq!(p.run(Add, (20, 22)).await?, 42, "the actor still serves");
            Ok(())
        },
    ));
    result?;
    Ok(())
}

/// A process of the same user that does not know the tree's secret is refused with a
/// typed error before anything else is read from it, whatever it claims to be; one that
/// knows it is accepted.
fn an_outsider_without_the_tree_secret_is_refused() -> Result<(), Failed> {
    let secret = TreeSecret::random();
    let s2 = secret.clone();
    attack(
        &secret,
        ChannelLimits::default(),
        move |path, _who| {
            let mut outsider = RawPeer::connect(&path);
            let refused = outsider.handshake(&TreeSecret::random());
            let mut member = RawPeer::connect(&path);
            let accepted = member.handshake(&s2);
            // An outsider that skips the proof and calls straight away.
            let mut rude = RawPeer::connect(&path);
            rude.start(
                1,
                "t.add",
                CallKind::Call,
                Window { items: 1, bytes: 1 },
                (1i64, 2i64),
            )
            .unwrap();
            (refused, accepted, rude.recv_all())
        },
        async |_p, _who, (refused, accepted, rude)| {
            match refused {
                RawHandshake::Refused(e) => assert_eq!(e.kind, kinds::UNAUTHENTICATED, "{e}"),
                other => panic!("the outsider was not refused: {other:?}"),
            }
            assert!(
                matches!(accepted, RawHandshake::Accepted { .. }),
                "{accepted:?}"
            );
            match rude.as_slice() {
                [
                    Frame {
                        msg: Msg::Error { cid: None, error },
                        ..
                    },
                ] => assert_eq!(error.kind, kinds::PROTOCOL, "{error}"),
                other => panic!("a call before the handshake was answered: {other:?}"),
            }
            Ok(())
        },
    )
}

/// A peer that connects to an actor claiming its parent's id and then leaves does not
/// make the actor believe its parent left: the parent channel is the channel the actor
/// opened, not an id a peer claims (it used to shut the actor down). Tried by a member
/// of the tree (it knows the secret) and by an outsider.
fn a_peer_posing_as_the_parent_cannot_stop_an_actor() -> Result<(), Failed> {
    let secret = TreeSecret::random();
    let s2 = secret.clone();
    attack(
        &secret,
        ChannelLimits::default(),
        move |path, _who| path,
        async move |p, _who, path| {
            let vars = p.run(Vars, ()).await?;
            let parent: ActorId = vars.parent_id.expect("a parent id").parse()?;
            for secret in [s2.clone(), TreeSecret::random()] {
                let (path, parent) = (path.clone(), parent.clone());
                tokio::task::spawn_blocking(move || {
                    let mut impostor = RawPeer::connect(&path);
                    impostor.id = parent;
                    let _ = impostor.handshake(&secret);
                    drop(impostor);
                })
                .await?;
                // Give the actor time to act on the impostor's leaving, had it believed it.
                tokio::time::sleep(scaled(Duration::from_millis(200))).await;
                assert_eq!(p.run(Add, (1, 1)).await?, 2, "the actor is still up");
            }
            Ok(())
        },
    )
}

/// The secret reaches a child through a private path: it is not on a process child's
/// command line nor in its environment (both readable in `/proc`), and the boot marker
/// that is in the environment decodes to nothing.
fn the_secret_is_in_no_childs_environment_or_command_line() -> Result<(), Failed> {
    let secret = TreeSecret::random();
    let raw = secret.to_bytes();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    attack(
        &secret,
        ChannelLimits::default(),
        move |_path, who| {
            let read = |what: &str| std::fs::read(format!("/proc/{}/{what}", who.pid)).unwrap();
            (read("environ"), read("cmdline"))
        },
        async move |_p, who, (environ, cmdline)| {
            for (what, bytes) in [("environment", &environ), ("command line", &cmdline)] {
                let text = String::from_utf8_lossy(bytes).to_lowercase();
                assert!(!text.contains(&hex), "the secret is in the child's {what}");
                assert!(
                    !bytes.windows(raw.len()).any(|w| w == raw),
                    "the secret's bytes are in the child's {what}"
                );
            }
            if !in_process(who) {
                let env = String::from_utf8_lossy(&environ);
                let marker = env
                    .split('\0')
                    .find_map(|kv| kv.strip_prefix("BROOD_ACTOR="))
                    .unwrap_or_default();
                assert!(marker.len() <= 32, "the marker is only a nonce: {marker:?}");
            }
            Ok(())
        },
    )
}

/// VmRSS of `pid` in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// What an actor under attack may grow by here: its channel's write budget (8 MiB by
/// default) and a window's worth of items, with room for allocator slack.
const GROWTH_BOUND: u64 = 64 << 20;

/// A member of the tree opens an endless stream announcing a window of `u32::MAX` items
/// and `u64::MAX` bytes and never reads (for 1 s), then also floods the actor with
/// credit (for 2 s): the
/// actor's memory stays bounded (it grew from 6 MiB to over 2 GiB in seconds before), no
/// panic, and it serves its parent throughout.
fn a_lying_window_and_a_credit_flood_cannot_grow_an_actor() -> Result<(), Failed> {
    let secret = TreeSecret::random();
    let s2 = secret.clone();
    attack(
        &secret,
        ChannelLimits::default(),
        move |path, who| {
            let mut peer = RawPeer::connect(&path);
            assert!(matches!(peer.handshake(&s2), RawHandshake::Accepted { .. }));
            let before = rss(who.pid);
            let huge = Window {
                items: u32::MAX,
                bytes: u64::MAX,
            };
            peer.start(1, "t.count", CallKind::Stream, huge, u64::MAX)
                .unwrap();
            // First the lying window alone, then with a flood of credit on top.
            let mut peak = before;
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                peak = peak.max(rss(who.pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peer.set_write_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let credit = Frame::control(Msg::Credit {
                cid: 1,
                items: u32::MAX,
                bytes: u64::MAX,
            });
            let until = Instant::now() + Duration::from_secs(2);
            let mut sent = 0u64;
            while Instant::now() < until {
                if peer.send_many(&credit, 1000).is_ok() {
                    sent += 1000;
                }
                peak = peak.max(rss(who.pid));
            }
            (before, peak, sent, peer)
        },
        async |_p, who, (before, peak, sent, peer)| {
            let grew = peak.saturating_sub(before);
            eprintln!(
                "hostile window: {sent} credits sent; {} grew {} KiB (peak {} KiB)",
                who.path,
                grew >> 10,
                peak >> 10
            );
            assert!(sent > 0, "no credit went out");
            assert!(
                grew < GROWTH_BOUND,
                "the actor grew by {} MiB under a lying window and a credit flood",
                grew >> 20
            );
            drop(peer);
            Ok(())
        },
    )
}

/// A member of the tree sends call after call for a function that does not exist and
/// never reads the error replies: the replies it does not read cannot pile up without
/// bound (past the limit the actor closes that channel) and the actor stays small.
fn a_peer_that_does_not_read_cannot_grow_an_actor() -> Result<(), Failed> {
    let secret = TreeSecret::random();
    let s2 = secret.clone();
    let limits = ChannelLimits {
        max_queued_control: 4096,
        ..ChannelLimits::default()
    };
    attack(
        &secret,
        limits,
        move |path, who| {
            let mut peer = RawPeer::connect(&path);
            assert!(matches!(peer.handshake(&s2), RawHandshake::Accepted { .. }));
            let before = rss(who.pid);
            peer.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut cid = 1;
            let mut closed = false;
            let until = Instant::now() + scaled(Duration::from_secs(10));
            while Instant::now() < until {
                let w = Window { items: 1, bytes: 1 };
                if let Err(e) = peer.start(cid, "no.such.function", CallKind::Call, w, ()) {
                    closed = e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut;
                    if closed {
                        break;
                    }
                }
                cid += 2;
            }
            (before, rss(who.pid), closed, cid / 2)
        },
        async |_p, who, (before, after, closed, calls)| {
            eprintln!(
                "peer that does not read: {calls} calls; {} grew {} KiB; closed: {closed}",
                who.path,
                after.saturating_sub(before) >> 10
            );
            assert!(closed, "the actor kept a channel whose peer never reads");
            assert!(after.saturating_sub(before) < GROWTH_BOUND);
            Ok(())
        },
    )
}

/// Per channel, a peer may have at most `max_calls` calls open (more are refused with a
/// typed error), and the items it sends that nobody consumes are bounded over all its
/// calls: the call that would pass the bound fails with `brood::Overloaded`.
fn calls_and_received_items_per_channel_are_bounded() -> Result<(), Failed> {
    let secret = TreeSecret::random();
    let s2 = secret.clone();
    let limits = ChannelLimits {
        max_calls: 4,
        stream_window_bytes: 1 << 20,
        recv_buffer: 3 << 20,
        ..ChannelLimits::default()
    };
    attack(
        &secret,
        limits,
        move |path, _who| {
            let mut peer = RawPeer::connect(&path);
            assert!(matches!(peer.handshake(&s2), RawHandshake::Accepted { .. }));
            let w = Window {
                items: 16,
                bytes: 1 << 20,
            };
            // Five sinks (they never read): the fifth is one too many.
            for i in 0..5u64 {
                peer.start(2 * i + 1, "t.sink", CallKind::Context, w, ())
                    .unwrap();
            }
            let mut errors = Vec::new();
            let mut started = Vec::new();
            while started.len() + errors.len() < 5 {
                match peer.recv().unwrap().expect("a frame").msg {
                    Msg::Started { cid } => started.push(cid),
                    Msg::Error {
                        cid: Some(cid),
                        error,
                    } => errors.push((cid, error)),
                    _ => {}
                }
            }
            // 1 MiB into each of the four open sinks, within each call's window (one item
            // may pass it): 4 MiB of unconsumed items pass the channel's 3 MiB.
            let item = Blob::from(vec![7u8; 900 << 10]);
            for cid in &started {
                let frame = Frame::with_payload(Msg::Yield { cid: *cid }, item.0.clone());
                peer.send(&frame).unwrap();
            }
            let mut overloaded = Vec::new();
            while let Ok(Some(f)) = peer.recv() {
                if let Msg::Error {
                    cid: Some(cid),
                    error,
                } = f.msg
                {
                    overloaded.push((cid, error));
                    break;
                }
            }
            (errors, started, overloaded, peer)
        },
        async |_p, _who, (errors, started, overloaded, peer)| {
            assert_eq!(started.len(), 4, "four calls open: {started:?}");
            match errors.as_slice() {
                [(9, e)] => assert_eq!(e.kind, kinds::TOO_MANY_CALLS, "{e}"),
                other => panic!("expected the fifth call refused: {other:?}"),
            }
            match overloaded.as_slice() {
                [(_, e)] => assert_eq!(e.kind, kinds::OVERLOADED, "{e}"),
                other => panic!("expected one call failed as overloaded: {other:?}"),
            }
            drop(peer);
            Ok(())
        },
    )
}

/// Peers beyond the limit are refused with a typed error, and a peer with no open call
/// is closed after the idle timeout (they used to be held forever): the actor's
/// descriptors come back to where they were.
fn excess_and_idle_peer_connections_are_closed() -> Result<(), Failed> {
    let secret = TreeSecret::random();
    let s2 = secret.clone();
    let limits = ChannelLimits {
        max_peer_connections: 4,
        idle_timeout: Duration::from_millis(300),
        ..ChannelLimits::default()
    };
    attack(
        &secret,
        limits,
        move |path, who| {
            let fds = |pid: u32| harness::leaks::fds_of(pid).len();
            let before = fds(who.pid);
            let mut peers: Vec<RawPeer> = (0..10).map(|_| RawPeer::connect(&path)).collect();
            for p in &mut peers {
                assert!(matches!(p.handshake(&s2), RawHandshake::Accepted { .. }));
            }
            // Each peer sees either the refusal or, after the idle timeout, the end.
            let t = Instant::now();
            let outcomes: Vec<Vec<Frame>> = peers.iter_mut().map(RawPeer::recv_all).collect();
            let took = t.elapsed();
            // Give the actor time to close its ends too.
            std::thread::sleep(scaled(Duration::from_millis(200)));
            (outcomes, took, before, fds(who.pid))
        },
        async |_p, who, (outcomes, took, before, after)| {
            let refused = outcomes
                .iter()
                .filter(|f| {
                    matches!(f.as_slice(), [Frame { msg: Msg::Error { cid: None, error }, .. }]
                        if error.kind == kinds::TOO_MANY_CONNECTIONS)
                })
                .count();
            let idle_closed = outcomes.iter().filter(|f| f.is_empty()).count();
            assert_eq!((refused, idle_closed), (6, 4), "{outcomes:?}");
            let bound = scaled(Duration::from_secs(5));
            assert!(
                took < bound,
                "idle peers closed in {took:?}, not within {bound:?}"
            );
            if !in_process(who) {
                assert!(
                    after <= before,
                    "descriptors: {before} before, {after} after"
                );
            }
            Ok(())
        },
    )
}
