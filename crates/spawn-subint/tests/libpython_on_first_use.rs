//! CPython enters a process with its first interpreter, not at exec: a program built with
//! the subint backend starts without libpython, so its process actors that never run
//! Python do not pay for loading it. One test per file: the library is loaded once per
//! process, so the order of what this test sees must be its own.

use std::time::Duration;

use spawn_subint::{Interp, LIBPYTHON_ENV};

/// Whether a libpython is mapped into this process.
fn libpython_mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .any(|l| l.contains("/libpython3"))
}

#[test]
fn libpython_is_loaded_by_the_first_interpreter_and_not_before() {
    assert!(
        std::env::var_os(LIBPYTHON_ENV).is_none(),
        "run without {LIBPYTHON_ENV}"
    );
    assert!(
        !libpython_mapped(),
        "libpython is mapped before any interpreter was made: the program links it"
    );
    let interp = Interp::new_sub(true).expect("a sub-interpreter");
    assert!(libpython_mapped(), "the first interpreter loaded libpython");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Extension modules resolve CPython's symbols against the loaded library, as if the
    // program were linked with it (`_json` and `math` are shared objects in most builds).
    let v = rt
        .block_on(interp.run(|py| {
            py.exec("import json, math\nx = json.dumps([math.floor(2.5), None, True])")?;
            py.eval("x")
        }))
        .expect("the job ran")
        .expect("Python ran");
    assert_eq!(format!("{v:?}"), r#"Str("[2, null, true]")"#);
    interp.shutdown(Duration::from_secs(5));
}
