//! The integration suite: runs on the backend and transport named by `BROOD_BACKEND` and
//! `BROOD_TRANSPORT` (see `cargo xtask test`). Every test runs in a root actor with a
//! deadline and is checked for leaked processes, threads, descriptors and socket files.
//!
//! One module per topic; each lists its tests with [`tests!`], and `main` runs them all.
//!
//! Environment:
//!
//! - `BROOD_BACKEND`, `BROOD_TRANSPORT`: the cell under test (defaults `proc`, `uds`).
//!   A test that forces a backend whatever the cell (`name on "fork"` in [`tests!`]) is
//!   registered only in that backend's cell, or in every run when `BROOD_BACKEND` is
//!   unset: it runs once per matrix, and is neither repeated nor reported as skipped in
//!   the other cells.
//! - `BROOD_TEST_TIME_SCALE`: one factor (a positive float, default 1.0) every timing
//!   bound of the suite is multiplied by: upper bounds on durations in assertions, the
//!   timeouts of waits and polls, the per-test deadline (see `common::scaled`). Raise it
//!   on a loaded machine, e.g. `BROOD_TEST_TIME_SCALE=3 cargo xtask test`. An invalid
//!   value stops the run before any test.
//!
//! Assertions are plain `assert!`/`assert_eq!` with the values in their messages: the
//! harness catches a panicking test, fails that test alone with the panic's message (the
//! location is on the test's stderr) and still runs its leak checks.

use harness::{Scenario, Test};

/// Declare a module's tests: `tests!(a, b, c on "fork", d except "subint")` defines
/// `TESTS` naming each function; `on "<backend>"` marks a test that forces that backend
/// whatever the cell, registered only in that backend's cell (see the crate doc);
/// `except "<backend>"` one that is about what that backend cannot do, registered in
/// every cell but that backend's (which has a test of its own for the refusal).
#[macro_export]
macro_rules! tests {
    ($($name:ident $(on $backend:literal)? $(except $except:literal)?),* $(,)?) => {
        pub(crate) const TESTS: &[$crate::Entry] = &[
            $($crate::Entry {
                test: harness::Test {
                    name: concat!(module_path!(), "::", stringify!($name)),
                    run: $name,
                },
                only_on: $crate::only_on!($($backend)?),
                except: $crate::only_on!($($except)?),
            }),*
        ];
    };
}

/// The `only_on` of an [`Entry`]: `None`, or the backend given.
#[macro_export]
macro_rules! only_on {
    () => {
        None
    };
    ($backend:literal) => {
        Some($backend)
    };
}

/// A test of the suite and, if it forces a backend whatever the cell, that backend.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) test: Test,
    pub(crate) only_on: Option<&'static str>,
    pub(crate) except: Option<&'static str>,
}

mod calls;
mod chaos;
mod common;
mod contexts;
mod debug;
mod direct;
mod discovery;
mod federation;
mod fork;
mod fork_security;
mod hardening;
mod protocol;
mod python;
mod python_limits;
mod regions;
mod sandbox;
mod security;
mod spawn;
mod streams;
mod supervision;
mod teardown;
mod titles;
mod transports;

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tree_then_wait",
        run: teardown::tree_then_wait,
    },
    Scenario {
        name: "registrar_until_stdin_closes",
        run: federation::registrar_until_stdin_closes,
    },
    Scenario {
        name: "member_until_stdin_closes",
        run: federation::member_until_stdin_closes,
    },
    Scenario {
        name: "python_actors_then_return",
        run: python::python_actors_then_return,
    },
];

/// Whether a test that forces `only_on` (if any) belongs to this run: always when it
/// forces nothing or when no backend is named (a plain `cargo test`), else only in the
/// cell of the backend it forces.
///
/// # Panics
/// If `only_on` names a backend the harness does not configure (a typo would otherwise
/// drop the test from every cell of the matrix).
fn registered(only_on: Option<&str>) -> bool {
    let Some(forced) = only_on else {
        return true;
    };
    let known = [spawn_proc::KEY, spawn_fork::KEY, spawn_subint::KEY];
    assert!(
        known.contains(&forced),
        "a test forces backend {forced:?}, which is none of {known:?}"
    );
    match std::env::var(brood::BACKEND_ENV) {
        Ok(cell) if !cell.is_empty() => cell == forced,
        _ => true,
    }
}

/// Whether the cell under test is the backend a test is registered without.
fn excepted(except: Option<&'static str>) -> bool {
    except.is_some_and(|b| harness::backend() == b)
}

fn main() {
    // Fail the whole run at once on a bad time scale, not test by test.
    if let Err(e) = common::parse_time_scale() {
        eprintln!("suite: {e}");
        std::process::exit(2);
    }
    let tests: Vec<Test> = [
        calls::TESTS,
        federation::TESTS,
        streams::TESTS,
        contexts::TESTS,
        supervision::TESTS,
        teardown::TESTS,
        protocol::TESTS,
        spawn::TESTS,
        fork::TESTS,
        python::TESTS,
        python_limits::TESTS,
        fork_security::TESTS,
        hardening::TESTS,
        chaos::TESTS,
        security::TESTS,
        transports::TESTS,
        regions::TESTS,
        sandbox::TESTS,
        direct::TESTS,
        discovery::TESTS,
        debug::TESTS,
        titles::TESTS,
    ]
    .concat()
    .into_iter()
    .filter(|e| registered(e.only_on) && !excepted(e.except))
    .map(|e| Test {
        name: e.test.name.trim_start_matches("suite::"),
        ..e.test
    })
    .collect();
    harness::main(&tests, SCENARIOS)
}
