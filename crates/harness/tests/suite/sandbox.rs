//! Sandboxed actors (`ActorOptions::sandbox`) on the cell's backend and transport: on
//! `proc` and `fork` the walls hold (network, filesystem, `/proc`, memory, tasks,
//! capabilities, seccomp) and a killed namespace init takes its namespace with it; on
//! `subint` the spawn is refused with a typed error. Every test is checked for leaked
//! processes, threads, descriptors and socket files like the rest of the suite.
//!
//! `cargo xtask test` runs this module once more as an unprivileged user when it runs as
//! root, so both what root and what an ordinary user can do are exercised.

use std::time::Duration;

use brood::sandbox::{Network, Piece, Sandbox, SandboxReport};
use brood::{ActorOptions, ChildError, SpawnError};
use harness::Failed;
use harness::sandboxed::{Allocate, Probe, ProbeArgs, ProbeViaChild, Seen, SpawnBomb};

use crate::common::*;

crate::tests!(
    a_sandboxed_actor_runs_behind_every_wall_and_says_so except "subint",
    the_network_is_unreachable_and_loopback_is_its_own except "subint",
    writing_outside_the_allowed_paths_fails except "subint",
    the_memory_limit_turns_a_runaway_allocation_into_a_child_failure except "subint",
    a_fork_bomb_is_contained_by_the_task_limit except "subint",
    killing_the_namespace_init_takes_its_whole_namespace except "subint",
    killing_the_keeper_takes_the_whole_namespace except "subint",
    children_inherit_the_sandbox_and_can_only_tighten_it except "subint",
    a_refused_part_fails_the_spawn_with_a_typed_error_unless_best_effort except "subint",
    a_sandboxed_actors_fork_children_run_inside_its_sandbox except "subint",
    a_child_adds_a_namespace_as_a_user_and_is_refused_by_name_as_root except "subint",
    a_cgroup_limit_is_applied_where_writable_and_refused_by_name_elsewhere except "subint",
    a_sandbox_that_restricts_nothing_is_no_sandbox,
    subint_refuses_a_sandbox_but_runs_inside_its_parents on "subint",
);

fn sandboxed() -> ActorOptions {
    ActorOptions::new().sandbox(Sandbox::new())
}

async fn probe(p: &brood::Portal, args: ProbeArgs) -> Result<Seen, brood::PortalError> {
    p.run(Probe, args).await
}

/// What the sandbox of the actor behind `p` applied and refused, from its vars.
async fn report_of(p: &brood::Portal) -> Result<SandboxReport, brood::PortalError> {
    Ok(probe(p, ProbeArgs::default())
        .await?
        .sandbox
        .expect("sandboxed")
        .report)
}

/// Start an actor in `sandbox` made best-effort, check that its report lists `refused`
/// as refused, and return the report.
async fn best_effort_without(
    n: &brood::Nursery,
    sandbox: Sandbox,
    refused: Piece,
) -> Result<SandboxReport, brood::FnError> {
    let lenient = ActorOptions::new().sandbox(sandbox.best_effort(true));
    let c = n.start_actor("lenient", lenient).await?;
    let report = report_of(&c).await?;
    assert!(
        report.refused.iter().any(|r| r.piece == refused),
        "{refused} not refused:\n{report}"
    );
    Ok(report)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A fresh directory on the host, removed on drop.
struct HostDir(std::path::PathBuf);

impl HostDir {
    fn new(tag: &str) -> HostDir {
        // Not under /tmp, which is private inside a sandbox.
        let dir = std::path::Path::new("/var/tmp").join(format!(
            "brood-sandbox-{tag}-{}-{:x}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        HostDir(dir)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// The least-privilege default: the actor is pid 1 of a namespace that holds only it,
/// has its own host name, no capabilities (it cannot remount `/`), the seccomp filter
/// (`keyctl` fails with `EPERM`), and its vars carry the report of all of it.
fn a_sandboxed_actor_runs_behind_every_wall_and_says_so() -> Result<(), Failed> {
    with_root(async |n| {
        let plain = n.start_actor("plain", ActorOptions::new()).await?;
        let outside = probe(&plain, ProbeArgs::default()).await?;
        assert_ne!(
            outside.keyctl_errno,
            libc::EPERM,
            "keyctl is allowed outside"
        );
        assert!(outside.sandbox.is_none());

        let boxed = n.start_actor("boxed", sandboxed()).await?;
        let inside = probe(&boxed, ProbeArgs::default()).await?;
        assert_eq!(inside.pid, 1, "the actor is its namespace's init");
        assert_eq!(
            inside.pids,
            [1],
            "/proc shows only the actor: {:?}",
            inside.pids
        );
        assert_ne!(inside.pid_ns, outside.pid_ns);
        assert_eq!(inside.hostname, "boxed");
        assert_eq!(inside.keyctl_errno, libc::EPERM, "seccomp denies keyctl");
        assert_ne!(inside.remount_errno, 0, "no capability to remount /");
        let vars = inside.sandbox.expect("the vars say which sandbox");
        assert_eq!(vars.sandbox, Sandbox::new());
        assert_eq!(vars.applied_by, "root/boxed");
        for piece in [
            Piece::UserNamespace,
            Piece::PidNamespace,
            Piece::NetworkNamespace,
            Piece::IpcNamespace,
            Piece::UtsNamespace,
            Piece::MountNamespace,
            Piece::Proc,
            Piece::Capabilities,
            Piece::NoNewPrivs,
            Piece::Seccomp,
        ] {
            assert!(
                vars.report.has(piece),
                "{piece} missing from:\n{}",
                vars.report
            );
        }
        assert!(vars.report.refused.is_empty(), "{}", vars.report);
        // The parent still calls it, and it still ends through the ladder.
        assert_eq!(boxed.run(harness::functions::Add, (2, 3)).await?, 5);
        Ok(())
    })?;
    Ok(())
}

/// With no network the host's listener cannot be reached, and there is no loopback
/// either; with loopback only, the actor has a loopback of its own and still cannot
/// reach the host's.
fn the_network_is_unreachable_and_loopback_is_its_own() -> Result<(), Failed> {
    let (_listener, args) = reach_host()?;
    let addr = args.connect.clone().unwrap_or_default();
    with_root(async |n| {
        let plain = n.start_actor("plain", ActorOptions::new()).await?;
        let seen = probe(&plain, args.clone()).await?;
        assert_eq!(seen.connect, None, "outside, {addr} is reachable");

        let none = n.start_actor("offline", sandboxed()).await?;
        let seen = probe(&none, args.clone()).await?;
        assert!(seen.connect.is_some(), "{addr} reached with no network");
        assert!(seen.loopback.is_some(), "a loopback with no network");

        let lo = ActorOptions::new().sandbox(Sandbox::new().network(Network::Loopback));
        let lo = n.start_actor("loopback", lo).await?;
        let seen = probe(&lo, args.clone()).await?;
        assert!(
            seen.connect.is_some(),
            "the host's {addr} reached from loopback only"
        );
        assert_eq!(seen.loopback, None, "its own loopback works");
        Ok(())
    })?;
    Ok(())
}

/// The host's filesystem is read-only inside, `/tmp` is private, a path kept writable is
/// the host's own directory, and a hidden path shows empty.
fn writing_outside_the_allowed_paths_fails() -> Result<(), Failed> {
    let kept = HostDir::new("kept");
    let other = HostDir::new("other");
    let hidden = HostDir::new("hidden");
    std::fs::write(hidden.0.join("secret"), b"s")?;
    let sandbox = Sandbox::new().writable(&kept.0).hidden(&hidden.0);
    let args = ProbeArgs {
        connect: None,
        write: vec![kept.path(), other.path(), "/tmp".into(), "/var/tmp".into()],
    };
    with_root(async |n| {
        let boxed = n
            .start_actor("writer", ActorOptions::new().sandbox(sandbox))
            .await?;
        let seen = probe(&boxed, args).await?;
        assert_eq!(seen.writes[0], None, "the writable path: {:?}", seen.writes);
        let refused = seen.writes[1].as_deref().unwrap_or("written");
        assert!(refused.contains("Read-only"), "{}: {refused}", other.path());
        assert_eq!(seen.writes[2], None, "the private /tmp is writable");
        let var_tmp = seen.writes[3].as_deref().unwrap_or("written");
        assert!(var_tmp.contains("Read-only"), "/var/tmp: {var_tmp}");
        Ok(())
    })?;
    // The private /tmp left nothing on the host's; the hidden file was not touched.
    assert!(!std::path::Path::new("/tmp/sandbox-probe").exists());
    assert_eq!(std::fs::read(hidden.0.join("secret"))?, b"s");
    Ok(())
}

/// An allocation past the address-space limit kills the actor (`SIGABRT`, as from
/// outside a namespace), and the parent gets a child failure, not a machine out of
/// memory; an allocation under the limit works.
fn the_memory_limit_turns_a_runaway_allocation_into_a_child_failure() -> Result<(), Failed> {
    let limited = ActorOptions::new().sandbox(Sandbox::new().memory(256 << 20));
    let err = with_root(async |n| {
        let c = n.start_actor("greedy", limited).await?;
        assert_eq!(c.run(Allocate, 16).await?, 16 << 20);
        c.run(Allocate, 8 << 10).await?;
        Ok(())
    })
    .expect_err("8 GiB under a 256 MiB limit");
    let ne = err.nursery().expect("a nursery error");
    match ne.children.as_slice() {
        [ChildError::Signaled { actor, signal, .. }] if actor == "root/greedy" => {
            assert_eq!(*signal, libc::SIGABRT, "{err}");
        }
        other => {
            return Err(format!("expected root/greedy killed by SIGABRT, got {other:?}").into());
        }
    }
    Ok(())
}

/// Processes started in a loop stop at the task limit (for root, the pid namespace's
/// `pid_max`; for a user, `RLIMIT_NPROC`), the actor still answers, and when it ends its
/// namespace takes every one of them (the leak checks).
fn a_fork_bomb_is_contained_by_the_task_limit() -> Result<(), Failed> {
    let tasks = 48;
    let opts = ActorOptions::new().sandbox(Sandbox::new().tasks(tasks));
    with_root(async |n| {
        let bomb = n.start_actor("bomb", opts).await?;
        let started = bomb.run(SpawnBomb, 5_000).await?;
        let bound = if is_root() { 300 } else { tasks as u32 };
        assert!(
            started > 0 && started < bound,
            "{started} started, bound {bound}"
        );
        let seen = probe(&bomb, ProbeArgs::default()).await?;
        assert!(
            seen.pids.len() as u32 > started,
            "{} in /proc",
            seen.pids.len()
        );
        let report = seen.sandbox.expect("sandboxed").report;
        assert!(report.has(Piece::Tasks), "{report}");
        Ok(())
    })?;
    Ok(())
}

/// SIGKILL to the namespace's init (found from outside by its pid namespace) ends every
/// process in the namespace, and the parent sees its child killed.
fn killing_the_namespace_init_takes_its_whole_namespace() -> Result<(), Failed> {
    kill_and_watch_the_namespace_empty("victim", |_, init| init)
}

/// SIGKILL to the keeper (the process the parent started and supervises, outside the
/// namespace) ends the actor through its parent-death signal, and with it every process
/// of its namespace; the parent sees its child killed.
fn killing_the_keeper_takes_the_whole_namespace() -> Result<(), Failed> {
    kill_and_watch_the_namespace_empty("kept", |members, init| {
        let keeper = parent_of(init).expect("the keeper");
        assert!(
            !members.contains(&keeper),
            "the keeper is outside the namespace"
        );
        keeper
    })
}

/// Start `name` sandboxed with five processes of its own, SIGKILL the process `victim`
/// picks (given the namespace's members and its init, as host pids), and check that the
/// namespace empties and the root reports `name` killed.
fn kill_and_watch_the_namespace_empty(
    name: &str,
    victim: impl FnOnce(&[u32], u32) -> u32,
) -> Result<(), Failed> {
    let err = with_root(async |n| {
        let c = n.start_actor(name, sandboxed()).await?;
        assert_eq!(c.run(SpawnBomb, 5).await?, 5);
        let ns = probe(&c, ProbeArgs::default()).await?.pid_ns;
        let members = in_namespace(&ns);
        assert_eq!(members.len(), 6, "init and five sleeps: {members:?}");
        kill(
            victim(&members, init_of(&members)),
            nix::sys::signal::Signal::SIGKILL,
        );
        poll_until_async(
            Duration::from_secs(2),
            "the namespace to empty",
            async || in_namespace(&ns).is_empty(),
        )
        .await;
        c.run(harness::functions::Add, (1, 1)).await?;
        Ok(())
    })
    .expect_err("a process of the sandbox was killed");
    killed_alone(&err, &format!("root/{name}"))
}

/// The parent pid of `pid`, as the host sees it.
fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("PPid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// A listener on the host's loopback (open as long as the caller keeps it) and probe
/// arguments that try to connect to it.
fn reach_host() -> std::io::Result<(std::net::TcpListener, ProbeArgs)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let args = ProbeArgs {
        connect: Some(listener.local_addr()?.to_string()),
        write: vec![],
    };
    Ok((listener, args))
}

/// Which of a pid namespace's `members` (host pids) is its init.
fn init_of(members: &[u32]) -> u32 {
    members
        .iter()
        .copied()
        .find(|pid| ns_pid(*pid) == Some(1))
        .expect("the namespace's init")
}

/// The host's processes in the pid namespace `ns` (`pid:[…]`).
fn in_namespace(ns: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .is_ok_and(|l| l.display().to_string() == ns)
        })
        .collect()
}

/// The pid `pid` has in its innermost namespace (`NSpid`'s last field).
fn ns_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// A child of a sandboxed actor runs in its parent's sandbox whatever it asks: asking for
/// the host's network and more memory gets neither, asking for less memory gets less.
fn children_inherit_the_sandbox_and_can_only_tighten_it() -> Result<(), Failed> {
    let (_listener, args) = reach_host()?;
    let parent = Sandbox::new().network(Network::Loopback).memory(1 << 30);
    let looser = Sandbox::unrestricted().memory(4 << 30);
    let tighter = Sandbox::unrestricted().memory(512 << 20);
    with_root(async |n| {
        let p = n
            .start_actor("outer", ActorOptions::new().sandbox(parent.clone()))
            .await?;
        let proc_ = Some("proc".to_owned());
        let inherited = p
            .run(ProbeViaChild, (proc_.clone(), None, args.clone()))
            .await?;
        let vars = inherited.sandbox.expect("inherited");
        assert_eq!(
            vars.sandbox, parent,
            "a child that asks nothing runs in its parent's"
        );
        assert!(
            inherited.connect.is_some(),
            "the host's network from an inherited sandbox"
        );

        let loose = p
            .run(ProbeViaChild, (proc_.clone(), Some(looser), args.clone()))
            .await?;
        let vars = loose.sandbox.expect("tightened");
        assert_eq!(
            vars.sandbox.network,
            Network::Loopback,
            "never more network"
        );
        assert_eq!(
            vars.sandbox.limits.address_space,
            Some(1 << 30),
            "never more memory"
        );
        assert!(loose.connect.is_some());

        let tight = p.run(ProbeViaChild, (proc_, Some(tighter), args)).await?;
        let vars = tight.sandbox.expect("tightened");
        assert_eq!(
            vars.sandbox.limits.address_space,
            Some(512 << 20),
            "less memory"
        );
        assert_eq!(vars.applied_by, "root/outer/inner");
        Ok(())
    })?;
    Ok(())
}

/// A part the kernel cannot apply (here a writable path that does not exist) fails the
/// spawn with a typed error naming it, and nothing is left running; with `best_effort`
/// the actor runs and its report lists what was refused.
fn a_refused_part_fails_the_spawn_with_a_typed_error_unless_best_effort() -> Result<(), Failed> {
    let missing = "/nonexistent/brood-sandbox-test";
    with_root(async |n| {
        let strict = Sandbox::new().writable(missing);
        let e = n
            .start_actor("strict", ActorOptions::new().sandbox(strict.clone()))
            .await
            .expect_err("a path that does not exist cannot be kept writable");
        match &e {
            SpawnError::SandboxRefused { actor, refusal, .. } => {
                assert_eq!(actor, "root/strict");
                assert_eq!(refusal.piece, Piece::Path, "{e}");
                assert!(refusal.reason.contains(missing), "{e}");
            }
            other => panic!("expected SandboxRefused, got {other:?}"),
        }
        let report = best_effort_without(n, strict, Piece::Path).await?;
        assert!(report.has(Piece::Seccomp), "the rest applied: {report}");
        Ok(())
    })?;
    Ok(())
}

/// A `subint` child shares its parent's process, so asking for a sandbox is refused with
/// a typed error and nothing starts; a `subint` child of a sandboxed process actor runs
/// inside that actor's sandbox, and its vars say so.
fn subint_refuses_a_sandbox_but_runs_inside_its_parents() -> Result<(), Failed> {
    with_root(async |n| {
        let e = n
            .start_actor("boxed", sandboxed().backend("subint"))
            .await
            .expect_err("a sub-interpreter cannot be sandboxed");
        assert!(
            matches!(
                &e,
                SpawnError::SandboxUnsupported {
                    backend: "subint",
                    ..
                }
            ),
            "{e:?}"
        );
        let host = n
            .start_actor(
                "host",
                ActorOptions::new().backend("proc").sandbox(Sandbox::new()),
            )
            .await?;
        let subint = Some("subint".to_owned());
        let seen = host
            .run(ProbeViaChild, (subint, None, ProbeArgs::default()))
            .await?;
        assert_eq!(seen.pid, 1, "in the process actor's namespace");
        let vars = seen.sandbox.expect("inherited");
        assert_eq!(vars.applied_by, "root/host");
        Ok(())
    })?;
    Ok(())
}

/// A sandboxed actor's `fork` children run inside its sandbox: the tree's forkserver
/// (started here by an unsandboxed child first) lives outside it, so the first fork spawn
/// inside the sandbox starts a server there, and its children are in the actor's pid
/// namespace, with no network, and tighten the sandbox like `proc` children.
fn a_sandboxed_actors_fork_children_run_inside_its_sandbox() -> Result<(), Failed> {
    let (_listener, args) = reach_host()?;
    with_root(async |n| {
        let outside = n
            .start_actor("outside", ActorOptions::new().backend("fork"))
            .await?;
        let outside = probe(&outside, args.clone()).await?;
        assert_eq!(outside.connect, None);

        let p = n.start_actor("boxed", sandboxed()).await?;
        let parent = probe(&p, ProbeArgs::default()).await?;
        let fork = Some("fork".to_owned());
        let inherited = p
            .run(ProbeViaChild, (fork.clone(), None, args.clone()))
            .await?;
        assert_eq!(
            inherited.pid_ns, parent.pid_ns,
            "in the actor's pid namespace"
        );
        assert_ne!(inherited.pid, 1);
        assert!(inherited.connect.is_some(), "no network inside");
        assert_eq!(
            inherited.sandbox.expect("inherited").sandbox,
            Sandbox::new()
        );

        let tighter = Sandbox::unrestricted().memory(512 << 20);
        let tight = p.run(ProbeViaChild, (fork, Some(tighter), args)).await?;
        let vars = tight.sandbox.expect("tightened");
        assert_eq!(vars.sandbox.limits.address_space, Some(512 << 20));
        assert_eq!(vars.applied_by, "root/boxed/inner");
        assert!(tight.connect.is_some());
        Ok(())
    })?;
    Ok(())
}

/// A child asking for a namespace its sandboxed parent lacks (here: no network, under a
/// parent on the host's network) gets it when the tree runs as an ordinary user; as root
/// the kernel refuses the nested user namespace (the parent gave up `CAP_SETFCAP`), and
/// the spawn fails with that part named rather than running with less.
fn a_child_adds_a_namespace_as_a_user_and_is_refused_by_name_as_root() -> Result<(), Failed> {
    let (_listener, args) = reach_host()?;
    let online = Sandbox::new().network(Network::Host);
    let offline = Sandbox::unrestricted().network(Network::None);
    with_root(async |n| {
        let p = n
            .start_actor("online", ActorOptions::new().sandbox(online))
            .await?;
        assert_eq!(
            probe(&p, args.clone()).await?.connect,
            None,
            "the host's network"
        );
        let proc_ = Some("proc".to_owned());
        let got = p.run(ProbeViaChild, (proc_, Some(offline), args)).await;
        if is_root() {
            let e = got.expect_err("root cannot nest a user namespace without CAP_SETFCAP");
            let text = e.to_string();
            assert!(
                text.contains("user namespace refused") && text.contains("CAP_SETFCAP"),
                "{text}"
            );
        } else {
            let seen = got?;
            assert!(seen.connect.is_some(), "no network in the nested namespace");
            let report = seen.sandbox.expect("sandboxed").report;
            assert!(report.has(Piece::NetworkNamespace), "{report}");
        }
        Ok(())
    })?;
    Ok(())
}

/// `cgroup(true)` puts the actor in a cgroup v2 of its own with `memory.max` and
/// `pids.max`, where this process's cgroup has those controllers for its children, and
/// fails the spawn naming the cgroup (with the reason) where it does not; best effort
/// runs without it and says so. The cgroup is gone once the actor is (the leak checks
/// and the last assertion).
fn a_cgroup_limit_is_applied_where_writable_and_refused_by_name_elsewhere() -> Result<(), Failed> {
    let limited = Sandbox::new().memory(256 << 20).tasks(64).cgroup(true);
    let made = with_root(async |n| {
        match n
            .start_actor("grouped", ActorOptions::new().sandbox(limited.clone()))
            .await
        {
            Ok(c) => {
                let report = report_of(&c).await?;
                let (_, detail) = report
                    .applied
                    .iter()
                    .find(|(p, _)| *p == Piece::Cgroup)
                    .expect("an applied cgroup is in the report");
                Ok(Some(detail.clone()))
            }
            Err(SpawnError::SandboxRefused { refusal, .. }) => {
                assert_eq!(refusal.piece, Piece::Cgroup, "{refusal}");
                assert!(refusal.reason.contains("cgroup"), "{refusal}");
                let report = best_effort_without(n, limited.clone(), Piece::Cgroup).await?;
                assert!(report.has(Piece::AddressSpace), "{report}");
                Ok(None)
            }
            Err(other) => panic!("expected a cgroup or its refusal, got {other:?}"),
        }
    })?;
    if let Some(dir) = made {
        let dir = dir.split_whitespace().next().unwrap_or_default().to_owned();
        poll_until(Duration::from_secs(2), "the cgroup to be removed", || {
            !std::path::Path::new(&dir).exists()
        });
    }
    Ok(())
}

/// `Sandbox::unrestricted()` restricts nothing: the child starts as if no sandbox had
/// been asked for, on every backend, and its vars say it has none.
fn a_sandbox_that_restricts_nothing_is_no_sandbox() -> Result<(), Failed> {
    with_root(async |n| {
        let c = n
            .start_actor("free", ActorOptions::new().sandbox(Sandbox::unrestricted()))
            .await?;
        assert!(probe(&c, ProbeArgs::default()).await?.sandbox.is_none());
        Ok(())
    })?;
    Ok(())
}
