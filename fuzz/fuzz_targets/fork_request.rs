//! A datagram from a forkserver client, as the server judges it:
//! `spawn_fork::fuzzing::decode_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spawn_fork::fuzzing::decode_request(data);
});
