//! The forkserver's start-up argument (an environment variable, so UTF-8):
//! `spawn_fork::fuzzing::decode_server_args`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = spawn_fork::fuzzing::decode_server_args(s);
    }
});
