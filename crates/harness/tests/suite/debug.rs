//! Debug mode's teardown, on the cell's backend and transport: a ladder asks the root
//! whether a child's subtree holds or waits for the debugger lock before it signals the
//! child — judged by the vars the parent built for *that child*, never the parent's own.
//! Each test would fail if the hook were handed the parent's vars (see each one).
//!
//! "In the debugger" is played by [`HoldDebugLock`]: the actor takes the lock, then
//! blocks its (single-threaded) runtime until a file appears, as a person at a prompt
//! would: nothing reaches the actor meanwhile, its parent's cancel request included.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brood::{ActorOptions, ChildReport, RuntimeFlavor, Step, TeardownPolicy};
use harness::Failed;
use harness::functions::*;

use crate::common::*;

crate::tests!(
    a_child_in_the_debugger_is_not_signalled_until_it_releases,
    a_child_not_in_debug_mode_is_reaped_on_time_while_a_sibling_debugs,
    a_middle_actor_waits_while_its_grandchild_is_in_the_debugger,
    python_in_a_debug_mode_actor_leaves_nothing_behind,
    a_cancel_request_waits_for_a_shielded_session,
    a_sigkilled_holder_hands_the_lock_to_the_next_waiter_proc on "proc",
    a_sigkilled_holder_hands_the_lock_to_the_next_waiter_fork on "fork",
);

/// Short bounds, so "on time" and "held past them" are far apart.
fn quick() -> TeardownPolicy {
    TeardownPolicy {
        cancel_timeout: Duration::from_millis(200),
        kill_after: Duration::from_millis(300),
        reap_timeout: Duration::from_secs(1),
        ..TeardownPolicy::default()
    }
}

/// A path the test creates to let the holder go; removed when dropped.
struct Release(PathBuf);

impl Release {
    fn new() -> Release {
        static N: AtomicUsize = AtomicUsize::new(0);
        Release(std::env::temp_dir().join(format!(
            "brood-debug-release-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )))
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    /// Create the file after `after`, from another thread.
    fn after(&self, after: Duration) {
        let p = self.0.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            std::fs::write(p, b"go").expect("write the release file");
        });
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Give a holder that sent `started` the moment it takes to stop (it lets `started`
/// leave first).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn report<'a>(reports: &'a [ChildReport], actor: &str) -> &'a ChildReport {
    reports
        .iter()
        .find(|r| r.actor == actor)
        .unwrap_or_else(|| panic!("no report for {actor}: {reports:?}"))
}

/// (a) The root is not in debug mode; its child is, and holds the lock. Cancelled, the
/// child is neither terminated nor killed until it releases (2 s, well past the 0.5 s
/// the ladder takes otherwise). With the parent's vars (debug off) the hook would not
/// wait and the child would be signalled after 0.2 s.
fn a_child_in_the_debugger_is_not_signalled_until_it_releases() -> Result<(), Failed> {
    let release = Release::new();
    let hold = scaled(Duration::from_secs(2));
    let (took, reports) = within_deadline(harness::root().teardown(quick()).run(async |n| {
        let c = n
            .start_actor("dbg", ActorOptions::new().vars(|v| v.debug_mode(true)))
            .await?;
        let (_held, ()) = c.open_context(HoldDebugLock, release.path()).await?;
        settle().await;
        release.after(hold);
        let t = Instant::now();
        n.cancel().await;
        Ok((t.elapsed(), n.reports()))
    }))?;
    assert!(
        took >= hold,
        "the child in the debugger was torn down after {took:?}, before it released ({hold:?})"
    );
    let r = report(&reports, "root/dbg");
    assert_ne!(r.step, Step::Killed, "never killed: {r:?}");
    Ok(())
}

/// (b) The root is in debug mode, a sibling holds the lock for 3 s, and a child that is
/// not in debug mode is stuck in blocking code: that child is torn down within the
/// usual bound, with no debugger delay, while the sibling's teardown waits for its
/// release. With the parent's vars (debug on, the whole tree `root`) the hook would see
/// the sibling and hold the stuck child for 3 s.
fn a_child_not_in_debug_mode_is_reaped_on_time_while_a_sibling_debugs() -> Result<(), Failed> {
    let release = Release::new();
    let hold = scaled(Duration::from_secs(3));
    let reports = within_deadline(
        harness::root()
            .teardown(quick())
            .vars(|v| v.debug_mode(true))
            .run(async |n| {
                let holder = n.start_actor("holder", ActorOptions::new()).await?;
                let stuck = n
                    .start_actor(
                        "stuck",
                        ActorOptions::new()
                            .runtime(RuntimeFlavor::MultiThread(2))
                            .vars(|v| v.debug_mode(false)),
                    )
                    .await?;
                let (_held, ()) = holder.open_context(HoldDebugLock, release.path()).await?;
                let (_blocked, ()) = stuck.open_context(Stubborn, false).await?;
                settle().await;
                release.after(hold);
                n.cancel().await;
                Ok(n.reports())
            }),
    )?;
    let stuck = report(&reports, "root/stuck");
    let holder = report(&reports, "root/holder");
    assert!(
        stuck.teardown < scaled(Duration::from_millis(1800)),
        "the child outside debug mode waited for the debugger: {stuck:?}"
    );
    assert!(
        holder.teardown >= hold - scaled(Duration::from_millis(500)),
        "the sibling in the debugger was not waited for: {holder:?}"
    );
    Ok(())
}

/// (c) A grandchild in debug mode holds the lock and its parent (`middle`, not in debug
/// mode, like the root) is cancelled: `middle` waits for its child, judged by the
/// child's vars, and tells the root it is still tearing down, so the root waits too,
/// until the grandchild releases. With the parent's vars `middle` (debug off) would
/// terminate the grandchild after 0.2 s.
fn a_middle_actor_waits_while_its_grandchild_is_in_the_debugger() -> Result<(), Failed> {
    let release = Release::new();
    let hold = scaled(Duration::from_secs(2));
    let (took, reports) = within_deadline(harness::root().teardown(quick()).run(async |n| {
        let middle = n.start_actor("middle", ActorOptions::new()).await?;
        let (_held, _leaf) = middle
            .open_context(ChildHoldsDebugLock, ("leaf".to_owned(), release.path()))
            .await?;
        settle().await;
        release.after(hold);
        let t = Instant::now();
        n.cancel().await;
        Ok((t.elapsed(), n.reports()))
    }))?;
    assert!(
        took >= hold,
        "the middle actor was torn down after {took:?}, while its child was in the \
         debugger ({hold:?})"
    );
    let r = report(&reports, "root/middle");
    assert_ne!(r.step, Step::Killed, "never killed: {r:?}");
    Ok(())
}

/// The holder (a grandchild, so that its death fails its parent's call, not the root's
/// nursery) is SIGKILLed while another actor waits for the lock: the root sees the
/// holder's channel close and hands the lock on within 1 s. Process backends only: an
/// in-process holder blocked in its thread cannot be killed alone.
fn a_sigkilled_holder_hands_the_lock_to_the_next_waiter(backend: &str) -> Result<(), Failed> {
    let release = Release::new();
    within_deadline(harness::root().teardown(quick()).run(async |n| {
        let opts = || ActorOptions::new().backend(backend);
        let middle = n.start_actor("middle", opts()).await?;
        let waiter = n.start_actor("waiter", opts()).await?;
        let (held, leaf) = middle
            .open_context(ChildHoldsDebugLock, ("leaf".to_owned(), release.path()))
            .await?;
        settle().await;
        let waited = waiter.run(TakeDebugLock, ());
        tokio::pin!(waited);
        // The waiter is queued behind the holder.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut waited)
                .await
                .is_err(),
            "the waiter got the lock while the holder held it"
        );
        let killed_at = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(leaf.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| brood::FnError::new("Errno", e.to_string()))?;
        let _ = waited.await?;
        let handed = killed_at.elapsed();
        assert!(
            handed < scaled(Duration::from_secs(1)),
            "the lock reached the next waiter {handed:?} after its holder was killed"
        );
        // The middle actor's call fails (its child was killed); the root goes on.
        assert!(held.result().await.is_err());
        Ok(())
    }))?;
    Ok(())
}

fn a_sigkilled_holder_hands_the_lock_to_the_next_waiter_proc() -> Result<(), Failed> {
    a_sigkilled_holder_hands_the_lock_to_the_next_waiter("proc")
}

fn a_sigkilled_holder_hands_the_lock_to_the_next_waiter_fork() -> Result<(), Failed> {
    a_sigkilled_holder_hands_the_lock_to_the_next_waiter("fork")
}

/// Python in an actor in debug mode gets `breakpoint()` wired to the lock (a pipe pair,
/// a thread, a task); the actor's end takes all of it along (the leak checks after the
/// test: threads, descriptors). The prompt itself is tested at a terminal
/// (`tests/debug_pty.rs`).
fn python_in_a_debug_mode_actor_leaves_nothing_behind() -> Result<(), Failed> {
    with_root(async |n| {
        let c = n
            .start_actor("py", ActorOptions::new().vars(|v| v.debug_mode(true)))
            .await?;
        c.run(
            brood::python::Exec,
            "import sys\nhook = sys.breakpointhook".into(),
        )
        .await?;
        let name = c
            .run(
                brood::python::Eval,
                "getattr(sys.breakpointhook, '__name__', '')".into(),
            )
            .await?;
        assert_eq!(name.as_str(), Some("hook"), "breakpoint() is brood's");
        Ok(())
    })?;
    Ok(())
}

/// What keeps a debugger session (pause's prompt, a `pdb` session) from being cut
/// short: a cancel request that arrives while the actor holds a cancel shield takes
/// effect only when the shield goes, though the actor's runtime runs meanwhile.
fn a_cancel_request_waits_for_a_shielded_session() -> Result<(), Failed> {
    let r = with_root(async |n| {
        let c = n.start_actor("shielded", ActorOptions::new()).await?;
        let other = n.start_actor("other", ActorOptions::new()).await?;
        let who = c.run(WhoAmI, ()).await?;
        let session = c.run(ShieldFor, 1500);
        tokio::pin!(session);
        // The shield is up once the call started; then a peer asks the actor to stop
        // (the request alone, as the first step of a parent's ladder would).
        let _ = tokio::time::timeout(Duration::from_millis(300), &mut session).await;
        let t = Instant::now();
        let (done, _) = tokio::join!(&mut session, other.run(CancelVia, who.addr.clone()));
        assert!(done?, "the session ran to its end");
        assert!(
            t.elapsed() >= Duration::from_millis(1000),
            "the session was cut short after {:?}",
            t.elapsed()
        );
        // Then the deferred cancel ends the actor.
        poll_until_async(Duration::from_secs(5), "the actor ends", async || {
            harness::is_gone(&who)
        })
        .await;
        Ok(())
    });
    match r {
        Ok(()) => Ok(()),
        // The actor ended on a cancel it did not get from its parent: the root may
        // report it as a child that exited cleanly, or not at all; anything else fails.
        Err(e) => Err(format!("{e}").into()),
    }
}
