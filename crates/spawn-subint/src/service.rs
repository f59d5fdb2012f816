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
//! The handlers live with the actor runtime (the `brood` facade's `python::service()`
//! registers them); this crate defines the functions and finds an actor's interpreter
//! ([`Interp::of`]).
//!
//! ```no_run
//! # async fn demo(portal: actor_core::Portal) -> Result<(), actor_core::PortalError> {
//! use spawn_subint::{CallPy, Eval, Exec, PyValue};
//! portal.run(Exec, "import math\nx = 21".into()).await?;
//! assert_eq!(portal.run(Eval, "x * 2".into()).await?, PyValue::Int(42));
//! let r = portal
//!     .run(CallPy, ("math:gcd".into(), vec![12.into(), 18.into()], vec![]))
//!     .await?;
//! assert_eq!(r.as_int(), Some(6));
//! # Ok(()) }
//! ```

use spawn_api::Extensions;

use crate::host::{Interp, InterpError};
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

impl Interp {
    /// The interpreter the actor whose extensions are `ext` runs Python in: its own
    /// sub-interpreter, or, in a process actor, the process's main interpreter. In an
    /// actor function, pass `cx.extensions()`.
    ///
    /// # Errors
    /// [`InterpError::NoPython`] if the actor was started without Python
    /// (`python = "none"`), or [`InterpError::Setup`] if no interpreter can be created.
    pub fn of(ext: &Extensions) -> Result<Interp, InterpError> {
        if let Some(i) = ext.get::<Interp>() {
            return Ok((*i).clone());
        }
        if ext.get::<NoPython>().is_some() {
            return Err(InterpError::NoPython);
        }
        Interp::main()
    }
}
