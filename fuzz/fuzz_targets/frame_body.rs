//! A frame body (what follows a length prefix): `spawn_api::fuzzing::frame_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    spawn_api::fuzzing::frame_body(data);
});
