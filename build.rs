//! With the `subint` feature the examples and benches embed CPython: give them an rpath to
//! libpython so they start without `LD_LIBRARY_PATH`.
fn main() {
    if std::env::var_os("CARGO_FEATURE_SUBINT").is_some() {
        pyo3_build_config::add_libpython_rpath_link_args();
    }
}
