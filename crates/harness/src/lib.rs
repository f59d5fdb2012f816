//! # harness: brood's test support
//!
//! - The test program's [`brood()`]: every backend and transport, serving
//!   [`functions::registry`]. The test binary's `main` is [`main`], which calls
//!   [`Brood::enter`] first, so the test binary is also every child's entry point.
//! - The cell under test comes from `BROOD_BACKEND` / `BROOD_TRANSPORT` (defaults `proc` /
//!   `uds`); [`root`] opens a root on it, in a runtime directory private to the test.
//! - [`run`] drives a future with a deadline.
//! - After every test, [`main`] checks that it leaked nothing: no descendant process, no
//!   thread or sub-interpreter, no file left in its runtime directory, no new open
//!   descriptor, no new mapping of brood's shared memory (`memfd`s named
//!   [`leaks::MEMFD_PREFIX`]).
//! - In-process (`subint`) actors share the test's pid: [`in_process`], [`is_gone`] and
//!   [`crash`] let tests check and do what they would with a child's pid.
//! - Skips are explicit, per cell, with a reason ([`SKIPS`]); they print in the summary
//!   and, with `BROOD_SKIP_REPORT`, are appended to that file for `cargo xtask test`.
//!
//! Works under `cargo test` (tests run one at a time in one process, so the leak checks
//! see only their own test) and `cargo nextest run` (one process per test).
//!
//! ## Who should depend on this crate
//!
//! Nothing outside this workspace's tests: it is test support for brood itself, not
//! published (`publish = false`), and its API changes with the suite, which lives in this
//! crate's own `tests/`. It depends on every crate of the workspace (the `brood` facade
//! and each crate by name), so no crate of the workspace may depend on it in turn.
//! Programs that want a test fixture of their own should build it on the `brood`
//! facade.

pub mod chaos;
pub mod context_fns;
pub mod discovery_fns;
pub mod functions;
pub mod leaks;
pub mod raw;
pub mod sandboxed;
pub mod supervision_fns;

use std::future::Future;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brood::{Brood, FnError, Nursery, Portal, PortalError, RootBuilder, RootError};
use ipc_shm::ShmTransport;
use ipc_uds::UdsTransport;
use spawn_fork::ForkBackend;
use spawn_proc::ProcBackend;
use spawn_subint::SubintBackend;

pub use libtest_mimic::Failed;

/// How long a test may run before it fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How long descendants may take to disappear after a test.
pub const REAP_GRACE: Duration = Duration::from_secs(5);

/// Environment variable naming a scenario to run instead of the tests (used by tests
/// that need a root in a process of its own).
pub const SCENARIO_ENV: &str = "BROOD_SCENARIO";

/// Environment variable carrying the runtime directory a scenario's root must use.
pub const TEST_DIR_ENV: &str = "BROOD_TEST_DIR";

/// Tests that cannot run on a cell, and why: (backend, transport, test, reason). `*`
/// matches any backend or transport. The goal is for this list to be empty.
pub const SKIPS: &[(&str, &str, &str, &str)] = &[];

/// The transports the harness knows, by key: every one the test program configures.
pub const TRANSPORTS: &[&str] = &[ipc_uds::KEY, ipc_shm::KEY];

/// The test program's actors: every backend and transport (`uds` first, the default),
/// serving the test functions.
pub fn brood() -> Brood {
    Brood::builder()
        .registry(
            functions::registry()
                .merge(discovery_fns::registry())
                .merge(context_fns::registry())
                .merge(supervision_fns::registry())
                .merge(brood::python::service())
                .merge(brood::debug::service()),
        )
        .backend(ProcBackend::new())
        .backend(ForkBackend::new())
        .backend(SubintBackend::new())
        .transport(UdsTransport::new())
        .transport(ShmTransport::new())
        .hook(functions::HookLog)
        .hook(brood::debug::DebugHook::default())
        .build()
}

/// The backend under test (`BROOD_BACKEND`, default `proc`).
pub fn backend() -> String {
    std::env::var(brood::BACKEND_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "proc".to_owned())
}

/// The transport under test (`BROOD_TRANSPORT`, default `uds`).
pub fn transport() -> String {
    std::env::var(brood::TRANSPORT_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "uds".to_owned())
}

static TEST_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The runtime directory of the running test (sockets of its trees go there).
pub fn test_dir() -> PathBuf {
    configured_test_dir().unwrap_or_else(ipc_uds::default_runtime_dir)
}

/// The test's own runtime directory, if a test (or a scenario it started) runs.
fn configured_test_dir() -> Option<PathBuf> {
    if let Some(d) = TEST_DIR.lock().unwrap().clone() {
        return Some(d);
    }
    std::env::var_os(TEST_DIR_ENV).map(PathBuf::from)
}

/// The Unix-socket transport in the test's runtime directory, or in the default one
/// (which the transport may replace if another user squats it) outside a test.
fn uds() -> UdsTransport {
    match configured_test_dir() {
        Some(d) => UdsTransport::new().with_dir(d),
        None => UdsTransport::new(),
    }
}

/// The shared-memory transport, its control sockets placed as [`uds`]'s sockets.
fn shm() -> ShmTransport {
    match configured_test_dir() {
        Some(d) => ShmTransport::new().with_dir(d),
        None => ShmTransport::new(),
    }
}

/// The backend of the cell under test, as configured in [`brood()`].
///
/// # Panics
/// If the cell names a backend the harness does not configure.
pub fn cell_backend() -> std::sync::Arc<dyn spawn_api::SpawnBackend> {
    brood()
        .backend(&backend())
        .unwrap_or_else(|e| panic!("harness: {e}"))
}

/// The transport of the cell under test, in the test's runtime directory.
///
/// # Panics
/// If the cell names a transport the harness does not know.
pub fn cell_transport() -> std::sync::Arc<dyn spawn_api::Transport> {
    match transport().as_str() {
        ipc_uds::KEY => std::sync::Arc::new(uds()),
        ipc_shm::KEY => std::sync::Arc::new(shm()),
        other => panic!(
            "harness: unknown transport {other:?} in {}",
            brood::TRANSPORT_ENV
        ),
    }
}

/// A root builder on the cell under test, with every transport in the test's runtime
/// directory (a child may choose another transport than the root's).
///
/// # Panics
/// If the cell names a transport the harness does not know.
pub fn root() -> RootBuilder {
    let cell = transport();
    assert!(
        TRANSPORTS.contains(&cell.as_str()),
        "harness: unknown transport {cell:?} in {}; known: {TRANSPORTS:?}",
        brood::TRANSPORT_ENV
    );
    brood()
        .root()
        .use_backend(backend())
        .transport(uds())
        .transport(shm())
        .use_transport(cell)
}

/// Run `fut` on a fresh two-worker runtime, failing the test if it takes longer than
/// `deadline`.
///
/// # Panics
/// When the deadline passes.
pub fn run<F: Future>(deadline: Duration, fut: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime");
    let out = rt.block_on(async {
        match tokio::time::timeout(deadline, fut).await {
            Ok(v) => v,
            Err(_) => panic!("test did not finish within {deadline:?}"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    out
}

/// Open a root on the cell under test, run `body` in its nursery, with [`DEADLINE`].
///
/// # Errors
/// The root's error.
pub fn with_root<R>(
    body: impl AsyncFnOnce(&Nursery) -> Result<R, FnError>,
) -> Result<R, RootError> {
    run(DEADLINE, root().run(body))
}

/// Whether the actor `who` runs in this (the test) process: an in-process
/// (sub-interpreter) actor, which shares our pid and has a thread of its own.
pub fn in_process(who: &functions::Who) -> bool {
    who.pid == std::process::id()
}

/// Whether the actor `who` is gone: for an actor of its own process, that process ended
/// (or is a zombie); for an in-process actor, its runtime's thread ended.
pub fn is_gone(who: &functions::Who) -> bool {
    if in_process(who) {
        leaks::thread_gone(who.tid)
    } else {
        leaks::is_dead(who.pid)
    }
}

/// [`is_gone`], allowing an in-process actor up to `bound`: its thread reports the actor's
/// exit status just before it returns, so it may outlive the reap by a moment (and no
/// event says when it has ended). A process actor is checked at once: its parent reaped
/// it before reporting it.
pub fn wait_gone(who: &functions::Who, bound: Duration) -> bool {
    if !in_process(who) {
        return is_gone(who);
    }
    let deadline = std::time::Instant::now() + bound;
    loop {
        if is_gone(who) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Crash the actor behind `portal` as a kill would ([`functions::Crash`]: a process actor
/// SIGKILLs itself, an in-process one aborts its runtime) and return the error the call
/// ended with (a crashed actor never replies).
///
/// # Cancel safety
///
/// Not cancel safe, as [`Portal::run`]: dropping the future cancels the call, and the
/// actor may or may not have crashed.
///
/// # Panics
/// If the call succeeds.
pub async fn crash(portal: &Portal) -> PortalError {
    match portal.run(functions::Crash, ()).await {
        Ok(()) => panic!("{} replied to t.crash", portal.path()),
        Err(e) => e,
    }
}

/// One integration test.
#[derive(Clone, Copy, Debug)]
pub struct Test {
    /// Its name (module path style).
    pub name: &'static str,
    /// Its body: panics (assertions) or errors fail it.
    pub run: fn() -> Result<(), Failed>,
}

/// A program a test can run as a separate root process: `BROOD_SCENARIO=<name>`.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Its name.
    pub name: &'static str,
    /// Its body; the process exits with 0 when it returns.
    pub run: fn(),
}

/// Why `name` is skipped on the cell under test, if it is.
pub fn skip_reason(name: &str) -> Option<&'static str> {
    let (b, t) = (backend(), transport());
    SKIPS
        .iter()
        .find(|(sb, st, sn, _)| (*sb == "*" || *sb == b) && (*st == "*" || *st == t) && *sn == name)
        .map(|(_, _, _, why)| *why)
}

fn report_skip(name: &str, why: &str) {
    let Some(path) = std::env::var_os("BROOD_SKIP_REPORT") else {
        return;
    };
    let line = format!("{}\t{}\t{name}\t{why}\n", backend(), transport());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line, so concurrent test processes do not interleave lines.
        let _ = f.write_all(line.as_bytes());
    }
}

fn new_test_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    // Short: socket paths must fit in 107 bytes.
    let d = PathBuf::from(format!(
        "/tmp/bt-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Run one test with its own runtime directory, then check for leaks.
fn run_checked(test: Test) -> Result<(), Failed> {
    let dir = new_test_dir();
    *TEST_DIR.lock().unwrap() = Some(dir.clone());
    leaks::reap_zombies();
    let fds = leaks::open_fds();
    let mappings = leaks::memfd_mappings();
    let threads = leaks::thread_count();
    let interpreters = spawn_subint::live_interpreters();
    let outcome = catch_unwind(AssertUnwindSafe(test.run));
    *TEST_DIR.lock().unwrap() = None;

    let mut problems = Vec::new();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(f)) => problems.push(
            f.message()
                .map(str::to_owned)
                .unwrap_or_else(|| "failed".to_owned()),
        ),
        Err(p) => problems.push(spawn_api::panic_message(&*p)),
    }
    let live = leaks::live_descendants_after(REAP_GRACE);
    if !live.is_empty() {
        problems.push(format!("leaked processes: {live:?}"));
    }
    if let Some(extra) = leaks::threads_settle(threads, REAP_GRACE) {
        problems.push(format!("leaked threads: {extra}"));
    }
    let deadline = std::time::Instant::now() + REAP_GRACE;
    while spawn_subint::live_interpreters() > interpreters && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if spawn_subint::live_interpreters() > interpreters {
        problems.push(format!(
            "leaked sub-interpreters: {} alive, {interpreters} before the test",
            spawn_subint::live_interpreters()
        ));
    }
    let files = leaks::files_under(&dir);
    if !files.is_empty() {
        problems.push(format!("leaked files in the runtime directory: {files:?}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let fds = leaks::new_fds(&fds);
    if !fds.is_empty() {
        problems.push(format!("leaked descriptors: {fds:?}"));
    }
    // An in-process actor's channels are unmapped as its runtime ends, which may be a
    // moment after its reap: allow the same grace as for threads.
    let deadline = std::time::Instant::now() + REAP_GRACE;
    while !leaks::new_memfd_mappings(&mappings).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mapped = leaks::new_memfd_mappings(&mappings);
    if !mapped.is_empty() {
        problems.push(format!("leaked shared-memory mappings: {mapped:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

/// The test binary's `main`: child entry point, scenario runner, and test runner.
pub fn main(tests: &[Test], scenarios: &[Scenario]) -> ! {
    let brood = brood();
    brood.enter();

    if let Ok(name) = std::env::var(SCENARIO_ENV) {
        let Some(s) = scenarios.iter().find(|s| s.name == name) else {
            eprintln!("harness: no scenario named {name:?}");
            std::process::exit(2);
        };
        (s.run)();
        std::process::exit(0);
    }

    if let Ok(level) = std::env::var(actor_core::logging::LOG_ENV) {
        actor_core::logging::init_process_logging(&level);
    }

    // Orphaned descendants re-parent to us, so leak checks can see (and reap) them.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("harness: cannot become a subreaper ({e}); leaked grandchildren may go unseen");
    }

    // Some runtime state is created once per process and kept (tokio's signal pipe when
    // its process feature is on): create it now, so leak checks see only what a test
    // leaves behind.
    run(Duration::from_secs(5), async {});
    // Children are started from one thread that lives as long as the process: start it
    // now too, so that the first test to spawn does not look like it leaked it.
    if let Err(e) = spawn_proc::start_spawner() {
        eprintln!("harness: no spawner thread ({e}); process spawns will fail");
    }
    // The root process's own interpreter (and its host thread) lives for the process:
    // start it now, so that the first test to use it does not look like it leaked it.
    if let Err(e) = spawn_subint::Interp::main() {
        eprintln!("harness: no Python in this process ({e}); Python tests will fail");
    }

    let mut args = libtest_mimic::Arguments::from_args();
    // Leak checks look at the whole process: run tests one at a time unless told.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let mut skipped = Vec::new();
    let trials = tests
        .iter()
        .map(|t| {
            let test = *t;
            match skip_reason(t.name) {
                Some(why) => {
                    report_skip(t.name, why);
                    skipped.push((t.name, why));
                    libtest_mimic::Trial::test(t.name, || Ok(())).with_ignored_flag(true)
                }
                None => libtest_mimic::Trial::test(t.name, move || run_checked(test)),
            }
        })
        .collect();
    if !args.list {
        eprintln!(
            "brood harness: backend={} transport={}; {} skipped{}",
            backend(),
            transport(),
            skipped.len(),
            skipped
                .iter()
                .map(|(n, w)| format!("\n  skipped {n}: {w}"))
                .collect::<String>()
        );
    }
    libtest_mimic::run(&args, trials).exit()
}
