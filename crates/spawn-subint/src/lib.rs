//! # spawn-subint: actors on their own thread and CPython sub-interpreter
//!
//! [`SubintBackend`] runs each child actor on an OS thread of the parent's process, with
//! its own tokio runtime and the ordinary actor runtime; the child still talks to its
//! parent over the configured transport, so isolation is the default and shared memory is
//! opt-in. Each actor may own a CPython sub-interpreter ([`PythonMode`]): on Python 3.12
//! and later it has its **own GIL** (`Py_NewInterpreterFromConfig` with an isolated
//! configuration), so Python in sibling actors runs truly in parallel; on 3.11 it is the
//! legacy shared-GIL kind (isolation without parallelism). The version is chosen at build
//! time from pyo3's configuration (`PYO3_PYTHON`, `PYO3_CONFIG_FILE`).
//!
//! - [`Interp`] is the handle actor code uses to run Python: a closure over a [`Python`]
//!   context that cannot leave the closure, with only Rust data ([`PyValue`]) going in and
//!   out and Python exceptions arriving as [`PyError`] (type name, message, traceback).
//! - The `python` service's functions ([`Exec`], [`Eval`], [`CallPy`]: `python.exec`,
//!   `python.eval`, `python.call`) work in every backend: in process actors they use the
//!   process's main interpreter. The `brood` facade registers their handlers.
//!
//! ## Who should depend on this crate
//!
//! Programs that pick their crates by hand, to add the `subint` backend to a `Brood`. It
//! depends only on the contract (`spawn-api`), never on the actor runtime: the runtime
//! reaches it through `SpawnBackend`, and it reaches the runtime through the
//! [`ActorEntry`](spawn_api::ActorEntry) in each spawn request.
//!
//! ## Why not pyo3's safe API
//! Its statics, interned strings, `#[pyclass]` type objects and deferred decref pool are
//! process-wide, which is unsound across interpreters (a cross-interpreter decref aborts
//! the process). This crate uses `pyo3_ffi` behind a small wrapper: one host thread
//! creates, runs and ends each interpreter; a thread detaches before it blocks on anything
//! of Rust's.
//!
//! ## Stopping Python
//! Pure-Python loops are stopped with an asynchronous `KeyboardInterrupt`, sent from a
//! helper thread that briefly attaches to the actor's own interpreter (never from the
//! supervisor, which could block forever against a native loop). Every interrupt is for
//! one job: it is injected only if that job is still the one running once the helper
//! holds the interpreter, and an exception still pending when a job ends is dropped, so
//! an interrupt never reaches the next job. A blocking native call
//! (`time.sleep`, a long `sum(range(...))`) cannot be interrupted: the actor is then
//! abandoned and reported, never waited on. Python is never finalised while a
//! sub-interpreter may be stuck; the main interpreter lives until the process exits.

mod backend;
mod ffi;
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod libpython;
mod python;
mod service;

pub use backend::{Abort, KEY, PYTHON_OPTION, PythonMode, SubintBackend, SubintChild};
pub use host::{Interp, InterpError, Shutdown, live_hosts, live_interpreters};
pub use libpython::LIBPYTHON_ENV;
pub use python::{PyError, PyValue, Python};
pub use service::{CallPy, Eval, Exec, NoPython};

#[cfg(test)]
mod tests;
