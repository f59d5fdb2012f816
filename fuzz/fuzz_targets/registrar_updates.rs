//! What a member root sends its registrar, decoded and applied to a table:
//! `actor_core::fuzzing::registrar_updates`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    actor_core::fuzzing::registrar_updates(data);
});
