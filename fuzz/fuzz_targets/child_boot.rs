//! A child's boot, as a backend hands it over: `actor_core::fuzzing::child_boot`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    actor_core::fuzzing::child_boot(data);
});
