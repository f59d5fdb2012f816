//! Log set-up for actor processes.
//!
//! A child process prints its `tracing` events to the stderr it shares with its parent;
//! every event inside an actor carries the `actor` span with the actor's tree path, so
//! interleaved lines from a whole tree say where they come from.
//!
//! While another actor of the tree holds the terminal for a debugger prompt (its process
//! group is the terminal's foreground group, which otherwise is the tree's own), lines
//! are held back and printed once the prompt gives the terminal back, so they never
//! land inside a person's session. At most [`MAX_HELD_LINES`] are kept; older ones are
//! dropped and counted.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The most log lines held back while the terminal is held.
pub const MAX_HELD_LINES: usize = 4096;

/// The key of [`RuntimeVars::services`](runtime_vars::RuntimeVars) under which a root
/// records its terminal's foreground group (the tree's own) when it starts.
pub(crate) const TERMINAL_GROUP_SERVICE: &str = "terminal.foreground";

/// The tree's terminal foreground group (0: unknown, nothing is ever held).
static TREE_GROUP: AtomicI32 = AtomicI32::new(0);
static HELD: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());
static DROPPED: AtomicUsize = AtomicUsize::new(0);
static WATCHING: AtomicBool = AtomicBool::new(false);

/// The terminal's foreground group when this process starts a root: what a child
/// records with [`set_tree_group`]. `None` when stderr is not a terminal.
pub(crate) fn terminal_group() -> Option<i32> {
    os_wrappers::tty::foreground_group(&std::io::stderr())
}

/// Remember the tree's terminal group (from the vars its parent built): lines are held
/// while another group has the terminal.
pub(crate) fn set_tree_group(group: i32) {
    TREE_GROUP.store(group, Ordering::Relaxed);
}

/// Whether another actor of the tree holds the terminal now.
fn terminal_held() -> bool {
    let tree = TREE_GROUP.load(Ordering::Relaxed);
    if tree == 0 {
        return false;
    }
    match terminal_group() {
        Some(fg) => fg != tree && fg != os_wrappers::tty::own_group(),
        None => false,
    }
}

fn held() -> std::sync::MutexGuard<'static, VecDeque<Vec<u8>>> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Print what was held back (and how much was dropped).
fn release_held(err: &mut impl Write) {
    let lines: Vec<Vec<u8>> = held().drain(..).collect();
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(
            err,
            "brood: {dropped} log lines were dropped while a debugger held the terminal"
        );
    }
    for l in lines {
        let _ = err.write_all(&l);
    }
}

/// One event's formatted line, printed (or held) when the formatter is done with it.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.0);
        if terminal_held() {
            let mut h = held();
            if h.len() == MAX_HELD_LINES {
                h.pop_front();
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            h.push_back(line);
            drop(h);
            watch_until_released();
            return;
        }
        let mut err = std::io::stderr().lock();
        if !held().is_empty() || DROPPED.load(Ordering::Relaxed) > 0 {
            release_held(&mut err);
        }
        let _ = err.write_all(&line);
    }
}

/// A thread that prints the held lines once the terminal is given back (one at a time).
fn watch_until_released() {
    if WATCHING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("brood-log-hold".into())
        .spawn(|| {
            while terminal_held() {
                std::thread::sleep(Duration::from_millis(100));
            }
            release_held(&mut std::io::stderr().lock());
            WATCHING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        WATCHING.store(false, Ordering::Release);
    }
}

/// Stderr, one event at a time, held back while the terminal is held.
#[derive(Clone, Copy, Debug)]
struct TreeStderr;

impl<'a> MakeWriter<'a> for TreeStderr {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

/// Environment variable that sets the log filter of a tree (`BROOD_LOG=debug`); the
/// root reads it and passes it down in the runtime vars.
pub const LOG_ENV: &str = "BROOD_LOG";

/// The filter a new root uses: `BROOD_LOG`, else `warn`.
pub fn default_level() -> String {
    std::env::var(LOG_ENV).unwrap_or_else(|_| "warn".to_owned())
}

/// Install a stderr formatter with `level` as filter for this process, unless the
/// program installed a subscriber already. Returns whether this call installed one.
///
/// An invalid directive falls back to `warn` (and says so) rather than failing the
/// actor.
pub fn init_process_logging(level: &str) -> bool {
    let fmt = tracing_subscriber::fmt()
        .with_writer(TreeStderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A plain level ("warn", the default) needs no directive parser: every child pays
    // for this at start-up.
    if let Ok(max) = level.parse::<tracing_subscriber::filter::LevelFilter>() {
        return fmt.with_max_level(max).try_init().is_ok();
    }
    let filter = match EnvFilter::try_new(level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("brood: invalid log filter {level:?} ({e}); using \"warn\"");
            EnvFilter::new("warn")
        }
    };
    fmt.with_env_filter(filter).try_init().is_ok()
}

/// The span every task of an actor runs in. At error level so that it is enabled (and
/// names the actor) whatever level the filter lets through.
pub(crate) fn actor_span(path: &str) -> tracing::Span {
    tracing::error_span!(parent: None, "actor", path = %path)
}
