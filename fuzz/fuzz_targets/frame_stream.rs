//! A byte stream of length-prefixed frames, read to its end: `actor_core::fuzzing::frame_stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    actor_core::fuzzing::frame_stream(data);
});
