//! What the bench targets share: the functions their child actors serve, the brood, the
//! runtimes, roots that stay open for one `iter_custom` call, and the raw process and
//! socket helpers the floors are built from.
//!
//! Every bench binary is also the program its child actors run (the `proc` backend
//! re-executes it), so each `main` calls [`enter`] before anything else.

// Each bench target uses a different subset of these helpers.
#![allow(dead_code)]

use std::os::fd::RawFd;

use brood::{ActorOptions, Blob, Brood, FnError, Nursery, Portal, Registry, RootBuilder, StreamTx};
use tokio::runtime::Runtime;

brood::call!(
    /// Does nothing: one request and one reply.
    pub Ping = "bench.ping": () => ()
);
brood::call!(
    /// The actor's process id.
    pub Pid = "bench.pid": () => u32
);
brood::stream!(
    /// Streams `n` blobs of `size` bytes: `(n, size)`.
    pub Blobs = "bench.blobs": (u64, u64) => Blob
);

/// The functions every bench actor serves.
pub fn registry() -> Registry {
    Registry::new()
        .call(Ping, |_cx, ()| async move { Ok(()) })
        .call(Pid, |_cx, ()| async move { Ok(std::process::id()) })
        .stream(
            Blobs,
            |_cx, (n, size): (u64, u64), tx: StreamTx<Blob>| async move {
                let size = usize::try_from(size)
                    .map_err(|_| FnError::new("ValueError", "blob size does not fit usize"))?;
                // One allocation per call; every item is a clone (a refcount bump).
                let blob = Blob::from(vec![0xa5u8; size]);
                for _ in 0..n {
                    tx.send(blob.clone()).await?;
                }
                Ok(())
            },
        )
}

/// Build the benches' brood and, if this process was started as a child actor, run
/// that actor and exit. Call it first thing in `main`.
pub fn enter() -> Brood {
    let actors = brood::setup(registry());
    actors.enter();
    actors
}

/// A current-thread runtime: the lowest-latency way to drive a root.
pub fn current_thread_rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

/// A multi-thread runtime with `workers` worker threads.
pub fn multi_thread_rt(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("multi-thread runtime")
}

/// The benches' root: the default backend and transport (uds in the default runtime
/// directory), named `bench`.
pub fn root(actors: &Brood) -> RootBuilder {
    actors.root().name("bench")
}

/// Open a root on `rt`, run `body` in its nursery, close the root (tearing down every
/// child) and return what `body` returned. Panics if the tree fails: a bench that
/// measured a failure must not report a number.
pub fn in_root<R>(
    rt: &Runtime,
    actors: &Brood,
    body: impl AsyncFnOnce(&Nursery) -> Result<R, FnError>,
) -> R {
    rt.block_on(root(actors).run(body))
        .unwrap_or_else(|e| panic!("bench root failed: {e}"))
}

/// [`in_root`] with one child started and pinged before `body` runs, so `body` measures
/// a warm channel only.
pub fn with_child<R>(
    rt: &Runtime,
    actors: &Brood,
    body: impl AsyncFnOnce(&Portal) -> Result<R, FnError>,
) -> R {
    in_root(rt, actors, async |n| {
        let p = on_child_cpu(n.start_actor("b", ActorOptions::new())).await?;
        p.run(Ping, ()).await?;
        body(&p).await
    })
}

/// The CPUs benches pin to: this process on the first allowed CPU, the processes it
/// starts on the second. Every round trip then crosses vCPUs the same way in every row
/// (brood and floor alike), instead of depending on where the scheduler happened to put
/// each process: on this machine a same-CPU and a cross-CPU wake-up differ by 4x.
/// `None` on a machine with a single allowed CPU.
pub fn cpus() -> Option<(usize, usize)> {
    // SAFETY: an all-zero cpu_set_t is the empty set, a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live, writable cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return None;
    }
    // SAFETY: CPU_ISSET reads the set in bounds (cpu < CPU_SETSIZE).
    let mut allowed =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    Some((allowed.next()?, allowed.next()?))
}

/// Pin the calling thread to `cpu` (best effort: a bench on a machine that refuses it
/// just runs unpinned).
pub fn pin(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is the empty set, a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes in bounds for cpu < CPU_SETSIZE, which `cpus` guarantees.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed; 0 names the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// Pin this thread to the parent CPU (call once at the start of `main`).
pub fn pin_parent() {
    if let Some((parent, _)) = cpus() {
        pin(parent);
    }
}

/// Run `start` (which creates a process: a fork or an actor spawn) with this thread
/// pinned to the child CPU, so the new process inherits that CPU; then move back.
pub fn spawning_on_child_cpu<R>(start: impl FnOnce() -> R) -> R {
    let Some((parent, child)) = cpus() else {
        return start();
    };
    pin(child);
    let r = start();
    pin(parent);
    r
}

/// [`spawning_on_child_cpu`] for an async spawn: the process is created during the
/// first poll, on this thread (the benches drive roots from the thread that pinned).
pub async fn on_child_cpu<F: std::future::Future>(spawn: F) -> F::Output {
    let Some((parent, child)) = cpus() else {
        return spawn.await;
    };
    pin(child);
    let r = spawn.await;
    pin(parent);
    r
}

/// A connected `socketpair(AF_UNIX, SOCK_STREAM)` (close-on-exec).
pub fn socketpair() -> (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
) {
    std::os::unix::net::UnixStream::pair().expect("socketpair")
}

/// Fork a child process that runs `child` and then `_exit`s with the status it returns.
///
/// # Safety
/// The caller may be multi-threaded, so after `fork` the child may only do what is
/// async-signal-safe: `child` must not allocate, free, lock, print or touch anything
/// another thread could have held (raw `read`, `write`, `close` on descriptors and
/// memory prepared before the fork are fine).
pub unsafe fn fork_child(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork has no memory-safety preconditions of its own; what the child may do
    // afterwards is this function's contract with its caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        panic!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        let code = child();
        // SAFETY: `_exit` is async-signal-safe and ends the child without running the
        // parent's atexit handlers or flushing its copied stdio buffers.
        unsafe { libc::_exit(code) }
    }
    pid
}

/// Wait for the forked child `pid` and check that it exited with status 0.
pub fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live, writable int; `pid` is a child of this process
        // that nothing else waits for.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            panic!("waitpid({pid}): {err}");
        }
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "forked child {pid} ended with wait status {status:#x}"
    );
}

/// In a forked child: `read` until `buf` is full. `false` on end of file or error.
/// Only raw system calls: safe to use after `fork`.
pub fn raw_read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`, which is
        // live and writable for the duration of the call.
        let r = unsafe {
            libc::read(
                fd,
                buf[done..].as_mut_ptr().cast::<libc::c_void>(),
                buf.len() - done,
            )
        };
        if r > 0 {
            done += r as usize;
        } else if r == 0 || errno() != libc::EINTR {
            return false;
        }
    }
    true
}

/// In a forked child: `write` all of `buf`, looping on partial writes. `false` on
/// error. Only raw system calls: safe to use after `fork`.
pub fn raw_write_all(fd: RawFd, buf: &[u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unwritten tail of `buf`, which is
        // live for the duration of the call.
        let r = unsafe {
            libc::write(
                fd,
                buf[done..].as_ptr().cast::<libc::c_void>(),
                buf.len() - done,
            )
        };
        if r > 0 {
            done += r as usize;
        } else if r == 0 || errno() != libc::EINTR {
            return false;
        }
    }
    true
}

/// The calling thread's `errno`, read without allocating.
fn errno() -> libc::c_int {
    // SAFETY: `__errno_location` returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// In a forked child: close `fd` (async-signal-safe).
pub fn raw_close(fd: RawFd) {
    // SAFETY: closing a descriptor number has no memory-safety preconditions; the caller
    // owns `fd` in this process.
    unsafe {
        libc::close(fd);
    }
}

/// The bench id `name`, suffixed with `-<variant>` when `BROOD_BENCH_VARIANT` is set (a
/// second build of the same bench, static or on another Python, lands beside the first).
pub fn variant_id(name: &str) -> String {
    match std::env::var("BROOD_BENCH_VARIANT") {
        Ok(v) if !v.is_empty() => format!("{name}-{v}"),
        _ => name.to_owned(),
    }
}
