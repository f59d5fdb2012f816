//! The integration suite: runs on the backend and transport named by `BROOD_BACKEND` and
//! `BROOD_TRANSPORT` (see `cargo xtask test`). Every test runs in a root actor with a
//! deadline and is checked for leaked processes, threads, descriptors and socket files.
//!
//! One module per topic; each lists its tests with [`tests!`], and `main` runs them all.

use harness::{Scenario, Test};

/// Declare a module's tests: `tests!(a, b)` defines `TESTS` naming each function.
#[macro_export]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        pub(crate) const TESTS: &[harness::Test] = &[
            $(harness::Test { name: concat!(module_path!(), "::", stringify!($name)), run: $name }),*
        ];
    };
}

mod calls;
mod chaos;
mod common;
mod fork;
mod fork_security;
mod hardening;
mod protocol;
mod python;
mod python_limits;
mod security;
mod spawn;
mod streams;
mod teardown;

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tree_then_wait",
        run: teardown::tree_then_wait,
    },
    Scenario {
        name: "python_actors_then_return",
        run: python::python_actors_then_return,
    },
];

fn main() {
    let tests: Vec<Test> = [
        calls::TESTS,
        streams::TESTS,
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
    ]
    .concat()
    .into_iter()
    .map(|t| Test {
        name: t.name.trim_start_matches("suite::"),
        ..t
    })
    .collect();
    harness::main(&tests, SCENARIOS)
}
