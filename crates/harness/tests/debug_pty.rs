//! Debug mode at a terminal: each test starts this program again as a small tree in
//! debug mode under a pseudo-terminal (`expectrl`) and types at `pause()`'s prompt as a
//! person would. Runs on the backend named by `BROOD_BACKEND` (its actors are this
//! program too); needs no standard input.
//!
//! - two actors pause at once and are served one after the other (`bt`, `vars`, `c`);
//! - Ctrl-C at the prompt reaches the prompt, not the tree;
//! - `q` cancels the paused actor;
//! - a handler that fails or panics stops at the prompt (post-mortem) first;
//! - Python's `breakpoint()` (the `python` service) gives a `(Pdb)` prompt under the lock;
//! - another actor's log lines wait until the session ends.
//!
//! - the holder (a grandchild) is SIGKILLed and the next waiter gets the terminal.

use std::process::Command;
use std::time::Duration;

use brood::{ActorCx, ActorOptions, FnError, Registry};
use expectrl::{Eof, Regex, Session};
use libtest_mimic::{Arguments, Failed, Trial};

/// Set (to the demo's name) in the program started under the terminal.
const DEMO_ENV: &str = "BROOD_PTY_DEMO";

brood::call!(
    /// Pauses (debug mode), then returns `n * 2`.
    Work = "pty.work": u32 => u32
);

brood::call!(
    /// Starts a child named `leaf` and has it run [`Work`].
    WorkInChild = "pty.work_in_child": u32 => u32
);
brood::call!(
    /// Logs `tick <i>` at warn level every 50 ms, `n` times.
    Tick = "pty.tick": u32 => ()
);
brood::call!(
    /// Fails with an error (`true`) or panics (`false`).
    Boom = "pty.boom": bool => ()
);

fn registry() -> Registry {
    Registry::new()
        .call(WorkInChild, |cx: ActorCx, n: u32| async move {
            Ok(cx
                .open_nursery(async |nursery| {
                    let leaf = nursery.start_actor("leaf", ActorOptions::new()).await?;
                    Ok(leaf.run(Work, n).await?)
                })
                .await?)
        })
        .call(Tick, |_cx, n: u32| async move {
            for i in 0..n {
                tracing::warn!("tick {i}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        })
        .call(Boom, |_cx, error: bool| async move {
            if error {
                return Err(FnError::new("ValueError", "boom"));
            }
            panic!("kaboom");
        })
        .call(Work, |cx: ActorCx, n: u32| async move {
            let resume = brood::debug::pause(&cx)
                .await
                .map_err(|e| FnError::new("DebugLockError", e.to_string()))?;
            if resume == brood::debug::Resume::Quit {
                return Err(FnError::new(
                    brood::kinds::CANCELLED,
                    "quit at the debugger prompt",
                ));
            }
            Ok(n * 2)
        })
}

/// The tree the tests drive: `two` (a and b pause at once), `quit` (a pauses once).
fn demo(actors: &brood::Brood, which: &str) -> i32 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let r = rt.block_on(
        actors
            .root()
            .name("root")
            .vars(|v| v.debug_mode(true))
            .run(async |n| {
                let a = n.start_actor("a", ActorOptions::new()).await?;
                if let Some(error) = which.strip_prefix("crash-") {
                    let r = a.run(Boom, error == "error").await;
                    println!("DEMO-CRASH {}", r.is_err());
                    return Ok(());
                }
                if which == "py" {
                    use brood::python::{Eval, Exec};
                    a.run(Exec, "x = 41\nbreakpoint()\ny = x + 1".into())
                        .await?;
                    println!("DEMO-PY {:?}", a.run(Eval, "y".into()).await?);
                    return Ok(());
                }
                if which == "kill" {
                    // The holder is a grandchild: its death fails its parent's call,
                    // not the root's nursery (which would cancel the waiter).
                    let m = n.start_actor("m", ActorOptions::new()).await?;
                    let first = m.run(WorkInChild, 1);
                    tokio::pin!(first);
                    // Let the grandchild take the lock first.
                    let _ = tokio::time::timeout(Duration::from_millis(1500), &mut first).await;
                    let (x, y) = tokio::join!(first, a.run(Work, 2));
                    println!("DEMO-KILL {} {:?}", x.is_err(), y.ok());
                    return Ok(());
                }
                if which == "noisy" {
                    let b = n.start_actor("b", ActorOptions::new()).await?;
                    let (x, t) = tokio::join!(a.run(Work, 1), b.run(Tick, 60));
                    println!("DEMO-NOISY {:?} {}", x.ok(), t.is_ok());
                    return Ok(());
                }
                if which == "quit" {
                    let r = a.run(Work, 1).await;
                    println!("DEMO-QUIT {}", r.is_err());
                    return Ok(());
                }
                let b = n.start_actor("b", ActorOptions::new()).await?;
                let (x, y) = tokio::join!(a.run(Work, 1), b.run(Work, 2));
                println!("DEMO-DONE {:?} {:?}", x.ok(), y.ok());
                Ok(())
            }),
    );
    match r {
        Ok(()) => 0,
        Err(e) => {
            println!("DEMO-ERROR {e}");
            1
        }
    }
}

fn start(which: &str) -> Result<Session, Failed> {
    let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    cmd.env(DEMO_ENV, which);
    let mut s = Session::spawn(cmd).map_err(|e| format!("spawn under a pty: {e}"))?;
    s.set_expect_timeout(Some(Duration::from_secs(30)));
    Ok(s)
}

fn fail(what: &str, e: impl std::fmt::Display) -> Failed {
    format!("{what}: {e}").into()
}

/// The path and pid of the actor whose banner comes next.
fn banner(s: &mut Session) -> Result<(String, u32), Failed> {
    let c = s
        .expect(Regex(r"debugger ── (root[a-z/]*) \(pid ([0-9]+)\) stopped"))
        .map_err(|e| fail("a banner", e))?;
    let path = String::from_utf8_lossy(c.get(1).unwrap_or_default()).into_owned();
    let pid = String::from_utf8_lossy(c.get(2).unwrap_or_default())
        .parse()
        .map_err(|e| fail("a pid", e))?;
    Ok((path, pid))
}

fn prompt(s: &mut Session, path: &str) -> Result<(), Failed> {
    s.expect(format!("(brood {path}) "))
        .map_err(|e| fail("the prompt", e))?;
    Ok(())
}

fn two_actors_are_served_one_after_the_other() -> Result<(), Failed> {
    let mut s = start("two")?;
    let (first, _) = banner(&mut s)?;
    prompt(&mut s, &first)?;
    s.send_line("vars").map_err(|e| fail("send", e))?;
    s.expect("debug_mode: true").map_err(|e| fail("vars", e))?;
    prompt(&mut s, &first)?;
    s.send_line("bt").map_err(|e| fail("send", e))?;
    s.expect("stop_here").map_err(|e| fail("a backtrace", e))?;
    prompt(&mut s, &first)?;
    s.send_line("c").map_err(|e| fail("send", e))?;
    let (second, _) = banner(&mut s)?;
    assert_ne!(first, second, "the other actor, after the first continued");
    prompt(&mut s, &second)?;
    s.send_line("c").map_err(|e| fail("send", e))?;
    s.expect("DEMO-DONE Some(2) Some(4)")
        .map_err(|e| fail("both calls returned", e))?;
    s.expect(Eof).map_err(|e| fail("the end", e))?;
    Ok(())
}

fn ctrl_c_reaches_the_prompt_not_the_tree() -> Result<(), Failed> {
    let mut s = start("quit")?;
    let (path, _) = banner(&mut s)?;
    prompt(&mut s, &path)?;
    s.send(expectrl::ControlCode::EndOfText)
        .map_err(|e| fail("send ^C", e))?;
    s.send_line("").map_err(|e| fail("send", e))?;
    s.expect("signals are held")
        .map_err(|e| fail("the prompt saw ^C", e))?;
    prompt(&mut s, &path)?;
    s.send_line("c").map_err(|e| fail("send", e))?;
    s.expect("DEMO-QUIT false")
        .map_err(|e| fail("the tree lived and the call returned", e))?;
    Ok(())
}

fn q_cancels_the_paused_actor() -> Result<(), Failed> {
    let mut s = start("quit")?;
    let (path, _) = banner(&mut s)?;
    prompt(&mut s, &path)?;
    s.send_line("q").map_err(|e| fail("send", e))?;
    s.expect(format!("cancelling {path}"))
        .map_err(|e| fail("q", e))?;
    s.expect("DEMO-QUIT true")
        .map_err(|e| fail("the call failed", e))?;
    Ok(())
}

fn a_failing_handler_stops_post_mortem_before_its_error_is_reported() -> Result<(), Failed> {
    for (mode, why) in [
        ("crash-error", "error ValueError: boom"),
        ("crash-panic", "panic kaboom"),
    ] {
        let mut s = start(mode)?;
        s.expect(format!("stopped: {why}"))
            .map_err(|e| fail(&format!("a post-mortem banner for {mode}"), e))?;
        prompt(&mut s, "root/a")?;
        s.send_line("c").map_err(|e| fail("send", e))?;
        s.expect("DEMO-")
            .map_err(|e| fail("the error reported after", e))?;
    }
    Ok(())
}

fn python_breakpoint_runs_pdb_under_the_lock() -> Result<(), Failed> {
    let mut s = start("py")?;
    s.expect("(Pdb) ").map_err(|e| fail("a pdb prompt", e))?;
    s.send_line("p x").map_err(|e| fail("send", e))?;
    s.expect("41").map_err(|e| fail("p x", e))?;
    s.expect("(Pdb) ")
        .map_err(|e| fail("the prompt again", e))?;
    s.send_line("c").map_err(|e| fail("send", e))?;
    s.expect("DEMO-PY Int(42)")
        .map_err(|e| fail("the code went on after c", e))?;
    Ok(())
}

/// While a process actor holds the terminal, another process actor's log lines are
/// held back, then printed once the prompt gives the terminal back. (Actors in the
/// holder's own process share its terminal group: their lines are not held; the
/// `subint` cell checks only that the session works.)
fn other_actors_output_waits_for_the_session() -> Result<(), Failed> {
    let mut s = start("noisy")?;
    let (path, _) = banner(&mut s)?;
    prompt(&mut s, &path)?;
    let in_process = std::env::var(brood::BACKEND_ENV).is_ok_and(|b| b == "subint");
    if !in_process {
        s.set_expect_timeout(Some(Duration::from_millis(1200)));
        if s.expect("tick").is_ok() {
            return Err("another actor's line appeared inside the session".into());
        }
        s.set_expect_timeout(Some(Duration::from_secs(30)));
    }
    s.send_line("c").map_err(|e| fail("send", e))?;
    if !in_process {
        s.expect("tick")
            .map_err(|e| fail("the held lines after the session", e))?;
    }
    s.expect("DEMO-NOISY Some(2) true")
        .map_err(|e| fail("both calls returned", e))?;
    Ok(())
}

/// The holder is SIGKILLed at its prompt: the root sees its channel close and hands
/// the lock (and the terminal) to the next waiter. Process backends: an in-process
/// holder shares the demo's pid, so the `subint` cell continues instead.
fn a_killed_holder_hands_the_terminal_to_the_next_waiter() -> Result<(), Failed> {
    let mut s = start("kill")?;
    let (first, pid) = banner(&mut s)?;
    assert_eq!(first, "root/m/leaf", "the grandchild holds it first");
    prompt(&mut s, &first)?;
    let in_process =
        pid == std::process::id() || std::env::var(brood::BACKEND_ENV).is_ok_and(|b| b == "subint");
    // The demo queues `root/a` behind the holder 1.5 s in.
    std::thread::sleep(Duration::from_millis(2000));
    if in_process {
        s.send_line("c").map_err(|e| fail("send", e))?;
    } else {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| fail("kill the holder", e))?;
    }
    s.set_expect_timeout(Some(Duration::from_secs(3)));
    let (second, _) = banner(&mut s)?;
    assert_eq!(second, "root/a");
    s.set_expect_timeout(Some(Duration::from_secs(30)));
    prompt(&mut s, &second)?;
    s.send_line("c").map_err(|e| fail("send", e))?;
    if !in_process {
        // `root/m`'s call failed with its child killed: in debug mode it stops
        // post-mortem, after `root/a` (first come, first served).
        let (third, _) = banner(&mut s)?;
        assert_eq!(third, "root/m");
        prompt(&mut s, &third)?;
        s.send_line("c").map_err(|e| fail("send", e))?;
    }
    let end = if in_process {
        "DEMO-KILL false Some(4)"
    } else {
        "DEMO-KILL true Some(4)"
    };
    s.expect(end)
        .map_err(|e| fail("the waiter's call returned", e))?;
    Ok(())
}

fn main() {
    let actors = brood::builder(registry()).build();
    // A spawned child runs its actor here and never returns.
    actors.enter();
    if let Ok(which) = std::env::var(DEMO_ENV) {
        brood::runtime::logging::init_process_logging("warn");
        std::process::exit(demo(&actors, &which));
    }
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test(
            "two_actors_are_served_one_after_the_other",
            two_actors_are_served_one_after_the_other,
        ),
        Trial::test(
            "ctrl_c_reaches_the_prompt_not_the_tree",
            ctrl_c_reaches_the_prompt_not_the_tree,
        ),
        Trial::test("q_cancels_the_paused_actor", q_cancels_the_paused_actor),
        Trial::test(
            "a_killed_holder_hands_the_terminal_to_the_next_waiter",
            a_killed_holder_hands_the_terminal_to_the_next_waiter,
        ),
        Trial::test(
            "other_actors_output_waits_for_the_session",
            other_actors_output_waits_for_the_session,
        ),
        Trial::test(
            "python_breakpoint_runs_pdb_under_the_lock",
            python_breakpoint_runs_pdb_under_the_lock,
        ),
        Trial::test(
            "a_failing_handler_stops_post_mortem_before_its_error_is_reported",
            a_failing_handler_stops_post_mortem_before_its_error_is_reported,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}
