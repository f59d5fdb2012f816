//! Both sides of the channel handshake against a peer that sends these frames:
//! `actor_core::fuzzing::handshake`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    actor_core::fuzzing::handshake(data);
});
