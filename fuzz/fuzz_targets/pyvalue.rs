//! A `spawn_subint::PyValue` from the wire: `spawn_subint::fuzzing::pyvalue` (decoded,
//! encoded again, round-tripped).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spawn_subint::fuzzing::pyvalue(data));
