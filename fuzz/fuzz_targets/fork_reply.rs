//! A datagram from the forkserver, as a client decodes it: `spawn_fork::fuzzing::decode_reply`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spawn_fork::fuzzing::decode_reply(data);
});
