//! The built-in `python` service: run Python in an actor without writing Rust.
//!
//! | function | wire name | arguments | reply |
//! |---|---|---|---|
//! | [`Exec`] | `python.exec` | code | `()` |
//! | [`Eval`] | `python.eval` | an expression | its value |
//! | [`CallPy`] | `python.call` | `package.module:function`, args, kwargs | its return value |
//!
//! In a sub-interpreter actor the code runs in the actor's own interpreter; in a process
//! actor (`proc`, `fork`) it runs in the process's main interpreter. Either way each actor
//! has a private `__main__` and `sys.modules`. A Python exception arrives as a remote error
//! whose kind is the exception's type name, with its traceback.
//!
//! ```no_run
//! # async fn demo(portal: spawn_api::Portal) -> Result<(), spawn_api::PortalError> {
//! use spawn_subint::{CallPy, Eval, Exec, PyValue};
//! portal.run(Exec, "import math\nx = 21".into()).await?;
//! assert_eq!(portal.run(Eval, "x * 2".into()).await?, PyValue::Int(42));
//! let r = portal
//!     .run(CallPy, ("math:gcd".into(), vec![12.into(), 18.into()], vec![]))
//!     .await?;
//! assert_eq!(r.as_int(), Some(6));
//! # Ok(()) }
//! ```

use spawn_api::{ActorCx, FnError, Registry};

use crate::host::Interp;
use crate::python::PyValue;

spawn_api::call!(
    /// Run code as a module body in the actor's `__main__`.
    pub Exec = "python.exec": String => ()
);
spawn_api::call!(
    /// Evaluate an expression in the actor's `__main__`.
    pub Eval = "python.eval": String => PyValue
);
spawn_api::call!(
    /// Call `package.module:function` with positional and keyword arguments.
    pub CallPy = "python.call": (String, Vec<PyValue>, Vec<(String, PyValue)>) => PyValue
);

/// Marks an actor started without Python (`python = "none"`).
#[derive(Clone, Copy, Debug)]
pub struct NoPython;

/// The interpreter the actor behind `cx` runs Python in: its own sub-interpreter, or, in a
/// process actor, the process's main interpreter.
///
/// # Errors
/// A `brood::InterpError` if the actor was started without Python or no interpreter can
/// be created.
pub fn interp(cx: &ActorCx) -> Result<Interp, FnError> {
    if let Some(i) = cx.extensions().get::<Interp>() {
        return Ok((*i).clone());
    }
    if cx.extensions().get::<NoPython>().is_some() {
        return Err(FnError::new(
            "brood::NoPython",
            format!(
                "actor {} was started without Python (python = \"none\")",
                cx.path()
            ),
        ));
    }
    Ok(Interp::main()?)
}

/// The `python` service's functions, to merge into a program's registry.
pub fn python_service() -> Registry {
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
