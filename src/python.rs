//! The `python` service: run Python in any actor without writing Rust.
//!
//! | function | wire name | arguments | reply |
//! |---|---|---|---|
//! | [`Exec`] | `python.exec` | code | `()` |
//! | [`Eval`] | `python.eval` | an expression | its value |
//! | [`CallPy`] | `python.call` | `package.module:function`, args, kwargs | its return value |
//!
//! [`setup`](crate::setup) and [`builder`](crate::builder) register it in every actor. In a
//! sub-interpreter actor the code runs in the actor's own interpreter; in a process actor
//! (`proc`, `fork`) in the process's main interpreter. Either way each actor has a private
//! `__main__` and `sys.modules`. A Python exception arrives as a remote error whose kind is
//! the exception's type name, with its traceback.
//!
//! ```no_run
//! # async fn demo(portal: brood::Portal) -> Result<(), brood::PortalError> {
//! use brood::python::{CallPy, Eval, Exec, PyValue};
//! portal.run(Exec, "import math\nx = 21".into()).await?;
//! assert_eq!(portal.run(Eval, "x * 2".into()).await?, PyValue::Int(42));
//! let r = portal
//!     .run(CallPy, ("math:gcd".into(), vec![12.into(), 18.into()], vec![]))
//!     .await?;
//! assert_eq!(r.as_int(), Some(6));
//! # Ok(()) }
//! ```

use actor_core::{ActorCx, FnError, Registry};

pub use spawn_subint::{CallPy, Eval, Exec, Interp, InterpError, PyError, PyValue, Python};

/// The kind of the error a `python` function returns in an actor started without Python.
pub const NO_PYTHON: &str = "brood::NoPython";

/// The interpreter the actor behind `cx` runs Python in: its own sub-interpreter, or, in
/// a process actor, the process's main interpreter. For Rust handlers that run Python.
///
/// ```
/// use brood::{ActorCx, FnError, python::PyValue};
/// async fn double(cx: ActorCx, x: i64) -> Result<PyValue, FnError> {
///     let interp = brood::python::interp(&cx)?;
///     Ok(interp.run(move |py| py.eval(&format!("{x} * 2"))).await??)
/// }
/// ```
///
/// # Errors
/// An error of kind [`NO_PYTHON`] if the actor was started without Python
/// (`python = "none"`), or the [`InterpError`] if no interpreter can be created.
pub fn interp(cx: &ActorCx) -> Result<Interp, FnError> {
    Interp::of(cx.extensions()).map_err(|e| match e {
        InterpError::NoPython => FnError::new(
            NO_PYTHON,
            format!(
                "actor {} was started without Python (python = \"none\")",
                cx.path()
            ),
        ),
        other => FnError::from(other),
    })
}

/// The `python` service's functions, to merge into a program's registry (the facade's
/// [`builder`](crate::builder) does).
///
/// ```
/// let registry = brood::python::service();
/// assert!(registry.contains("python.eval"));
/// ```
pub fn service() -> Registry {
    Registry::new()
        .call(Exec, |cx, code: String| async move {
            interp(&cx)?.run(move |py| py.exec(&code)).await??;
            Ok(())
        })
        .call(Eval, |cx, expr: String| async move {
            Ok(interp(&cx)?.run(move |py| py.eval(&expr)).await??)
        })
        .call(
            CallPy,
            |cx, (target, args, kwargs): (String, Vec<PyValue>, Vec<(String, PyValue)>)| async move {
                Ok(interp(&cx)?
                    .run(move |py| py.call(&target, &args, &kwargs))
                    .await??)
            },
        )
}
