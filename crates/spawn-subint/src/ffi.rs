//! Every call into CPython's C API, in one place.
//!
//! pyo3's safe API is not used: its statics, interned strings, type objects and deferred
//! decref pool are process-wide, which is unsound once several interpreters run in one
//! process. This module calls the C API directly (through `libpython`, which loads it on
//! first use), under three rules that the rest of the crate relies on:
//!
//! - an interpreter is created, used and ended on one thread (its host thread), and a
//!   thread state is only ever attached on the thread it belongs to;
//! - a `*mut PyObject` never outlives the attachment it was obtained under ([`Owned`]
//!   is tied to it by the `'py` lifetime of [`Attached`]);
//! - a thread detaches (releases the GIL) before it blocks on anything of Rust's.

use std::ffi::{CStr, CString, c_char, c_int, c_long};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::libpython as py;

/// Why an interpreter could not be set up.
pub(crate) type SetupError = String;

/// Initialise CPython for this process once (the main interpreter), without installing
/// signal handlers, and release the GIL at once so that any thread can attach.
pub(crate) fn ensure_main() -> Result<(), SetupError> {
    static INIT: OnceLock<Result<(), SetupError>> = OnceLock::new();
    INIT.get_or_init(|| {
        // CPython enters the process here, with the first interpreter, not at exec.
        py::load()?;
        // SAFETY: Py_IsInitialized may be called at any time, without the GIL.
        if unsafe { py::Py_IsInitialized() } != 0 {
            // The host program initialised Python itself; it owns that set-up.
            return Ok(());
        }
        // SAFETY: Python is not initialised (checked above, and this runs once). 0 means
        // no signal handlers: the host program keeps its own.
        unsafe { py::Py_InitializeEx(0) };
        // SAFETY: same as above; may be called without the GIL.
        if unsafe { py::Py_IsInitialized() } == 0 {
            return Err("CPython failed to initialise".to_owned());
        }
        // SAFETY: Py_InitializeEx left this thread attached holding the GIL; detach so
        // other threads can attach. The saved thread state is never resumed: Python is not
        // finalised while sub-interpreters may still be running (see the crate docs).
        unsafe { py::PyEval_SaveThread() };
        Ok(())
    })
    .clone()
}

/// A thread state that is not attached: created on, and only used by, its own thread.
pub(crate) struct Detached {
    tstate: *mut py::PyThreadState,
}

impl Detached {
    /// Attach this thread state (acquire its interpreter's GIL) for the life of the
    /// returned guard.
    ///
    /// # Safety
    /// Must be called on the thread that created the state, with no thread state
    /// attached on this thread.
    pub(crate) unsafe fn attach(&self) -> Attached<'_> {
        // SAFETY: per this function's contract.
        unsafe { py::PyEval_RestoreThread(self.tstate) };
        Attached {
            _tstate: PhantomData,
            _not_send: PhantomData,
        }
    }
}

/// Proof that the current thread holds an interpreter's GIL. Borrowing it (`'py`) is what
/// lets code touch Python objects; dropping it detaches.
pub(crate) struct Attached<'a> {
    _tstate: PhantomData<&'a Detached>,
    _not_send: PhantomData<*mut ()>,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread is attached (see `attach`).
        unsafe { py::PyEval_SaveThread() };
    }
}

/// A sub-interpreter, owned by the thread that created it.
pub(crate) struct SubInterp {
    sub: Detached,
    main: *mut py::PyThreadState,
    interp: *mut py::PyInterpreterState,
    ident: libc::c_ulong,
}

impl SubInterp {
    /// Create a sub-interpreter on the calling thread: with its own GIL and an isolated
    /// configuration on Python 3.12 and later, the legacy shared-GIL kind on 3.11.
    ///
    /// # Safety
    /// No thread state may be attached on the calling thread; the result must be used and
    /// ended on this thread only.
    pub(crate) unsafe fn new() -> Result<SubInterp, SetupError> {
        ensure_main()?;
        // SAFETY: the main interpreter exists (ensure_main); creating a thread state needs
        // no GIL. Attaching it is allowed: nothing is attached on this thread.
        let main = unsafe { py::PyThreadState_New(py::PyInterpreterState_Main()) };
        if main.is_null() {
            return Err("cannot create a thread state for the main interpreter".to_owned());
        }
        // SAFETY: `main` was just created on this thread and nothing is attached.
        unsafe { py::PyEval_RestoreThread(main) };

        #[cfg(Py_3_12)]
        let created = {
            let config = py::PyInterpreterConfig {
                use_main_obmalloc: 0,
                allow_fork: 0,
                allow_exec: 0,
                allow_threads: 1,
                allow_daemon_threads: 0,
                check_multi_interp_extensions: 1,
                gil: py::PyInterpreterConfig_OWN_GIL,
            };
            let mut tstate: *mut py::PyThreadState = std::ptr::null_mut();
            // SAFETY: the main interpreter's GIL is held by this thread; `tstate` and
            // `config` are live for the call.
            let status = unsafe { py::Py_NewInterpreterFromConfig(&mut tstate, &config) };
            // SAFETY: reading a status struct returned by value.
            if unsafe { py::PyStatus_Exception(status) } != 0 || tstate.is_null() {
                Err("Py_NewInterpreterFromConfig failed".to_owned())
            } else {
                Ok(tstate)
            }
        };
        #[cfg(not(Py_3_12))]
        let created = {
            // SAFETY: the (shared) GIL is held by this thread.
            let tstate = unsafe { py::Py_NewInterpreter() };
            if tstate.is_null() {
                Err("Py_NewInterpreter failed".to_owned())
            } else {
                Ok(tstate)
            }
        };
        let tstate = match created {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: the failed call left `main` current (CPython restores it on
                // failure); clear and delete it, which also releases the GIL.
                unsafe {
                    py::PyThreadState_Swap(main);
                    py::PyThreadState_Clear(main);
                    py::PyThreadState_DeleteCurrent();
                }
                return Err(e);
            }
        };
        // SAFETY: the new interpreter's thread state is current on this thread.
        let (interp, ident) = unsafe {
            (
                py::PyThreadState_GetInterpreter(tstate),
                py::PyThread_get_thread_ident(),
            )
        };
        // SAFETY: `tstate` is current; detach it (3.12+: releases the new interpreter's own
        // GIL; 3.11: the shared one).
        unsafe { py::PyEval_SaveThread() };
        Ok(SubInterp {
            sub: Detached { tstate },
            main,
            interp,
            ident,
        })
    }

    /// The thread state to attach for running code in this interpreter.
    pub(crate) fn thread_state(&self) -> &Detached {
        &self.sub
    }

    /// What an interrupter needs to reach this interpreter's host thread.
    pub(crate) fn target(&self) -> Target {
        Target {
            interp: Some(self.interp),
            ident: self.ident,
        }
    }

    /// End the interpreter.
    ///
    /// # Safety
    /// On the creating thread, with nothing attached. Every interrupter holding this
    /// interpreter's [`Target`] must have been told it is ending (so none attaches during
    /// or after this).
    pub(crate) unsafe fn end(self) {
        // SAFETY: per the contract; the sub-interpreter's state belongs to this thread.
        unsafe {
            py::PyEval_RestoreThread(self.sub.tstate);
            py::Py_EndInterpreter(self.sub.tstate);
        }
        // Nothing is current now. Re-attach the main-interpreter state this thread used to
        // create the interpreter, then delete it (which releases the GIL).
        #[cfg(Py_3_12)]
        // SAFETY: `main` belongs to this thread and nothing is attached.
        unsafe {
            py::PyEval_RestoreThread(self.main)
        };
        #[cfg(not(Py_3_12))]
        // SAFETY: 3.11 keeps the shared GIL held across Py_EndInterpreter; swapping `main`
        // in makes it current again under that GIL.
        unsafe {
            py::PyThreadState_Swap(self.main);
        }
        // SAFETY: `main` is current and the GIL is held.
        unsafe {
            py::PyThreadState_Clear(self.main);
            py::PyThreadState_DeleteCurrent();
        }
    }
}

/// A thread state in the main interpreter for the calling thread (for running code in the
/// process's main interpreter from a host thread).
///
/// # Safety
/// The state belongs to the calling thread and must be used and dropped on it.
pub(crate) unsafe fn main_thread_state() -> Result<MainState, SetupError> {
    ensure_main()?;
    // SAFETY: the main interpreter exists; creating a thread state needs no GIL.
    let tstate = unsafe { py::PyThreadState_New(py::PyInterpreterState_Main()) };
    if tstate.is_null() {
        return Err("cannot create a thread state for the main interpreter".to_owned());
    }
    // SAFETY: attach once to learn this thread's Python ident, then detach.
    let ident = unsafe {
        py::PyEval_RestoreThread(tstate);
        let ident = py::PyThread_get_thread_ident();
        py::PyEval_SaveThread();
        ident
    };
    Ok(MainState {
        state: Detached { tstate },
        ident,
    })
}

/// A main-interpreter thread state owned by one thread.
pub(crate) struct MainState {
    state: Detached,
    ident: libc::c_ulong,
}

impl MainState {
    pub(crate) fn thread_state(&self) -> &Detached {
        &self.state
    }

    pub(crate) fn target(&self) -> Target {
        Target {
            interp: None,
            ident: self.ident,
        }
    }

    /// Delete the state.
    ///
    /// # Safety
    /// On its thread, with nothing attached.
    pub(crate) unsafe fn delete(self) {
        // SAFETY: per the contract.
        unsafe {
            py::PyEval_RestoreThread(self.state.tstate);
            py::PyThreadState_Clear(self.state.tstate);
            py::PyThreadState_DeleteCurrent();
        }
    }
}

/// Where an asynchronous exception is sent: a host thread (by its Python ident) in an
/// interpreter (`None`: the main one).
#[derive(Clone, Copy)]
pub(crate) struct Target {
    interp: Option<*mut py::PyInterpreterState>,
    ident: libc::c_ulong,
}

// SAFETY: a Target is two numbers; the pointer is only dereferenced by CPython, under the
// `Interrupter`'s lock, while the interpreter is known to exist.
unsafe impl Send for Target {}

/// Raises `KeyboardInterrupt` in one job of a host thread, from another thread, without
/// racing the interpreter's end or the host's next job.
///
/// Every job the host thread runs has an id. The host switches the running id only while
/// attached to the interpreter ([`job_started`](Self::job_started) and
/// [`job_ended`](Self::job_ended) take the attachment as proof), and an interrupter
/// checks the id and injects the exception while attached to the same interpreter: as
/// both hold that interpreter's GIL, the check and the injection happen wholly within one
/// job. An exception injected that the job never reached (it was in a native call that
/// returned straight into its end) is still pending when the job ends; the host clears
/// it there, and again before each job starts, so it never reaches the next one.
pub(crate) struct Interrupter {
    // `None` before the interpreter exists and after it started ending.
    target: Mutex<Option<Target>>,
    /// The id of the job running on the host thread (0: none). Written only while the
    /// host thread is attached.
    running: AtomicU64,
}

impl Interrupter {
    pub(crate) fn new() -> Interrupter {
        Interrupter {
            target: Mutex::new(None),
            running: AtomicU64::new(0),
        }
    }

    /// The interpreter exists: interrupts may reach it.
    pub(crate) fn arm(&self, target: Target) {
        *self.target.lock().unwrap() = Some(target);
    }

    /// The interpreter is about to end: no interrupt may attach to it from now on. Waits
    /// for an interrupt in progress. The caller must not hold the GIL.
    pub(crate) fn disarm(&self) {
        *self.target.lock().unwrap() = None;
    }

    /// The id of the job running now (0: none). Only a hint outside the interpreter's GIL:
    /// the job may end right after.
    pub(crate) fn running(&self) -> u64 {
        self.running.load(Ordering::SeqCst)
    }

    /// Job `id` starts on the host thread `target` names, which holds `gil` (attached to
    /// that interpreter; it must not take the target lock here: an interrupter holds it
    /// while it waits for this GIL). Drops any asynchronous exception still pending for
    /// the thread (one aimed at an earlier job, or left by code that raised it in its own
    /// thread last thing), then makes `id` the job interrupts may reach.
    pub(crate) fn job_started(&self, id: u64, target: &Target, gil: &Attached<'_>) {
        clear_async_exc(target, gil);
        self.running.store(id, Ordering::SeqCst);
    }

    /// The running job ended: no interrupt reaches the thread any more, and one that was
    /// injected but not raised yet is dropped. Called attached, as
    /// [`job_started`](Self::job_started).
    pub(crate) fn job_ended(&self, target: &Target, gil: &Attached<'_>) {
        self.running.store(0, Ordering::SeqCst);
        clear_async_exc(target, gil);
    }

    /// Schedule `KeyboardInterrupt` in job `job` of the target thread, if that job is the
    /// one running once this thread holds the target interpreter's GIL. Blocks until then,
    /// which a native loop may never allow: call it on a thread that can be abandoned,
    /// never on a supervisor. Returns whether it was sent.
    pub(crate) fn interrupt(&self, job: u64) -> bool {
        // Held throughout, so the interpreter cannot end while we are attached to it.
        let guard = self.target.lock().unwrap();
        let Some(t) = *guard else {
            return false;
        };
        let interp = match t.interp {
            Some(i) => i,
            // SAFETY: the main interpreter lives for the rest of the process.
            None => unsafe { py::PyInterpreterState_Main() },
        };
        // SAFETY: `interp` is alive (armed, not disarmed, and disarming waits for this
        // lock). The new thread state belongs to this thread, which has nothing attached
        // (it is a dedicated interrupter thread); attaching a state of the target
        // interpreter asks *that* interpreter's running thread to drop the GIL. While we
        // hold it the host thread is not attached, so the running job cannot change
        // between the check and the injection (it changes only while the host is
        // attached).
        unsafe {
            let ts = py::PyThreadState_New(interp);
            if ts.is_null() {
                return false;
            }
            py::PyEval_RestoreThread(ts);
            let n = if self.running.load(Ordering::SeqCst) == job && job != 0 {
                py::PyThreadState_SetAsyncExc(t.ident as c_long, py::PyExc_KeyboardInterrupt())
            } else {
                0
            };
            py::PyThreadState_Clear(ts);
            py::PyThreadState_DeleteCurrent();
            n > 0
        }
    }
}

/// Drop the asynchronous exception pending for the thread `target` names, if any.
fn clear_async_exc(target: &Target, _gil: &Attached<'_>) {
    // SAFETY: attached to the target's interpreter (`_gil`), where the call looks the
    // thread up; a NULL exception clears what is pending and sets nothing.
    unsafe {
        py::PyThreadState_SetAsyncExc(target.ident as c_long, std::ptr::null_mut());
    }
}

/// A strong reference to a Python object, valid while its thread stays attached (`'py`).
pub(crate) struct Owned<'py> {
    ptr: *mut py::PyObject,
    _py: PhantomData<&'py Attached<'py>>,
}

impl<'py> Owned<'py> {
    /// Take ownership of a new reference; `None` if `ptr` is null (a failed call).
    ///
    /// # Safety
    /// `ptr` is null or a new (owned) reference obtained while attached for `'py`.
    pub(crate) unsafe fn from_new(ptr: *mut py::PyObject) -> Option<Owned<'py>> {
        (!ptr.is_null()).then_some(Owned {
            ptr,
            _py: PhantomData,
        })
    }

    /// Take a new reference to a borrowed one.
    ///
    /// # Safety
    /// `ptr` is a valid borrowed reference while attached for `'py`.
    pub(crate) unsafe fn from_borrowed(ptr: *mut py::PyObject) -> Option<Owned<'py>> {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: a valid object, and the GIL is held.
        unsafe { py::Py_IncRef(ptr) };
        Some(Owned {
            ptr,
            _py: PhantomData,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut py::PyObject {
        self.ptr
    }

    /// Give up ownership (for APIs that steal a reference).
    pub(crate) fn into_ptr(self) -> *mut py::PyObject {
        let p = self.ptr;
        std::mem::forget(self);
        p
    }
}

impl Drop for Owned<'_> {
    fn drop(&mut self) {
        // SAFETY: we own one reference, and `'py` guarantees the thread is still attached.
        unsafe { py::Py_DecRef(self.ptr) };
    }
}

/// A C string for the C API; interior NULs become a typed error, never a panic.
pub(crate) fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// A C string returned by CPython, copied into Rust.
///
/// # Safety
/// `p` is null or a valid NUL-terminated string.
pub(crate) unsafe fn from_c(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// `c_int` result of a C API call that signals failure with -1.
pub(crate) fn failed(r: c_int) -> bool {
    r < 0
}
