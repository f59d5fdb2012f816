//! CPython's C API, loaded when the process first needs it.
//!
//! A program built with this crate is the program every process actor runs (`spawn-proc`
//! execs it, `spawn-fork` forks it). Linked against libpython, each of those starts paid
//! for mapping and relocating CPython (about 0.65 ms of a 1.7 ms exec here) although most
//! of them never run Python. So nothing in this crate names a libpython symbol at link
//! time: [`load`] opens the library with `dlopen` the first time an interpreter is made
//! and looks up every function and object this crate uses; until then the process has no
//! CPython in it at all (`ldd` on a program built with the crate lists no libpython).
//!
//! The functions below have the names and signatures of the C API (and of `pyo3_ffi`,
//! whose types and constants they use), so `ffi.rs` and `python.rs` read as C API code.
//! The type checks and the `None`/`True` singletons, which are macros or inline functions
//! in C (and in `pyo3_ffi`, where they read link-time statics), are written here against
//! the looked-up objects.
//!
//! The library is the one the crate was built for (the same `major.minor`: the layout of
//! its structures is compiled in): by the name pyo3's build configuration found, first in
//! its directory, then on the loader's search path; `BROOD_LIBPYTHON` names another file.
//! Its `Py_Version` is checked before anything is called. It is opened `RTLD_GLOBAL`, as
//! if linked: extension modules (`_ctypes`, `_json`, ...) resolve their CPython symbols
//! against it.

// The C API's names, as C spells them.
#![allow(non_snake_case)]

use std::ffi::{CStr, CString, c_char, c_double, c_int, c_long, c_longlong, c_ulong, c_void};
use std::sync::OnceLock;

pub(crate) use pyo3_ffi::{
    Py_TYPE, Py_eval_input, Py_file_input, Py_ssize_t, PyInterpreterState, PyObject, PyThreadState,
    PyTypeObject,
};
#[cfg(Py_3_12)]
pub(crate) use pyo3_ffi::{PyInterpreterConfig, PyInterpreterConfig_OWN_GIL, PyStatus};

/// Names another libpython file to load instead of the one the crate was built for (it
/// must be the same `major.minor`).
pub const LIBPYTHON_ENV: &str = "BROOD_LIBPYTHON";

/// Why CPython could not be loaded: what was tried and what the loader said.
pub(crate) type LoadError = String;

/// The C API's `Py_TPFLAGS_*_SUBCLASS` bits (object.h), for the `Py*_Check` functions.
const TPFLAGS_LONG_SUBCLASS: c_ulong = 1 << 24;
const TPFLAGS_LIST_SUBCLASS: c_ulong = 1 << 25;
const TPFLAGS_TUPLE_SUBCLASS: c_ulong = 1 << 26;
const TPFLAGS_BYTES_SUBCLASS: c_ulong = 1 << 27;
const TPFLAGS_UNICODE_SUBCLASS: c_ulong = 1 << 28;
const TPFLAGS_DICT_SUBCLASS: c_ulong = 1 << 29;

/// Declares the table of C API functions, one wrapper per function with the C name, and
/// the look-up that fills the table.
macro_rules! functions {
    ($( $(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
        /// Every function of the C API this crate calls, looked up in the loaded library.
        #[allow(non_snake_case)]
        struct Functions {
            $( $(#[$attr])* $name: unsafe extern "C" fn($($ty),*) $(-> $ret)?, )*
        }

        impl Functions {
            /// Look each function up in `lib` (a `dlopen` handle).
            fn find(lib: &Library) -> Result<Functions, LoadError> {
                Ok(Functions {
                    $( $(#[$attr])* $name: {
                        let f = lib.symbol(concat!(stringify!($name), "\0"))?;
                        // SAFETY: the symbol is the C API function of that name in the
                        // library of the version this crate was compiled for, whose
                        // signature is the one declared here (checked against the
                        // headers of 3.11 to 3.14); a data pointer and a function
                        // pointer have the same size and representation on the
                        // platforms dlsym serves.
                        unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) $(-> $ret)?>(f)
                        }
                    }, )*
                })
            }
        }

        $(
            $(#[$attr])*
            #[allow(non_snake_case)]
            #[doc = concat!("The C API's `", stringify!($name), "`.")]
            ///
            /// # Safety
            /// That of the C function; and [`load`] must have succeeded (every caller runs
            /// after `ffi::ensure_main`, which loads first).
            pub(crate) unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                // SAFETY: per this function's contract.
                unsafe { (api().functions.$name)($($arg),*) }
            }
        )*
    };
}

functions! {
    fn Py_IsInitialized() -> c_int;
    fn Py_InitializeEx(initsigs: c_int);
    fn PyEval_SaveThread() -> *mut PyThreadState;
    fn PyEval_RestoreThread(tstate: *mut PyThreadState);
    fn PyThreadState_New(interp: *mut PyInterpreterState) -> *mut PyThreadState;
    fn PyInterpreterState_Main() -> *mut PyInterpreterState;
    #[cfg(Py_3_12)]
    fn Py_NewInterpreterFromConfig(
        tstate_p: *mut *mut PyThreadState,
        config: *const PyInterpreterConfig,
    ) -> PyStatus;
    #[cfg(Py_3_12)]
    fn PyStatus_Exception(status: PyStatus) -> c_int;
    fn Py_NewInterpreter() -> *mut PyThreadState;
    fn Py_EndInterpreter(tstate: *mut PyThreadState);
    fn PyThreadState_Swap(tstate: *mut PyThreadState) -> *mut PyThreadState;
    fn PyThreadState_Clear(tstate: *mut PyThreadState);
    fn PyThreadState_DeleteCurrent();
    fn PyThreadState_GetInterpreter(tstate: *mut PyThreadState) -> *mut PyInterpreterState;
    fn PyThreadState_SetAsyncExc(id: c_long, exc: *mut PyObject) -> c_int;
    fn PyThread_get_thread_ident() -> c_ulong;
    fn Py_IncRef(o: *mut PyObject);
    fn Py_DecRef(o: *mut PyObject);
    fn PyImport_ImportModule(name: *const c_char) -> *mut PyObject;
    fn PyImport_AddModule(name: *const c_char) -> *mut PyObject;
    fn PyModule_GetDict(module: *mut PyObject) -> *mut PyObject;
    fn PyObject_GetAttrString(o: *mut PyObject, name: *const c_char) -> *mut PyObject;
    fn PyObject_Call(callable: *mut PyObject, args: *mut PyObject, kwargs: *mut PyObject)
        -> *mut PyObject;
    fn PyObject_Str(o: *mut PyObject) -> *mut PyObject;
    fn PyType_IsSubtype(a: *mut PyTypeObject, b: *mut PyTypeObject) -> c_int;
    fn Py_CompileString(code: *const c_char, file: *const c_char, start: c_int) -> *mut PyObject;
    fn PyEval_EvalCode(code: *mut PyObject, globals: *mut PyObject, locals: *mut PyObject)
        -> *mut PyObject;
    fn PyTuple_New(len: Py_ssize_t) -> *mut PyObject;
    fn PyTuple_SetItem(t: *mut PyObject, i: Py_ssize_t, item: *mut PyObject) -> c_int;
    fn PyTuple_GetItem(t: *mut PyObject, i: Py_ssize_t) -> *mut PyObject;
    fn PyTuple_Size(t: *mut PyObject) -> Py_ssize_t;
    fn PyList_New(len: Py_ssize_t) -> *mut PyObject;
    fn PyList_SetItem(l: *mut PyObject, i: Py_ssize_t, item: *mut PyObject) -> c_int;
    fn PyList_GetItem(l: *mut PyObject, i: Py_ssize_t) -> *mut PyObject;
    fn PyList_Size(l: *mut PyObject) -> Py_ssize_t;
    fn PyDict_New() -> *mut PyObject;
    fn PyDict_SetItem(d: *mut PyObject, k: *mut PyObject, v: *mut PyObject) -> c_int;
    fn PyDict_Next(
        d: *mut PyObject,
        pos: *mut Py_ssize_t,
        k: *mut *mut PyObject,
        v: *mut *mut PyObject,
    ) -> c_int;
    fn PyBool_FromLong(v: c_long) -> *mut PyObject;
    fn PyLong_FromLongLong(v: c_longlong) -> *mut PyObject;
    fn PyLong_AsLongLongAndOverflow(o: *mut PyObject, overflow: *mut c_int) -> c_longlong;
    fn PyFloat_FromDouble(v: c_double) -> *mut PyObject;
    fn PyFloat_AsDouble(o: *mut PyObject) -> c_double;
    fn PyUnicode_FromStringAndSize(s: *const c_char, len: Py_ssize_t) -> *mut PyObject;
    fn PyUnicode_AsUTF8AndSize(o: *mut PyObject, len: *mut Py_ssize_t) -> *const c_char;
    fn PyBytes_FromStringAndSize(s: *const c_char, len: Py_ssize_t) -> *mut PyObject;
    fn PyBytes_AsStringAndSize(
        o: *mut PyObject,
        s: *mut *mut c_char,
        len: *mut Py_ssize_t,
    ) -> c_int;
    fn PyByteArray_Size(o: *mut PyObject) -> Py_ssize_t;
    fn PyByteArray_AsString(o: *mut PyObject) -> *mut c_char;
    fn PyErr_Occurred() -> *mut PyObject;
    fn PyErr_Clear();
    #[cfg(Py_3_12)]
    fn PyErr_GetRaisedException() -> *mut PyObject;
    #[cfg(not(Py_3_12))]
    fn PyErr_Fetch(t: *mut *mut PyObject, v: *mut *mut PyObject, tb: *mut *mut PyObject);
    #[cfg(not(Py_3_12))]
    fn PyErr_NormalizeException(
        t: *mut *mut PyObject,
        v: *mut *mut PyObject,
        tb: *mut *mut PyObject,
    );
    #[cfg(Py_3_12)]
    fn PyException_GetTraceback(e: *mut PyObject) -> *mut PyObject;
    #[cfg(not(Py_3_12))]
    fn PyException_SetTraceback(e: *mut PyObject, tb: *mut PyObject) -> c_int;
}

/// The C API's objects this crate uses (addresses in the loaded library).
struct Objects {
    none: *mut PyObject,
    true_: *mut PyObject,
    keyboard_interrupt: *mut *mut PyObject,
    bool_type: *mut PyTypeObject,
    long_type: *mut PyTypeObject,
    float_type: *mut PyTypeObject,
    unicode_type: *mut PyTypeObject,
    bytes_type: *mut PyTypeObject,
    bytearray_type: *mut PyTypeObject,
    list_type: *mut PyTypeObject,
    tuple_type: *mut PyTypeObject,
    dict_type: *mut PyTypeObject,
}

impl Objects {
    fn find(lib: &Library) -> Result<Objects, LoadError> {
        let ty = |name: &str| lib.symbol(name).map(|p| p.cast::<PyTypeObject>());
        Ok(Objects {
            none: lib.symbol("_Py_NoneStruct\0")?.cast(),
            true_: lib.symbol("_Py_TrueStruct\0")?.cast(),
            keyboard_interrupt: lib.symbol("PyExc_KeyboardInterrupt\0")?.cast(),
            bool_type: ty("PyBool_Type\0")?,
            long_type: ty("PyLong_Type\0")?,
            float_type: ty("PyFloat_Type\0")?,
            unicode_type: ty("PyUnicode_Type\0")?,
            bytes_type: ty("PyBytes_Type\0")?,
            bytearray_type: ty("PyByteArray_Type\0")?,
            list_type: ty("PyList_Type\0")?,
            tuple_type: ty("PyTuple_Type\0")?,
            dict_type: ty("PyDict_Type\0")?,
        })
    }
}

/// The loaded library: its functions and objects. Never unloaded (CPython cannot be).
struct Api {
    functions: Functions,
    objects: Objects,
}

// SAFETY: the table holds function pointers and the addresses of CPython's static
// objects, fixed for the life of the process; every use of them goes through the C API's
// own rules (an attached thread state), which the callers uphold.
unsafe impl Send for Api {}
// SAFETY: as above; the table itself is never written after `load` fills it.
unsafe impl Sync for Api {}

static API: OnceLock<Result<Api, LoadError>> = OnceLock::new();

/// Load CPython into the process (once; later calls return the first outcome).
///
/// # Errors
/// No candidate library could be opened (the message lists each and why), a C API
/// symbol is missing, or the library is another `major.minor` than the crate was built
/// for.
pub(crate) fn load() -> Result<(), LoadError> {
    match API.get_or_init(open) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.clone()),
    }
}

/// The loaded API.
///
/// # Panics
/// If [`load`] failed or never ran: every path into CPython starts with
/// `ffi::ensure_main`, which loads it and reports a failure as a typed error first.
fn api() -> &'static Api {
    match API.get_or_init(open) {
        Ok(api) => api,
        Err(e) => panic!("CPython is used but could not be loaded: {e}"),
    }
}

/// Where libpython was at build time, and its `major.minor`, from pyo3's configuration.
struct Built {
    dir: Option<&'static str>,
    name: &'static str,
    version: (u8, u8),
}

const BUILT: Built = Built {
    dir: option_env!("BROOD_LIBPYTHON_DIR"),
    name: env!("BROOD_LIBPYTHON_NAME"),
    version: (
        parse_u8(env!("BROOD_PYTHON_MAJOR")),
        parse_u8(env!("BROOD_PYTHON_MINOR")),
    ),
};

const fn parse_u8(s: &str) -> u8 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v: u8 = 0;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0');
        i += 1;
    }
    v
}

/// The files to try, in order: `BROOD_LIBPYTHON` alone if set; else the versioned name
/// (`libpython3.X.so.1.0`) in the build's directory, then on the loader's search path,
/// then the unversioned name the same two ways.
fn candidates() -> Vec<String> {
    if let Some(path) = std::env::var_os(LIBPYTHON_ENV) {
        return vec![path.to_string_lossy().into_owned()];
    }
    let mut files = Vec::new();
    for file in [
        format!("lib{}.so.1.0", BUILT.name),
        format!("lib{}.so", BUILT.name),
    ] {
        if let Some(dir) = BUILT.dir {
            files.push(format!("{dir}/{file}"));
        }
        files.push(file);
    }
    files
}

fn open() -> Result<Api, LoadError> {
    let hint = |what: String| {
        format!(
            "cannot load CPython {}.{} (set {LIBPYTHON_ENV} to its shared library): {what}",
            BUILT.version.0, BUILT.version.1
        )
    };
    let mut tried = Vec::new();
    for file in candidates() {
        match Library::open(&file) {
            Ok(lib) => {
                let api = check_version(&lib, &file)
                    .and_then(|()| {
                        Ok(Api {
                            functions: Functions::find(&lib)?,
                            objects: Objects::find(&lib)?,
                        })
                    })
                    .map_err(hint)?;
                // `Library` has no `Drop`: the library stays loaded for the life of the
                // process (CPython cannot be unloaded).
                tracing::debug!(library = %file, "CPython loaded");
                return Ok(api);
            }
            Err(e) => tried.push(e),
        }
    }
    Err(hint(tried.join("; ")))
}

/// Refuse a library of another `major.minor`: its structures differ from those compiled
/// in.
fn check_version(lib: &Library, file: &str) -> Result<(), LoadError> {
    let v = lib.symbol("Py_Version\0").ok();
    let found = match v {
        // SAFETY: `Py_Version` is a `const unsigned long` in every CPython since 3.11,
        // the oldest this crate builds for.
        Some(p) => unsafe { *p.cast::<c_ulong>() },
        None => {
            return Err(format!(
                "{file} has no Py_Version: not CPython 3.11 or later"
            ));
        }
    };
    let (major, minor) = (((found >> 24) & 0xff) as u8, ((found >> 16) & 0xff) as u8);
    if (major, minor) != BUILT.version {
        return Err(format!(
            "{file} is CPython {major}.{minor}; this program was built for {}.{}",
            BUILT.version.0, BUILT.version.1
        ));
    }
    Ok(())
}

/// A `dlopen` handle, never closed.
struct Library(*mut c_void);

impl Library {
    fn open(file: &str) -> Result<Library, String> {
        let c = CString::new(file).map_err(|_| format!("{file:?}: a NUL in the name"))?;
        // SAFETY: `c` is a NUL-terminated path. RTLD_GLOBAL: extension modules resolve
        // CPython's symbols against it, as if the program were linked with it.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            return Err(format!("{file}: {}", last_error()));
        }
        Ok(Library(handle))
    }

    /// The address of `name` (NUL-terminated) in the library.
    fn symbol(&self, name: &str) -> Result<*mut c_void, LoadError> {
        let c = CStr::from_bytes_with_nul(name.as_bytes()).expect("names end in NUL");
        // SAFETY: the handle is open (it is never closed) and `c` is NUL-terminated.
        let p = unsafe { libc::dlsym(self.0, c.as_ptr()) };
        if p.is_null() {
            return Err(format!(
                "libpython has no {}: {}",
                &name[..name.len() - 1],
                last_error()
            ));
        }
        Ok(p)
    }
}

/// The loader's last error message.
fn last_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl*
    // call on this thread; it is copied at once.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".to_owned()
    } else {
        // SAFETY: see above.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// `Py_None` (borrowed).
///
/// # Safety
/// [`load`] must have succeeded.
pub(crate) unsafe fn Py_None() -> *mut PyObject {
    api().objects.none
}

/// `Py_True` (borrowed).
///
/// # Safety
/// [`load`] must have succeeded.
pub(crate) unsafe fn Py_True() -> *mut PyObject {
    api().objects.true_
}

/// `PyExc_KeyboardInterrupt` (borrowed).
///
/// # Safety
/// [`load`] must have succeeded and CPython be initialised (the variable is set then).
pub(crate) unsafe fn PyExc_KeyboardInterrupt() -> *mut PyObject {
    // SAFETY: the address of a pointer variable of CPython's, set at initialisation.
    unsafe { *api().objects.keyboard_interrupt }
}

/// Whether `o`'s type has a `Py_TPFLAGS_*_SUBCLASS` bit.
///
/// # Safety
/// `o` is a live object and the thread is attached.
unsafe fn has_flag(o: *mut PyObject, flag: c_ulong) -> c_int {
    // SAFETY: per this function's contract, `o` has a type object. Not the limited API
    // and not a free-threaded build, so `tp_flags` is a plain field.
    let flags = unsafe { (*Py_TYPE(o)).tp_flags };
    c_int::from(flags & flag != 0)
}

/// Whether `o`'s type is exactly `ty`.
///
/// # Safety
/// `o` is a live object.
unsafe fn is_type(o: *mut PyObject, ty: *mut PyTypeObject) -> c_int {
    // SAFETY: per this function's contract.
    c_int::from(unsafe { Py_TYPE(o) } == ty)
}

/// Declares `PyX_Check` (by type flag or by subtype) and `PyX_CheckExact`.
macro_rules! checks {
    ($( $check:ident, $exact:ident, $ty:ident, $how:expr; )*) => {$(
        #[allow(non_snake_case)]
        #[doc = concat!("The C API's `", stringify!($check), "`.")]
        ///
        /// # Safety
        /// `o` is a live object, the thread is attached.
        pub(crate) unsafe fn $check(o: *mut PyObject) -> c_int {
            let how: unsafe fn(*mut PyObject, *mut PyTypeObject) -> c_int = $how;
            // SAFETY: per this function's contract.
            unsafe { how(o, api().objects.$ty) }
        }

        #[allow(non_snake_case)]
        #[doc = concat!("The C API's `", stringify!($exact), "`.")]
        ///
        /// # Safety
        /// `o` is a live object.
        #[allow(dead_code)]
        pub(crate) unsafe fn $exact(o: *mut PyObject) -> c_int {
            // SAFETY: per this function's contract.
            unsafe { is_type(o, api().objects.$ty) }
        }
    )*};
}

/// `PyX_Check` of a type with a `Py_TPFLAGS_*_SUBCLASS` bit: the bit.
///
/// # Safety
/// `o` is a live object, the thread is attached.
unsafe fn by_flag<const FLAG: c_ulong>(o: *mut PyObject, _ty: *mut PyTypeObject) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { has_flag(o, FLAG) }
}

/// `PyX_Check` of a type with no subclass bit: exactly it, or a subtype.
///
/// # Safety
/// `o` is a live object, the thread is attached.
unsafe fn subtype(o: *mut PyObject, ty: *mut PyTypeObject) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { c_int::from(is_type(o, ty) != 0 || PyType_IsSubtype(Py_TYPE(o), ty) != 0) }
}

checks! {
    // `bool` cannot be subclassed.
    PyBool_Check, PyBool_CheckExact, bool_type, is_type;
    PyLong_Check, PyLong_CheckExact, long_type, by_flag::<TPFLAGS_LONG_SUBCLASS>;
    PyFloat_Check, PyFloat_CheckExact, float_type, subtype;
    PyUnicode_Check, PyUnicode_CheckExact, unicode_type, by_flag::<TPFLAGS_UNICODE_SUBCLASS>;
    PyBytes_Check, PyBytes_CheckExact, bytes_type, by_flag::<TPFLAGS_BYTES_SUBCLASS>;
    PyByteArray_Check, PyByteArray_CheckExact, bytearray_type, subtype;
    PyList_Check, PyList_CheckExact, list_type, by_flag::<TPFLAGS_LIST_SUBCLASS>;
    PyTuple_Check, PyTuple_CheckExact, tuple_type, by_flag::<TPFLAGS_TUPLE_SUBCLASS>;
    PyDict_Check, PyDict_CheckExact, dict_type, by_flag::<TPFLAGS_DICT_SUBCLASS>;
}
