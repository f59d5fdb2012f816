//! Both sides of the channel handshake against a peer that sends these frames:
//! `spawn_api::fuzzing::handshake`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    spawn_api::fuzzing::handshake(data);
});
