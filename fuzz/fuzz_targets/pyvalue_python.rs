//! A `spawn_subint::PyValue` from the wire as the `python` service hands it to Python and
//! back: `spawn_subint::fuzzing::pyvalue_python` (in the process's main interpreter, as
//! in a process actor).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// No leak checks in this target: LeakSanitizer cannot see the pointers CPython keeps in
/// its own arenas (mmapped, so not scanned), and reports the interpreter's live objects.
#[unsafe(no_mangle)]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_leaks=0".as_ptr()
}

fuzz_target!(|data: &[u8]| spawn_subint::fuzzing::pyvalue_python(data));
