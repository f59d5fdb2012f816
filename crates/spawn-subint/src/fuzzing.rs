//! Entry points for the `PyValue` fuzz targets (`fuzz/`) and for the test that replays
//! their corpora: each takes arbitrary bytes and must return, never panic, crash the
//! interpreter or hang. Not part of the API a program uses.

use std::sync::OnceLock;

use bytes::Bytes;
use spawn_api::Wire;

use crate::host::{Interp, InterpError};
use crate::python::PyValue;

/// A value from the wire: what decodes must encode again (the depth limit holds both
/// ways), and that encoding must decode to a value that encodes the same (bytes are
/// compared: a NaN is not equal to itself).
pub fn pyvalue(data: &[u8]) {
    let Ok(value) = <PyValue as Wire>::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encoded = value.encode().expect("a decoded PyValue encodes");
    let again = <PyValue as Wire>::decode(encoded.clone()).expect("an encoded PyValue decodes");
    assert_eq!(again.encode().expect("it encodes again"), encoded);
}

/// A value from the wire as the `python` service hands it to Python: decoded, converted
/// into a Python object (as the arguments of `python.call` are), passed through a Python
/// function and converted back, in the process's main interpreter. A Python error (an
/// unhashable dict key, say) is fine; a panic is not.
pub fn pyvalue_python(data: &[u8]) {
    // One interpreter and runtime for every input of a run.
    static INTERP: OnceLock<(Interp, tokio::runtime::Runtime)> = OnceLock::new();
    let Ok(value) = <PyValue as Wire>::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let (interp, rt) = INTERP.get_or_init(|| {
        let interp = Interp::main().expect("the main interpreter");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(interp.run(|py| py.exec("def ident(x):\n    return x\n")))
            .expect("the job ran")
            .expect("ident defined");
        (interp, rt)
    });
    match rt.block_on(interp.run(move |py| py.call("__main__:ident", &[value], &[]))) {
        Ok(Ok(back)) => {
            back.encode().expect("a value from Python encodes");
        }
        Ok(Err(_python_error)) => {}
        Err(InterpError::Panicked(p)) => panic!("the conversion panicked: {p}"),
        Err(e) => panic!("the interpreter failed: {e}"),
    }
}
