//! Helpers the test modules share: assertions, kills, joins, teardown probes.

use std::future::Future;
use std::io::BufRead;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use brood::{ActorId, CallerContext, ChildReport, PortalError, RuntimeVars, TeardownHook};
use harness::functions::*;
use harness::{Failed, in_process};

pub(crate) fn check(cond: bool, what: &str) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into()) }
}

/// That a root failed with exactly one child error: `actor` killed by a SIGKILL brood did
/// not send.
pub(crate) fn killed_alone(err: &brood::RootError, actor: &str) -> Result<(), Failed> {
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [
            brood::ChildError::Signaled {
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
/// status just before it returns.
pub(crate) const THREAD_END: Duration = Duration::from_secs(2);

/// Kill the actor `who` behind `portal` as SIGKILL would: from outside with SIGKILL when
/// it is a process of its own, by crashing it through its portal when it runs in ours
/// (a signal would kill the test). Returns at once for a process; for an in-process
/// actor, once its channel closed.
pub(crate) async fn kill_actor(portal: &brood::Portal, who: &Who) {
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
    pub(crate) nursery: &'a brood::Nursery,
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
