//! Python version cfgs (`Py_3_12`, ...) for this crate, and where libpython is: the crate
//! loads it at run time (`src/libpython.rs`), never links it, so it needs the file's
//! directory and name and the `major.minor` it was built for.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    let config = pyo3_build_config::get();
    if !config.shared() {
        // The C API is looked up in a shared library; a static one has nothing to load.
        println!(
            "cargo::warning=spawn-subint: CPython at {:?} is a static library; the subint \
             backend loads libpython as a shared library at run time and will fail to start \
             an interpreter (set BROOD_LIBPYTHON to a shared libpython {}.{})",
            config.lib_dir(),
            config.version().major,
            config.version().minor
        );
    }
    if let Some(dir) = config.lib_dir() {
        println!("cargo::rustc-env=BROOD_LIBPYTHON_DIR={dir}");
    }
    let name = config.lib_name().map(str::to_owned).unwrap_or_else(|| {
        format!(
            "python{}.{}",
            config.version().major,
            config.version().minor
        )
    });
    println!("cargo::rustc-env=BROOD_LIBPYTHON_NAME={name}");
    println!(
        "cargo::rustc-env=BROOD_PYTHON_MAJOR={}",
        config.version().major
    );
    println!(
        "cargo::rustc-env=BROOD_PYTHON_MINOR={}",
        config.version().minor
    );
}
