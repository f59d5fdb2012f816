//! A frame body (what follows a length prefix): `actor_core::fuzzing::frame_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    actor_core::fuzzing::frame_body(data);
});
