//! A `spawn_subint::PyValue` from the wire: `<PyValue as spawn_api::Wire>::decode`. What
//! decodes must encode again (the depth limit holds both ways), and that encoding must
//! decode to a value that encodes the same (bytes are compared: a NaN is not equal to
//! itself).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spawn_api::Wire;
use spawn_subint::PyValue;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = <PyValue as Wire>::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encoded = value.encode().expect("a decoded PyValue encodes");
    let again = <PyValue as Wire>::decode(encoded.clone()).expect("an encoded PyValue decodes");
    assert_eq!(again.encode().expect("it encodes again"), encoded);
});
