//! The actor functions of the sandbox tests: what an actor sees from inside its sandbox,
//! and the hostile work (a fork bomb, a runaway allocation) its limits must contain.

use brood::sandbox::{Sandbox, SandboxVars};
use brood::{ActorCx, ActorOptions, FnError, Registry, kinds};
use serde::{Deserialize, Serialize};

/// What [`Probe`] tries.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProbeArgs {
    /// A TCP address to connect to (a listener of the test process, say).
    pub connect: Option<String>,
    /// Directories to create a file in, one attempt each.
    pub write: Vec<String>,
}

/// What an actor saw from inside.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Seen {
    /// `getpid()`: 1 for the init of a pid namespace.
    pub pid: u32,
    /// `/proc/self/ns/pid`'s target (`pid:[4026532…]`).
    pub pid_ns: String,
    /// The pids `/proc` lists.
    pub pids: Vec<u32>,
    /// The connect attempt: `None` if it connected, else the error.
    pub connect: Option<String>,
    /// A listener on 127.0.0.1 and a connect to it: `None` if that worked.
    pub loopback: Option<String>,
    /// Per directory of [`ProbeArgs::write`]: `None` if the file was written (it is
    /// removed again), else the error.
    pub writes: Vec<Option<String>>,
    /// The host name.
    pub hostname: String,
    /// `errno` of a `keyctl` call the seccomp filter denies (0: it ran).
    pub keyctl_errno: i32,
    /// `errno` of remounting `/` read-write (0: it worked).
    pub remount_errno: i32,
    /// The actor's sandbox, from its vars.
    pub sandbox: Option<SandboxVars>,
}

brood::call!(
    /// What the actor sees from inside its sandbox.
    pub Probe = "t.sandbox.probe": ProbeArgs => Seen
);
brood::call!(
    /// Starts a child with the given backend (`None`: this actor's) and sandbox (`None`:
    /// none asked), probes it with the given arguments and returns what it saw.
    pub ProbeViaChild = "t.sandbox.probe_via_child": (Option<String>, Option<Sandbox>, ProbeArgs) => Seen
);
brood::call!(
    /// Starts `sleep 60` processes until the kernel refuses one or `max` run; returns
    /// how many started. They are left running: the actor's pid namespace ends them.
    pub SpawnBomb = "t.sandbox.spawn_bomb": u32 => u32
);
brood::call!(
    /// Allocates and touches the given MiB, and returns how many bytes it held.
    pub Allocate = "t.sandbox.allocate": u64 => u64
);

fn probe(args: &ProbeArgs) -> Seen {
    let connect = args.connect.as_ref().map(|addr| match addr.parse() {
        Ok(a) => std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1))
            .err()
            .map(|e| e.to_string()),
        Err(e) => Some(format!("bad address {addr}: {e}")),
    });
    let loopback = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| std::net::TcpStream::connect(l.local_addr()?))
        .err()
        .map(|e| e.to_string());
    let writes = args
        .write
        .iter()
        .map(|dir| {
            let file = std::path::Path::new(dir).join("sandbox-probe");
            match std::fs::write(&file, b"x") {
                Ok(()) => {
                    let _ = std::fs::remove_file(&file);
                    None
                }
                Err(e) => Some(e.to_string()),
            }
        })
        .collect();
    let pids = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING, 0) takes integers
    // only and at most creates this process's own keyring.
    let keyctl = unsafe { libc::syscall(libc::SYS_keyctl, 0, -2, 0) };
    let keyctl_errno = if keyctl < 0 { errno() } else { 0 };
    let remount = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    );
    Seen {
        pid: std::process::id(),
        pid_ns: std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        pids,
        connect: connect.flatten(),
        loopback,
        writes,
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        keyctl_errno,
        remount_errno: remount.err().map_or(0, |e| e as i32),
        sandbox: runtime_vars::current().sandbox.clone(),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn spawn_bomb(max: u32) -> u32 {
    let mut started = 0;
    while started < max {
        let spawned = std::process::Command::new("sleep")
            .arg("60")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => {
                // Not waited for: the pid namespace's end takes it.
                drop(child);
                started += 1;
            }
            Err(_) => break,
        }
    }
    started
}

/// Add the sandbox tests' functions to `registry`.
pub fn calls(registry: Registry) -> Registry {
    registry
        .call(
            Probe,
            |_cx, args: ProbeArgs| async move { Ok(probe(&args)) },
        )
        .call(
            ProbeViaChild,
            |cx: ActorCx,
             (backend, sandbox, args): (Option<String>, Option<Sandbox>, ProbeArgs)| async move {
                let seen = cx
                    .open_nursery(async |n| {
                        let mut opts = ActorOptions::new();
                        if let Some(b) = backend {
                            opts = opts.backend(b);
                        }
                        if let Some(s) = sandbox {
                            opts = opts.sandbox(s);
                        }
                        let child = n.start_actor("inner", opts).await?;
                        Ok(child.run(Probe, args).await?)
                    })
                    .await?;
                Ok(seen)
            },
        )
        .call(SpawnBomb, |_cx, max: u32| async move {
            tokio::task::spawn_blocking(move || spawn_bomb(max))
                .await
                .map_err(|e| FnError::new(kinds::ERROR, e.to_string()))
        })
        .call(Allocate, |_cx, mib: u64| async move {
            let held = vec![1u8; (mib as usize) << 20];
            Ok(std::hint::black_box(held).len() as u64)
        })
}
