//! The forkserver backend. These tests force `fork` (the last one also starts a `proc`
//! child to compare with), so they run in the `fork` cell only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brood::{ActorOptions, ChildExit, ChildStdio, SpawnError};
use harness::functions::*;
use harness::{Failed, leaks};

use crate::common::*;

crate::tests!(
    forkserver_sigkill_fails_spawns_and_running_actors_carry_on on "fork",
    root_sigkill_takes_the_forkserver_and_every_forked_actor on "fork",
    a_forked_child_inherits_no_descriptor_of_its_parent_or_the_server on "fork",
    a_forked_actor_dies_with_its_parent_actor on "fork",
);

/// Kill the forkserver with SIGKILL while actors run: spawns fail with a typed error and
/// never hang, the running actors keep serving and then exit cleanly, nothing leaks.
/// Always on the fork backend.
fn forkserver_sigkill_fails_spawns_and_running_actors_carry_on() -> Result<(), Failed> {
    let reports = within_deadline(harness::root().use_backend("fork").run(async |n| {
        let a = n.start_actor("a", ActorOptions::new()).await?;
        let b = n.start_actor("b", ActorOptions::new()).await?;
        let ia = a.run(ProcSelf, ()).await?;
        // b holds a grandchild, spawned through b's own connection to the server.
        let (_ctx, gc) = b
            .open_context(HoldGrandchild, ActorOptionsWire::default())
            .await?;
        let server = ia.ppid;
        assert_ne!(
            server,
            std::process::id(),
            "a forked child's parent is the server"
        );
        assert_eq!(leaks::ppid(gc.pid), Some(server), "one server for the tree");
        assert_eq!(leaks::comm(server).as_deref(), Some("brood-forksrv"));

        kill(server, nix::sys::signal::Signal::SIGKILL);
        poll_until_async(
            Duration::from_secs(5),
            format!("the SIGKILLed forkserver {server} to die"),
            async || leaks::is_dead(server),
        )
        .await;

        let t = Instant::now();
        match n.start_actor("late", ActorOptions::new()).await {
            Err(SpawnError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "fork");
                assert!(reason.contains("forkserver"), "{reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        let bound = scaled(Duration::from_secs(2));
        assert!(
            t.elapsed() < bound,
            "failed in {:?}, not within {bound:?}",
            t.elapsed()
        );
        // A child's own spawn fails the same way, as an error its caller sees.
        let e = a.run(AddViaChild, ("late".into(), 1, 2)).await.unwrap_err();
        let r = e.remote().expect("a remote error");
        assert!(r.message.contains("fork backend unavailable"), "{r}");
        let bound = scaled(Duration::from_secs(5));
        assert!(
            t.elapsed() < bound,
            "failed in {:?}, not within {bound:?}",
            t.elapsed()
        );

        // The running actors carry on.
        assert_eq!(a.run(Add, (1, 2)).await?, 3);
        assert_eq!(b.run(Add, (3, 4)).await?, 7);
        assert!(!leaks::is_dead(gc.pid));
        n.cancel().await;
        assert!(
            leaks::is_dead(gc.pid),
            "the grandchild ended with its parent"
        );
        Ok(n.reports())
    }))?;
    assert_eq!(reports.len(), 2, "two children reaped: {reports:?}");
    assert!(
        reports.iter().all(|r| r.exit == ChildExit::Exited(0)),
        "clean exits after the server died: {reports:?}"
    );
    Ok(())
}

/// Kill a fork tree's root with SIGKILL: the forkserver and every forked actor die with
/// it within 2 s ([`scaled`]). Always on the fork backend (the root runs as a scenario
/// process).
fn root_sigkill_takes_the_forkserver_and_every_forked_actor() -> Result<(), Failed> {
    let mut root = std::process::Command::new(std::env::current_exe()?)
        .env(harness::SCENARIO_ENV, "tree_then_wait")
        .env(harness::TEST_DIR_ENV, harness::test_dir())
        .env(brood::BACKEND_ENV, "fork")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pids = numbers(
        &mut std::io::BufReader::new(root.stdout.take().unwrap()),
        "PIDS",
    )?;
    let root_pid = pids[0];
    let tree = leaks::descendants_of(root_pid);
    let server = leaks::ppid(pids[1]).ok_or("the child is gone already")?;
    assert!(
        server != root_pid
            && tree
                .iter()
                .any(|&(p, parent)| p == server && parent == root_pid),
        "the root {root_pid} started the forkserver {server}: {tree:?}"
    );
    let parents: Vec<_> = pids[1..].iter().map(|&p| (p, leaks::ppid(p))).collect();
    assert!(
        parents.iter().all(|&(_, pp)| pp == Some(server)),
        "the server {server} forked both actors: (pid, parent) {parents:?}"
    );
    kill(root_pid, nix::sys::signal::Signal::SIGKILL);
    root.wait()?;
    let all: Vec<u32> = tree.iter().map(|&(p, _)| p).collect();
    poll_until(
        Duration::from_secs(2),
        format_args!("the killed root's tree to die: (pid, parent) {tree:?}"),
        || {
            leaks::reap_zombies();
            all.iter().all(|&p| leaks::is_dead(p))
        },
    );
    with_root(async |_n| Ok(()))?;
    Ok(())
}

/// A forked child shares no descriptor with its parent actor or with the forkserver: it
/// holds what an exec'd (`proc`) child of the same program holds (its runtime's
/// descriptors, its listener, its parent channel, the standard streams of its parent;
/// not what that child inherits by exec) plus exactly one socket, its link to its parent
/// actor (how it dies with it).
fn a_forked_child_inherits_no_descriptor_of_its_parent_or_the_server() -> Result<(), Failed> {
    // Sockets and pipes the parent holds while it spawns.
    let (_ra, _wa) = std::io::pipe()?;
    let _pair = std::os::unix::net::UnixStream::pair()?;
    let (fork, proc, ours, server) = with_root(async |n| {
        let f = n
            .start_actor("f", ActorOptions::new().backend("fork"))
            .await?;
        let p = n
            .start_actor("p", ActorOptions::new().backend("proc"))
            .await?;
        let fi = f.run(ProcSelf, ()).await?;
        let pi = p.run(ProcSelf, ()).await?;
        let quiet = n
            .start_actor(
                "quiet",
                ActorOptions::new().backend("fork").stdio(ChildStdio::Null),
            )
            .await?;
        let qi = quiet.run(ProcSelf, ()).await?;
        assert_eq!(
            &qi.fds[1..3],
            [(1, "/dev/null".into()), (2, "/dev/null".into())]
        );
        let server = leaks::fds_of(fi.ppid);
        Ok((fi, pi, leaks::open_fds(), server))
    })?;
    assert!(!server.is_empty(), "the server's descriptors are visible");
    // Sockets and pipes are identified by inode: the same target is the same object.
    let shared_object = |t: &String| t.starts_with("socket:[") || t.starts_with("pipe:[");
    let foreign: Vec<_> = fork
        .fds
        .iter()
        .filter(|(fd, t)| {
            *fd > 2
                && shared_object(t)
                && (ours.values().any(|o| o == t) || server.values().any(|s| s == t))
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "inherited from the parent or the server: {foreign:?} (all: {fork:?})"
    );
    let kinds = |fds: &[(i32, String)]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for (fd, t) in fds {
            if *fd > 2 {
                let kind = if shared_object(t) {
                    t[..t.find('[').unwrap()].to_owned()
                } else {
                    t.clone()
                };
                *m.entry(kind).or_default() += 1;
            }
        }
        m
    };
    // An exec'd child also keeps what its parent holds without close-on-exec (the test
    // runner's descriptors, here): same number, same object. A forked child has none.
    let exec_inherited = |(fd, t): &&(i32, String)| *fd > 2 && ours.get(fd).is_some_and(|o| o == t);
    let proc_own: Vec<(i32, String)> = proc
        .fds
        .iter()
        .filter(|e| !exec_inherited(e))
        .cloned()
        .collect();
    let mut expected = kinds(&proc_own);
    *expected.entry("socket:".to_owned()).or_default() += 1;
    assert_eq!(
        kinds(&fork.fds),
        expected,
        "fork child {:?} = proc child {:?} + its link",
        fork.fds,
        proc.fds
    );
    let stdio = |fds: &[(i32, String)]| -> Vec<String> {
        fds.iter()
            .filter(|(fd, _)| *fd <= 2)
            .map(|(_, t)| t.clone())
            .collect()
    };
    assert_eq!(
        stdio(&fork.fds),
        stdio(&proc.fds),
        "the same standard streams as an exec'd child"
    );
    assert_eq!(
        [fork.pgid, proc.pgid],
        [fork.pid, proc.pid],
        "each child leads its own process group (fork, proc)"
    );
    Ok(())
}

/// SIGKILL a forked actor that holds a forked grandchild, with the forkserver alive: the
/// grandchild's OS parent is the server, yet it dies with its parent actor within 2 s
/// ([`scaled`]). Always on the fork backend.
fn a_forked_actor_dies_with_its_parent_actor() -> Result<(), Failed> {
    let gc = Arc::new(Mutex::new(None));
    let gc2 = gc.clone();
    let err = within_deadline(harness::root().use_backend("fork").run(async move |n| {
        let middle = n.start_actor("middle", ActorOptions::new()).await?;
        let m = middle.run(ProcSelf, ()).await?;
        let (_ctx, grandchild) = middle
            .open_context(HoldGrandchild, ActorOptionsWire::default())
            .await?;
        assert_eq!(
            leaks::ppid(grandchild.pid),
            Some(m.ppid),
            "forked by the server"
        );
        *gc2.lock().unwrap() = Some((grandchild.pid, m.ppid));
        kill(m.pid, nix::sys::signal::Signal::SIGKILL);
        poll_until_async(
            Duration::from_secs(2),
            format!(
                "the grandchild {} to die with its SIGKILLed parent actor {}",
                grandchild.pid, m.pid
            ),
            async || leaks::is_dead(grandchild.pid),
        )
        .await;
        assert!(!leaks::is_dead(m.ppid), "the server is still up");
        // The tree goes on: the server still forks.
        let other = n.start_actor("other", ActorOptions::new()).await?;
        assert_eq!(other.run(Add, (2, 2)).await?, 4);
        std::future::pending::<()>().await;
        Ok(())
    }))
    .unwrap_err();
    killed_alone(&err, "root/middle")
}
