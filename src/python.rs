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
            let interp = debuggable(&cx).await?;
            interp.run(move |py| py.exec(&code)).await??;
            Ok(())
        })
        .call(Eval, |cx, expr: String| async move {
            let interp = debuggable(&cx).await?;
            Ok(interp.run(move |py| py.eval(&expr)).await??)
        })
        .call(
            CallPy,
            |cx, (target, args, kwargs): (String, Vec<PyValue>, Vec<(String, PyValue)>)| async move {
                let interp = debuggable(&cx).await?;
                Ok(interp
                    .run(move |py| py.call(&target, &args, &kwargs))
                    .await??)
            },
        )
}

/// The actor's interpreter, with `breakpoint()` wired to the tree's debugger lock first
/// if the actor runs in debug mode (see [`breakpoints`]).
async fn debuggable(cx: &ActorCx) -> Result<Interp, FnError> {
    let interp = interp(cx)?;
    if cx.vars().debug_mode && cx.extensions().get::<breakpoints::Installed>().is_none() {
        breakpoints::install(cx, &interp).await?;
    }
    Ok(interp)
}

/// `breakpoint()` in debug mode: `pdb` on the terminal, under the tree's debugger lock.
///
/// Python code asks, Rust takes the lock: the actor's interpreter gets a
/// `sys.breakpointhook` that writes `L` on a pipe and blocks reading another until this
/// actor (a task on its runtime, which the interpreter's thread does not block) holds
/// the lock, has the terminal's foreground and holds its signal keys (`G`, or `N` if the
/// lock cannot be had). It then runs `pdb` on `/dev/tty`; `c` (or `q`) writes `R`, and the
/// lock is released.
mod breakpoints {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    use actor_core::{ActorCx, FnError};
    use spawn_subint::Interp;

    /// In an actor's extensions once its interpreter has the hook.
    pub(super) struct Installed;

    const HOOK: &str = r#"
def __brood_install(req_fd, grant_fd):
    import os, sys, pdb

    # The interpreter owns copies of its ends of the pipes: they close when it ends,
    # which ends the actor's side.
    req_file = os.fdopen(os.dup(req_fd), "wb", buffering=0)
    grant_file = os.fdopen(os.dup(grant_fd), "rb", buffering=0)
    req, grant = req_file.fileno(), grant_file.fileno()

    def hook(*args, **kws):
        _keep = (req_file, grant_file)
        os.write(req, b"L")
        if os.read(grant, 1) != b"G":
            print("brood: the debugger lock cannot be had; breakpoint() skipped", file=sys.stderr)
            return
        try:
            tty_in = open("/dev/tty", "r")
            tty_out = open("/dev/tty", "w")
        except OSError as e:
            os.write(req, b"R")
            print(f"brood: no terminal ({e}); breakpoint() skipped", file=sys.stderr)
            return

        class BroodPdb(pdb.Pdb):
            released = False

            def _release(self):
                if not self.released:
                    self.released = True
                    os.write(req, b"R")

            def set_continue(self):
                super().set_continue()
                self._release()

            def set_quit(self):
                self._release()
                super().set_quit()

        BroodPdb(stdin=tty_in, stdout=tty_out).set_trace(sys._getframe(1))

    sys.breakpointhook = hook

__brood_install({req}, {grant})
del __brood_install
"#;

    pub(super) async fn install(cx: &ActorCx, interp: &Interp) -> Result<(), FnError> {
        let io = |e: std::io::Error| FnError::new("OSError", e.to_string());
        // Requests: Python writes, Rust reads. Grants: Rust writes, Python reads.
        let (mut requests, python_req) = std::io::pipe().map_err(io)?;
        let (python_grant, mut grants) = std::io::pipe().map_err(io)?;
        // The interpreter duplicates these and owns the copies; ours close right after.
        let code = HOOK
            .replace("{req}", &python_req.as_raw_fd().to_string())
            .replace("{grant}", &python_grant.as_raw_fd().to_string());
        interp.run(move |py| py.exec(&code)).await??;
        drop((python_req, python_grant));
        cx.extensions().insert(Installed);
        // A thread reads the requests (a blocking pipe); it ends when the actor's ends of
        // the pipes close with the actor.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u8>();
        std::thread::Builder::new()
            .name("brood-breakpoints".into())
            .spawn(move || {
                let mut b = [0u8; 1];
                while let Ok(1) = requests.read(&mut b) {
                    if tx.send(b[0]).is_err() {
                        break;
                    }
                }
            })
            .map_err(io)?;
        let me = cx.clone();
        // Not one of the actor's cancellable tasks: a session under way keeps the lock
        // until the person continues.
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                if req != b'L' {
                    continue;
                }
                let held = match crate::debug::lock(&me).await {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!(error = %e, "breakpoint(): no debugger lock");
                        let _ = grants.write_all(b"N");
                        continue;
                    }
                };
                let tty = os_wrappers::tty::open_controlling().ok();
                let terminal = tty.as_ref().map(crate::debug::TerminalHeld::take);
                // No cancel request cuts the session short.
                let shield = me.shield_from_cancel();
                if grants.write_all(b"G").is_err() {
                    break;
                }
                // Until `c`/`q` (or the interpreter's end).
                while let Some(r) = rx.recv().await {
                    if r == b'R' {
                        break;
                    }
                }
                drop(terminal);
                held.release().await;
                drop(shield);
            }
        });
        Ok(())
    }
}
