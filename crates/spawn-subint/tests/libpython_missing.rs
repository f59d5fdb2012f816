//! A libpython that cannot be loaded is a typed error naming what was tried, at the first
//! interpreter, never a crash at exec or a panic. The library is loaded once per process,
//! so each case runs this test binary again with `BROOD_LIBPYTHON` set.

use std::process::Command;

use spawn_subint::{Interp, InterpError, LIBPYTHON_ENV};

/// Set in the re-run child: the case it checks.
const CASE: &str = "BROOD_TEST_LIBPYTHON_CASE";

#[test]
fn a_libpython_that_cannot_be_loaded_is_a_setup_error() {
    if let Ok(expected) = std::env::var(CASE) {
        match Interp::new_sub(true) {
            Err(InterpError::Setup(msg)) => assert!(
                msg.contains(&expected) && msg.contains(LIBPYTHON_ENV),
                "{msg}"
            ),
            Err(e) => panic!("expected a setup error, got {e}"),
            Ok(_) => panic!("an interpreter was made from {expected}"),
        }
        // A second attempt gives the same answer (the load is tried once).
        assert!(matches!(Interp::new_sub(true), Err(InterpError::Setup(_))));
        return;
    }
    let libc = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .find_map(|l| {
            let path = l.split_whitespace().nth(5)?;
            path.contains("/libc.so").then(|| path.to_owned())
        })
        .expect("libc is mapped");
    for (file, expected) in [
        ("/nonexistent/libpython3.so", "/nonexistent/libpython3.so"),
        // A shared library that is not CPython.
        (libc.as_str(), "has no Py_Version"),
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_libpython_that_cannot_be_loaded_is_a_setup_error",
                "--nocapture",
            ])
            .env(LIBPYTHON_ENV, file)
            .env(CASE, expected)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
