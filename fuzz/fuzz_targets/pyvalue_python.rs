//! A `spawn_subint::PyValue` from the wire as the `python` service hands it to Python:
//! decoded, converted into a Python object (as the arguments of `python.call` are), passed
//! through a Python function and converted back. A conversion may fail with a typed
//! `PyError` (an unhashable dict key, say); nothing may panic, crash the interpreter or
//! hang. Runs in the process's main interpreter, as in a process actor.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spawn_api::Wire;
use spawn_subint::{Interp, InterpError, PyValue};

/// No leak checks in this target: LeakSanitizer cannot see the pointers CPython keeps in
/// its own arenas (mmapped, so not scanned), and reports the interpreter's live objects.
#[unsafe(no_mangle)]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_leaks=0".as_ptr()
}

fn interp() -> &'static (Interp, tokio::runtime::Runtime) {
    static INTERP: OnceLock<(Interp, tokio::runtime::Runtime)> = OnceLock::new();
    INTERP.get_or_init(|| {
        let interp = Interp::main().expect("the main interpreter");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(interp.run(|py| py.exec("def ident(x):\n    return x\n")))
            .expect("the job ran")
            .expect("ident defined");
        (interp, rt)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = <PyValue as Wire>::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let (interp, rt) = interp();
    match rt.block_on(interp.run(move |py| py.call("__main__:ident", &[value], &[]))) {
        Ok(Ok(back)) => {
            back.encode().expect("a value from Python encodes");
        }
        Ok(Err(_python_error)) => {}
        Err(InterpError::Panicked(p)) => panic!("the conversion panicked: {p}"),
        Err(e) => panic!("the interpreter failed: {e}"),
    }
});
