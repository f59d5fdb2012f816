//! What code may do while attached to an interpreter: [`Python`], and the Rust values that
//! cross into and out of it ([`PyValue`], [`PyError`]).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int};
use std::marker::PhantomData;

use bytes::Bytes;
use pyo3_ffi as py;
use serde::{Deserialize, Serialize};

use crate::ffi::{Attached, Owned, cstring, failed, from_c};

/// A Python value as Rust data: what enters and leaves an interpreter.
///
/// Ints are 64-bit (a larger Python int is a conversion error), tuples become lists, dict
/// entries keep their order. Bytes travel as [`Bytes`].
///
/// ```
/// use spawn_subint::PyValue;
/// let v = PyValue::from(vec![PyValue::from(1), PyValue::from("two")]);
/// assert_eq!(v, PyValue::List(vec![PyValue::Int(1), PyValue::Str("two".into())]));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PyValue {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` that fits in 64 bits.
    Int(i64),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes` (also from `bytearray`).
    Bytes(Bytes),
    /// `list` or `tuple`.
    List(Vec<PyValue>),
    /// `dict`, in iteration order.
    Dict(Vec<(PyValue, PyValue)>),
}

impl From<()> for PyValue {
    fn from((): ()) -> PyValue {
        PyValue::None
    }
}
impl From<bool> for PyValue {
    fn from(v: bool) -> PyValue {
        PyValue::Bool(v)
    }
}
impl From<i64> for PyValue {
    fn from(v: i64) -> PyValue {
        PyValue::Int(v)
    }
}
impl From<i32> for PyValue {
    fn from(v: i32) -> PyValue {
        PyValue::Int(v.into())
    }
}
impl From<f64> for PyValue {
    fn from(v: f64) -> PyValue {
        PyValue::Float(v)
    }
}
impl From<&str> for PyValue {
    fn from(v: &str) -> PyValue {
        PyValue::Str(v.to_owned())
    }
}
impl From<String> for PyValue {
    fn from(v: String) -> PyValue {
        PyValue::Str(v)
    }
}
impl From<Bytes> for PyValue {
    fn from(v: Bytes) -> PyValue {
        PyValue::Bytes(v)
    }
}
impl From<Vec<PyValue>> for PyValue {
    fn from(v: Vec<PyValue>) -> PyValue {
        PyValue::List(v)
    }
}
impl From<BTreeMap<String, PyValue>> for PyValue {
    fn from(v: BTreeMap<String, PyValue>) -> PyValue {
        PyValue::Dict(v.into_iter().map(|(k, v)| (PyValue::Str(k), v)).collect())
    }
}

impl PyValue {
    /// The int, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            PyValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` if this is a dict with that string key.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A Python exception, as Rust data: its type's name, its message and the formatted
/// traceback.
///
/// It converts into an actor function's [`FnError`](spawn_api::FnError) keeping the
/// *Python* type name as the error's kind (so `?` in a handler sends `ValueError`, not a
/// Rust type name). That is why it does not implement `std::error::Error` itself (which
/// would select the generic conversion); it converts into `Box<dyn Error + Send + Sync>`
/// for code that wants one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyError {
    /// The exception type's name (`ValueError`, `KeyError`, a user class's name).
    pub kind: String,
    /// `str(exception)`.
    pub message: String,
    /// `traceback.format_exception(...)`, joined.
    pub traceback: Option<String>,
}

impl PyError {
    pub(crate) fn new(kind: &str, message: impl Into<String>) -> PyError {
        PyError {
            kind: kind.to_owned(),
            message: message.into(),
            traceback: None,
        }
    }
}

impl std::fmt::Display for PyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// `PyError` as a standard error, for callers outside actor functions.
#[derive(Debug)]
struct PyErrorBox(PyError);

impl std::fmt::Display for PyErrorBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for PyErrorBox {}

impl From<PyError> for Box<dyn std::error::Error + Send + Sync> {
    fn from(e: PyError) -> Self {
        Box::new(PyErrorBox(e))
    }
}

impl From<PyError> for Box<dyn std::error::Error> {
    fn from(e: PyError) -> Self {
        Box::new(PyErrorBox(e))
    }
}

impl From<PyError> for spawn_api::FnError {
    fn from(e: PyError) -> spawn_api::FnError {
        let tb = e.traceback.clone();
        let err = spawn_api::FnError::new(e.kind, e.message);
        match tb {
            Some(tb) => err.with_traceback(tb),
            None => err,
        }
    }
}

/// The right to run Python in one interpreter, for the duration of a closure passed to
/// [`Interp::run`](crate::Interp::run). It cannot leave the closure (`'py`) nor the thread
/// (it is not `Send`), and everything it hands out is Rust data.
pub struct Python<'py> {
    // Borrowing the attachment is what makes `'py` mean "while this thread holds the GIL".
    _attached: PhantomData<&'py Attached<'py>>,
    _not_send: PhantomData<*mut ()>,
}

impl<'py> Python<'py> {
    pub(crate) fn new(_attached: &'py Attached<'py>) -> Python<'py> {
        Python {
            _attached: PhantomData,
            _not_send: PhantomData,
        }
    }

    /// Run `code` as a module body in this interpreter's `__main__`, so names it defines
    /// stay for later calls (in this interpreter only).
    ///
    /// # Errors
    /// The exception the code raised (or a `SyntaxError`).
    pub fn exec(&self, code: &str) -> Result<(), PyError> {
        self.run_code(code, py::Py_file_input).map(|_| ())
    }

    /// Evaluate the expression `expr` in `__main__` and convert the result.
    ///
    /// # Errors
    /// The exception raised, or a `TypeError` if the result does not convert.
    pub fn eval(&self, expr: &str) -> Result<PyValue, PyError> {
        let obj = self.run_code(expr, py::Py_eval_input)?;
        self.to_value(&obj)
    }

    /// Call `target`, written `package.module:function` (the part after `:` may be
    /// dotted, `module:Class.method`), with positional and keyword arguments.
    ///
    /// # Errors
    /// `ValueError` for a malformed target, the `ImportError` or `AttributeError` of a
    /// missing one, and whatever the function raises.
    pub fn call(
        &self,
        target: &str,
        args: &[PyValue],
        kwargs: &[(String, PyValue)],
    ) -> Result<PyValue, PyError> {
        let (module, attr) = target.split_once(':').ok_or_else(|| {
            PyError::new(
                "ValueError",
                format!("call target {target:?} is not of the form package.module:function"),
            )
        })?;
        let module_c = cstring(module).map_err(|e| PyError::new("ValueError", e))?;
        // SAFETY: attached; the name is a valid C string for the call.
        let mut obj =
            self.check(unsafe { Owned::from_new(py::PyImport_ImportModule(module_c.as_ptr())) })?;
        for part in attr.split('.') {
            let part_c = cstring(part).map_err(|e| PyError::new("ValueError", e))?;
            // SAFETY: attached; `obj` is a live object and the name a valid C string.
            obj = self.check(unsafe {
                Owned::from_new(py::PyObject_GetAttrString(obj.as_ptr(), part_c.as_ptr()))
            })?;
        }
        // SAFETY: attached.
        let tuple =
            self.check(unsafe { Owned::from_new(py::PyTuple_New(args.len() as py::Py_ssize_t)) })?;
        for (i, a) in args.iter().enumerate() {
            let item = self.to_object(a)?;
            // SAFETY: attached; `tuple` is a fresh tuple of this size and SetItem steals
            // the item's reference.
            if failed(unsafe {
                py::PyTuple_SetItem(tuple.as_ptr(), i as py::Py_ssize_t, item.into_ptr())
            }) {
                return Err(self.fetch_error());
            }
        }
        let kw = if kwargs.is_empty() {
            None
        } else {
            // SAFETY: attached.
            let d = self.check(unsafe { Owned::from_new(py::PyDict_New()) })?;
            for (k, v) in kwargs {
                let key = self.to_object(&PyValue::Str(k.clone()))?;
                let val = self.to_object(v)?;
                // SAFETY: attached; all three are live objects (SetItem does not steal).
                if failed(unsafe { py::PyDict_SetItem(d.as_ptr(), key.as_ptr(), val.as_ptr()) }) {
                    return Err(self.fetch_error());
                }
            }
            Some(d)
        };
        let kw_ptr = kw.as_ref().map_or(std::ptr::null_mut(), Owned::as_ptr);
        // SAFETY: attached; callable, tuple and (nullable) dict are live.
        let out = self.check(unsafe {
            Owned::from_new(py::PyObject_Call(obj.as_ptr(), tuple.as_ptr(), kw_ptr))
        })?;
        self.to_value(&out)
    }

    fn run_code(&self, code: &str, mode: c_int) -> Result<Owned<'py>, PyError> {
        let code_c = cstring(code).map_err(|e| PyError::new("ValueError", e))?;
        let file = c"<brood>";
        // SAFETY: attached; both strings are valid for the call.
        let compiled = self.check(unsafe {
            Owned::from_new(py::Py_CompileString(code_c.as_ptr(), file.as_ptr(), mode))
        })?;
        let globals = self.main_dict()?;
        // SAFETY: attached; the code object and the dict are live.
        self.check(unsafe {
            Owned::from_new(py::PyEval_EvalCode(
                compiled.as_ptr(),
                globals.as_ptr(),
                globals.as_ptr(),
            ))
        })
    }

    fn main_dict(&self) -> Result<Owned<'py>, PyError> {
        // SAFETY: attached; AddModule and GetDict return borrowed references that we
        // immediately turn into owned ones.
        unsafe {
            let main = py::PyImport_AddModule(c"__main__".as_ptr());
            if main.is_null() {
                return Err(self.fetch_error());
            }
            self.check(Owned::from_borrowed(py::PyModule_GetDict(main)))
        }
    }

    fn check(&self, o: Option<Owned<'py>>) -> Result<Owned<'py>, PyError> {
        o.ok_or_else(|| self.fetch_error())
    }

    /// Convert a Rust value to a new Python object.
    fn to_object(&self, v: &PyValue) -> Result<Owned<'py>, PyError> {
        // SAFETY (all arms): attached; every constructor returns a new reference or null
        // with an exception set, which `check` turns into an error.
        let o = match v {
            PyValue::None => unsafe { Owned::from_borrowed(py::Py_None()) },
            PyValue::Bool(b) => unsafe { Owned::from_new(py::PyBool_FromLong((*b).into())) },
            PyValue::Int(i) => unsafe { Owned::from_new(py::PyLong_FromLongLong(*i)) },
            PyValue::Float(f) => unsafe { Owned::from_new(py::PyFloat_FromDouble(*f)) },
            PyValue::Str(s) => unsafe {
                Owned::from_new(py::PyUnicode_FromStringAndSize(
                    s.as_ptr().cast::<c_char>(),
                    s.len() as py::Py_ssize_t,
                ))
            },
            PyValue::Bytes(b) => unsafe {
                Owned::from_new(py::PyBytes_FromStringAndSize(
                    b.as_ptr().cast::<c_char>(),
                    b.len() as py::Py_ssize_t,
                ))
            },
            PyValue::List(items) => {
                let list = self.check(unsafe {
                    Owned::from_new(py::PyList_New(items.len() as py::Py_ssize_t))
                })?;
                for (i, item) in items.iter().enumerate() {
                    let o = self.to_object(item)?;
                    // SAFETY: a fresh list of this size; SetItem steals the reference.
                    if failed(unsafe {
                        py::PyList_SetItem(list.as_ptr(), i as py::Py_ssize_t, o.into_ptr())
                    }) {
                        return Err(self.fetch_error());
                    }
                }
                Some(list)
            }
            PyValue::Dict(entries) => {
                let d = self.check(unsafe { Owned::from_new(py::PyDict_New()) })?;
                for (k, v) in entries {
                    let (k, v) = (self.to_object(k)?, self.to_object(v)?);
                    // SAFETY: all live; SetItem does not steal.
                    if failed(unsafe { py::PyDict_SetItem(d.as_ptr(), k.as_ptr(), v.as_ptr()) }) {
                        return Err(self.fetch_error());
                    }
                }
                Some(d)
            }
        };
        self.check(o)
    }

    /// Convert a Python object to a Rust value.
    fn to_value(&self, o: &Owned<'py>) -> Result<PyValue, PyError> {
        let p = o.as_ptr();
        // SAFETY (whole body): attached and `p` is live; the type checks read the object's
        // type, and each accessor is used only on objects of its type.
        unsafe {
            if p == py::Py_None() {
                return Ok(PyValue::None);
            }
            if py::PyBool_Check(p) != 0 {
                return Ok(PyValue::Bool(p == py::Py_True()));
            }
            if py::PyLong_Check(p) != 0 {
                let mut overflow: c_int = 0;
                let v = py::PyLong_AsLongLongAndOverflow(p, &mut overflow);
                if overflow != 0 {
                    return Err(PyError::new("OverflowError", "int does not fit in 64 bits"));
                }
                if v == -1 && !py::PyErr_Occurred().is_null() {
                    return Err(self.fetch_error());
                }
                return Ok(PyValue::Int(v));
            }
            if py::PyFloat_Check(p) != 0 {
                return Ok(PyValue::Float(py::PyFloat_AsDouble(p)));
            }
            if py::PyUnicode_Check(p) != 0 {
                let mut len: py::Py_ssize_t = 0;
                let data = py::PyUnicode_AsUTF8AndSize(p, &mut len);
                if data.is_null() {
                    return Err(self.fetch_error());
                }
                let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
                return Ok(PyValue::Str(String::from_utf8_lossy(bytes).into_owned()));
            }
            if py::PyBytes_Check(p) != 0 {
                let mut data: *mut c_char = std::ptr::null_mut();
                let mut len: py::Py_ssize_t = 0;
                if failed(py::PyBytes_AsStringAndSize(p, &mut data, &mut len)) {
                    return Err(self.fetch_error());
                }
                let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
                return Ok(PyValue::Bytes(Bytes::copy_from_slice(bytes)));
            }
            if py::PyList_Check(p) != 0 || py::PyTuple_Check(p) != 0 {
                let seq = self.check(Owned::from_new(py::PySequence_List(p)))?;
                let n = py::PyList_Size(seq.as_ptr());
                let mut out = Vec::with_capacity(n.max(0) as usize);
                for i in 0..n {
                    let item =
                        self.check(Owned::from_borrowed(py::PyList_GetItem(seq.as_ptr(), i)))?;
                    out.push(self.to_value(&item)?);
                }
                return Ok(PyValue::List(out));
            }
            if py::PyDict_Check(p) != 0 {
                let mut pos: py::Py_ssize_t = 0;
                let mut k: *mut py::PyObject = std::ptr::null_mut();
                let mut v: *mut py::PyObject = std::ptr::null_mut();
                let mut out = Vec::new();
                while py::PyDict_Next(p, &mut pos, &mut k, &mut v) != 0 {
                    let (k, v) = (
                        self.check(Owned::from_borrowed(k))?,
                        self.check(Owned::from_borrowed(v))?,
                    );
                    out.push((self.to_value(&k)?, self.to_value(&v)?));
                }
                return Ok(PyValue::Dict(out));
            }
            let ty = from_c((*py::Py_TYPE(p)).tp_name);
            Err(PyError::new(
                "TypeError",
                format!("a {ty} does not convert to a brood PyValue"),
            ))
        }
    }

    /// Take the pending exception and describe it. Never fails: if describing it raises
    /// in turn, the description says so.
    fn fetch_error(&self) -> PyError {
        // SAFETY (whole body): attached; we take ownership of the pending exception and
        // only call the C API on live objects.
        unsafe {
            if py::PyErr_Occurred().is_null() {
                return PyError::new("SystemError", "a Python call failed without an exception");
            }
            #[cfg(Py_3_12)]
            let (ty, value, tb) = {
                let exc = py::PyErr_GetRaisedException();
                let ty = py::Py_TYPE(exc).cast::<py::PyObject>();
                py::Py_IncRef(ty);
                let tb = py::PyException_GetTraceback(exc);
                (
                    Owned::from_new(ty),
                    Owned::from_new(exc),
                    Owned::from_new(tb),
                )
            };
            #[cfg(not(Py_3_12))]
            let (ty, value, tb) = {
                let mut t = std::ptr::null_mut();
                let mut v = std::ptr::null_mut();
                let mut tb = std::ptr::null_mut();
                py::PyErr_Fetch(&mut t, &mut v, &mut tb);
                py::PyErr_NormalizeException(&mut t, &mut v, &mut tb);
                if !tb.is_null() && !v.is_null() {
                    py::PyException_SetTraceback(v, tb);
                }
                (Owned::from_new(t), Owned::from_new(v), Owned::from_new(tb))
            };
            let kind = ty
                .as_ref()
                .and_then(|t| self.attr_string(t, c"__name__"))
                .unwrap_or_else(|| "BaseException".to_owned());
            let message = value
                .as_ref()
                .and_then(|v| Owned::from_new(py::PyObject_Str(v.as_ptr())))
                .and_then(|s| self.str_of(&s))
                .unwrap_or_default();
            let traceback = self.format_traceback(ty.as_ref(), value.as_ref(), tb.as_ref());
            py::PyErr_Clear();
            PyError {
                kind,
                message,
                traceback,
            }
        }
    }

    fn attr_string(&self, o: &Owned<'py>, name: &std::ffi::CStr) -> Option<String> {
        // SAFETY: attached; `o` is live.
        let a = unsafe { Owned::from_new(py::PyObject_GetAttrString(o.as_ptr(), name.as_ptr())) }?;
        self.str_of(&a)
    }

    fn str_of(&self, s: &Owned<'py>) -> Option<String> {
        match self.to_value(s) {
            Ok(PyValue::Str(s)) => Some(s),
            _ => {
                // SAFETY: attached; drop any error the conversion left behind.
                unsafe { py::PyErr_Clear() };
                None
            }
        }
    }

    fn format_traceback(
        &self,
        ty: Option<&Owned<'py>>,
        value: Option<&Owned<'py>>,
        tb: Option<&Owned<'py>>,
    ) -> Option<String> {
        let (ty, value) = (ty?, value?);
        // SAFETY (whole body): attached; every object passed is live or None.
        unsafe {
            let module = Owned::from_new(py::PyImport_ImportModule(c"traceback".as_ptr()))?;
            let func = Owned::from_new(py::PyObject_GetAttrString(
                module.as_ptr(),
                c"format_exception".as_ptr(),
            ))?;
            let tb_ptr = tb.map_or(py::Py_None(), Owned::as_ptr);
            let args = Owned::from_new(py::PyTuple_New(3))?;
            for (i, o) in [ty.as_ptr(), value.as_ptr(), tb_ptr]
                .into_iter()
                .enumerate()
            {
                py::Py_IncRef(o);
                py::PyTuple_SetItem(args.as_ptr(), i as py::Py_ssize_t, o);
            }
            let lines = match Owned::from_new(py::PyObject_Call(
                func.as_ptr(),
                args.as_ptr(),
                std::ptr::null_mut(),
            )) {
                Some(l) => l,
                None => {
                    py::PyErr_Clear();
                    return None;
                }
            };
            match self.to_value(&lines) {
                Ok(PyValue::List(items)) => {
                    Some(items.iter().filter_map(|i| i.as_str()).collect::<String>())
                }
                _ => {
                    py::PyErr_Clear();
                    None
                }
            }
        }
    }
}
