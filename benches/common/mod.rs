//! What the bench targets share: the functions their child actors serve, the brood, the
//! runtimes, roots that stay open for one `iter_custom` call, and the raw process and
//! socket helpers the floors are built from.
//!
//! Every bench binary is also the program its child actors run (the `proc` backend
//! re-executes it), so each `main` calls [`enter`] before anything else.

// Each bench target uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod files;
pub(crate) mod shm_floor;

use std::os::fd::{BorrowedFd, RawFd};

use brood::shm::ShmRegion;
use brood::{ActorOptions, Blob, Brood, FnError, Nursery, Portal, Registry, RootBuilder, StreamTx};
use nix::errno::Errno;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{self, ForkResult, close, fork, read, write};
use tokio::runtime::Runtime;

brood::call!(
    /// Does nothing: one request and one reply.
    pub Ping = "bench.ping": () => ()
);
brood::call!(
    /// The actor's process id.
    pub Pid = "bench.pid": () => u32
);
brood::call!(
    /// Ends the actor at once with code 3 (a process exits; a sub-interpreter actor, which
    /// shares the process, ends its actor with that code).
    pub Crash = "bench.crash": () => ()
);
brood::stream!(
    /// Streams `n` blobs of `size` bytes: `(n, size)`.
    pub Blobs = "bench.blobs": (u64, u64) => Blob
);

brood::call!(
    /// Claims the receiving end of a ring of [`RingChunk`]s in the region and takes
    /// chunks until the sender is gone; returns how many.
    pub RingDrain = "bench.ring_drain": ShmRegion => u64
);

/// How [`FindAndPing`] reaches its target each round.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
// `pub`: a `call!` function's argument type, and those are `pub`.
#[allow(unreachable_pub)]
pub enum Seek {
    /// A lookup and a fresh channel (closed after the call): the first call's cost.
    Fresh,
    /// A lookup that answers with the channel the last round opened.
    Reused,
    /// No lookup: one portal, found before timing.
    Open,
    /// Only the lookup at the registrar, no call.
    Lookup,
}

brood::call!(
    /// Finds the actor named `name` and pings it `iters` times, each round reaching it as
    /// [`Seek`] says. The time the finds and calls took, in nanoseconds.
    pub FindAndPing = "bench.find_and_ping": (String, u64, Seek) => u64
);

/// The item of the region-ring benchmark.
pub(crate) type RingChunk = [u8; 64 << 10];

/// The functions every bench actor serves.
pub(crate) fn registry() -> Registry {
    Registry::new()
        .call(RingDrain, |_cx, region: ShmRegion| async move {
            let bad = |e: brood::shm::RegionError| FnError::new("RegionError", e.to_string());
            let mut rx = region.ring_receiver::<RingChunk>().map_err(bad)?;
            let mut chunk: Box<RingChunk> = vec![0u8; 64 << 10]
                .into_boxed_slice()
                .try_into()
                .expect("64 KiB");
            let mut n = 0u64;
            while rx
                .recv_slice(std::slice::from_mut(&mut *chunk))
                .await
                .map_err(bad)?
                == 1
            {
                std::hint::black_box(&chunk[..]);
                n += 1;
            }
            Ok(n)
        })
        .call(Ping, |_cx, ()| async move { Ok(()) })
        .call(
            FindAndPing,
            |cx, (name, iters, seek): (String, u64, Seek)| async move {
                let missing = || FnError::new("NotFound", format!("no actor named {name}"));
                let open = cx.find_actor(&name).await?.ok_or_else(missing)?;
                open.run(Ping, ()).await?;
                if let Seek::Fresh = seek {
                    open.close().await;
                }
                // Only the finds and the calls are timed: a close, so that the next
                // round connects again, is not what a lookup costs.
                let mut taken = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let start = std::time::Instant::now();
                    match seek {
                        Seek::Fresh => {
                            let p = cx.find_actor(&name).await?.ok_or_else(missing)?;
                            p.run(Ping, ()).await?;
                            taken += start.elapsed();
                            p.close().await;
                        }
                        Seek::Reused => {
                            let p = cx.find_actor(&name).await?.ok_or_else(missing)?;
                            p.run(Ping, ()).await?;
                            taken += start.elapsed();
                        }
                        Seek::Lookup => {
                            std::hint::black_box(cx.lookup(&name).await?);
                            taken += start.elapsed();
                        }
                        Seek::Open => {
                            open.run(Ping, ()).await?;
                            taken += start.elapsed();
                        }
                    }
                }
                Ok(taken.as_nanos() as u64)
            },
        )
        .call(Pid, |_cx, ()| async move { Ok(std::process::id()) })
        .call(Crash, |cx, ()| async move {
            if cx.vars().backend != "subint" {
                std::process::exit(3);
            }
            cx.exit(3);
            std::future::pending::<()>().await;
            Ok(())
        })
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
pub(crate) fn enter() -> Brood {
    let actors = brood::setup(registry());
    actors.enter();
    actors
}

/// A current-thread runtime: the lowest-latency way to drive a root.
pub(crate) fn current_thread_rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

/// A multi-thread runtime with `workers` worker threads.
pub(crate) fn multi_thread_rt(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("multi-thread runtime")
}

/// The benches' root: the default backend and transport (uds in the default runtime
/// directory), named `bench`.
pub(crate) fn root(actors: &Brood) -> RootBuilder {
    actors.root().name("bench")
}

/// Open a root on `rt`, run `body` in its nursery, close the root (tearing down every
/// child) and return what `body` returned. Panics if the tree fails: a bench that
/// measured a failure must not report a number.
pub(crate) fn in_root<R>(
    rt: &Runtime,
    actors: &Brood,
    body: impl AsyncFnOnce(&Nursery) -> Result<R, FnError>,
) -> R {
    in_root_on(rt, actors, None, body)
}

/// [`in_root`] over the transport with key `transport` (`None`: the default).
pub(crate) fn in_root_on<R>(
    rt: &Runtime,
    actors: &Brood,
    transport: Option<&str>,
    body: impl AsyncFnOnce(&Nursery) -> Result<R, FnError>,
) -> R {
    let mut root = root(actors);
    if let Some(t) = transport {
        root = root.use_transport(t);
    }
    rt.block_on(root.run(body))
        .unwrap_or_else(|e| panic!("bench root failed: {e}"))
}

/// [`in_root`] with one child started and pinged before `body` runs, so `body` measures
/// a warm channel only.
pub(crate) fn with_child<R>(
    rt: &Runtime,
    actors: &Brood,
    body: impl AsyncFnOnce(&Portal) -> Result<R, FnError>,
) -> R {
    with_child_on(rt, actors, None, body)
}

/// [`with_child`] over the transport with key `transport` (`None`: the default).
pub(crate) fn with_child_on<R>(
    rt: &Runtime,
    actors: &Brood,
    transport: Option<&str>,
    body: impl AsyncFnOnce(&Portal) -> Result<R, FnError>,
) -> R {
    in_root_on(rt, actors, transport, async |n| {
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
pub(crate) fn cpus() -> Option<(usize, usize)> {
    // Read once, before anything is pinned: afterwards the calling thread's own mask
    // holds one CPU only, and every "child CPU" would silently be the parent's.
    static CPUS: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        // Pid 0: the calling thread (the first caller is `main`, before `pin_parent`).
        let set = sched_getaffinity(unistd::Pid::from_raw(0)).ok()?;
        let mut allowed = (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false));
        Some((allowed.next()?, allowed.next()?))
    })
}

/// Pin the calling thread to `cpu` (best effort: a bench on a machine that refuses it
/// just runs unpinned).
pub(crate) fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(unistd::Pid::from_raw(0), &set);
    }
}

/// Pin this thread to the parent CPU (call once at the start of `main`).
pub(crate) fn pin_parent() {
    if let Some((parent, _)) = cpus() {
        pin(parent);
    }
}

/// Run `start` (which creates a process: a fork or an actor spawn) with this thread
/// pinned to the child CPU, so the new process inherits that CPU; then move back.
pub(crate) fn spawning_on_child_cpu<R>(start: impl FnOnce() -> R) -> R {
    let Some((parent, child)) = cpus() else {
        return start();
    };
    pin(child);
    let r = start();
    pin(parent);
    r
}

/// Run `start` (which creates a process that pins itself, another bench program) with
/// this thread allowed on both bench CPUs, so the new process sees both (its own
/// [`cpus`] reads them from its mask); then pin back to the parent CPU.
pub(crate) fn spawning_unpinned<R>(start: impl FnOnce() -> R) -> R {
    let Some((parent, child)) = cpus() else {
        return start();
    };
    let mut both = CpuSet::new();
    let _ = both.set(parent);
    let _ = both.set(child);
    let _ = sched_setaffinity(unistd::Pid::from_raw(0), &both);
    let r = start();
    pin(parent);
    r
}

/// [`spawning_on_child_cpu`] for an async spawn: the process is created during the
/// first poll, on this thread (the benches drive roots from the thread that pinned).
pub(crate) async fn on_child_cpu<F: std::future::Future>(spawn: F) -> F::Output {
    let Some((parent, child)) = cpus() else {
        return spawn.await;
    };
    pin(child);
    let r = spawn.await;
    pin(parent);
    r
}

/// A connected `socketpair(AF_UNIX, SOCK_STREAM)` (close-on-exec).
pub(crate) fn socketpair() -> (
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
/// memory prepared before the fork are fine: [`raw_read_exact`], [`raw_write_all`],
/// [`raw_close`]).
pub(crate) unsafe fn fork_child(child: impl FnOnce() -> i32) -> unistd::Pid {
    // SAFETY: in the child, only `child` runs (async-signal-safe, by this function's
    // contract with its caller) and then `_exit`.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => child,
        Ok(ForkResult::Child) => {
            let code = child();
            // SAFETY: `_exit` (which nix does not wrap) is async-signal-safe and ends the
            // child without running the parent's atexit handlers or flushing its copied
            // stdio buffers; it takes no pointer.
            unsafe { libc::_exit(code) }
        }
        Err(e) => panic!("fork: {e}"),
    }
}

/// Wait for the forked child `pid` and check that it exited with status 0.
pub(crate) fn reap(pid: unistd::Pid) {
    let status = loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            Err(e) => panic!("waitpid({pid}): {e}"),
            Ok(status) => break status,
        }
    };
    assert!(
        status == WaitStatus::Exited(pid, 0),
        "forked child {pid} ended with {status:?}"
    );
}

/// In a forked child: `read` until `buf` is full. `false` on end of file or error.
/// Only raw system calls (nix's wrappers allocate nothing): safe to use after `fork`.
pub(crate) fn raw_read_exact(fd: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        match read(fd, &mut buf[done..]) {
            Ok(0) => return false,
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// In a forked child: `write` all of `buf`, looping on partial writes. `false` on
/// error. Only raw system calls: safe to use after `fork`.
pub(crate) fn raw_write_all(fd: BorrowedFd<'_>, buf: &[u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        match write(fd, &buf[done..]) {
            Ok(0) => return false,
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// In a forked child: close the child's copy of `fd` (async-signal-safe). The parent's
/// copy, and the parent's owner of it, are untouched.
pub(crate) fn raw_close(fd: RawFd) {
    let _ = close(fd);
}

/// The bench id `name`, suffixed with `-<variant>` when `BROOD_BENCH_VARIANT` is set (a
/// second build of the same bench, static or on another Python, lands beside the first).
pub(crate) fn variant_id(name: &str) -> String {
    match std::env::var("BROOD_BENCH_VARIANT") {
        Ok(v) if !v.is_empty() => format!("{name}-{v}"),
        _ => name.to_owned(),
    }
}

/// `iters` round trips of [`Ping`] to one child, on the transport with key `transport`
/// (`None`: the default); the child is started and warmed before timing.
pub(crate) fn ping_round_trips(
    rt: &Runtime,
    actors: &Brood,
    transport: Option<&str>,
    iters: u64,
) -> std::time::Duration {
    with_child_on(rt, actors, transport, async |p| {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            p.run(Ping, ()).await?;
        }
        Ok(start.elapsed())
    })
}

/// `iters` times `n` messages of `size` bytes (a multiple of 64 KiB) from this actor to
/// a child through a ring of 64 KiB chunks in a [`ShmRegion`] (1 MiB of slots), the child
/// draining it with [`RingDrain`]; the child is started before timing.
pub(crate) fn region_ring(
    rt: &Runtime,
    actors: &Brood,
    iters: u64,
    (size, n): (u64, u64),
) -> std::time::Duration {
    let chunks_per_msg = size / (64 << 10);
    let bad = |e: brood::shm::RegionError| FnError::new("RegionError", e.to_string());
    with_child_on(rt, actors, None, async |p| {
        let chunk: Box<RingChunk> = vec![0xa5u8; 64 << 10]
            .into_boxed_slice()
            .try_into()
            .expect("64 KiB");
        let start = std::time::Instant::now();
        for _ in 0..iters {
            let region = ShmRegion::new_ring::<RingChunk>(16).map_err(bad)?;
            let mut tx = region.ring_sender::<RingChunk>().map_err(bad)?;
            let total = n * chunks_per_msg;
            let chunk = &chunk;
            let feed = async move {
                for _ in 0..total {
                    tx.send(chunk).await.map_err(bad)?;
                }
                Ok::<(), FnError>(())
            };
            let (fed, got) = tokio::join!(feed, p.run(RingDrain, region));
            fed?;
            if got? != total {
                return Err(FnError::msg("the ring lost chunks"));
            }
        }
        Ok(start.elapsed())
    })
}

/// `iters` streams of `n` [`Blobs`] of `size` bytes from one child, on the transport with
/// key `transport` (`None`: the default); the child is started before timing.
pub(crate) fn stream_blobs(
    rt: &Runtime,
    actors: &Brood,
    transport: Option<&str>,
    iters: u64,
    (size, n): (u64, u64),
) -> std::time::Duration {
    with_child_on(rt, actors, transport, async |p| {
        receive_blobs(p, iters, (size, n)).await
    })
}

/// `iters` streams of `n` [`Blobs`] of `size` bytes from `p`, each read to its end; the
/// time they took.
async fn receive_blobs(
    p: &Portal,
    iters: u64,
    (size, n): (u64, u64),
) -> Result<std::time::Duration, FnError> {
    let start = std::time::Instant::now();
    for _ in 0..iters {
        let mut s = p.open_stream(Blobs, (n, size)).await?;
        let mut count = 0u64;
        while let Some(b) = s.recv().await? {
            std::hint::black_box(b.len());
            count += 1;
        }
        if count != n {
            return Err(FnError::msg(format!(
                "stream ended after {count} of {n} blobs"
            )));
        }
    }
    Ok(start.elapsed())
}

/// [`stream_blobs`] with the root's future spawned as a task of `rt` (on a worker of a
/// multi-thread runtime) instead of run by `block_on` on the calling thread.
#[allow(dead_code)]
pub(crate) fn stream_blobs_in_task(
    rt: &Runtime,
    actors: &Brood,
    iters: u64,
    (size, n): (u64, u64),
) -> std::time::Duration {
    let root = root(actors);
    let task = rt.spawn(async move {
        root.run(async move |nursery| {
            let p = on_child_cpu(nursery.start_actor("b", ActorOptions::new())).await?;
            p.run(Ping, ()).await?;
            receive_blobs(&p, iters, (size, n)).await
        })
        .await
    });
    rt.block_on(task)
        .expect("the root's task")
        .unwrap_or_else(|e| panic!("bench root failed: {e}"))
}
