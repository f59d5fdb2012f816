//! Helpers the test modules share: the time scale, polling, roots with the test
//! deadline, kills, joins, teardown probes.

use std::fmt::Display;
use std::future::Future;
use std::io::BufRead;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use brood::{
    ActorId, CallerContext, ChildError, ChildReport, FnError, Nursery, Portal, PortalError,
    RootError, RuntimeVars, TeardownHook,
};
use harness::functions::*;
use harness::{Failed, in_process};

/// Environment variable holding the factor every timing bound of the suite is multiplied
/// by (see [`scaled`]).
pub(crate) const TIME_SCALE_ENV: &str = "BROOD_TEST_TIME_SCALE";

/// The factor in [`TIME_SCALE_ENV`]: a positive, finite float; unset or empty means 1.0.
///
/// # Errors
/// If the variable holds anything else: a typo must not silently run the suite with
/// bounds nobody asked for (`main` stops before any test runs).
pub(crate) fn parse_time_scale() -> Result<f64, String> {
    let Some(raw) = std::env::var_os(TIME_SCALE_ENV) else {
        return Ok(1.0);
    };
    let text = raw.to_string_lossy();
    if text.trim().is_empty() {
        return Ok(1.0);
    }
    match text.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!(
            "{TIME_SCALE_ENV}={text:?}: expected a positive number, the factor every \
             timing bound of the suite is multiplied by (e.g. 2 or 1.5)"
        )),
    }
}

/// [`parse_time_scale`], once per process.
///
/// # Panics
/// If the variable is invalid (`main` has checked it before any test runs).
pub(crate) fn time_scale() -> f64 {
    static SCALE: OnceLock<f64> = OnceLock::new();
    *SCALE.get_or_init(|| parse_time_scale().unwrap_or_else(|e| panic!("{e}")))
}

/// `d` multiplied by the suite's time scale ([`TIME_SCALE_ENV`], default 1.0).
///
/// Every *upper* bound the suite asserts on time ("within 2 s", "before the kill"), every
/// timeout it waits with, and the test deadline go through here, so that a loaded machine
/// can widen them all with one variable. Lower bounds ("not before the cancel timeout")
/// and the durations a test configures in the system under test (teardown policies,
/// limits) are not scaled, except where an upper bound is only meaningful relative to
/// such a duration: there both are scaled together.
pub(crate) fn scaled(d: Duration) -> Duration {
    d.mul_f64(time_scale())
}

/// What [`poll_until`] waits for: `true`, or `Some(value)` (which it returns).
pub(crate) trait Ready {
    /// What the wait returns.
    type Output;
    /// The value, once ready.
    fn ready(self) -> Option<Self::Output>;
}

impl Ready for bool {
    type Output = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Output = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// How often [`poll_until`] and [`poll_until_async`] look.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// Call `probe` every few milliseconds, on this thread, until it is ready (`true` or
/// `Some`), for up to `timeout` ([`scaled`]); return what it gave. It is called once more
/// after the time is up, before giving up.
///
/// # Panics
/// When the time is up, with a message naming `what` was awaited.
#[track_caller]
pub(crate) fn poll_until<R: Ready>(
    timeout: Duration,
    what: impl Display,
    mut probe: impl FnMut() -> R,
) -> R::Output {
    let bound = scaled(timeout);
    let start = Instant::now();
    loop {
        let late = start.elapsed() >= bound;
        if let Some(v) = probe().ready() {
            return v;
        }
        assert!(!late, "waited {bound:?} for {what}, in vain");
        std::thread::sleep(POLL_EVERY);
    }
}

/// [`poll_until`] for async code: `probe` may await, and the waits between its calls
/// yield to the runtime.
///
/// # Panics
/// When the time is up, with a message naming `what` was awaited.
pub(crate) async fn poll_until_async<R: Ready>(
    timeout: Duration,
    what: impl Display,
    mut probe: impl AsyncFnMut() -> R,
) -> R::Output {
    let bound = scaled(timeout);
    let start = Instant::now();
    loop {
        let late = start.elapsed() >= bound;
        if let Some(v) = probe().await.ready() {
            return v;
        }
        assert!(!late, "waited {bound:?} for {what}, in vain");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`harness::run`] with the test deadline, [`harness::DEADLINE`] ([`scaled`]).
pub(crate) fn within_deadline<F: Future>(fut: F) -> F::Output {
    harness::run(scaled(harness::DEADLINE), fut)
}

/// [`harness::with_root`] with the [`scaled`] deadline: open a root on the cell under
/// test and run `body` in its nursery.
pub(crate) fn with_root<R>(
    body: impl AsyncFnOnce(&Nursery) -> Result<R, FnError>,
) -> Result<R, RootError> {
    within_deadline(harness::root().run(body))
}

/// The tree paths `cx`'s registrar lists, sorted.
pub(crate) async fn listed_paths(
    cx: &brood::ActorCx,
) -> Result<Vec<String>, brood::DiscoveryError> {
    Ok(cx
        .list_actors()
        .await?
        .into_iter()
        .map(|a| a.path)
        .collect())
}

/// That a root failed with exactly one child error: `actor` killed by a SIGKILL brood did
/// not send.
pub(crate) fn killed_alone(err: &RootError, actor: &str) -> Result<(), Failed> {
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [
            ChildError::Signaled {
                actor: a,
                signal: 9,
                ..
            },
        ] if a == actor => Ok(()),
        other => Err(format!("expected {actor} killed by SIGKILL, got {other:?}").into()),
    }
}

/// Whether the cell's backend runs actors in the process of their parent (`subint`):
/// tests check the in-process facts there, the separate-process facts elsewhere.
pub(crate) fn in_process_backend() -> bool {
    harness::backend() == spawn_subint::KEY
}

/// How long the thread of a reaped in-process actor may take to end: it reports its exit
/// status just before it returns. Unscaled: pass it through [`scaled`].
pub(crate) const THREAD_END: Duration = Duration::from_secs(2);

/// Kill the actor `who` behind `portal` as SIGKILL would: from outside with SIGKILL when
/// it is a process of its own, by crashing it through its portal when it runs in ours
/// (a signal would kill the test). Returns at once for a process; for an in-process
/// actor, once its channel closed.
pub(crate) async fn kill_actor(portal: &Portal, who: &Who) {
    if in_process(who) {
        let e = harness::crash(portal).await;
        assert!(matches!(e, PortalError::Disconnected { .. }), "{e:?}");
    } else {
        kill(who.pid, nix::sys::signal::Signal::SIGKILL);
    }
}

pub(crate) fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// Poll every future to completion concurrently, on the calling task.
pub(crate) async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Read a `<tag> n n n` line of a scenario's output.
pub(crate) fn numbers(r: &mut impl BufRead, tag: &str) -> Result<Vec<u32>, Failed> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let rest = line
        .strip_prefix(tag)
        .and_then(|l| l.strip_prefix(' '))
        .ok_or_else(|| format!("expected {tag} in the scenario output, got {line:?}"))?;
    Ok(rest
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect())
}

#[derive(Debug, Default)]
pub(crate) struct Recorder(pub(crate) Mutex<Vec<(String, bool, Instant)>>);

#[brood::async_trait]
impl TeardownHook for Recorder {
    async fn before_hard_reap(&self, child: &ActorId, vars: &RuntimeVars) {
        self.0
            .lock()
            .unwrap()
            .push((child.name().to_owned(), vars.debug_mode, Instant::now()));
    }
}

/// Keeps what a nursery body saw, for the test to judge after the root returned, even
/// when the body is cancelled (a child failing during `Nursery::cancel` cancels the body
/// of its nursery): the reports so far are taken when the body ends or is dropped.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    pub(crate) who: Option<Who>,
    pub(crate) cancelled_at: Option<Instant>,
    pub(crate) took: Option<Duration>,
    pub(crate) reports: Vec<ChildReport>,
}

pub(crate) struct ReportsOnDrop<'a> {
    pub(crate) nursery: &'a Nursery,
    pub(crate) probe: Arc<Mutex<Probe>>,
}

impl Drop for ReportsOnDrop<'_> {
    fn drop(&mut self) {
        self.probe.lock().unwrap().reports = self.nursery.reports();
    }
}

#[derive(Debug)]
pub(crate) struct Shared(pub(crate) Arc<Recorder>);

#[brood::async_trait]
impl TeardownHook for Shared {
    async fn before_hard_reap(&self, child: &ActorId, vars: &RuntimeVars) {
        self.0.before_hard_reap(child, vars).await
    }
}

/// What blocks a child's teardown in the hook test.
pub(crate) enum Blocked {
    /// A Rust loop that ignores cancellation and SIGTERM (a process child).
    Rust(CallerContext<Stubborn>),
    /// Python stuck in a native call (an in-process child).
    Python(CallerContext<PyRun>),
}

impl Blocked {
    pub(crate) async fn fails(self) -> bool {
        match self {
            Blocked::Rust(c) => c.result().await.is_err(),
            Blocked::Python(c) => c.result().await.is_err(),
        }
    }
}
