//! What code may do while attached to an interpreter: [`Python`], and the Rust values that
//! cross into and out of it ([`PyValue`], [`PyError`]).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int};
use std::marker::PhantomData;

use crate::libpython as py;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, EnumAccess, SeqAccess, VariantAccess, Visitor};
use serde::ser::{self, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ffi::{Attached, Owned, cstring, failed, from_c};

/// A Python value as Rust data: what enters and leaves an interpreter.
///
/// Ints are 64-bit (a larger Python int is a conversion error), tuples become lists, dict
/// entries keep their order. Bytes travel as [`Bytes`].
///
/// Only values of the exact built-in types convert (`None`, `bool`, `int`, `float`, `str`,
/// `bytes`, `bytearray`, `list`, `tuple`, `dict`): converting never runs Python code of the
/// value's own (no `__iter__`, `__eq__`, `__hash__`, `__index__`...), so an instance of a
/// subclass is a `TypeError`. Lists, tuples and dicts nest at most
/// [`PyValue::MAX_DEPTH`] deep, in every direction a value travels: out of Python (a
/// `RecursionError`; a value that contains itself is a `ValueError`), into Python (a
/// `RecursionError`), and through serde (an encoding or decoding error), so no value can
/// overflow the stack of the thread that converts it.
///
/// ```
/// use spawn_subint::PyValue;
/// let v = PyValue::from(vec![PyValue::from(1), PyValue::from("two")]);
/// assert_eq!(v, PyValue::List(vec![PyValue::Int(1), PyValue::Str("two".into())]));
/// ```
#[derive(Clone, Debug, PartialEq)]
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
    /// How deep lists, tuples and dicts may nest in a value: `[[1]]` is 2 deep, a scalar
    /// 0. Converting to or from Python, encoding and decoding all refuse a deeper value
    /// with a typed error: each level costs a stack frame of the converting thread, and a
    /// value from Python or from the wire may be hostile (100 000 levels overflow any
    /// thread's stack).
    pub const MAX_DEPTH: usize = 128;

    /// How many values (scalars, lists, dicts, keys) one conversion out of Python may
    /// produce. A list that appears several times is converted each time, so a value of a
    /// few hundred bytes that shares its sub-lists (`a = [a, a]`, a hundred times) would
    /// otherwise take longer than the universe has — holding its interpreter where no
    /// interrupt reaches it.
    pub const MAX_ITEMS: usize = 1 << 22;

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

/// Where a conversion out of Python stands: the containers around the current object
/// (to find cycles and count depth) and how many more values it may produce.
struct Walk {
    enclosing: Vec<*mut py::PyObject>,
    items_left: usize,
}

/// The message of every refusal of a too deep value.
fn too_deep() -> String {
    format!(
        "lists, tuples and dicts nested deeper than {} levels (PyValue::MAX_DEPTH) do not convert to a brood PyValue",
        PyValue::MAX_DEPTH
    )
}

// Serde by hand, for the depth limit: the derived impls recurse once per level without a
// bound. The format is the one `#[derive]` would produce (an externally tagged enum with
// these variant names and indices), so encoded values do not change.

const VARIANTS: &[&str] = &[
    "None", "Bool", "Int", "Float", "Str", "Bytes", "List", "Dict",
];

/// A value under `depth` enclosing lists and dicts, for serialising.
struct Nested<'a> {
    value: &'a PyValue,
    depth: usize,
}

/// The items of a list `depth` deep (the list included).
struct Items<'a> {
    items: &'a [PyValue],
    depth: usize,
}

/// The entries of a dict `depth` deep (the dict included).
struct Entries<'a> {
    entries: &'a [(PyValue, PyValue)],
    depth: usize,
}

impl Serialize for PyValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Nested {
            value: self,
            depth: 0,
        }
        .serialize(s)
    }
}

impl Serialize for Nested<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const NAME: &str = "PyValue";
        match self.value {
            PyValue::None => s.serialize_unit_variant(NAME, 0, VARIANTS[0]),
            PyValue::Bool(v) => s.serialize_newtype_variant(NAME, 1, VARIANTS[1], v),
            PyValue::Int(v) => s.serialize_newtype_variant(NAME, 2, VARIANTS[2], v),
            PyValue::Float(v) => s.serialize_newtype_variant(NAME, 3, VARIANTS[3], v),
            PyValue::Str(v) => s.serialize_newtype_variant(NAME, 4, VARIANTS[4], v),
            PyValue::Bytes(v) => s.serialize_newtype_variant(NAME, 5, VARIANTS[5], v),
            PyValue::List(items) => {
                let depth = self.depth + 1;
                if depth > PyValue::MAX_DEPTH {
                    return Err(ser::Error::custom(too_deep()));
                }
                s.serialize_newtype_variant(NAME, 6, VARIANTS[6], &Items { items, depth })
            }
            PyValue::Dict(entries) => {
                let depth = self.depth + 1;
                if depth > PyValue::MAX_DEPTH {
                    return Err(ser::Error::custom(too_deep()));
                }
                s.serialize_newtype_variant(NAME, 7, VARIANTS[7], &Entries { entries, depth })
            }
        }
    }
}

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for value in self.items {
            seq.serialize_element(&Nested {
                value,
                depth: self.depth,
            })?;
        }
        seq.end()
    }
}

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.entries.len()))?;
        for (k, v) in self.entries {
            // A pair is a 2-tuple, as the derived impl of `Vec<(PyValue, PyValue)>` has it.
            seq.serialize_element(&(
                Nested {
                    value: k,
                    depth: self.depth,
                },
                Nested {
                    value: v,
                    depth: self.depth,
                },
            ))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for PyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PyValue, D::Error> {
        ValueSeed { depth: 0 }.deserialize(d)
    }
}

/// Which variant, by index (postcard) or name (self-describing formats).
enum Tag {
    None,
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    List,
    Dict,
}

impl Tag {
    fn from_index(i: u64) -> Option<Tag> {
        Some(match i {
            0 => Tag::None,
            1 => Tag::Bool,
            2 => Tag::Int,
            3 => Tag::Float,
            4 => Tag::Str,
            5 => Tag::Bytes,
            6 => Tag::List,
            7 => Tag::Dict,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tag, D::Error> {
        struct TagVisitor;
        impl Visitor<'_> for TagVisitor {
            type Value = Tag;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a PyValue variant")
            }
            fn visit_u64<E: de::Error>(self, i: u64) -> Result<Tag, E> {
                Tag::from_index(i).ok_or_else(|| {
                    E::invalid_value(de::Unexpected::Unsigned(i), &"a variant index 0 to 7")
                })
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Tag, E> {
                VARIANTS
                    .iter()
                    .position(|v| *v == name)
                    .and_then(|i| Tag::from_index(i as u64))
                    .ok_or_else(|| E::unknown_variant(name, VARIANTS))
            }
            fn visit_bytes<E: de::Error>(self, name: &[u8]) -> Result<Tag, E> {
                match std::str::from_utf8(name) {
                    Ok(name) => self.visit_str(name),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(name), &self)),
                }
            }
        }
        d.deserialize_identifier(TagVisitor)
    }
}

/// Decodes a value under `depth` enclosing lists and dicts.
#[derive(Clone, Copy)]
struct ValueSeed {
    depth: usize,
}

impl ValueSeed {
    /// The depth of a list or dict found here, if it is allowed.
    fn container<E: de::Error>(self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > PyValue::MAX_DEPTH {
            return Err(E::custom(too_deep()));
        }
        Ok(depth)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = PyValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PyValue, D::Error> {
        d.deserialize_enum("PyValue", VARIANTS, self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = PyValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a brood PyValue")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<PyValue, A::Error> {
        let (tag, variant) = data.variant::<Tag>()?;
        match tag {
            Tag::None => variant.unit_variant().map(|()| PyValue::None),
            Tag::Bool => variant.newtype_variant().map(PyValue::Bool),
            Tag::Int => variant.newtype_variant().map(PyValue::Int),
            Tag::Float => variant.newtype_variant().map(PyValue::Float),
            Tag::Str => variant.newtype_variant().map(PyValue::Str),
            Tag::Bytes => variant.newtype_variant().map(PyValue::Bytes),
            Tag::List => {
                let depth = self.container()?;
                variant
                    .newtype_variant_seed(ListSeed { depth })
                    .map(PyValue::List)
            }
            Tag::Dict => {
                let depth = self.container()?;
                variant
                    .newtype_variant_seed(DictSeed { depth })
                    .map(PyValue::Dict)
            }
        }
    }
}

/// What to reserve for a sequence that says it has `hint` items: at most 4 KiB up front,
/// whatever a hostile length prefix claims. Small, because reservations add up over the
/// nesting levels being decoded at once (128 lists each claiming thousands of items
/// reserved 127 MiB with a 1 MiB cap, found by fuzzing); a real long list grows as it
/// is read.
fn cautious<T>(hint: Option<usize>) -> usize {
    hint.unwrap_or(0)
        .min((4 << 10) / std::mem::size_of::<T>().max(1))
}

/// Decodes the items of a list `depth` deep.
struct ListSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Vec<PyValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<PyValue>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Vec<PyValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the items of a PyValue list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<PyValue>, A::Error> {
        let mut out = Vec::with_capacity(cautious::<PyValue>(seq.size_hint()));
        while let Some(v) = seq.next_element_seed(ValueSeed { depth: self.depth })? {
            out.push(v);
        }
        Ok(out)
    }
}

/// Decodes the entries of a dict `depth` deep.
struct DictSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for DictSeed {
    type Value = Vec<(PyValue, PyValue)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for DictSeed {
    type Value = Vec<(PyValue, PyValue)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the entries of a PyValue dict")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(cautious::<(PyValue, PyValue)>(seq.size_hint()));
        while let Some(entry) = seq.next_element_seed(EntrySeed { depth: self.depth })? {
            out.push(entry);
        }
        Ok(out)
    }
}

/// Decodes one `(key, value)` pair of a dict `depth` deep.
struct EntrySeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = (PyValue, PyValue);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_tuple(2, self)
    }
}

impl<'de> Visitor<'de> for EntrySeed {
    type Value = (PyValue, PyValue);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a (key, value) pair of a PyValue dict")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let seed = ValueSeed { depth: self.depth };
        let k = seq
            .next_element_seed(seed)?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let v = seq
            .next_element_seed(seed)?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Ok((k, v))
    }
}

/// A Python exception, as Rust data: its type's name, its message and the formatted
/// traceback.
///
/// It is the contract's [`ForeignError`](spawn_api::ForeignError): an actor function that
/// fails with one (with `?`) reports the *Python* type name as the error's kind
/// (`ValueError`, not a Rust type name), its message and its traceback.
pub type PyError = spawn_api::ForeignError;

/// The right to run Python in one interpreter, for the duration of a closure passed to
/// [`Interp::run`](crate::Interp::run). It cannot leave the closure (`'py`) nor the thread
/// (it is not `Send`), and everything it hands out is Rust data.
pub struct Python<'py> {
    // Borrowing the attachment is what makes `'py` mean "while this thread holds the GIL".
    _attached: PhantomData<&'py Attached<'py>>,
    _not_send: PhantomData<*mut ()>,
}

impl std::fmt::Debug for Python<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Python { .. }")
    }
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
        self.to_object_at(v, 0)
    }

    /// [`to_object`](Self::to_object) of a value under `depth` enclosing lists and dicts.
    fn to_object_at(&self, v: &PyValue, depth: usize) -> Result<Owned<'py>, PyError> {
        if matches!(v, PyValue::List(_) | PyValue::Dict(_)) && depth >= PyValue::MAX_DEPTH {
            return Err(PyError::new("RecursionError", too_deep()));
        }
        // In every arm the thread is attached, and every constructor returns a new
        // reference or null with an exception set, which `check` turns into an error.
        let o = match v {
            // SAFETY: attached; None is a live (immortal) object we take a new reference to.
            PyValue::None => unsafe { Owned::from_borrowed(py::Py_None()) },
            // SAFETY: attached; a new reference or null.
            PyValue::Bool(b) => unsafe { Owned::from_new(py::PyBool_FromLong((*b).into())) },
            // SAFETY: attached; a new reference or null.
            PyValue::Int(i) => unsafe { Owned::from_new(py::PyLong_FromLongLong(*i)) },
            // SAFETY: attached; a new reference or null.
            PyValue::Float(f) => unsafe { Owned::from_new(py::PyFloat_FromDouble(*f)) },
            // SAFETY: attached; the pointer and length describe the live UTF-8 of `s`,
            // which CPython copies.
            PyValue::Str(s) => unsafe {
                Owned::from_new(py::PyUnicode_FromStringAndSize(
                    s.as_ptr().cast::<c_char>(),
                    s.len() as py::Py_ssize_t,
                ))
            },
            // SAFETY: attached; the pointer and length describe the live bytes of `b`,
            // which CPython copies.
            PyValue::Bytes(b) => unsafe {
                Owned::from_new(py::PyBytes_FromStringAndSize(
                    b.as_ptr().cast::<c_char>(),
                    b.len() as py::Py_ssize_t,
                ))
            },
            PyValue::List(items) => {
                // SAFETY: attached; a new list or null.
                let list = self.check(unsafe {
                    Owned::from_new(py::PyList_New(items.len() as py::Py_ssize_t))
                })?;
                for (i, item) in items.iter().enumerate() {
                    let o = self.to_object_at(item, depth + 1)?;
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
                // SAFETY: attached; a new dict or null.
                let d = self.check(unsafe { Owned::from_new(py::PyDict_New()) })?;
                for (k, v) in entries {
                    let (k, v) = (
                        self.to_object_at(k, depth + 1)?,
                        self.to_object_at(v, depth + 1)?,
                    );
                    // SAFETY: all live; SetItem does not steal. The key is an object this
                    // function built (of a built-in type), so hashing and comparing it
                    // runs no user code; an unhashable one is a TypeError.
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
    ///
    /// Only exact built-in types convert, read through their C accessors by index: no
    /// Python code of the value's own can run meanwhile (no `__iter__`, `__len__`,
    /// `__index__`, `__float__`, `__eq__`, `__hash__`...), and the conversion allocates no
    /// Python object that could start a garbage collection (and so run a finaliser).
    fn to_value(&self, o: &Owned<'py>) -> Result<PyValue, PyError> {
        let mut walk = Walk {
            enclosing: Vec::new(),
            items_left: PyValue::MAX_ITEMS,
        };
        self.to_value_at(o, &mut walk)
    }

    /// [`to_value`](Self::to_value) of an object inside the containers `enclosing`
    /// (outermost first; each kept alive by its caller's reference).
    fn to_value_at(&self, o: &Owned<'py>, walk: &mut Walk) -> Result<PyValue, PyError> {
        let p = o.as_ptr();
        if walk.items_left == 0 {
            return Err(PyError::new(
                "ValueError",
                format!(
                    "a value of more than {} items (PyValue::MAX_ITEMS; shared lists counted each time they appear) does not convert to a brood PyValue",
                    PyValue::MAX_ITEMS
                ),
            ));
        }
        walk.items_left -= 1;
        // SAFETY: for the whole body: attached and `p` is live; the type checks read the object's
        // type, and each accessor is used only on objects of its exact type.
        unsafe {
            if p == py::Py_None() {
                return Ok(PyValue::None);
            }
            // `bool` cannot be subclassed, and is a subclass of `int`: first.
            if py::PyBool_Check(p) != 0 {
                return Ok(PyValue::Bool(p == py::Py_True()));
            }
            if py::PyLong_CheckExact(p) != 0 {
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
            if py::PyFloat_CheckExact(p) != 0 {
                return Ok(PyValue::Float(py::PyFloat_AsDouble(p)));
            }
            if py::PyUnicode_CheckExact(p) != 0 {
                return self.exact_str(o).map(PyValue::Str);
            }
            if py::PyBytes_CheckExact(p) != 0 {
                let mut data: *mut c_char = std::ptr::null_mut();
                let mut len: py::Py_ssize_t = 0;
                if failed(py::PyBytes_AsStringAndSize(p, &mut data, &mut len)) {
                    return Err(self.fetch_error());
                }
                let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
                return Ok(PyValue::Bytes(Bytes::copy_from_slice(bytes)));
            }
            if py::PyByteArray_CheckExact(p) != 0 {
                let len = py::PyByteArray_Size(p);
                let data = py::PyByteArray_AsString(p);
                let bytes = if len <= 0 || data.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(data.cast::<u8>(), len as usize)
                };
                return Ok(PyValue::Bytes(Bytes::copy_from_slice(bytes)));
            }
            let list = py::PyList_CheckExact(p) != 0;
            let tuple = py::PyTuple_CheckExact(p) != 0;
            let dict = py::PyDict_CheckExact(p) != 0;
            if !(list || tuple || dict) {
                let ty = from_c((*py::Py_TYPE(p)).tp_name);
                let base = [
                    (py::PyList_Check(p), "list"),
                    (py::PyTuple_Check(p), "tuple"),
                    (py::PyDict_Check(p), "dict"),
                    (py::PyUnicode_Check(p), "str"),
                    (py::PyLong_Check(p), "int"),
                    (py::PyFloat_Check(p), "float"),
                    (py::PyBytes_Check(p), "bytes"),
                    (py::PyByteArray_Check(p), "bytearray"),
                ]
                .into_iter()
                .find_map(|(is, name)| (is != 0).then_some(name));
                let hint = match base {
                    Some(b) => format!(
                        " (only an exact {b} does, not a subclass: convert it with {b}(...) first)"
                    ),
                    None => String::new(),
                };
                return Err(PyError::new(
                    "TypeError",
                    format!("a {ty} does not convert to a brood PyValue{hint}"),
                ));
            }
            if walk.enclosing.contains(&p) {
                let ty = from_c((*py::Py_TYPE(p)).tp_name);
                return Err(PyError::new(
                    "ValueError",
                    format!(
                        "circular reference: a {ty} that contains itself does not convert to a brood PyValue"
                    ),
                ));
            }
            if walk.enclosing.len() >= PyValue::MAX_DEPTH {
                return Err(PyError::new("RecursionError", too_deep()));
            }
            walk.enclosing.push(p);
            let out = if dict {
                self.dict_entries(p, walk).map(PyValue::Dict)
            } else {
                self.seq_items(p, tuple, walk).map(PyValue::List)
            };
            walk.enclosing.pop();
            out
        }
    }

    /// The items of an exact list or tuple, by index. The length is read again before
    /// each item: the list cannot change while no Python code runs, but reading it again
    /// costs nothing and keeps every access in bounds regardless.
    ///
    /// # Safety
    /// Attached; `p` is a live exact list (`tuple == false`) or tuple.
    unsafe fn seq_items(
        &self,
        p: *mut py::PyObject,
        tuple: bool,
        walk: &mut Walk,
    ) -> Result<Vec<PyValue>, PyError> {
        let mut out = Vec::new();
        let mut i: py::Py_ssize_t = 0;
        loop {
            // SAFETY: per the contract; `i` is checked against the current length, and the
            // borrowed item becomes a strong reference before anything else runs.
            let item = unsafe {
                let n = if tuple {
                    py::PyTuple_Size(p)
                } else {
                    py::PyList_Size(p)
                };
                if i >= n {
                    break;
                }
                let item = if tuple {
                    py::PyTuple_GetItem(p, i)
                } else {
                    py::PyList_GetItem(p, i)
                };
                self.check(Owned::from_borrowed(item))?
            };
            out.push(self.to_value_at(&item, walk)?);
            i += 1;
        }
        Ok(out)
    }

    /// The entries of an exact dict, with `PyDict_Next` (which compares and hashes
    /// nothing, and checks its position against the current table on every step).
    ///
    /// # Safety
    /// Attached; `p` is a live exact dict.
    unsafe fn dict_entries(
        &self,
        p: *mut py::PyObject,
        walk: &mut Walk,
    ) -> Result<Vec<(PyValue, PyValue)>, PyError> {
        let mut pos: py::Py_ssize_t = 0;
        let mut k: *mut py::PyObject = std::ptr::null_mut();
        let mut v: *mut py::PyObject = std::ptr::null_mut();
        let mut out = Vec::new();
        // SAFETY: per the contract; the borrowed key and value become strong references
        // before anything else runs.
        while unsafe { py::PyDict_Next(p, &mut pos, &mut k, &mut v) } != 0 {
            // SAFETY: as above.
            let (k, v) = unsafe {
                (
                    self.check(Owned::from_borrowed(k))?,
                    self.check(Owned::from_borrowed(v))?,
                )
            };
            out.push((self.to_value_at(&k, walk)?, self.to_value_at(&v, walk)?));
        }
        Ok(out)
    }

    /// The text of a `str` (or of an instance of a subclass: reading its UTF-8 runs no
    /// Python code either).
    fn exact_str(&self, o: &Owned<'py>) -> Result<String, PyError> {
        let mut len: py::Py_ssize_t = 0;
        // SAFETY: attached; `o` is a live str (checked by every caller); the returned
        // buffer belongs to the object and lives as long as it, and we copy it at once.
        unsafe {
            let data = py::PyUnicode_AsUTF8AndSize(o.as_ptr(), &mut len);
            if data.is_null() {
                return Err(self.fetch_error());
            }
            let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
            Ok(String::from_utf8_lossy(bytes).into_owned())
        }
    }

    /// Take the pending exception and describe it. Never fails: if describing it raises
    /// in turn, the description says so.
    fn fetch_error(&self) -> PyError {
        // SAFETY: for the whole body: attached; we take ownership of the pending exception and
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

    /// The text of `s` if it is a `str` (a subclass's instance included: an exception's
    /// `__str__` may return one).
    fn str_of(&self, s: &Owned<'py>) -> Option<String> {
        // SAFETY: attached; `s` is live and the check reads its type only.
        if unsafe { py::PyUnicode_Check(s.as_ptr()) } == 0 {
            return None;
        }
        match self.exact_str(s) {
            Ok(s) => Some(s),
            Err(_) => {
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
        // SAFETY: for the whole body: attached; every object passed is live or None.
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
