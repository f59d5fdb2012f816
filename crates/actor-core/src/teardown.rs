//! The teardown ladder: how a parent makes sure a child is gone.
//!
//! Per child, each step only runs if the child is still alive after the one before:
//!
//! 1. **soft wait** for the child to finish on its own (a `run_in_actor` child finishing
//!    its function; skipped when tearing down because of an error or a cancel);
//! 2. **cancel request** over IPC (`Cancel { cid: None }`), then wait
//!    [`TeardownPolicy::cancel_timeout`] (default 0.5 s) — or longer, as long as the child
//!    announced ([`Msg::Stopping`](spawn_api::Msg::Stopping)) that it is tearing down children
//!    of its own: each level of a tree tears down its own subtree, hooks included, before
//!    its parent ever signals it;
//! 3. every [`TeardownHook::before_terminate`] with the *child's* runtime vars, then
//!    **terminate** (SIGTERM to the child's process group, or an interrupt for an
//!    in-process child), then wait [`TeardownPolicy::kill_after`] (default 1.6 s);
//! 4. every [`TeardownHook::before_hard_reap`] with the *child's* runtime vars;
//! 5. **hard kill** (SIGKILL; an in-process child stuck in native code is abandoned),
//!    then wait [`TeardownPolicy::reap_timeout`] for the status;
//! 6. **reap**: the exit status is collected; the caller removes the child's endpoint and
//!    surfaces its error.
//!
//! ## Nested teardown and its worst case
//!
//! An actor asked to stop (a cancel request, its parent gone, or SIGTERM while it has
//! children) tears its own children down through this same ladder. While it does, it
//! announces to its parent when it will be done: the latest end of its children's ladders
//! plus a margin of 0.5 s for its own exit, again
//! whenever a grandchild pushes that later. The parent's cancel step waits that long.
//! So for a cancelled actor whose subtree is `d` levels deep, with no hook waiting and
//! every descendant stuck, the teardown takes at most
//!
//! ```text
//! T(d) = d × (cancel_timeout + kill_after + reap_timeout + 0.5 s)
//! ```
//!
//! (4.6 s per level with the defaults), and each level's hooks run before its kill. An
//! announcement is honoured up to 120 s, so a lying child cannot hold its parent forever.
//! A process actor that receives SIGTERM while it has live children does not die of it:
//! it goes on tearing them down (a leaf dies of SIGTERM as usual). An actor whose runtime
//! is blocked cannot announce or run ladders: its parent terminates and kills it after
//! the usual bounds, and its children die with it (parent-death signal) without hooks.
//!
//! Hooks get the vars the parent built for the child (its spawn spec), never the parent's
//! own (`runtime_vars::current()`): whether a child may be sitting in a debugger is that
//! child's mode, and a tree may mix modes.
//!
//! [`TeardownHook::before_hard_reap`]: spawn_api::TeardownHook::before_hard_reap
//! [`TeardownHook::before_terminate`]: spawn_api::TeardownHook::before_terminate

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use runtime_vars::RuntimeVars;
use tokio::sync::watch;
use tokio::time::Instant;

use spawn_api::{ActorId, Child, ChildExit, TeardownHook, TeardownPolicy};

/// The ladder step that ended a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// It ended on its own.
    Finished,
    /// It ended after the cancel request.
    Cancelled,
    /// It ended after being terminated.
    Terminated,
    /// It ended after being killed.
    Killed,
    /// It could not be stopped and was left behind.
    Abandoned,
}

/// How a child's teardown ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaped {
    /// Its final status.
    pub exit: ChildExit,
    /// The step that ended it.
    pub step: Step,
}

/// What became of one child, recorded when it was reaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildReport {
    /// The child's tree path.
    pub actor: String,
    /// Its process id, if it had one.
    pub pid: Option<u32>,
    /// How it ended.
    pub exit: ChildExit,
    /// The ladder step that ended it ([`Step::Finished`] if it ended on its own).
    pub step: Step,
    /// How long its teardown took, from the order to the reap (zero if it ended on its
    /// own).
    pub teardown: Duration,
}

/// What the ladder tells its caller about its progress: when it will be over at the
/// latest (`None`: in a hook, unbounded).
pub(crate) type Progress<'a> = &'a (dyn Fn(Option<Instant>) + Send + Sync);

/// Run the ladder on `child`, starting with a soft wait of `soft` (`None`: no soft
/// wait, go straight to the cancel request). `request_cancel` sends the IPC cancel
/// request; its failure (the channel is already gone) just moves on to waiting.
/// `stopping` carries the child's announcements of its own teardown (see the module
/// docs), which extend the cancel step; `progress` hears when the ladder will be over.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_ladder<F>(
    child: &mut dyn Child,
    id: &ActorId,
    vars: &RuntimeVars,
    policy: &TeardownPolicy,
    hooks: &[Arc<dyn TeardownHook>],
    soft: Option<Duration>,
    request_cancel: F,
    mut stopping: Option<watch::Receiver<Option<Instant>>>,
    progress: Progress<'_>,
) -> Reaped
where
    F: Future<Output = ()>,
{
    if let Some(soft) = soft
        && let Ok(exit) = tokio::time::timeout(soft, child.wait()).await
    {
        return Reaped {
            exit,
            step: Step::Finished,
        };
    }

    tracing::debug!(actor = %id, "teardown: cancel request");
    request_cancel.await;
    let after_cancel = policy.kill_after + policy.reap_timeout;
    let mut deadline = Instant::now() + policy.cancel_timeout;
    if let Some(rx) = &mut stopping
        && let Some(until) = *rx.borrow_and_update()
    {
        deadline = deadline.max(until);
    }
    progress(Some(deadline + after_cancel));
    loop {
        let announced = async {
            match &mut stopping {
                Some(rx) => rx.changed().await.ok().map(|()| *rx.borrow_and_update()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            exit = child.wait() => {
                return Reaped {
                    exit,
                    step: Step::Cancelled,
                };
            }
            _ = tokio::time::sleep_until(deadline) => break,
            a = announced => match a {
                Some(Some(until)) if until > deadline => {
                    tracing::debug!(actor = %id, within = ?until - Instant::now(), "teardown: the child is tearing down its own children");
                    deadline = until;
                    progress(Some(deadline + after_cancel));
                }
                Some(_) => {}
                // The channel is gone: no more announcements.
                None => stopping = None,
            },
        }
    }

    // The child's own vars (from its spawn spec), not this actor's: see the module docs.
    if !hooks.is_empty() {
        progress(None);
        for hook in hooks {
            hook.before_terminate(id, vars).await;
        }
        // A hook may have waited a long time: the child may have ended meanwhile.
        if let Ok(exit) = tokio::time::timeout(Duration::ZERO, child.wait()).await {
            return Reaped {
                exit,
                step: Step::Cancelled,
            };
        }
    }

    tracing::warn!(actor = %id, after = ?policy.cancel_timeout, "teardown: child ignored the cancel request; terminating");
    if let Err(e) = child.terminate() {
        tracing::debug!(actor = %id, error = %e, "terminate failed");
    }
    progress(Some(Instant::now() + after_cancel));
    if let Ok(exit) = tokio::time::timeout(policy.kill_after, child.wait()).await {
        return Reaped {
            exit,
            step: Step::Terminated,
        };
    }

    progress(None);
    // The child's own vars, as for the terminate step.
    for hook in hooks {
        hook.before_hard_reap(id, vars).await;
    }
    // A hook may have waited a long time: the child may have ended meanwhile.
    if let Ok(exit) = tokio::time::timeout(Duration::ZERO, child.wait()).await {
        return Reaped {
            exit,
            step: Step::Terminated,
        };
    }

    tracing::warn!(actor = %id, "teardown: killing child");
    if let Err(e) = child.kill() {
        tracing::debug!(actor = %id, error = %e, "kill failed");
    }
    progress(Some(Instant::now() + policy.reap_timeout));
    match tokio::time::timeout(policy.reap_timeout, child.wait()).await {
        Ok(ChildExit::Abandoned { reason }) => Reaped {
            exit: ChildExit::Abandoned { reason },
            step: Step::Abandoned,
        },
        Ok(exit) => Reaped {
            exit,
            step: Step::Killed,
        },
        Err(_) => Reaped {
            exit: ChildExit::Abandoned {
                reason: format!("no exit status {:?} after the kill", policy.reap_timeout),
            },
            step: Step::Abandoned,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spawn_api::async_trait;
    use std::io;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Shared {
        exit: Mutex<Option<ChildExit>>,
        notify: tokio::sync::Notify,
    }

    impl Shared {
        fn die(&self, exit: ChildExit) {
            *self.exit.lock().unwrap() = Some(exit);
            self.notify.notify_waiters();
        }
    }

    /// A fake child that dies at a chosen ladder step, logging the signals it gets.
    #[derive(Debug)]
    struct Fake {
        dies_on: Step,
        shared: Arc<Shared>,
        log: Arc<Recorder>,
    }

    #[async_trait]
    impl Child for Fake {
        fn pid(&self) -> Option<u32> {
            None
        }
        async fn wait(&mut self) -> ChildExit {
            loop {
                let notified = self.shared.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(e) = self.shared.exit.lock().unwrap().clone() {
                    return e;
                }
                notified.await;
            }
        }
        fn terminate(&mut self) -> io::Result<()> {
            self.log.log("SIGTERM".into());
            if self.dies_on == Step::Terminated {
                self.shared.die(ChildExit::Signaled {
                    signal: 15,
                    core_dumped: false,
                });
            }
            Ok(())
        }
        fn kill(&mut self) -> io::Result<()> {
            self.log.log("SIGKILL".into());
            if self.dies_on == Step::Killed {
                self.shared.die(ChildExit::Signaled {
                    signal: 9,
                    core_dumped: false,
                });
            }
            Ok(())
        }
    }

    /// What happened to the child, in order: hook calls (`hook:<point>:<child>:<its
    /// debug mode>`) and signals (`SIGTERM`, `SIGKILL`).
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Recorder {
        fn log(&self, what: String) {
            self.0.lock().unwrap().push(what);
        }

        fn events(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    #[async_trait]
    impl TeardownHook for Recorder {
        async fn before_terminate(&self, child: &ActorId, vars: &RuntimeVars) {
            self.log(format!(
                "hook:terminate:{}:{}",
                child.name(),
                vars.debug_mode
            ));
        }

        async fn before_hard_reap(&self, child: &ActorId, vars: &RuntimeVars) {
            self.log(format!("hook:kill:{}:{}", child.name(), vars.debug_mode));
        }
    }

    async fn ladder(dies_on: Step, hook: Arc<Recorder>) -> (Reaped, Duration) {
        ladder_with(dies_on, hook, None).await
    }

    async fn ladder_with(
        dies_on: Step,
        hook: Arc<Recorder>,
        stopping: Option<watch::Receiver<Option<Instant>>>,
    ) -> (Reaped, Duration) {
        let shared = Arc::new(Shared::default());
        let mut child = Fake {
            dies_on,
            shared: shared.clone(),
            log: hook.clone(),
        };
        let id = ActorId::new("kid");
        // The parent (this actor) is not in debug mode; the child it built vars for is.
        let parent = RuntimeVars::root("root", "proc");
        assert!(!parent.debug_mode);
        let mut vars = parent.for_child("kid", "root@1");
        vars.debug_mode = true;
        let hooks: Vec<Arc<dyn TeardownHook>> = vec![hook];
        let policy = TeardownPolicy {
            reap_timeout: Duration::from_millis(300),
            ..TeardownPolicy::default()
        };
        let request = async move {
            if dies_on == Step::Cancelled {
                shared.die(ChildExit::Exited(0));
            }
        };
        let start = tokio::time::Instant::now();
        let reaped = run_ladder(
            &mut child,
            &id,
            &vars,
            &policy,
            &hooks,
            None,
            request,
            stopping,
            &|_| {},
        )
        .await;
        (reaped, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn each_step_is_taken_only_when_needed_and_within_bounds() {
        let hook = Arc::new(Recorder::default());
        let (r, t) = ladder(Step::Cancelled, hook.clone()).await;
        assert_eq!((r.step, t), (Step::Cancelled, Duration::ZERO));
        assert_eq!(r.exit, ChildExit::Exited(0));

        assert!(hook.events().is_empty(), "no hook for a child that obeyed");

        let (r, t) = ladder(Step::Terminated, hook.clone()).await;
        assert_eq!(r.step, Step::Terminated);
        assert_eq!(t, Duration::from_millis(500));
        assert_eq!(
            hook.events(),
            ["hook:terminate:kid:true", "SIGTERM"],
            "the terminate hook runs before any signal, with the child's vars"
        );

        let (r, t) = ladder(Step::Killed, hook.clone()).await;
        assert_eq!(r.step, Step::Killed);
        assert_eq!(t, Duration::from_millis(2100));
        assert_eq!(
            hook.events(),
            [
                "hook:terminate:kid:true",
                "SIGTERM",
                "hook:kill:kid:true",
                "SIGKILL"
            ],
            "each hook point before its signal, with the child's vars"
        );

        let (r, t) = ladder(Step::Abandoned, hook.clone()).await;
        assert_eq!(r.step, Step::Abandoned);
        assert!(matches!(r.exit, ChildExit::Abandoned { .. }));
        assert_eq!(t, Duration::from_millis(2400));
    }

    /// A hook that waits (a person in the debugger) holds the terminate: the child is
    /// signalled only once the hook returns, and a child that ends meanwhile is reaped as
    /// cancelled without any signal.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_terminate_hook_holds_every_signal() {
        #[derive(Debug)]
        struct Debugger {
            log: Arc<Recorder>,
            shared: Arc<Shared>,
            exit_while_waiting: bool,
        }
        #[async_trait]
        impl TeardownHook for Debugger {
            async fn before_terminate(&self, _child: &ActorId, vars: &RuntimeVars) {
                if vars.debug_mode {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    if self.exit_while_waiting {
                        self.shared.die(ChildExit::Exited(0));
                    }
                }
                self.log.log("released".into());
            }
            async fn before_hard_reap(&self, _child: &ActorId, _vars: &RuntimeVars) {}
        }
        for exit_while_waiting in [false, true] {
            let log = Arc::new(Recorder::default());
            let shared = Arc::new(Shared::default());
            let mut child = Fake {
                dies_on: Step::Terminated,
                shared: shared.clone(),
                log: log.clone(),
            };
            let mut vars = RuntimeVars::root("root", "proc").for_child("kid", "root@1");
            vars.debug_mode = true;
            let hooks: Vec<Arc<dyn TeardownHook>> = vec![Arc::new(Debugger {
                log: log.clone(),
                shared,
                exit_while_waiting,
            })];
            let start = Instant::now();
            let r = run_ladder(
                &mut child,
                &ActorId::new("kid"),
                &vars,
                &TeardownPolicy::default(),
                &hooks,
                None,
                async {},
                None,
                &|_| {},
            )
            .await;
            assert!(start.elapsed() >= Duration::from_secs(30));
            if exit_while_waiting {
                assert_eq!(r.step, Step::Cancelled);
                assert_eq!(log.events(), ["released"], "never signalled");
            } else {
                assert_eq!(r.step, Step::Terminated);
                assert_eq!(log.events(), ["released", "SIGTERM"]);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_announced_subtree_teardown_extends_the_cancel_step() {
        let hook = Arc::new(Recorder::default());
        let (tx, rx) = watch::channel(None);
        // The child says at once that it needs 3 s, then at 2 s that it needs 2 s more.
        tx.send_replace(Some(Instant::now() + Duration::from_secs(3)));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            tx.send_replace(Some(Instant::now() + Duration::from_secs(2)));
            std::future::pending::<()>().await;
        });
        let (r, t) = ladder_with(Step::Terminated, hook.clone(), Some(rx)).await;
        assert_eq!(r.step, Step::Terminated);
        assert_eq!(
            t,
            Duration::from_secs(4),
            "terminated only after the extension"
        );

        // A lying child cannot hold the ladder past what it announced.
        let (tx, rx) = watch::channel(Some(Instant::now() + Duration::from_millis(100)));
        let (r, t) = ladder_with(Step::Terminated, hook, Some(rx)).await;
        drop(tx);
        assert_eq!((r.step, t), (Step::Terminated, Duration::from_millis(500)));
    }
}
