//! Python version cfgs (`Py_3_12`, ...) for this crate, and an rpath to libpython for its
//! own tests, so they start without `LD_LIBRARY_PATH`.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::add_libpython_rpath_link_args();
}
