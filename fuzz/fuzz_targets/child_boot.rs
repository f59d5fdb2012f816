//! A child's boot, as a backend hands it over: `spawn_api::fuzzing::child_boot`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    spawn_api::fuzzing::child_boot(data);
});
