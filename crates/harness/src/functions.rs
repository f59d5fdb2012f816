//! The actor functions the integration suite calls. Every test binary serves all of them
//! (children are the test binary itself).

use std::time::Duration;

use brood::shm::{FrozenRegion, ShmRegion};
use brood::{
    ActorCx, ActorOptions, Blob, CalleeContext, FnError, Registry, RuntimeVars, StreamTx, kinds,
};
use serde::{Deserialize, Serialize};
use spawn_subint::{Abort, CallPy, Exec, PyValue};

brood::call!(
    /// Adds two numbers.
    pub Add = "t.add": (i64, i64) => i64
);
brood::call!(
    /// Fails with an error of the given kind and message.
    pub Fail = "t.fail": (String, String) => ()
);
brood::call!(
    /// Panics with the given message.
    pub Panic = "t.panic": String => ()
);
brood::call!(
    /// Ends the actor with the given exit status: a process actor's process exits at once
    /// (no clean shutdown); an in-process actor shuts down in order and reports the code
    /// (`std::process::exit` would end the whole test process). Never replies.
    pub Exit = "t.exit": i32 => ()
);
brood::call!(
    /// Crashes the actor as a kill would: a process actor sends itself SIGKILL; an
    /// in-process actor aborts its runtime (its parent then sees it killed by SIGKILL).
    /// Never replies.
    pub Crash = "t.crash": () => ()
);
brood::call!(
    /// Sleeps (asynchronously, so cancellation reaches it) for the given milliseconds.
    pub Sleep = "t.sleep": u64 => ()
);
brood::context!(
    /// Sends `started`, then blocks its thread in a loop that never yields, so it
    /// ignores cancellation; with `true` it also ignores SIGTERM, so only a kill stops
    /// it. Run it on a multi-thread child runtime, or `started` cannot leave.
    ///
    /// In an in-process actor the loop also ends once the actor is aborted (terminated
    /// or killed: its runtime is dropped), so the thread does not outlive the test; the
    /// `true` flag is ignored there (a signal disposition belongs to the whole process).
    pub Stubborn = "t.stubborn": bool => started (), in (), out (), return ()
);
brood::context!(
    /// Runs Python code (a module body, in the actor's `__main__`) in the actor's
    /// interpreter and returns when it ends (a Python exception is the call's error).
    ///
    /// The code calls `started()` (defined for it in `__main__`) to have `started` sent:
    /// the caller then knows the code got that far, so an interrupt cannot land before it.
    /// With `true`, `started` is sent only once, after that, the interpreter's thread is
    /// blocked in `clock_nanosleep` (in `time.sleep`), as the kernel reports it.
    pub PyRun = "t.py_run": (String, bool) => started (), in (), out (), return ()
);
brood::call!(
    /// Spawns a child called `grandchild`, runs `python.exec(code)` then
    /// `python.call(target)` in it, relaying their errors with `?`.
    pub PyViaChild = "t.py_via_child": (String, String) => PyValue
);
brood::call!(
    /// The actor's runtime vars as `runtime_vars::current()` sees them, read before and
    /// after sleeping the given milliseconds (so other actors run in between).
    pub VarsAcross = "t.vars_across": u64 => (RuntimeVars, RuntimeVars)
);
brood::call!(
    /// The actor's process id and listening address.
    pub WhoAmI = "t.whoami": () => Who
);
brood::call!(
    /// The actor's runtime vars as `runtime_vars::current()` sees them.
    pub Vars = "t.vars": () => RuntimeVars
);
brood::call!(
    /// Spawns a child called `name` and returns its `Add(a, b)`.
    pub AddViaChild = "t.add_via_child": (String, i64, i64) => i64
);
brood::call!(
    /// Spawns a child called `grandchild` with the given options and returns where it
    /// is, its vars and its `Add(20, 22)`.
    pub AskViaChild = "t.ask_via_child": ActorOptionsWire => (Who, RuntimeVars, i64)
);
brood::call!(
    /// Spawns a child and relays its `Fail(kind, message)`.
    pub FailViaChild = "t.fail_via_child": (String, String) => ()
);
brood::call!(
    /// Spawns a child with `debug_mode` as given and returns the vars of the child and of
    /// a grandchild below it.
    pub VarsOfSubtree = "t.vars_subtree": bool => (RuntimeVars, RuntimeVars)
);
brood::stream!(
    /// Streams `0..n`.
    pub Count = "t.count": u64 => u64
);
brood::stream!(
    /// Streams `n` blobs of `size` bytes.
    pub Blobs = "t.blobs": (u64, u64) => Blob
);
brood::context!(
    /// Echoes every item back upper-cased; returns how many it echoed.
    pub Echo = "t.echo": String => started String, in String, out String, return u64
);
brood::context!(
    /// Starts a grandchild that serves until cancelled, reports its [`Who`] as the
    /// started value, then waits until cancelled itself.
    pub HoldGrandchild = "t.hold_grandchild": ActorOptionsWire => started Who, in (), out (), return ()
);

brood::context!(
    /// Sends `n` items (0, 1, ...), then fails with an error of the given kind.
    pub FailAfter = "t.fail_after": (u32, String) => started (), in (), out u32, return ()
);
brood::stream!(
    /// Streams `0..n`, then fails with an error of kind `Boom`.
    pub CountThenFail = "t.count_then_fail": u64 => u64
);
brood::call!(
    /// Spawns a child called `grandchild` and has it panic with the given message,
    /// relaying the error with `?`.
    pub PanicViaChild = "t.panic_via_child": String => ()
);
brood::context!(
    /// Starts a grandchild (on a two-worker runtime, with the given options) that only a
    /// kill can stop: a process runs [`Stubborn`] ignoring SIGTERM; an in-process actor
    /// runs Python stuck in a native call ([`PY_STUCK`]). Reports the grandchild's [`Who`]
    /// as the started value, then waits until cancelled.
    pub HoldStuckGrandchild = "t.hold_stuck_grandchild": ActorOptionsWire => started Who, in (), out (), return ()
);
brood::call!(
    /// Blocks the actor's runtime thread (a plain `std::thread::sleep`) for the given
    /// milliseconds: nothing in the actor runs meanwhile, not even its cancellation.
    pub BlockThread = "t.block_thread": u64 => ()
);
brood::context!(
    /// Sends `started`, then never reads what the caller sends; ends when cancelled.
    pub Sink = "t.sink": () => started (), in Blob, out (), return ()
);
brood::call!(
    /// Runs a task with [`ActorCx::spawn`] and returns the tree path it saw through
    /// `runtime_vars::current()`.
    pub SpawnedTaskPath = "t.spawned_task_path": () => String
);

/// Python an in-process actor cannot be stopped from: blocked in a native call (in
/// `clock_nanosleep`, in `time.sleep`) once `started()` returns, for 3 s — long enough to
/// outlast a ladder with short bounds up to its kill and the backend's 1 s bound on ending
/// an interpreter, short enough to end well within the harness's grace for threads.
pub const PY_STUCK: &str = "import time\nstarted()\ntime.sleep(3)\n";

/// Where an actor is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    /// Its process id.
    pub pid: u32,
    /// The id of the thread its runtime runs on (an in-process actor shares `pid` with
    /// its parent; this tells them apart).
    pub tid: u32,
    /// Its listening address.
    pub addr: String,
    /// Its tree path.
    pub path: String,
}

brood::call!(
    /// What the kernel says about the actor's process: its open descriptors, threads,
    /// parent and process group.
    pub ProcSelf = "t.proc_self": () => ProcInfo
);

/// An actor's process as `/proc/self` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcInfo {
    /// Its pid.
    pub pid: u32,
    /// Its OS parent (for a forked actor: the forkserver, not its parent actor).
    pub ppid: u32,
    /// Its process group.
    pub pgid: u32,
    /// How many threads it runs.
    pub threads: u32,
    /// Its open descriptors and what they point at (`socket:[123]`, `/dev/null`, ...).
    pub fds: Vec<(i32, String)>,
}

impl ProcInfo {
    /// The running process.
    pub fn of_self() -> ProcInfo {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(0)
        };
        ProcInfo {
            pid: std::process::id(),
            ppid: field("PPid:"),
            pgid: nix::unistd::getpgrp().as_raw() as u32,
            threads: field("Threads:"),
            fds: crate::leaks::open_fds().into_iter().collect(),
        }
    }
}

/// The part of [`ActorOptions`] a test passes over the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorOptionsWire {
    /// The backend key, if not the parent's.
    pub backend: Option<String>,
    /// Debug mode for the grandchild.
    pub debug_mode: Option<bool>,
    /// The transport key, if not the parent's.
    pub transport: Option<String>,
}

impl ActorOptionsWire {
    /// These options on top of `base`.
    pub fn apply(&self, base: ActorOptions) -> ActorOptions {
        let mut o = base;
        if let Some(b) = &self.backend {
            o = o.backend(b.clone());
        }
        if let Some(t) = &self.transport {
            o = o.transport(t.clone());
        }
        if let Some(d) = self.debug_mode {
            o = o.vars(|v| v.debug_mode(d));
        }
        o
    }
}

/// The abort switch of an in-process (sub-interpreter) actor; `None` in a process actor
/// (and in a root).
pub fn abort_of(cx: &ActorCx) -> Option<std::sync::Arc<Abort>> {
    cx.extensions().get::<Abort>()
}

fn who(cx: &ActorCx) -> Who {
    Who {
        pid: std::process::id(),
        tid: nix::unistd::gettid().as_raw() as u32,
        addr: cx.addr().to_string(),
        path: cx.path().to_owned(),
    }
}

/// A job over shared memory: regions nested in an ordinary serde struct.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegionJob {
    /// A label, to show the bytes around the regions survive.
    pub label: String,
    /// Read by the job.
    pub input: ShmRegion,
    /// Written by the job: `input` reversed.
    pub output: ShmRegion,
}

brood::context!(
    /// Takes the tree's debugger lock, sends `started`, then blocks its thread as a
    /// person in a debugger would (nothing reaches it: no cancel, no call) until the file
    /// at the path exists; then releases the lock and returns.
    pub HoldDebugLock = "t.hold_debug_lock": String => started (), in (), out (), return ()
);
brood::context!(
    /// Starts a child of the given name in debug mode (whatever this actor's mode) and
    /// has it hold the debugger lock ([`HoldDebugLock`] with the file); sends `started`
    /// (the child's [`Who`]) once it holds it, then waits for ever.
    pub ChildHoldsDebugLock = "t.child_holds_debug_lock": (String, String) => started Who, in (), out (), return ()
);
brood::call!(
    /// Takes the tree's debugger lock and lets it go at once; returns how long it
    /// waited, in milliseconds.
    pub TakeDebugLock = "t.take_debug_lock": () => u64
);

brood::call!(
    /// Holds a cancel shield for the given milliseconds (the runtime stays free), then
    /// returns whether it was not cut short.
    pub ShieldFor = "t.shield_for": u64 => bool
);
brood::call!(
    /// Returns its argument plus one and, in the same step, ends the actor with exit
    /// code 0: the reply is the actor's last frame, written just before its end.
    pub ReplyThenEnd = "t.reply_then_end": u32 => u32
);
brood::call!(
    /// Opens a direct portal to the actor at the address and asks it to cancel itself
    /// (the request alone: no teardown ladder, it is not our child); returns whether it
    /// acknowledged or went away within the cancel timeout.
    pub CancelVia = "t.cancel_via": String => bool
);
brood::call!(
    /// The id of the actor that made this call.
    pub CallerName = "t.caller_name": () => String
);
brood::call!(
    /// Opens a direct portal to the actor at the address, adds the two numbers there, and
    /// returns the sum with the name that actor saw as its caller.
    pub AddVia = "t.add_via": (String, i64, i64) => (i64, String)
);
brood::call!(
    /// Starts a child of the given name and has it run [`AddVia`] with the rest.
    pub RelayAddVia = "t.relay_add_via": (String, String, i64, i64) => (i64, String)
);
brood::call!(
    /// Opens `n` direct portals to the actor at the address one after another, one call
    /// each; returns how many answered.
    pub ConnectMany = "t.connect_many": (String, u32) => u32
);
brood::call!(
    /// Tries a direct portal to the address; the error's display, or `""` if it opened
    /// and a call through it worked.
    pub TryConnect = "t.try_connect": String => String
);

fn parse_addr(a: &str) -> Result<brood::Addr, FnError> {
    a.parse()
        .map_err(|e| FnError::new("ValueError", format!("not an address {a:?}: {e}")))
}

brood::call!(
    /// Fills the region with the byte and returns the region's length.
    pub RegionFill = "t.region_fill": (ShmRegion, u8) => u64
);
brood::call!(
    /// Makes a region of the length filled with the byte and returns it.
    pub RegionMake = "t.region_make": (usize, u8) => ShmRegion
);
brood::call!(
    /// Makes a region of the length filled with the byte, freezes it and returns it.
    pub FrozenMake = "t.frozen_make": (usize, u8) => FrozenRegion
);
brood::call!(
    /// The sum of the bytes of a frozen region.
    pub FrozenSum = "t.frozen_sum": FrozenRegion => u64
);
brood::call!(
    /// Writes `input` reversed into `output`; returns the label.
    pub RegionReverse = "t.region_reverse": RegionJob => String
);
brood::stream!(
    /// Streams `n` fresh regions of `len` bytes, the i-th filled with byte `i`.
    pub RegionStream = "t.region_stream": (u32, usize) => ShmRegion
);
brood::call!(
    /// Claims the receiving end of a `u64` ring in the region and returns the sum and
    /// count of everything received until the sender is gone.
    pub RingSum = "t.ring_sum": ShmRegion => (u64, u64)
);

brood::call!(
    /// Starts a grandchild and has it fill the region with the byte ([`RegionFill`]);
    /// `true` once it did.
    pub SpawnAndFill = "t.spawn_and_fill": (ShmRegion, u8) => bool
);

fn region_error(e: impl std::fmt::Display) -> FnError {
    FnError::new("RegionError", e.to_string())
}

fn filled(len: usize, byte: u8) -> Result<ShmRegion, FnError> {
    let r = ShmRegion::new(len).map_err(region_error)?;
    r.write(0, &vec![byte; len]).map_err(region_error)?;
    Ok(r)
}

/// The functions of this module (and `sandboxed`'s); every test actor serves them, with
/// the discovery tests' and brood's services (see [`crate::brood`]).
pub fn registry() -> Registry {
    crate::sandboxed::calls(Registry::new())
        .call(RegionFill, |_cx, (r, byte): (ShmRegion, u8)| async move {
            r.write(0, &vec![byte; r.len()]).map_err(region_error)?;
            Ok(r.len() as u64)
        })
        .call(
            RegionMake,
            |_cx, (len, byte)| async move { filled(len, byte) },
        )
        .call(FrozenMake, |_cx, (len, byte)| async move {
            filled(len, byte)?.freeze().map_err(region_error)
        })
        .call(FrozenSum, |_cx, r: FrozenRegion| async move {
            Ok(r.iter().map(|&b| u64::from(b)).sum())
        })
        .call(RegionReverse, |_cx, job: RegionJob| async move {
            let mut bytes = vec![0u8; job.input.len()];
            job.input.read(0, &mut bytes).map_err(region_error)?;
            bytes.reverse();
            job.output.write(0, &bytes).map_err(region_error)?;
            Ok(job.label)
        })
        .stream(
            RegionStream,
            |_cx, (n, len): (u32, usize), tx: StreamTx<ShmRegion>| async move {
                for i in 0..n {
                    tx.send(filled(len, i as u8)?).await?;
                }
                Ok(())
            },
        )
        .context(
            HoldDebugLock,
            |cx, file: String, ctx: CalleeContext<HoldDebugLock>| async move {
                let lock = brood::debug::lock(&cx)
                    .await
                    .map_err(|e| FnError::new("DebugLockError", e.to_string()))?;
                let _stream = ctx.started(()).await?;
                // Let `started` leave before the thread stops.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while !std::path::Path::new(&file).exists() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                lock.release().await;
                Ok(())
            },
        )
        .context(
            ChildHoldsDebugLock,
            |cx, (name, file): (String, String), ctx: CalleeContext<ChildHoldsDebugLock>| async move {
                cx.open_nursery(async |n| {
                    let leaf = n
                        .start_actor(&name, ActorOptions::new().vars(|v| v.debug_mode(true)))
                        .await?;
                    let who = leaf.run(WhoAmI, ()).await?;
                    let (_held, ()) = leaf.open_context(HoldDebugLock, file).await?;
                    let _stream = ctx.started(who).await?;
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await?;
                Ok(())
            },
        )
        .call(TakeDebugLock, |cx, ()| async move {
            let t = std::time::Instant::now();
            let held = brood::debug::lock(&cx)
                .await
                .map_err(|e| FnError::new("DebugLockError", e.to_string()))?;
            let waited = t.elapsed().as_millis() as u64;
            held.release().await;
            Ok(waited)
        })
        .call(ReplyThenEnd, |cx, n: u32| async move {
            cx.exit(0);
            Ok(n + 1)
        })
        .call(ShieldFor, |cx, ms: u64| async move {
            let shield = cx.shield_from_cancel();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            drop(shield);
            Ok(true)
        })
        .call(CancelVia, |cx, addr: String| async move {
            let portal = cx
                .connect(&parse_addr(&addr)?)
                .await
                .map_err(|e| FnError::new("ConnectError", e.to_string()))?;
            Ok(portal.cancel_actor().await)
        })
        .call(CallerName, |cx, ()| async move {
            Ok(cx.caller().map(|c| c.name().to_owned()).unwrap_or_default())
        })
        .call(AddVia, |cx, (addr, a, b): (String, i64, i64)| async move {
            let portal = cx
                .connect(&parse_addr(&addr)?)
                .await
                .map_err(|e| FnError::new("ConnectError", e.to_string()))?;
            let sum = portal.run(Add, (a, b)).await?;
            Ok((sum, portal.run(CallerName, ()).await?))
        })
        .call(
            RelayAddVia,
            |cx, (name, addr, a, b): (String, String, i64, i64)| async move {
                Ok(cx
                    .open_nursery(async |n| {
                        let child = n.start_actor(&name, ActorOptions::new()).await?;
                        Ok(child.run(AddVia, (addr, a, b)).await?)
                    })
                    .await?)
            },
        )
        .call(ConnectMany, |cx, (addr, n): (String, u32)| async move {
            let addr = parse_addr(&addr)?;
            let mut ok = 0;
            for i in 0..n {
                let portal = cx
                    .connect(&addr)
                    .await
                    .map_err(|e| FnError::new("ConnectError", e.to_string()))?;
                if portal.run(Add, (i64::from(i), 1)).await? == i64::from(i) + 1 {
                    ok += 1;
                }
                portal.close().await;
            }
            Ok(ok)
        })
        .call(TryConnect, |cx, addr: String| async move {
            match cx.connect(&parse_addr(&addr)?).await {
                Ok(p) => match p.run(Add, (1, 1)).await {
                    Ok(_) => Ok(String::new()),
                    Err(e) => Ok(e.to_string()),
                },
                Err(e) => Ok(e.to_string()),
            }
        })
        .call(SpawnAndFill, |cx, (r, byte): (ShmRegion, u8)| async move {
            Ok(cx
                .open_nursery(async |n| {
                    let leaf = n.start_actor("leaf", ActorOptions::new()).await?;
                    leaf.run(RegionFill, (r, byte)).await?;
                    Ok(true)
                })
                .await?)
        })
        .call(RingSum, |_cx, r: ShmRegion| async move {
            let mut rx = r.ring_receiver::<u64>().map_err(region_error)?;
            let (mut sum, mut count) = (0u64, 0u64);
            let mut buf = [0u64; 256];
            loop {
                let n = rx.recv_slice(&mut buf).await.map_err(region_error)?;
                if n == 0 {
                    return Ok((sum, count));
                }
                sum += buf[..n].iter().sum::<u64>();
                count += n as u64;
            }
        })
        .call(Add, |_cx, (a, b)| async move { Ok(a + b) })
        .call(Fail, |_cx, (kind, message)| async move {
            Err(FnError::new(kind, message))
        })
        .call(Panic, |_cx, message: String| async move {
            if !message.is_empty() {
                panic!("{message}");
            }
            Ok(())
        })
        .call(Exit, |cx, code| async move {
            if abort_of(&cx).is_none() {
                std::process::exit(code);
            }
            // In-process: an orderly shutdown that ends the actor with `code`.
            cx.exit(code);
            std::future::pending::<()>().await;
            Ok(())
        })
        .call(Crash, |cx, ()| async move {
            match abort_of(&cx) {
                Some(abort) => abort.abort(),
                None => {
                    nix::sys::signal::kill(
                        nix::unistd::getpid(),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .map_err(|e| FnError::new("Errno", e.to_string()))?;
                }
            }
            std::future::pending::<()>().await;
            Ok(())
        })
        .call(Sleep, |_cx, ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        })
        .context(
            Stubborn,
            |cx, ignore_term, ctx: CalleeContext<Stubborn>| async move {
                let abort = abort_of(&cx);
                if ignore_term && abort.is_none() {
                    // SAFETY: setting a disposition to SIG_IGN installs no handler code; it
                    // is what the test wants: a process only SIGKILL can stop.
                    unsafe {
                        libc::signal(libc::SIGTERM, libc::SIG_IGN);
                    }
                }
                let _stream = ctx.started(()).await?;
                // Block the handler for good. `block_in_place` hands this worker's other
                // tasks (the channel writer, which must still send `started`) to another
                // thread: a bare blocking loop would starve the task in this worker's
                // LIFO slot.
                tokio::task::block_in_place(|| {
                    while !abort.as_ref().is_some_and(|a| a.is_aborted()) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
                Err(FnError::new(kinds::CANCELLED, "the actor was aborted"))
            },
        )
        .context(PyRun, py_run)
        .call(PyViaChild, |cx, (code, target)| async move {
            let v = cx
                .open_nursery(async |n| {
                    let gc = n.start_actor("grandchild", ActorOptions::new()).await?;
                    gc.run(Exec, code).await?;
                    Ok(gc.run(CallPy, (target, vec![], vec![])).await?)
                })
                .await?;
            Ok(v)
        })
        .call(VarsAcross, |_cx, ms| async move {
            let before = (*runtime_vars::current()).clone();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok((before, (*runtime_vars::current()).clone()))
        })
        .call(WhoAmI, |cx, ()| async move { Ok(who(&cx)) })
        .call(ProcSelf, |_cx, ()| async move { Ok(ProcInfo::of_self()) })
        .call(Vars, |_cx, ()| async move {
            Ok((*runtime_vars::current()).clone())
        })
        .call(AddViaChild, |cx, (name, a, b)| async move {
            let sum = cx
                .open_nursery(async |n| {
                    let child = n.start_actor(&name, ActorOptions::new()).await?;
                    Ok(child.run(Add, (a, b)).await?)
                })
                .await?;
            Ok(sum)
        })
        .call(AskViaChild, |cx, opts: ActorOptionsWire| async move {
            let answer = cx
                .open_nursery(async |n| {
                    let gc = n
                        .start_actor("grandchild", opts.apply(ActorOptions::new()))
                        .await?;
                    let who = gc.run(WhoAmI, ()).await?;
                    let vars = gc.run(Vars, ()).await?;
                    let sum = gc.run(Add, (20, 22)).await?;
                    Ok((who, vars, sum))
                })
                .await?;
            Ok(answer)
        })
        .call(FailViaChild, |cx, (kind, message)| async move {
            cx.open_nursery(async |n| {
                let child = n.start_actor("grandchild", ActorOptions::new()).await?;
                child.run(Fail, (kind, message)).await?;
                Ok(())
            })
            .await?;
            Ok(())
        })
        .call(VarsOfSubtree, |cx, debug| async move {
            let vars = cx
                .open_nursery(async |n| {
                    let child = n
                        .start_actor("sub", ActorOptions::new().vars(|v| v.debug_mode(debug)))
                        .await?;
                    let v = child.run(Vars, ()).await?;
                    let gv = child.run(VarsOfSubtreeLeaf, ()).await?;
                    Ok((v, gv))
                })
                .await?;
            Ok(vars)
        })
        .call(VarsOfSubtreeLeaf, |cx, ()| async move {
            let v = cx
                .open_nursery(async |n| {
                    let leaf = n.start_actor("leaf", ActorOptions::new()).await?;
                    Ok(leaf.run(Vars, ()).await?)
                })
                .await?;
            Ok(v)
        })
        .stream(Count, count)
        .stream(Blobs, |_cx, (n, size), tx: StreamTx<Blob>| async move {
            let blob = Blob::from(vec![0xabu8; size as usize]);
            for _ in 0..n {
                tx.send(blob.clone()).await?;
            }
            Ok(())
        })
        .context(Echo, echo)
        .context(HoldGrandchild, hold_grandchild)
        .context(
            FailAfter,
            |_cx, (n, kind), ctx: CalleeContext<FailAfter>| async move {
                let stream = ctx.started(()).await?;
                for i in 0..n {
                    stream.send(i).await?;
                }
                Err(FnError::new(kind, format!("failed after {n} items")))
            },
        )
        .stream(CountThenFail, |_cx, n, tx: StreamTx<u64>| async move {
            for i in 0..n {
                tx.send(i).await?;
            }
            Err(FnError::new("Boom", format!("failed after {n} items")))
        })
        .call(PanicViaChild, |cx, message: String| async move {
            cx.open_nursery(async |n| {
                let child = n.start_actor("grandchild", ActorOptions::new()).await?;
                child.run(Panic, message).await?;
                Ok(())
            })
            .await?;
            Ok(())
        })
        .context(HoldStuckGrandchild, hold_stuck_grandchild)
        .call(BlockThread, |_cx, ms| async move {
            std::thread::sleep(Duration::from_millis(ms));
            Ok(())
        })
        .context(Sink, |_cx, (), ctx: CalleeContext<Sink>| async move {
            let _stream = ctx.started(()).await?;
            std::future::pending::<()>().await;
            Ok(())
        })
        .call(SpawnedTaskPath, |cx, ()| async move {
            let task = cx.spawn(async { runtime_vars::current().path() });
            task.await
                .map_err(|e| FnError::new(kinds::ERROR, e.to_string()))?
                .ok_or_else(|| FnError::new(kinds::CANCELLED, "the task was cancelled"))
        })
}

async fn hold_stuck_grandchild(
    cx: ActorCx,
    opts: ActorOptionsWire,
    ctx: CalleeContext<HoldStuckGrandchild>,
) -> Result<(), FnError> {
    cx.open_nursery(async |n| {
        let o = opts.apply(ActorOptions::new().runtime(brood::RuntimeFlavor::MultiThread(2)));
        let gc = n.start_actor("grandchild", o).await?;
        let who = gc.run(WhoAmI, ()).await?;
        // Kept open for good: the grandchild is stuck in it.
        let _held: Box<dyn std::any::Any + Send> = if who.pid == std::process::id() {
            Box::new(gc.open_context(PyRun, (PY_STUCK.into(), true)).await?.0)
        } else {
            Box::new(gc.open_context(Stubborn, true).await?.0)
        };
        let _stream = ctx.started(who).await?;
        std::future::pending::<()>().await;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Records every `before_hard_reap` in the file named by the child's user var
/// `hook_log` (if set): one line `<child tree path>\t<child debug_mode>`. Part of every
/// test actor's configuration, so a test sees the hooks its descendants ran.
#[derive(Debug, Default)]
pub struct HookLog;

/// The user var naming [`HookLog`]'s file.
pub const HOOK_LOG_VAR: &str = "hook_log";

#[brood::async_trait]
impl brood::TeardownHook for HookLog {
    async fn before_hard_reap(&self, _child: &brood::ActorId, vars: &RuntimeVars) {
        use std::io::Write;
        let Some(path) = vars.user.get(HOOK_LOG_VAR) else {
            return;
        };
        let line = format!("{}\t{}\n", vars.path(), vars.debug_mode);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write per line: lines of several actors do not interleave.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

brood::call!(
    /// Spawns a leaf child and returns its vars.
    pub VarsOfSubtreeLeaf = "t.vars_leaf": () => RuntimeVars
);

async fn py_run(
    cx: ActorCx,
    (code, until_sleeping): (String, bool),
    ctx: CalleeContext<PyRun>,
) -> Result<(), FnError> {
    use std::os::fd::AsRawFd;
    let interp = brood::python::interp(&cx)?;
    // The code's `started()` writes a byte here; the end of the job closes it.
    let (signal, signal_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(std::io::Error::from)?;
    let mut signal = tokio::net::unix::pipe::Receiver::from_owned_fd(signal)?;
    let (tid_tx, tid) = tokio::sync::oneshot::channel();
    // Dropping this future (the call or the actor cancelled) interrupts the code.
    let job = interp.run(move |py| {
        let _ = tid_tx.send(nix::unistd::gettid().as_raw());
        let prelude = format!(
            "def started():\n    import os\n    os.write({}, b'.')\n",
            signal_tx.as_raw_fd()
        );
        let r = py.exec(&prelude).and_then(|()| py.exec(&code));
        drop(signal_tx);
        r
    });
    tokio::pin!(job);
    let mut byte = [0u8; 1];
    let called = tokio::select! {
        biased;
        r = tokio::io::AsyncReadExt::read(&mut signal, &mut byte) => r? > 0,
        r = &mut job => {
            r??;
            return Err(not_started());
        }
    };
    if !called {
        job.await??;
        return Err(not_started());
    }
    if until_sleeping {
        let tid = tid
            .await
            .map_err(|_| FnError::new(kinds::ERROR, "no thread id"))?;
        blocked_in(tid, libc::SYS_clock_nanosleep).await?;
    }
    let _stream = ctx.started(()).await?;
    job.await??;
    Ok(())
}

fn not_started() -> FnError {
    FnError::new(
        "harness::NotStarted",
        "the code ended without calling started()",
    )
}

/// Wait until thread `tid` of this process is blocked in the system call `nr`, as
/// `/proc/self/task/<tid>/syscall` shows (the kernel tells no one when a thread enters
/// one: polled, within 10 s).
async fn blocked_in(tid: i32, nr: libc::c_long) -> Result<(), FnError> {
    let path = format!("/proc/self/task/{tid}/syscall");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        if now.split_whitespace().next() == Some(nr.to_string().as_str()) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(FnError::new(
                kinds::ERROR,
                format!("thread {tid} did not enter system call {nr} within 10 s: {now:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn count(_cx: ActorCx, n: u64, tx: StreamTx<u64>) -> Result<(), FnError> {
    for i in 0..n {
        tx.send(i).await?;
    }
    Ok(())
}

async fn echo(_cx: ActorCx, greeting: String, ctx: CalleeContext<Echo>) -> Result<u64, FnError> {
    let mut stream = ctx.started(greeting).await?;
    let mut n = 0;
    while let Some(item) = stream.recv().await? {
        stream.send(item.to_uppercase()).await?;
        n += 1;
    }
    Ok(n)
}

async fn hold_grandchild(
    cx: ActorCx,
    opts: ActorOptionsWire,
    ctx: CalleeContext<HoldGrandchild>,
) -> Result<(), FnError> {
    cx.open_nursery(async |n| {
        let o = opts.apply(ActorOptions::new());
        let gc = n.start_actor("grandchild", o).await?;
        let who = gc.run(WhoAmI, ()).await?;
        let _stream = ctx.started(who).await?;
        std::future::pending::<()>().await;
        Ok(())
    })
    .await?;
    Ok(())
}
