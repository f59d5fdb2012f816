//! The forkserver's pool of pre-forked children, against a real server.
//!
//! This test binary is the program the server runs: its `main` enters the server first
//! thing, as a program's `Brood::enter` does, before anything could start a thread (so
//! the libtest harness, which runs tests on threads, is not used: `harness = false`).
//! Forked children run [`Probe`], which stands in for the actor runtime: it connects to
//! nobody and does what its actor's name says, so a test needs no transport.
//!
//! What a test sees of the server is what `ps` sees: the server's children, their names
//! (an idle child is `brood-idle`; an actor renames itself `brood:<name>`), and their
//! descriptors. Waits are bounded polls; nothing is asserted after a fixed sleep.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::time::{Duration, Instant};

use spawn_api::{
    ActorEntry, ActorId, ActorMain, Addr, Child, ChildBoot, ChildExit, ChildOutcome, ChildStdio,
    EXIT_SETUP, Extensions, Nonce, RuntimeFlavor, RuntimeVars, SpawnBackend, SpawnError,
    SpawnRequest, TreeSecret,
};
use spawn_fork::{ForkBackend, ForkService, POOL_ENV, SERVICE_KEY};

/// How long anything a test waits for may take.
const BOUND: Duration = Duration::from_secs(10);

/// Set (to a scenario's name) in the copies of this binary that a test runs as the root
/// of a tree of their own.
const SCENARIO_ENV: &str = "BROOD_FORK_POOL_TEST_SCENARIO";

/// What a forked child runs instead of an actor, chosen by its actor's name: `sleeper`
/// waits until it is killed; `exit-<n>` exits with `n`.
#[derive(Debug)]
struct Probe;

impl ActorMain for Probe {
    fn run_process(&self, boot: ChildBoot) -> i32 {
        match boot.id.name() {
            "sleeper" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            name => name
                .strip_prefix("exit-")
                .and_then(|code| code.parse().ok())
                .unwrap_or(EXIT_SETUP),
        }
    }

    fn serve(
        &self,
        _boot: ChildBoot,
        _extensions: Extensions,
    ) -> Pin<Box<dyn Future<Output = ChildOutcome> + Send + 'static>> {
        Box::pin(async { ChildOutcome::SetupFailed("a probe serves in no process".into()) })
    }
}

/// One spawning actor of a tree, as the tests play it: its backend, and its extensions,
/// which hold its connection to the tree's server (the server lives as long as they do,
/// and the handles of the children spawned through it).
struct Tree {
    backend: ForkBackend,
    extensions: Extensions,
    /// The tree's server, known after the first spawn.
    server: Option<u32>,
}

impl Tree {
    fn new(backend: ForkBackend) -> Tree {
        Tree {
            backend,
            extensions: Extensions::default(),
            server: None,
        }
    }

    /// A tree whose server keeps `pool` idle children.
    fn with_pool(pool: usize) -> Tree {
        Tree::new(ForkBackend::new().with_pool(pool).unwrap())
    }

    /// Spawn a child that runs `name` (see [`Probe`]).
    async fn spawn(&mut self, name: &str, stdio: ChildStdio) -> Result<Box<dyn Child>, SpawnError> {
        let mut req = SpawnRequest {
            boot: ChildBoot {
                id: ActorId::new(name),
                parent: ActorId::new("root"),
                parent_addr: Addr::new("uds", "/nonexistent/root.sock"),
                listen_addr: Addr::new("uds", format!("/nonexistent/{name}.sock")),
                path: format!("root/{name}"),
                log_level: "info".into(),
                runtime: RuntimeFlavor::CurrentThread,
                connect_timeout: BOUND,
                secret: TreeSecret::random(),
                nonce: Nonce::random(),
                sandbox: None,
            },
            vars: RuntimeVars::root("root", spawn_fork::KEY),
            extensions: self.extensions.clone(),
            entry: ActorEntry::new(Probe),
            options: BTreeMap::new(),
            stdio,
        };
        let child = self.backend.spawn(&mut req).await;
        // Recorded once the server is reached, whatever became of the child.
        if let Some(value) = req.vars.services.get(SERVICE_KEY) {
            let service: ForkService = value.parse().unwrap();
            let server = *self.server.get_or_insert(service.server_pid);
            assert_eq!(server, service.server_pid, "one server per tree");
        }
        child
    }

    /// Spawn a child that runs `name` and exits (`exit-<n>`), and wait for its exit. It
    /// may exit before its reply is read (`SpawnError::DiedEarly`): that is its exit too.
    async fn run(&mut self, name: &str) -> ChildExit {
        match self.spawn(name, ChildStdio::Null).await {
            Ok(mut c) => wait(&mut c).await,
            Err(SpawnError::DiedEarly { exit, .. }) => exit,
            Err(e) => panic!("spawning {name}: {e}"),
        }
    }

    fn server(&self) -> u32 {
        self.server.expect("the server starts with the first spawn")
    }
}

/// A process's `(parent, state, name)` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, char, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name may hold spaces and parentheses: the fields after it follow its last `)`.
    let name = s[s.find('(')? + 1..s.rfind(')')?].to_owned();
    let mut rest = s[s.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((rest.next()?.parse().ok()?, state, name))
}

/// The live (not zombie) children of `parent`, with their names.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some((ppid, state, name)) = stat(pid)
            && ppid == parent
            && state != 'Z'
            && state != 'X'
        {
            out.push((pid, name));
        }
    }
    out.sort();
    out
}

/// The idle children of `server`, by the name they take while they wait.
fn idle_of(server: u32) -> Vec<u32> {
    children_of(server)
        .into_iter()
        .filter(|(_, name)| name == "brood-idle")
        .map(|(pid, _)| pid)
        .collect()
}

/// Poll `f` until it gives a value, for at most [`BOUND`]; panics saying `what` did
/// not happen.
fn poll_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {BOUND:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until `server` holds exactly `n` idle children; their pids.
fn full_pool(server: u32, n: usize) -> Vec<u32> {
    poll_until(&format!("{n} idle children of the server {server}"), || {
        let idle = idle_of(server);
        (idle.len() == n).then_some(idle)
    })
}

/// Pidfds of `pids`, each checked to be a child of `server` once open (so that it names
/// the process listed, not a successor).
fn pidfds(pids: &[u32], server: u32) -> Vec<OwnedFd> {
    pids.iter()
        .map(|&pid| {
            let fd = os_wrappers::pidfd::open(pid).unwrap();
            assert_eq!(
                stat(pid).map(|s| s.0),
                Some(server),
                "{pid} is the server's"
            );
            fd
        })
        .collect()
}

fn all_exited(fds: &[OwnedFd]) -> bool {
    fds.iter()
        .all(|fd| os_wrappers::pidfd::has_exited(fd.as_fd()).unwrap())
}

/// What the descriptors of process `pid` point at.
fn fds_of(pid: u32) -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let (Some(fd), Ok(target)) = (
            e.file_name().to_str().and_then(|n| n.parse().ok()),
            std::fs::read_link(e.path()),
        ) {
            out.insert(fd, target.display().to_string());
        }
    }
    out
}

async fn wait(child: &mut Box<dyn Child>) -> ChildExit {
    tokio::time::timeout(BOUND, child.wait())
        .await
        .expect("the child's exit is reported")
}

const KILLED: ChildExit = ChildExit::Signaled {
    signal: libc::SIGKILL,
    core_dumped: false,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// With a pool, a spawn is handed to a child the server forked before the request: it
/// becomes the actor (its name, its stdio, its exit reported as any child's), holds no
/// descriptor but the standard streams and its link, and the pool is refilled.
fn a_spawn_is_handed_to_a_child_forked_before_the_request() {
    rt().block_on(async {
        let mut tree = Tree::with_pool(2);
        assert_eq!(tree.run("exit-0").await, ChildExit::Exited(0));
        let server = tree.server();
        let idle = full_pool(server, 2);

        let mut sleeper = tree.spawn("sleeper", ChildStdio::Inherit).await.unwrap();
        let pid = sleeper.pid().unwrap();
        assert!(idle.contains(&pid), "{pid} is one of the idle {idle:?}");
        poll_until("the pooled child to become its actor", || {
            (stat(pid)?.2 == "brood:sleeper").then_some(())
        });
        let fds = fds_of(pid);
        let ours = fds_of(std::process::id());
        assert_eq!(fds.get(&1), ours.get(&1), "our stdout: {fds:?}");
        assert_eq!(fds.get(&2), ours.get(&2), "our stderr: {fds:?}");
        let others: Vec<_> = fds.iter().filter(|(fd, _)| **fd > 2).collect();
        assert!(
            others.len() == 1 && others[0].1.starts_with("socket:["),
            "only its link beside the standard streams: {fds:?}"
        );

        // Refilled after the reply: two idle children again, new ones.
        let refilled = poll_until("the pool to be refilled", || {
            let now = idle_of(server);
            (now.len() == 2 && !now.contains(&pid)).then_some(now)
        });
        let mut next = tree.spawn("sleeper", ChildStdio::Null).await.unwrap();
        let next_pid = next.pid().unwrap();
        assert!(refilled.contains(&next_pid), "{next_pid} in {refilled:?}");
        next.kill().unwrap();
        assert_eq!(wait(&mut next).await, KILLED);
        assert_eq!(tree.run("exit-7").await, ChildExit::Exited(7));

        sleeper.kill().unwrap();
        assert_eq!(wait(&mut sleeper).await, KILLED);
    });
}

/// With a pool of 0 the server forks every child on request and keeps no other child,
/// as before the pool existed.
fn without_a_pool_every_child_is_forked_on_request() {
    rt().block_on(async {
        let mut tree = Tree::with_pool(0);
        assert_eq!(tree.run("exit-3").await, ChildExit::Exited(3));
        let server = tree.server();
        // Its exit was reported once it was reaped: the server has no child left.
        assert_eq!(children_of(server), [], "no idle child");
        let mut sleeper = tree.spawn("sleeper", ChildStdio::Null).await.unwrap();
        let pid = sleeper.pid().unwrap();
        poll_until("the child to become its actor", || {
            (stat(pid)?.2 == "brood:sleeper").then_some(())
        });
        let children: Vec<u32> = children_of(server).into_iter().map(|(p, _)| p).collect();
        assert_eq!(children, [pid], "the one child asked for");
        let fds = fds_of(pid);
        assert_eq!(fds.get(&1).map(String::as_str), Some("/dev/null"));
        sleeper.kill().unwrap();
        assert_eq!(wait(&mut sleeper).await, KILLED);
        assert_eq!(children_of(server), [], "still no idle child");
    });
}

/// SIGKILL the server: the kernel kills its idle children (their parent-death signal),
/// with no code of the server's running.
fn idle_children_die_with_a_sigkilled_server() {
    rt().block_on(async {
        let mut tree = Tree::with_pool(3);
        assert_eq!(tree.run("exit-0").await, ChildExit::Exited(0));
        let server = tree.server();
        let idle = pidfds(&full_pool(server, 3), server);
        // The server is our child, not reaped yet: its pid is its own.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        poll_until("the idle children of the SIGKILLed server to die", || {
            all_exited(&idle).then_some(())
        });
        // Spawns fail as with any dead server (and do not hang).
        match tree.spawn("exit-0", ChildStdio::Null).await {
            Err(SpawnError::Unavailable { .. }) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    });
}

/// When the server's owner is done (its connection dropped), the server kills its idle
/// children before it exits.
fn idle_children_go_with_the_servers_owner() {
    let idle = rt().block_on(async {
        let mut tree = Tree::with_pool(2);
        assert_eq!(tree.run("exit-0").await, ChildExit::Exited(0));
        let server = tree.server();
        let idle = pidfds(&full_pool(server, 2), server);
        drop(tree);
        idle
    });
    poll_until("the idle children of a finished tree to die", || {
        all_exited(&idle).then_some(())
    });
}

/// An idle child killed from outside is dropped from the pool and replaced; no actor is
/// reported dead for it, and spawns go on.
fn an_idle_child_killed_from_outside_is_replaced() {
    rt().block_on(async {
        let mut tree = Tree::with_pool(2);
        assert_eq!(tree.run("exit-0").await, ChildExit::Exited(0));
        let server = tree.server();
        let idle = full_pool(server, 2);
        let victim = idle[0];
        let fd = pidfds(&[victim], server).remove(0);
        os_wrappers::pidfd::signal(fd.as_fd(), libc::SIGKILL).unwrap();
        let refilled = poll_until("the killed idle child to be replaced", || {
            let now = idle_of(server);
            let reaped = stat(victim).is_none_or(|(ppid, _, _)| ppid != server);
            (reaped && now.len() == 2 && !now.contains(&victim)).then_some(now)
        });
        let mut c = tree.spawn("sleeper", ChildStdio::Null).await.unwrap();
        let pid = c.pid().unwrap();
        assert!(refilled.contains(&pid), "{pid} in {refilled:?}");
        c.kill().unwrap();
        assert_eq!(wait(&mut c).await, KILLED);
        for code in [4, 5, 6] {
            assert_eq!(
                tree.run(&format!("exit-{code}")).await,
                ChildExit::Exited(code)
            );
        }
    });
}

/// A pooled child dies when its parent actor's end of its link closes, with the server
/// alive and the parent's connection open: the kernel's kill armed on the link it was
/// handed, not the server, ends it.
fn a_pooled_child_dies_when_its_parent_actors_link_closes() {
    rt().block_on(async {
        let mut tree = Tree::with_pool(1);
        assert_eq!(tree.run("exit-0").await, ChildExit::Exited(0));
        let server = tree.server();
        let idle = full_pool(server, 1);
        let mut sleeper = tree.spawn("sleeper", ChildStdio::Null).await.unwrap();
        let pid = sleeper.pid().unwrap();
        assert_eq!(idle, [pid], "pooled");
        poll_until("the pooled child to become its actor", || {
            (stat(pid)?.2 == "brood:sleeper").then_some(())
        });
        // Our end of its link: the one socket of ours the server made (our connection
        // to the server is a socketpair we made).
        let links: Vec<i32> = fds_of(std::process::id())
            .into_iter()
            .filter(|(_, t)| t.starts_with("socket:["))
            .filter_map(|(fd, _)| {
                // SAFETY: `fd` is open in this process for the call (the child's handle
                // owns it and lives on); the borrow ends with the call.
                let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let cred =
                    nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)
                        .ok()?;
                (cred.pid() as u32 == server).then_some(fd)
            })
            .collect();
        let [link] = links[..] else {
            panic!("one link to the server's child, found {links:?}");
        };
        let null = std::fs::File::open("/dev/null").unwrap();
        // Close the link under the handle without dropping it (dropping kills the child
        // itself): /dev/null takes its number, which the handle then owns and closes.
        // SAFETY: dup2 takes integers; `link` is open and owned by the child's handle,
        // which is not used meanwhile, and stays owned by it (now a /dev/null).
        let r = unsafe { libc::dup2(null.as_raw_fd(), link) };
        assert_eq!(r, link);
        assert_eq!(wait(&mut sleeper).await, KILLED, "killed by its link");
        // The server is alive and serving.
        assert_eq!(tree.run("exit-9").await, ChildExit::Exited(9));
    });
}

/// The actor that starts the server reads [`POOL_ENV`] when its backend sets no size,
/// and a bad value fails the spawn with a clear reason.
fn the_pool_size_comes_from_the_environment_unless_the_backend_sets_one() {
    let run = |scenario: &str, value: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env(SCENARIO_ENV, scenario)
            .env(POOL_ENV, value)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{scenario} with {POOL_ENV}={value}: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let started = |out: String, pool: usize| {
        assert!(
            out.contains(&format!("POOL {pool}\n")) && out.contains("IDLE"),
            "a pool of {pool}: {out}"
        );
    };
    started(run("from-env", "3"), 3);
    started(run("from-env", "0"), 0);
    started(run("set-by-backend", "3"), 1);
    let refused = run("refused", "lots");
    assert!(
        refused.contains("REFUSED") && refused.contains("BROOD_FORK_POOL=\"lots\""),
        "{refused}"
    );
}

/// The copies of this binary that the last test starts: start a tree (its server),
/// print the pool size the server was started with and, once it holds that many idle
/// children, `IDLE`.
fn scenario(name: &str) {
    rt().block_on(async {
        let mut tree = match name {
            "set-by-backend" => Tree::with_pool(1),
            _ => Tree::new(ForkBackend::new()),
        };
        match tree.spawn("exit-0", ChildStdio::Null).await {
            Ok(mut c) => assert_eq!(wait(&mut c).await, ChildExit::Exited(0)),
            Err(SpawnError::DiedEarly { exit, .. }) => assert_eq!(exit, ChildExit::Exited(0)),
            Err(e) => {
                println!("REFUSED {e}");
                return;
            }
        }
        let server = tree.server();
        // The server takes its start-up argument out of its environment at once, but
        // the environment it was started with stays readable in /proc.
        let environ = std::fs::read(format!("/proc/{server}/environ")).unwrap();
        let arg = environ
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(format!("{}=", spawn_fork::SERVER_ENV).as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .expect("the server's start-up argument");
        let pool: usize = arg
            .rsplit_once(",pool=")
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or_else(|| panic!("no pool in {arg:?}"));
        println!("POOL {pool}");
        full_pool(server, pool);
        println!("IDLE");
    });
}

fn main() {
    // A server (or a child it forks) never returns from here.
    if let Some(code) = ForkBackend::new().enter(&ActorEntry::new(Probe)) {
        std::process::exit(code);
    }
    if let Ok(name) = std::env::var(SCENARIO_ENV) {
        scenario(&name);
        return;
    }
    let tests: &[(&str, fn())] = &[
        (
            "a_spawn_is_handed_to_a_child_forked_before_the_request",
            a_spawn_is_handed_to_a_child_forked_before_the_request,
        ),
        (
            "without_a_pool_every_child_is_forked_on_request",
            without_a_pool_every_child_is_forked_on_request,
        ),
        (
            "idle_children_die_with_a_sigkilled_server",
            idle_children_die_with_a_sigkilled_server,
        ),
        (
            "idle_children_go_with_the_servers_owner",
            idle_children_go_with_the_servers_owner,
        ),
        (
            "an_idle_child_killed_from_outside_is_replaced",
            an_idle_child_killed_from_outside_is_replaced,
        ),
        (
            "a_pooled_child_dies_when_its_parent_actors_link_closes",
            a_pooled_child_dies_when_its_parent_actors_link_closes,
        ),
        (
            "the_pool_size_comes_from_the_environment_unless_the_backend_sets_one",
            the_pool_size_comes_from_the_environment_unless_the_backend_sets_one,
        ),
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // None is ignored: asked for the ignored ones (as nextest asks, beside the
        // whole list), list nothing, or every test would count as ignored and be
        // skipped.
        if !args.iter().any(|a| a == "--ignored") {
            for (name, _) in tests {
                println!("{name}: test");
            }
        }
        return;
    }
    // Like libtest: words are filters (a test runs if its name contains one); flags are
    // ignored.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in chosen {
        // One at a time: each looks at the processes and descriptors of this process.
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        println!("\nfailures: {failed:?}");
        std::process::exit(101);
    }
    println!("\ntest result: ok");
}
