//! Flow control of one channel: credits, head-of-line, cancellation and the bounds on
//! what a peer controls, over [`spawn_api::mem`] with tokio's paused clock.
//!
//! Each test starts a [`Conn`] whose owner is a [`Fake`]: it records what the channel
//! asks of it and serves a few scripted functions ([`Script`]). The other end is either
//! a second `Conn` (two actors talking) or [`Raw`]: the test itself, writing and reading
//! frames, so that exactly what crosses the channel can be asserted.
//!
//! The clock is paused, so a wait costs nothing and is deterministic: "nothing more
//! arrives" ([`Raw::msgs`]) means nothing arrived before every task went idle and the
//! clock jumped [`QUIET`] ahead.

use bytes::Bytes;
use std::future::Future;

use spawn_api::codec::DEFAULT_MAX_FRAME;
use spawn_api::mem::{self, MemTransport};
use spawn_api::{Channel, Wire};
use tokio::time::{Instant, sleep, timeout};

use super::*;

/// How long a raw peer listens before it concludes nothing more is coming (paused clock:
/// this passes only once every task is idle).
const QUIET: Duration = Duration::from_secs(1);

/// A bound on any single wait, so a test that would hang fails instead (paused clock:
/// it costs nothing).
const LONG: Duration = Duration::from_secs(3600);

/// How long a cancel waits for its acknowledgement here.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

/// How a served call's task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// It ran to its end.
    Finished,
    /// It was dropped before (aborted).
    Aborted,
}

/// What a fake actor was asked, and what its served calls did.
#[derive(Default)]
struct Record {
    /// Each `serve` the channel asked for: the call, the function, the peer's window.
    served: Vec<(Cid, String, Window)>,
    /// Served tasks spawned.
    spawned: usize,
    /// Items each served stream had taken credit for and queued.
    sent: HashMap<Cid, u64>,
    ended: HashMap<Cid, Ended>,
    /// `Cancel { cid: None }` requests.
    actor_cancels: usize,
    /// `conn_closed` calls, with the kind of peer.
    closed: Vec<Peer>,
}

/// A [`ConnOwner`] that records and serves [`Script`]s, as the actor runtime would.
struct Fake {
    path: String,
    limits: ChannelLimits,
    stop: CancellationToken,
    tasks: TaskTracker,
    rec: Mutex<Record>,
}

/// The functions a [`Fake`] serves, by name.
enum Script {
    /// `"count"`, args `(n, size)`: a stream of `n` items of `size` bytes (each filled
    /// with its index), then `Stop`.
    Count { n: u64, size: usize },
    /// `"hold"`: holds its end of the call (reading nothing) and never ends.
    Hold,
    /// `"echo"`: a one-shot call that returns its arguments.
    Echo,
    /// `"wait"`: drops its end of the call at once (as the runtime does for one-shot
    /// calls, and as a context handler may) and never ends.
    Wait,
}

impl Fake {
    fn new(path: &str, limits: ChannelLimits) -> Arc<Fake> {
        Arc::new(Fake {
            path: path.to_owned(),
            limits,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            rec: Mutex::default(),
        })
    }

    fn sent(&self, cid: Cid) -> u64 {
        self.rec
            .lock()
            .unwrap()
            .sent
            .get(&cid)
            .copied()
            .unwrap_or(0)
    }

    fn ended(&self, cid: Cid) -> Option<Ended> {
        self.rec.lock().unwrap().ended.get(&cid).copied()
    }

    /// Served tasks spawned and not ended.
    fn running(&self) -> usize {
        let r = self.rec.lock().unwrap();
        r.spawned - r.ended.len()
    }

    fn closed(&self) -> Vec<Peer> {
        self.rec.lock().unwrap().closed.clone()
    }
}

/// Records how a served task ended, however it does (even dropped before its first
/// poll).
struct EndGuard {
    owner: Arc<Fake>,
    cid: Cid,
    how: Ended,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.owner
            .rec
            .lock()
            .unwrap()
            .ended
            .insert(self.cid, self.how);
    }
}

impl ConnOwner for Fake {
    fn path(&self) -> &str {
        &self.path
    }

    fn conn_env(&self) -> ConnEnv {
        ConnEnv {
            limits: self.limits,
            stop: self.stop.clone(),
            span: tracing::Span::none(),
            tasks: self.tasks.clone(),
            // Far beyond `QUIET`, so that waiting for a quiet channel never ends a wait.
            cancel_wait: CANCEL_WAIT,
        }
    }

    /// As the actor runtime: look the function up, ask the channel for a place, then
    /// acknowledge from the serving task and remove the route when it ends.
    fn serve(self: Arc<Self>, conn: &Conn, start: CallStart<'_>, args: Payload) {
        let CallStart {
            cid,
            func,
            window: peer_window,
            ..
        } = start;
        self.rec
            .lock()
            .unwrap()
            .served
            .push((cid, func.to_owned(), peer_window));
        let refuse = |kind: &str, message: String| {
            let error = RemoteError::new(kind, message, self.path.clone());
            conn.send_control(Msg::Error {
                cid: Some(cid),
                error,
            });
        };
        let script = match func {
            "count" => match <(u64, u64)>::decode(args.bytes.clone()) {
                Ok((n, size)) => Script::Count {
                    n,
                    size: size as usize,
                },
                Err(e) => return refuse(kinds::BAD_ARGS, e.to_string()),
            },
            "hold" => Script::Hold,
            "echo" => Script::Echo,
            "wait" => Script::Wait,
            other => return refuse(kinds::NO_SUCH_FUNCTION, format!("no function {other:?}")),
        };
        let Some(link) = conn.accept_call(cid, peer_window) else {
            return refuse(
                kinds::TOO_MANY_CALLS,
                format!("{} calls open", self.limits.max_calls),
            );
        };
        self.rec.lock().unwrap().spawned += 1;
        let guard = EndGuard {
            owner: self.clone(),
            cid,
            how: Ended::Aborted,
        };
        let window = self.limits.window();
        let conn2 = conn.clone();
        let me = self.clone();
        let state = link.state().clone();
        let task = tokio::spawn(async move {
            let mut guard = guard;
            conn2.send_control(Msg::StartAck {
                cid,
                window,
                types: None,
            });
            // As the runtime does for a one-shot call: a cancel drops the work at once,
            // then is acknowledged if the peer asked.
            let c2 = conn2.clone();
            let work = async move {
                match script {
                    Script::Count { n, size } => {
                        for i in 0..n {
                            if link
                                .send_item(Bytes::from(vec![i as u8; size]).into())
                                .await
                                .is_err()
                            {
                                break;
                            }
                            *me.rec.lock().unwrap().sent.entry(cid).or_default() += 1;
                        }
                        let _ = conn2.send(Frame::control(Msg::Stop { cid })).await;
                    }
                    Script::Hold => {
                        let _held = link;
                        std::future::pending::<()>().await;
                    }
                    Script::Echo => {
                        drop(link);
                        let _ = conn2
                            .send(Frame::with_parts(Msg::Return { cid }, args))
                            .await;
                    }
                    Script::Wait => {
                        drop(link);
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                biased;
                _ = state.wait() => {
                    if state.ack_wanted() {
                        c2.send_control(Msg::CancelAck { cid: Some(cid) });
                    }
                    c2.remove_route(cid);
                    return;
                }
                () = work => {}
            }
            guard.how = Ended::Finished;
            c2.remove_route(cid);
        });
        conn.set_task(cid, task.abort_handle());
    }

    fn cancel_requested_by(&self, _conn: &Conn, _cause: Option<spawn_api::CancelCause>) {
        self.rec.lock().unwrap().actor_cancels += 1;
    }

    fn conn_closed(&self, _conn: &Conn, kind: Peer) {
        self.rec.lock().unwrap().closed.push(kind);
    }
}

fn limits(set: impl FnOnce(&mut ChannelLimits)) -> ChannelLimits {
    let mut l = ChannelLimits::default();
    set(&mut l);
    l
}

fn window(items: u32, bytes: u64) -> Window {
    Window { items, bytes }
}

/// Start a channel of `owner` on `channel`, to a peer called `test/peer`.
fn start(owner: &Arc<Fake>, channel: Box<dyn Channel>, kind: Peer, side: Side) -> Conn {
    let (sink, source) = channel.split();
    let owner: Arc<dyn ConnOwner> = owner.clone();
    Conn::start(
        owner,
        ActorId::with_uid("peer", 7),
        "test/peer".to_owned(),
        PeerInfo::default(),
        kind,
        sink,
        source,
        side,
        DEFAULT_MAX_FRAME,
    )
}

/// A channel with the test at the other end; the channel's calls are odd if it is the
/// connector, the raw peer's odd otherwise.
fn with_raw(l: ChannelLimits, kind: Peer, side: Side) -> (Arc<Fake>, Conn, Raw) {
    with_raw_on(&MemTransport::new(), l, kind, side)
}

fn with_raw_on(
    t: &MemTransport,
    l: ChannelLimits,
    kind: Peer,
    side: Side,
) -> (Arc<Fake>, Conn, Raw) {
    let (ours, theirs) = t.pair();
    let owner = Fake::new("test/actor", l);
    let conn = start(&owner, ours, kind, side);
    (owner, conn, Raw::new(theirs))
}

/// Two channels' ends talking: the caller connected (its calls are 1, 3, 5…), the
/// callee accepted and serves [`Script`]s.
fn two_conns(caller: ChannelLimits, callee: ChannelLimits) -> (Conn, Arc<Fake>, Conn) {
    let (a, b) = mem::pair();
    let caller = start(
        &Fake::new("test/caller", caller),
        a,
        Peer::Child,
        Side::Connector,
    );
    let callee_owner = Fake::new("test/callee", callee);
    let callee = start(&callee_owner, b, Peer::Parent, Side::Acceptor);
    (caller, callee_owner, callee)
}

/// The test's own end of a channel.
struct Raw {
    tx: Box<dyn FrameSink>,
    rx: Box<dyn FrameSource>,
}

impl Raw {
    fn new(channel: Box<dyn Channel>) -> Raw {
        let (tx, rx) = channel.split();
        Raw { tx, rx }
    }

    async fn send(&mut self, frame: Frame) {
        self.tx.feed(&frame).unwrap();
        within("a raw flush", self.tx.flush()).await.unwrap();
    }

    /// Send `frame`, or the reason it could not go (the channel's end is gone).
    async fn try_send(&mut self, frame: Frame) -> Result<(), ChannelError> {
        self.tx.feed(&frame)?;
        within("a raw flush", self.tx.flush()).await
    }

    async fn control(&mut self, msg: Msg) {
        self.send(Frame::control(msg)).await
    }

    async fn item(&mut self, cid: Cid, len: usize) {
        self.send(Frame::with_payload(
            Msg::Yield { cid },
            Bytes::from(vec![0u8; len]),
        ))
        .await
    }

    /// Every frame that arrives until the channel goes quiet (or ends).
    async fn drain(&mut self) -> Vec<Frame> {
        let mut got = Vec::new();
        while let Ok(r) = timeout(QUIET, self.rx.recv()).await {
            match r.expect("the raw end failed") {
                Some(f) => got.push(f),
                None => break,
            }
        }
        got
    }

    /// The headers of [`Raw::drain`].
    async fn msgs(&mut self) -> Vec<Msg> {
        self.drain().await.into_iter().map(|f| f.msg).collect()
    }

    /// Send `frame`, then what comes back until the channel goes quiet.
    async fn call(&mut self, frame: Frame) -> Vec<Msg> {
        self.send(frame).await;
        self.msgs().await
    }

    /// Every frame until the channel ends (the peer closed its side).
    async fn until_end(&mut self) -> Vec<Frame> {
        let mut got = Vec::new();
        while let Some(f) = within("the end of the channel", self.rx.recv())
            .await
            .unwrap()
        {
            got.push(f);
        }
        got
    }
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match timeout(LONG, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {LONG:?}"),
    }
}

/// Let every task run until all are idle.
async fn settle() {
    sleep(QUIET).await;
}

fn start_frame(cid: Cid, func: &str, kind: CallKind, w: Window, args: Bytes) -> Frame {
    Frame::with_payload(
        Msg::Start {
            cid,
            func: func.to_owned(),
            kind,
            window: w,
            sig: 0,
        },
        args,
    )
}

fn count_args(n: u64, size: u64) -> Bytes {
    (n, size).encode().unwrap()
}

/// `Start` of the scripted stream `count`: `n` items of `size` bytes, into window `w`.
fn count(cid: Cid, w: Window, n: u64, size: u64) -> Frame {
    start_frame(cid, "count", CallKind::Stream, w, count_args(n, size))
}

/// `Start` of the scripted context `hold` (it reads nothing and never ends).
fn hold(cid: Cid, w: Window) -> Frame {
    start_frame(cid, "hold", CallKind::Context, w, Bytes::new())
}

fn credit(cid: Cid, items: u32, bytes: u64) -> Frame {
    Frame::control(Msg::Credit { cid, items, bytes })
}

fn cancel(cid: Cid) -> Frame {
    Frame::control(Msg::Cancel {
        cid: Some(cid),
        cause: None,
    })
}

fn yields(cid: Cid, n: usize) -> Vec<Msg> {
    vec![Msg::Yield { cid }; n]
}

/// The call and kind of an error frame, if `m` is one.
fn error_of(m: &Msg) -> Option<(Option<Cid>, &str)> {
    match m {
        Msg::Error { cid, error } => Some((*cid, error.kind.as_str())),
        _ => None,
    }
}

/// The calls the channel routes, in order.
fn routes(conn: &Conn) -> Vec<Cid> {
    let mut v: Vec<Cid> = conn.shared.routes.lock().unwrap().keys().copied().collect();
    v.sort_unstable();
    v
}

fn served_calls(conn: &Conn) -> usize {
    conn.shared.served_calls.load(Ordering::Relaxed)
}

fn recv_buffered(conn: &Conn) -> usize {
    conn.shared.recv_buffered.load(Ordering::Relaxed)
}

fn close_reason(conn: &Conn) -> String {
    match conn.disconnected() {
        PortalError::Disconnected { reason, .. } => reason,
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

async fn next_msg(link: &mut CallLink) -> Msg {
    within("the call's next frame", link.next())
        .await
        .unwrap()
        .msg
}

// ---------------------------------------------------------------------------------
// (a) A sender keeps at most the receiver's window in flight, and resumes on credit.
// ---------------------------------------------------------------------------------

/// Open the scripted stream `count` of `n` items of `size` bytes as call 1 of `caller`
/// and take its `StartAck`.
async fn open_count(caller: &Conn, n: u64, size: u64) -> CallLink {
    let mut link = caller
        .open_call("count", CallKind::Stream, 0, count_args(n, size).into())
        .await
        .unwrap();
    assert!(matches!(
        next_msg(&mut link).await,
        Msg::StartAck { cid: 1, .. }
    ));
    link
}

#[tokio::test(start_paused = true)]
async fn a_sender_keeps_at_most_the_window_of_items_in_flight_and_resumes_exactly_on_credit() {
    let l = ChannelLimits::default();
    let (owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Acceptor);
    let got = raw.call(count(1, window(4, 1 << 20), 10, 8)).await;
    let ack = Msg::StartAck {
        cid: 1,
        window: l.window(),
        types: None,
    };
    assert_eq!(
        got,
        [vec![ack], yields(1, 4)].concat(),
        "the window is four items"
    );
    assert_eq!(owner.sent(1), 4, "the fifth item waits for credit");

    // Each credit lets exactly that many more items go.
    assert_eq!(raw.call(credit(1, 1, 8)).await, yields(1, 1));
    assert_eq!(owner.sent(1), 5);
    assert_eq!(raw.call(credit(1, 3, 24)).await, yields(1, 3));
    assert_eq!(owner.sent(1), 8);
    let got = raw.call(credit(1, 4, 32)).await;
    assert_eq!(
        got,
        [yields(1, 2), vec![Msg::Stop { cid: 1 }]].concat(),
        "the last two, then the end"
    );
    assert_eq!(owner.sent(1), 10);
    assert_eq!(owner.ended(1), Some(Ended::Finished));
    assert_eq!(routes(&conn), Vec::<Cid>::new());
    assert!(!conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_sender_keeps_at_most_the_window_of_bytes_in_flight_one_item_past_it() {
    let (owner, _conn, mut raw) = with_raw(ChannelLimits::default(), Peer::Child, Side::Acceptor);
    // 250 bytes, items of 100: a third item may start while 200 < 250 are out, and then
    // 300 are.
    let got = raw.call(count(1, window(100, 250), 10, 100)).await;
    assert_eq!(&got[1..], &yields(1, 3)[..]);
    assert_eq!(owner.sent(1), 3);
    // 200 out: one more.
    assert_eq!(raw.call(credit(1, 1, 100)).await, yields(1, 1));
    // 250 out: the window is full, though the item count is far from it.
    assert_eq!(raw.call(credit(1, 0, 50)).await, vec![]);
    assert_eq!(owner.sent(1), 4);
    // 249 out: one more.
    assert_eq!(raw.call(credit(1, 0, 1)).await, yields(1, 1));
    assert_eq!(owner.sent(1), 5);
}

#[tokio::test(start_paused = true)]
async fn a_receiver_credits_every_half_window_it_consumes() {
    let (caller, callee_owner, _callee) =
        two_conns(limits(|l| l.stream_window = 4), ChannelLimits::default());
    let mut link = open_count(&caller, 20, 8).await;
    settle().await;
    assert_eq!(callee_owner.sent(1), 4, "the caller's window");
    assert_eq!(next_msg(&mut link).await, Msg::Yield { cid: 1 });
    settle().await;
    assert_eq!(callee_owner.sent(1), 4, "one consumed: no credit yet");
    assert_eq!(next_msg(&mut link).await, Msg::Yield { cid: 1 });
    settle().await;
    assert_eq!(
        callee_owner.sent(1),
        6,
        "half the window consumed: credit for two"
    );
    // And so on to the end, in order.
    let mut seen = 2u64;
    loop {
        let f = within("an item", link.next()).await.unwrap();
        match f.msg {
            Msg::Yield { .. } => {
                assert_eq!(f.payload[0], seen as u8);
                seen += 1;
            }
            Msg::Stop { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, 20);
}

// ---------------------------------------------------------------------------------
// (b) Credit beyond what is in flight is ignored; a peer's window is capped at ours.
// ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn credit_beyond_what_is_in_flight_is_ignored() {
    let (owner, conn, mut raw) = with_raw(ChannelLimits::default(), Peer::Child, Side::Acceptor);
    let got = raw.call(count(1, window(2, 1 << 20), 100, 8)).await;
    assert_eq!(&got[1..], &yields(1, 2)[..]);
    // The most credit a frame can carry frees the two items in flight, and no more.
    let flood = credit(1, u32::MAX, u64::MAX);
    assert_eq!(raw.call(flood.clone()).await, yields(1, 2));
    assert_eq!(owner.sent(1), 4);
    raw.send(flood.clone()).await;
    assert_eq!(raw.call(flood).await, yields(1, 2), "twice: still two");
    assert_eq!(owner.sent(1), 6);
    assert!(!conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_callers_larger_window_is_capped_at_the_callees_own() {
    let l = limits(|l| l.stream_window = 3);
    let (owner, _conn, mut raw) = with_raw(l, Peer::Child, Side::Acceptor);
    let huge = window(u32::MAX, u64::MAX);
    let got = raw.call(count(1, huge, 10, 8)).await;
    assert_eq!(
        &got[1..],
        &yields(1, 3)[..],
        "three items, not four billion"
    );
    assert_eq!(owner.sent(1), 3);
    // The owner was handed the window as the peer announced it: the cap is the
    // channel's.
    assert_eq!(
        owner.rec.lock().unwrap().served,
        vec![(1, "count".to_owned(), huge)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_callees_larger_window_is_capped_at_the_callers_own_and_nothing_goes_before_it() {
    let l = limits(|l| {
        l.stream_window = 100;
        l.stream_window_bytes = 1000;
    });
    let (_owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Connector);
    let link = conn
        .open_call("ctx", CallKind::Context, 0, Bytes::new().into())
        .await
        .unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn({
        let sent = sent.clone();
        async move {
            for _ in 0..10 {
                link.send_item(Bytes::from(vec![1u8; 400]).into()).await?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, PortalError>(link)
        }
    });
    // The caller announces its own window; until the callee's arrives, no item goes.
    let start = Msg::Start {
        cid: 1,
        func: "ctx".to_owned(),
        kind: CallKind::Context,
        window: window(100, 1000),
        sig: 0,
    };
    assert_eq!(raw.msgs().await, vec![start]);
    assert_eq!(sent.load(Ordering::Relaxed), 0);
    let ack = Msg::StartAck {
        cid: 1,
        window: window(u32::MAX, u64::MAX),
        types: None,
    };
    // Capped at our 1000 bytes: items of 400 stop once 1200 are out.
    assert_eq!(raw.call(Frame::control(ack)).await, yields(1, 3));
    assert_eq!(sent.load(Ordering::Relaxed), 3);
    assert_eq!(raw.call(credit(1, 1, 400)).await, yields(1, 1));
    assert!(!sender.is_finished());
}

// ---------------------------------------------------------------------------------
// (c) Head-of-line: a stalled stream does not hold up the other calls.
// ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_does_not_block_other_calls_on_the_channel() {
    let (caller, callee_owner, _callee) =
        two_conns(limits(|l| l.stream_window = 4), ChannelLimits::default());
    // Opened, acknowledged, and then not read.
    let mut stalled = caller
        .open_call("count", CallKind::Stream, 0, count_args(1000, 64).into())
        .await
        .unwrap();
    assert!(matches!(
        next_msg(&mut stalled).await,
        Msg::StartAck { cid: 1, .. }
    ));

    let mut other = caller
        .open_call("count", CallKind::Stream, 0, count_args(100, 64).into())
        .await
        .unwrap();
    let mut items = 0;
    loop {
        match next_msg(&mut other).await {
            Msg::StartAck { .. } => {}
            Msg::Yield { cid: 3 } => items += 1,
            Msg::Stop { cid: 3 } => break,
            m => panic!("unexpected {m:?}"),
        }
    }
    assert_eq!(items, 100, "the second stream ran to its end");
    let mut call = caller
        .open_call(
            "echo",
            CallKind::Call,
            0,
            Bytes::from_static(b"ping").into(),
        )
        .await
        .unwrap();
    assert!(matches!(
        next_msg(&mut call).await,
        Msg::StartAck { cid: 5, .. }
    ));
    let reply = within("the reply", call.next()).await.unwrap();
    assert_eq!(
        (reply.msg, &reply.payload[..]),
        (Msg::Return { cid: 5 }, &b"ping"[..])
    );
    call.finish();

    // Meanwhile the stalled stream kept exactly its window out, and resumes when read.
    assert_eq!(callee_owner.sent(1), 4);
    let mut seen = 0u64;
    loop {
        let f = within("an item", stalled.next()).await.unwrap();
        match f.msg {
            Msg::Yield { cid: 1 } => {
                assert_eq!(f.payload[0], seen as u8);
                seen += 1;
            }
            Msg::Stop { cid: 1 } => break,
            m => panic!("unexpected {m:?}"),
        }
    }
    assert_eq!(seen, 1000);
}

// ---------------------------------------------------------------------------------
// (d) Cancellation.
// ---------------------------------------------------------------------------------

fn cancel_why(cid: Cid, canceller: &str, reason: &str, actor: bool) -> Frame {
    Frame::control(Msg::Cancel {
        cid: Some(cid),
        cause: Some(CancelCause {
            canceller: canceller.to_owned(),
            reason: reason.to_owned(),
            actor,
        }),
    })
}

#[tokio::test(start_paused = true)]
async fn a_cancel_that_asks_is_acknowledged_once_the_served_task_ended_or_at_once_for_none() {
    let (owner, conn, mut raw) = with_raw(ChannelLimits::default(), Peer::Child, Side::Acceptor);
    let w = window(2, 1 << 20);
    assert!(matches!(
        raw.call(hold(1, w)).await[..],
        [Msg::StartAck { cid: 1, .. }]
    ));
    assert_eq!(
        raw.call(cancel_why(1, "test/peer", "done", false)).await,
        vec![Msg::CancelAck { cid: Some(1) }]
    );
    assert_eq!(owner.ended(1), Some(Ended::Aborted));
    assert_eq!(routes(&conn), Vec::<Cid>::new());
    // Nothing to cancel: still answered, so a waiting canceller does not wait in vain.
    assert_eq!(
        raw.call(cancel_why(99, "test/peer", "late", false)).await,
        vec![Msg::CancelAck { cid: Some(99) }]
    );
    // A dropped end (no cause) waits for nothing and is not answered.
    assert_eq!(raw.call(cancel(97)).await, vec![]);
    assert!(!conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_callers_cancel_waits_for_the_acknowledgement_and_is_bounded() {
    let l = ChannelLimits::default();
    let (_owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Connector);
    let mut link = conn
        .open_call("hold", CallKind::Context, 0, Bytes::new().into())
        .await
        .unwrap();
    assert!(matches!(raw.msgs().await[..], [Msg::Start { cid: 1, .. }]));
    let cancel = tokio::spawn(async move {
        let r = link.cancel("enough".to_owned()).await;
        (r, link)
    });
    let sent = raw.msgs().await;
    assert_eq!(
        sent,
        vec![Msg::Cancel {
            cid: Some(1),
            cause: Some(CancelCause {
                canceller: "test/actor".into(),
                reason: "enough".into(),
                actor: false
            })
        }]
    );
    assert!(!cancel.is_finished(), "waits for the acknowledgement");
    raw.control(Msg::CancelAck { cid: Some(1) }).await;
    let (r, mut link) = cancel.await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    let e = link.next().await.unwrap_err();
    assert!(
        matches!(&e, PortalError::ContextCancelled(c) if c.side == CancelSide::This && c.reason == "enough"),
        "{e:?}"
    );
    drop(link);
    assert_eq!(raw.msgs().await, vec![], "no second cancel on drop");

    // A peer that never answers: the cancel gives up after the channel's cancel wait.
    let mut link = conn
        .open_call("hold", CallKind::Context, 0, Bytes::new().into())
        .await
        .unwrap();
    let t = Instant::now();
    let r = link.cancel("anyone?".to_owned()).await;
    assert!(
        matches!(r, Err(PortalError::CancelTimedOut { .. })),
        "{r:?}"
    );
    assert_eq!(t.elapsed(), CANCEL_WAIT);
}

#[tokio::test(start_paused = true)]
async fn a_peers_cancel_names_the_channels_peer_unless_it_is_an_actor_cancel() {
    let l = ChannelLimits::default();
    let (_owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Connector);
    let mut link = conn
        .open_call("hold", CallKind::Context, 0, Bytes::new().into())
        .await
        .unwrap();
    raw.msgs().await;
    // Items sent before the cancel still come first; the claim of another canceller
    // for a call's cancel is replaced by the channel's peer.
    raw.item(1, 10).await;
    let answered = raw
        .call(cancel_why(1, "root/someone-else", "bye", false))
        .await;
    assert_eq!(answered, vec![Msg::CancelAck { cid: Some(1) }]);
    assert!(matches!(
        link.next().await.unwrap().msg,
        Msg::Yield { cid: 1 }
    ));
    let e = link.next().await.unwrap_err();
    match &e {
        PortalError::ContextCancelled(c) => {
            assert_eq!(
                (c.side, c.canceller.as_str(), c.reason.as_str()),
                (CancelSide::Peer, "test/peer", "bye")
            );
        }
        other => panic!("{other:?}"),
    }
    // An actor cancel names who cancelled the actor; its text is bounded.
    let mut link = conn
        .open_call("hold", CallKind::Context, 0, Bytes::new().into())
        .await
        .unwrap();
    raw.msgs().await;
    let long = "x".repeat(10_000);
    raw.call(cancel_why(3, "root", &long, true)).await;
    match link.next().await.unwrap_err() {
        PortalError::ContextCancelled(c) => {
            assert_eq!((c.side, c.canceller.as_str()), (CancelSide::Actor, "root"));
            assert_eq!(c.reason.len(), CancelCause::MAX_TEXT);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_callers_end_sends_cancel_and_frees_the_route() {
    let l = ChannelLimits::default();
    let (_owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Connector);
    let link = conn
        .open_call("count", CallKind::Stream, 0, Bytes::new().into())
        .await
        .unwrap();
    assert!(matches!(raw.msgs().await[..], [Msg::Start { cid: 1, .. }]));
    raw.control(Msg::StartAck {
        cid: 1,
        window: l.window(),
        types: None,
    })
    .await;
    raw.item(1, 100).await;
    settle().await;
    assert_eq!(routes(&conn), vec![1]);
    assert_eq!(recv_buffered(&conn), 100, "one item, not yet consumed");

    drop(link);
    assert_eq!(
        raw.msgs().await,
        vec![Msg::Cancel {
            cid: Some(1),
            cause: None
        }]
    );
    assert_eq!(routes(&conn), Vec::<Cid>::new());
    assert_eq!(
        recv_buffered(&conn),
        0,
        "its unconsumed item no longer counts"
    );

    // A late item for the cancelled call is dropped: no protocol error, nothing held.
    raw.item(1, 100).await;
    assert_eq!(raw.msgs().await, vec![]);
    assert!(!conn.is_closed());
    assert_eq!(recv_buffered(&conn), 0);

    // A call that reached its end is not cancelled when dropped.
    let mut done = conn
        .open_call("echo", CallKind::Call, 0, Bytes::new().into())
        .await
        .unwrap();
    assert!(matches!(raw.msgs().await[..], [Msg::Start { cid: 3, .. }]));
    raw.control(Msg::Return { cid: 3 }).await;
    assert_eq!(next_msg(&mut done).await, Msg::Return { cid: 3 });
    done.finish();
    drop(done);
    assert_eq!(raw.msgs().await, vec![]);
    assert_eq!(routes(&conn), Vec::<Cid>::new());
}

#[tokio::test(start_paused = true)]
async fn a_caller_dropping_its_stream_aborts_the_served_task() {
    let (caller, callee_owner, callee) =
        two_conns(limits(|l| l.stream_window = 4), ChannelLimits::default());
    let link = open_count(&caller, 1000, 8).await;
    settle().await;
    assert_eq!(callee_owner.sent(1), 4);
    assert_eq!(routes(&callee), vec![1]);
    assert_eq!(served_calls(&callee), 1);
    assert_eq!(callee_owner.ended(1), None);

    drop(link);
    settle().await;
    assert_eq!(callee_owner.ended(1), Some(Ended::Aborted));
    assert_eq!(callee_owner.sent(1), 4);
    assert_eq!(routes(&callee), Vec::<Cid>::new());
    assert_eq!(served_calls(&callee), 0);
    assert_eq!(routes(&caller), Vec::<Cid>::new());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_from_the_peer_aborts_the_served_task() {
    let (owner, conn, mut raw) = with_raw(ChannelLimits::default(), Peer::Child, Side::Acceptor);
    // A stream waiting for credit, and a context waiting for nothing in particular.
    let w = window(2, 1 << 20);
    let got = raw.call(count(1, w, 1000, 8)).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(matches!(
        raw.call(hold(3, w)).await[..],
        [Msg::StartAck { cid: 3, .. }]
    ));
    assert_eq!(served_calls(&conn), 2);

    // Aborted, not finished: no `Stop` follows.
    assert_eq!(raw.call(cancel(1)).await, vec![]);
    assert_eq!(owner.ended(1), Some(Ended::Aborted));
    assert_eq!(owner.sent(1), 2);
    // Credit for it now reaches nothing.
    assert_eq!(raw.call(credit(1, 2, 16)).await, vec![]);
    assert_eq!(owner.sent(1), 2);

    assert_eq!(raw.call(cancel(3)).await, vec![]);
    assert_eq!(owner.ended(3), Some(Ended::Aborted));
    assert_eq!(routes(&conn), Vec::<Cid>::new());
    assert_eq!(served_calls(&conn), 0);

    // Cancelling a call that does not exist is harmless; cancelling the actor is the
    // owner's business.
    assert_eq!(raw.call(cancel(99)).await, vec![]);
    assert_eq!(
        raw.call(Frame::control(Msg::Cancel {
            cid: None,
            cause: None
        }))
        .await,
        vec![]
    );
    assert_eq!(owner.rec.lock().unwrap().actor_cancels, 1);
    assert!(!conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_still_aborts_a_served_task_that_dropped_its_end_before_an_item_arrived() {
    let (owner, conn, mut raw) = with_raw(ChannelLimits::default(), Peer::Child, Side::Acceptor);
    let wait = start_frame(
        1,
        "wait",
        CallKind::Context,
        window(2, 1 << 20),
        Bytes::new(),
    );
    assert!(matches!(
        raw.call(wait).await[..],
        [Msg::StartAck { cid: 1, .. }]
    ));
    // The handler dropped its end of the context and works on; the caller sends an item.
    raw.item(1, 1).await;
    settle().await;
    assert_eq!(owner.running(), 1);
    // The caller gives up on the call: the task must stop.
    raw.send(cancel(1)).await;
    settle().await;
    assert_eq!(owner.ended(1), Some(Ended::Aborted), "the task still runs");
    assert!(!conn.is_closed());
}

// ---------------------------------------------------------------------------------
// (e) A Yield beyond the granted window closes the channel with a protocol error.
// ---------------------------------------------------------------------------------

/// Start a served context that reads nothing, send items of `ok` sizes (within the
/// window: the channel stays open), then one of `over` (past it); returns what the peer
/// received after that until the channel ended.
async fn overrun(l: ChannelLimits, ok: &[usize], over: usize) -> (Arc<Fake>, Conn, Vec<Frame>) {
    let (owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Acceptor);
    let got = raw.call(hold(1, l.window())).await;
    assert_eq!(
        got,
        vec![Msg::StartAck {
            cid: 1,
            window: l.window(),
            types: None,
        }]
    );
    for &len in ok {
        raw.item(1, len).await;
    }
    assert_eq!(raw.msgs().await, vec![], "within the window");
    assert!(!conn.is_closed());
    raw.item(1, over).await;
    let frames = raw.until_end().await;
    (owner, conn, frames)
}

fn assert_closed_for_overrun(owner: &Fake, conn: &Conn, frames: &[Frame]) {
    let [frame] = frames else {
        panic!("expected one error frame, then the end; got {frames:?}")
    };
    let Msg::Error { cid: None, error } = &frame.msg else {
        panic!("expected an actor-level error, got {:?}", frame.msg)
    };
    assert_eq!(error.kind, kinds::PROTOCOL);
    assert!(
        error.message.contains("no Yield beyond the granted window"),
        "{error}"
    );
    assert_eq!(error.origin, "test/actor");
    assert!(conn.is_closed());
    let reason = close_reason(conn);
    assert!(reason.starts_with("protocol error"), "{reason}");
    assert_eq!(owner.closed(), vec![Peer::Child]);
    assert_eq!(
        owner.ended(1),
        Some(Ended::Aborted),
        "the served call is gone too"
    );
}

#[tokio::test(start_paused = true)]
async fn an_item_beyond_the_granted_items_is_a_protocol_error_that_closes_the_channel() {
    let l = limits(|l| l.stream_window = 2);
    let (owner, conn, frames) = overrun(l, &[10, 10], 10).await;
    assert_closed_for_overrun(&owner, &conn, &frames);
}

#[tokio::test(start_paused = true)]
async fn an_item_beyond_the_granted_bytes_is_a_protocol_error_that_closes_the_channel() {
    // One item may pass the byte window (150 of 100); the next may not, however small.
    let l = limits(|l| l.stream_window_bytes = 100);
    let (owner, conn, frames) = overrun(l, &[150], 1).await;
    assert_closed_for_overrun(&owner, &conn, &frames);
}

// ---------------------------------------------------------------------------------
// (f) The receive buffer over the whole channel: only the call that passes it fails.
// ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_call_whose_items_pass_the_receive_buffer_fails_alone_with_overloaded() {
    let l = limits(|l| l.recv_buffer = 1000);
    let (_owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Connector);
    let mut a = conn
        .open_call("count", CallKind::Stream, 0, Bytes::new().into())
        .await
        .unwrap();
    let mut b = conn
        .open_call("count", CallKind::Stream, 0, Bytes::new().into())
        .await
        .unwrap();
    let starts = raw.msgs().await;
    assert!(matches!(
        starts[..],
        [Msg::Start { cid: 1, .. }, Msg::Start { cid: 3, .. }]
    ));
    for cid in [1, 3] {
        raw.control(Msg::StartAck {
            cid,
            window: l.window(),
            types: None,
        })
        .await;
    }
    raw.item(1, 400).await;
    raw.item(1, 400).await;
    assert_eq!(raw.msgs().await, vec![]);
    assert_eq!(recv_buffered(&conn), 800);
    // 800 + 400 > 1000: call 3 fails (and is cancelled at the callee); call 1 holds on.
    raw.item(3, 400).await;
    assert_eq!(
        raw.msgs().await,
        vec![Msg::Cancel {
            cid: Some(3),
            cause: None
        }]
    );
    assert!(matches!(
        next_msg(&mut b).await,
        Msg::StartAck { cid: 3, .. }
    ));
    let failed = next_msg(&mut b).await;
    assert_eq!(error_of(&failed), Some((Some(3), kinds::OVERLOADED)));
    b.finish();
    assert_eq!(recv_buffered(&conn), 800);
    assert_eq!(routes(&conn), vec![1]);
    assert!(!conn.is_closed());

    assert!(matches!(
        next_msg(&mut a).await,
        Msg::StartAck { cid: 1, .. }
    ));
    for _ in 0..2 {
        let f = within("an item", a.next()).await.unwrap();
        assert_eq!((f.msg, f.payload.len()), (Msg::Yield { cid: 1 }, 400));
    }
    assert_eq!(recv_buffered(&conn), 0);
    // With nothing else held, one item larger than the whole buffer still passes.
    raw.item(1, 1500).await;
    let f = within("the large item", a.next()).await.unwrap();
    assert_eq!((f.msg, f.payload.len()), (Msg::Yield { cid: 1 }, 1500));
    assert_eq!(raw.msgs().await, vec![]);
    assert!(!conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_served_call_whose_items_pass_the_receive_buffer_fails_alone_with_overloaded() {
    let l = limits(|l| l.recv_buffer = 1000);
    let (owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Acceptor);
    for cid in [1, 3] {
        let got = raw.call(hold(cid, l.window())).await;
        assert!(matches!(got[..], [Msg::StartAck { .. }]), "{got:?}");
    }
    raw.item(1, 600).await;
    raw.item(3, 600).await;
    let got = raw.msgs().await;
    let [failed] = &got[..] else {
        panic!("expected one error, got {got:?}")
    };
    assert_eq!(error_of(failed), Some((Some(3), kinds::OVERLOADED)));
    assert_eq!(owner.ended(3), Some(Ended::Aborted));
    assert_eq!(owner.ended(1), None);
    assert_eq!(routes(&conn), vec![1]);
    assert_eq!(served_calls(&conn), 1);
    assert_eq!(recv_buffered(&conn), 600);
    assert!(!conn.is_closed());
}

// ---------------------------------------------------------------------------------
// (g) Calls a peer may have open.
// ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn calls_past_max_calls_are_refused_with_too_many_calls_until_one_ends() {
    let l = limits(|l| l.max_calls = 2);
    let (_owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Acceptor);
    let w = l.window();
    let hold = |cid| hold(cid, w);
    let echo = |cid| start_frame(cid, "echo", CallKind::Call, w, Bytes::new());
    let ack = |cid| Msg::StartAck {
        cid,
        window: w,
        types: None,
    };
    let refused = |got: &[Msg], cid| {
        assert!(
            matches!(got, [m] if error_of(m) == Some((Some(cid), kinds::TOO_MANY_CALLS))),
            "expected call {cid} refused, got {got:?}"
        )
    };

    assert_eq!(raw.call(hold(1)).await, vec![ack(1)]);
    assert_eq!(raw.call(hold(3)).await, vec![ack(3)]);
    refused(&raw.call(hold(5)).await, 5);
    assert_eq!(served_calls(&conn), 2);

    // A cancelled call gives back its place once its task has ended.
    raw.send(cancel(1)).await;
    settle().await;
    assert_eq!(raw.call(hold(7)).await, vec![ack(7)]);
    refused(&raw.call(echo(9)).await, 9);

    // So does a call that returned.
    raw.send(cancel(3)).await;
    settle().await;
    assert_eq!(
        raw.call(echo(11)).await,
        vec![ack(11), Msg::Return { cid: 11 }]
    );
    assert_eq!(raw.call(hold(13)).await, vec![ack(13)]);
    refused(&raw.call(hold(15)).await, 15);
    assert_eq!(served_calls(&conn), 2);
    assert_eq!(routes(&conn), vec![7, 13]);
    assert!(!conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_stray_item_does_not_give_back_the_place_of_a_call_that_still_runs() {
    let l = limits(|l| l.max_calls = 1);
    let (owner, conn, mut raw) = with_raw(l, Peer::Child, Side::Acceptor);
    let wait = |cid| start_frame(cid, "wait", CallKind::Call, l.window(), Bytes::new());
    assert!(matches!(
        raw.call(wait(1)).await[..],
        [Msg::StartAck { cid: 1, .. }]
    ));
    // An item on a one-shot call (whose handler dropped its end at once).
    raw.item(1, 1).await;
    let got = raw.call(wait(3)).await;
    assert!(
        conn.is_closed()
            || matches!(&got[..], [m] if error_of(m) == Some((Some(3), kinds::TOO_MANY_CALLS))),
        "call 3 was not refused: {got:?}"
    );
    assert!(
        owner.running() <= 1,
        "{} calls run with max_calls = 1",
        owner.running()
    );
}

// ---------------------------------------------------------------------------------
// (h) Idle peer channels.
// ---------------------------------------------------------------------------------

/// The idle watcher looks every quarter of the timeout: a channel idle since `since`
/// closes within that much after the timeout.
fn assert_closed_idle_after(since: Instant, timeout: Duration) {
    let after = since.elapsed();
    assert!(
        after >= timeout && after <= timeout + timeout / 4,
        "closed {after:?} after the last activity, with an idle timeout of {timeout:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_peer_channel_closes_after_the_idle_timeout_and_not_before() {
    let idle = Duration::from_secs(10);
    let l = limits(|l| l.idle_timeout = idle);
    let t0 = Instant::now();
    let (owner, conn, mut raw) = with_raw(l, Peer::Other, Side::Acceptor);
    sleep(Duration::from_secs(9)).await;
    assert!(!conn.is_closed(), "closed after {:?}", t0.elapsed());
    within("the idle close", conn.closed()).await;
    assert_closed_idle_after(t0, idle);
    assert_eq!(raw.until_end().await, vec![]);
    let reason = close_reason(&conn);
    assert!(reason.starts_with("idle for 10s"), "{reason}");
    assert_eq!(owner.closed(), vec![Peer::Other]);
}

#[tokio::test(start_paused = true)]
async fn an_open_call_or_a_frame_keeps_a_peer_channel_from_idling() {
    let idle = Duration::from_secs(10);
    let l = limits(|l| l.idle_timeout = idle);
    // A frame (even one for no call) counts as activity.
    let (_owner, conn, mut raw) = with_raw(l, Peer::Other, Side::Acceptor);
    sleep(Duration::from_secs(8)).await;
    raw.send(credit(99, 1, 1)).await;
    let t1 = Instant::now();
    within("the idle close", conn.closed()).await;
    assert_closed_idle_after(t1, idle);

    // An open call keeps the channel however long it lasts; its end starts the clock.
    let (_owner, conn, mut raw) = with_raw(l, Peer::Other, Side::Acceptor);
    assert!(matches!(
        raw.call(hold(1, l.window())).await[..],
        [Msg::StartAck { cid: 1, .. }]
    ));
    sleep(Duration::from_secs(600)).await;
    assert!(!conn.is_closed());
    raw.send(cancel(1)).await;
    let t2 = Instant::now();
    within("the idle close", conn.closed()).await;
    assert_closed_idle_after(t2, idle);
}

#[tokio::test(start_paused = true)]
async fn a_parent_or_child_channel_never_idles() {
    let l = limits(|l| l.idle_timeout = Duration::from_secs(10));
    let (_o1, child, _r1) = with_raw(l, Peer::Child, Side::Acceptor);
    let (_o2, parent, _r2) = with_raw(l, Peer::Parent, Side::Connector);
    sleep(Duration::from_secs(24 * 3600)).await;
    assert!(!child.is_closed());
    assert!(!parent.is_closed());
}

// ---------------------------------------------------------------------------------
// The write queue: data waits for room; a peer that never reads is cut off.
// ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn data_senders_wait_for_room_in_the_write_queue_while_the_peer_does_not_read() {
    let l = limits(|l| l.send_buffer = 4096);
    let t = MemTransport::new().with_buffer(1024);
    let (owner, conn, mut raw) = with_raw_on(&t, l, Peer::Child, Side::Acceptor);
    // A window of 256 items, and the peer reads nothing: the write queue is the bound.
    raw.send(count(1, l.window(), 100, 1000)).await;
    settle().await;
    let stalled = owner.sent(1);
    // What the write budget holds, one frame in the transport's buffer, one being fed.
    let bound = l.send_buffer as u64 / (1000 + FRAME_OVERHEAD as u64) + 2;
    assert!(
        (1..=bound).contains(&stalled),
        "{stalled} items queued, at most {bound} fit"
    );
    sleep(Duration::from_secs(600)).await;
    assert_eq!(owner.sent(1), stalled, "still waiting");
    assert!(
        !conn.is_closed(),
        "data back-pressure does not close the channel"
    );

    // The peer reads: everything follows.
    let got = raw.msgs().await;
    assert_eq!(got.len(), 1 + 100 + 1, "StartAck, 100 items, Stop");
    assert_eq!(&got[1..101], &yields(1, 100)[..]);
    assert_eq!(owner.sent(1), 100);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_cut_off_past_the_control_queue_bound() {
    let l = limits(|l| l.max_queued_control = 8);
    let t = MemTransport::new().with_buffer(256);
    let (owner, conn, mut raw) = with_raw_on(&t, l, Peer::Child, Side::Acceptor);
    let nope = |cid| start_frame(cid, "nope", CallKind::Call, l.window(), Bytes::new());
    // Each unknown function is answered with an error frame, which the peer never reads.
    for cid in (1..8).step_by(2) {
        raw.send(nope(cid)).await;
    }
    settle().await;
    assert!(!conn.is_closed(), "four answers fit");
    for cid in (9..100).step_by(2) {
        // Once the channel is cut off its end is gone, and sends fail.
        let _ = raw.try_send(nope(cid)).await;
    }
    within("the close", conn.closed()).await;
    let reason = close_reason(&conn);
    assert!(reason.contains("stopped reading"), "{reason}");
    settle().await;
    assert_eq!(owner.closed(), vec![Peer::Child]);
}

// ---------------------------------------------------------------------------------
// Credit is taken only for items that go.
// ---------------------------------------------------------------------------------

/// Open a context as call 1 of `conn` (the connector) and grant it `w` from the raw
/// peer, as a callee's `StartAck` does.
async fn open_granted(conn: &Conn, raw: &mut Raw, w: Window) -> CallLink {
    let link = conn
        .open_call("ctx", CallKind::Context, 0, Bytes::new().into())
        .await
        .unwrap();
    assert!(matches!(raw.msgs().await[..], [Msg::Start { cid: 1, .. }]));
    raw.control(Msg::StartAck {
        cid: 1,
        window: w,
        types: None,
    })
    .await;
    settle().await;
    link
}

#[tokio::test(start_paused = true)]
async fn an_item_too_large_to_send_takes_no_window_credit() {
    let (_owner, conn, mut raw) = with_raw(ChannelLimits::default(), Peer::Child, Side::Connector);
    let link = open_granted(&conn, &mut raw, window(2, 1 << 20)).await;
    let huge = Bytes::from(vec![0u8; DEFAULT_MAX_FRAME + 1]);
    let refused = link.send_item(huge.into()).await;
    assert!(
        matches!(
            refused,
            Err(PortalError::Protocol(ProtocolError::FrameTooLarge { .. }))
        ),
        "{refused:?}"
    );
    // Both items of the window are still there.
    for _ in 0..2 {
        within(
            "a send within the window",
            link.send_item(Bytes::from_static(b"ok").into()),
        )
        .await
        .unwrap();
    }
    assert_eq!(raw.msgs().await, yields(1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_send_dropped_while_the_write_queue_is_full_gives_its_credit_back() {
    let l = limits(|l| l.send_buffer = 4096);
    let t = MemTransport::new().with_buffer(1024);
    let (_owner, conn, mut raw) = with_raw_on(&t, l, Peer::Child, Side::Connector);
    let link = open_granted(&conn, &mut raw, window(8, 1 << 20)).await;
    let item = || Bytes::from(vec![7u8; 1000]);
    // The peer reads nothing: sends fill the write queue, then wait for room. Each of
    // those waits is given up (dropped) after a while, as a `select!` would.
    let mut queued = 0;
    let mut dropped = 0;
    while dropped < 8 {
        match timeout(QUIET, link.send_item(item().into())).await {
            Ok(r) => {
                r.unwrap();
                queued += 1;
            }
            Err(_) => dropped += 1,
        }
    }
    assert!(queued < 8, "the write queue held {queued} items: not full");
    // The peer reads what was queued and credits it back: the whole window is free
    // again, whatever was dropped.
    let got = raw.msgs().await;
    assert_eq!(got, yields(1, queued));
    raw.send(credit(1, queued as u32, queued as u64 * 1000))
        .await;
    // The peer now reads as they come.
    let sends = async {
        for _ in 0..8 {
            link.send_item(item().into()).await.unwrap();
        }
    };
    let ((), got) = within("8 sends within the window", async {
        tokio::join!(sends, raw.msgs())
    })
    .await;
    assert_eq!(got, yields(1, 8));
}
