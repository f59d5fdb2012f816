//! The actor functions the context and stream tests call (`tests/suite/contexts.rs`): a
//! scripted context whose callee ends in each way the tests need and records what its
//! own accessors answered afterwards, a stream to broadcast, a context to share, and
//! functions registered under one wire name with types that another declaration of the
//! same name does not match. Merged beside the other test functions by
//! [`crate::brood`], so every test actor serves them.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use brood::{ActorCx, CalleeContext, CalleeStream, FnError, PortalError, Registry, StreamTx};
use serde::{Deserialize, Serialize};

/// How long an accessor that must answer at once may take inside a callee before the
/// callee records it as a hang (a loaded machine).
const AT_ONCE: Duration = Duration::from_secs(2);

/// How a [`Scripted`] callee ends, or what it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Script {
    /// Sends one item (1) and returns 7.
    Return,
    /// Sends one item and fails with kind `Broken`.
    Fail,
    /// Sends one item and panics (its actor then ends, failed).
    Panic,
    /// Sends one item and cancels the context itself ("callee had enough"), then records
    /// its accessors.
    CalleeCancels,
    /// Sends one item and waits (up to 20 s) for the caller to cancel or drop the
    /// context, then records its accessors.
    AwaitPeer,
    /// Sends one item and cancels at once ("race"): the caller cancels as soon as it sees
    /// the item, so the two cancels cross.
    Race,
    /// Waits this many milliseconds, then calls `started` and records what it answered.
    SlowStart(u64),
    /// Sends one item and then holds the context open forever (an actor cancel or a
    /// kill ends it).
    Hold,
    /// Cancels the context before it started ("not today") and records what that
    /// answered.
    RefuseToStart,
}

brood::context!(
    /// A scripted context: `(report key, script)`; started `()`, items `u64` both ways,
    /// returns `u64`.
    pub Scripted: (String, Script) => started (), in u64, out u64, return u64
);

brood::call!(
    /// The report a [`Scripted`] callee recorded under a key, once it is complete (`None`
    /// before): `(accessor, outcome)` pairs in order.
    pub TakeReport: String => Option<Vec<(String, String)>>
);

brood::stream!(
    /// Streams `0..n`, one item every `pause` microseconds (0: as fast as credit allows).
    pub Numbers: (u64, u64) => u64
);

brood::stream!(
    /// Streams `0..n`, then cancels the stream itself ("sent enough") instead of ending it.
    pub NumbersThenCancel: u64 => u64
);

brood::context!(
    /// A context meant to be shared: counts how many times it was opened in this actor
    /// (the started value), then streams `0..` every millisecond until the caller closes
    /// its side or cancels; echoes nothing; returns how many items it sent.
    pub Ticker: String => started u64, in u64, out u64, return u64
);

brood::call!(
    /// How many times [`Ticker`] was opened with this key in this actor, and how many of
    /// those are still running.
    pub TickerOpens: String => (u64, u64)
);

brood::call!(
    /// Adds two numbers; registered under a wire name that [`AddV2`] reuses with other
    /// types, as another version of the program would.
    pub AddV1 = "harness::versioned::add": (i64, i64) => i64
);

brood::call!(
    /// [`AddV1`]'s wire name with other argument types (empty, which cannot decode as two
    /// numbers): never registered, only called.
    pub AddV2 = "harness::versioned::add": () => i64
);

brood::call!(
    /// Answers 300; [`AnswerV2`] expects a `bool` back under the same name (300's
    /// encoding is not one).
    pub AnswerV1 = "harness::versioned::answer": () => u64
);

brood::call!(
    /// [`AnswerV1`]'s wire name with another reply type.
    pub AnswerV2 = "harness::versioned::answer": () => bool
);

brood::context!(
    /// Sends 300, then reads `bool`s until the caller closes (failing on one that does
    /// not decode); [`EchoV2`] has the item types the other way round.
    pub EchoV1 = "harness::versioned::echo": () => started (), in bool, out u64, return ()
);

brood::context!(
    /// [`EchoV1`]'s wire name with the item types swapped.
    pub EchoV2 = "harness::versioned::echo": () => started (), in u64, out bool, return ()
);

/// Reports of [`Scripted`] callees by key. Test code only: the library keeps no
/// process-global actor state, but a test's callee must leave its findings somewhere a
/// later call can read them, and keys are unique per test run.
static REPORTS: LazyLock<Mutex<HashMap<String, Report>>> = LazyLock::new(Default::default);

/// Opens and live instances of [`Ticker`] by key (test bookkeeping, as [`REPORTS`]).
static TICKERS: LazyLock<Mutex<HashMap<String, (u64, u64)>>> = LazyLock::new(Default::default);

#[derive(Default)]
struct Report {
    lines: Vec<(String, String)>,
    done: bool,
}

fn record(key: &str, what: &str, outcome: String) {
    let mut r = REPORTS.lock().unwrap();
    r.entry(key.to_owned())
        .or_default()
        .lines
        .push((what.to_owned(), outcome));
}

fn finish(key: &str) {
    REPORTS
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .done = true;
}

/// A short, comparable description of an accessor's answer.
pub fn outcome<T: Debug>(r: &Result<T, PortalError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(PortalError::ContextCancelled(c)) => {
            format!("cancelled {:?} by {}: {}", c.side, c.canceller, c.reason)
        }
        Err(PortalError::Remote(r)) => format!("remote {}", r.kind),
        Err(PortalError::CallEnded { .. }) => "ended".to_owned(),
        Err(PortalError::Disconnected { .. }) => "disconnected".to_owned(),
        Err(e) => format!("error {e}"),
    }
}

/// Run `f`, recording its outcome, or `hang` if it did not answer within [`AT_ONCE`].
async fn at_once<T: Debug>(key: &str, what: &str, f: impl Future<Output = Result<T, PortalError>>) {
    let o = match tokio::time::timeout(AT_ONCE, f).await {
        Ok(r) => outcome(&r),
        Err(_) => "hang".to_owned(),
    };
    record(key, what, o);
}

/// Every accessor of a started callee's end, after its context ended.
async fn record_accessors(key: &str, s: &mut CalleeStream<Scripted>) {
    at_once(key, "recv", s.recv()).await;
    at_once(key, "recv again", s.recv()).await;
    at_once(key, "send", s.send(9)).await;
    at_once(key, "close_send", async { s.close_send() }).await;
    at_once(key, "cancel", s.cancel("again")).await;
    record_cancelled(key, "cancelled", s.cancelled()).await;
}

/// Record who cancelled, as `cancelled` says, or `hang` if it did not answer within
/// [`AT_ONCE`].
async fn record_cancelled(
    key: &str,
    what: &str,
    cancelled: impl Future<Output = brood::ContextCancelled>,
) {
    let o = match tokio::time::timeout(AT_ONCE, cancelled).await {
        Ok(c) => format!("{:?} by {}: {}", c.side, c.canceller, c.reason),
        Err(_) => "hang".to_owned(),
    };
    record(key, what, o);
}

async fn probe(
    _cx: ActorCx,
    (key, script): (String, Script),
    ctx: CalleeContext<Scripted>,
) -> Result<u64, FnError> {
    let result = run_probe(&key, script, ctx).await;
    finish(&key);
    result
}

async fn run_probe(
    key: &str,
    script: Script,
    ctx: CalleeContext<Scripted>,
) -> Result<u64, FnError> {
    if let Script::SlowStart(ms) = script {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        record_cancelled(key, "cancelled before started", ctx.cancelled()).await;
        let r = tokio::time::timeout(AT_ONCE, ctx.started(())).await;
        record(
            key,
            "started",
            match r {
                Ok(r) => outcome(&r.map(|_| ())),
                Err(_) => "hang".to_owned(),
            },
        );
        return Ok(0);
    }
    if script == Script::RefuseToStart {
        at_once(key, "own cancel", ctx.cancel("not today")).await;
        return Ok(0);
    }
    let mut s = ctx.started(()).await?;
    s.send(1).await?;
    match script {
        Script::Return => Ok(7),
        Script::Fail => Err(FnError::new("Broken", "on purpose")),
        Script::Panic => panic!("the probe panics on purpose"),
        Script::CalleeCancels => {
            at_once(key, "own cancel", s.cancel("callee had enough")).await;
            record_accessors(key, &mut s).await;
            Ok(0)
        }
        Script::Race => {
            at_once(key, "own cancel", s.cancel("race")).await;
            record_accessors(key, &mut s).await;
            Ok(0)
        }
        Script::AwaitPeer => {
            // Wait for the caller's cancel without reading: `cancelled` sees it.
            if tokio::time::timeout(Duration::from_secs(20), s.cancelled())
                .await
                .is_err()
            {
                record(key, "peer", "never cancelled".to_owned());
                return Ok(0);
            }
            record_accessors(key, &mut s).await;
            Ok(0)
        }
        Script::Hold => {
            std::future::pending::<()>().await;
            Ok(0)
        }
        Script::SlowStart(_) | Script::RefuseToStart => unreachable!("handled above"),
    }
}

async fn numbers(_cx: ActorCx, (n, pause): (u64, u64), tx: StreamTx<u64>) -> Result<(), FnError> {
    for i in 0..n {
        if pause > 0 {
            tokio::time::sleep(Duration::from_micros(pause)).await;
        }
        tx.send(i).await?;
    }
    Ok(())
}

/// Counts a live [`Ticker`] until dropped.
struct Live(String);

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(e) = TICKERS.lock().unwrap().get_mut(&self.0) {
            e.1 -= 1;
        }
    }
}

async fn ticker(_cx: ActorCx, key: String, ctx: CalleeContext<Ticker>) -> Result<u64, FnError> {
    let opens = {
        let mut t = TICKERS.lock().unwrap();
        let e = t.entry(key.clone()).or_default();
        e.0 += 1;
        e.1 += 1;
        e.0
    };
    let _live = Live(key);
    let mut s = ctx.started(opens).await?;
    let sent = AtomicU64::new(0);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    loop {
        tokio::select! {
            item = s.recv() => match item? {
                Some(_) => {}
                None => return Ok(sent.load(Ordering::Relaxed)),
            },
            _ = tick.tick() => {
                s.send(sent.fetch_add(1, Ordering::Relaxed)).await?;
            }
        }
    }
}

/// The functions of this module.
pub fn registry() -> Registry {
    Registry::new()
        .context(Scripted, probe)
        .call(TakeReport, |_cx, key: String| async move {
            let mut r = REPORTS.lock().unwrap();
            Ok(match r.get(&key) {
                Some(rep) if rep.done => r.remove(&key).map(|rep| rep.lines),
                _ => None,
            })
        })
        .stream(Numbers, numbers)
        .stream(
            NumbersThenCancel,
            |_cx, n: u64, tx: StreamTx<u64>| async move {
                for i in 0..n {
                    tx.send(i).await?;
                }
                tx.cancel("sent enough").await?;
                Ok(())
            },
        )
        .context(Ticker, ticker)
        .call(TickerOpens, |_cx, key: String| async move {
            Ok(TICKERS
                .lock()
                .unwrap()
                .get(&key)
                .copied()
                .unwrap_or_default())
        })
        .call(AddV1, |_cx, (a, b)| async move { Ok(a + b) })
        .call(AnswerV1, |_cx, ()| async move { Ok(300) })
        .context(EchoV1, |_cx, (), ctx: CalleeContext<EchoV1>| async move {
            let mut s = ctx.started(()).await?;
            s.send(300).await?;
            while s.recv().await?.is_some() {}
            Ok(())
        })
}
