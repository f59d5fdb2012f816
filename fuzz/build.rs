//! The pyvalue target links spawn-subint, and so CPython: give every target an rpath to
//! libpython so it starts without `LD_LIBRARY_PATH` (as crates/harness/build.rs does).
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
