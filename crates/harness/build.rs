//! The test binaries embed CPython (the subint backend and the `python` service): give them
//! an rpath to libpython so they start without `LD_LIBRARY_PATH`.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
