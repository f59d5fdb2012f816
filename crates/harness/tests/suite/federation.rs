//! Separate programs meeting through a registrar (`RootBuilder::registrar`,
//! `BROOD_REGISTRAR`, `BROOD_SECRET_FILE`): the test's root and a member program, each a
//! process of its own, join a standalone registrar (a third process listening at a fixed
//! address); each finds the other's actors and calls them directly. A member that dies
//! is forgotten within a second; a registrar that dies is noticed, and the roots join it
//! again when it is back.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use brood::discovery::{REGISTRAR_ENV, SECRET_FILE_ENV};
use brood::{ActorOptions, Addr, TreeSecret};
use harness::Failed;
use harness::functions::*;

use crate::common::*;

crate::tests!(
    two_programs_find_and_call_each_other_through_a_registrar_and_survive_its_restart,
    a_registrar_refuses_a_second_tree_of_the_same_name,
    lying_registrations_are_refused_and_a_stranger_cannot_join,
);

/// Where the scenarios are told the registrar's address.
const HUB_ADDR_ENV: &str = "BROOD_TEST_HUB_ADDR";

/// Scenario: a standalone registrar at `BROOD_TEST_HUB_ADDR`, with the secret in
/// `BROOD_SECRET_FILE`; prints `READY` and serves until its standard input closes.
pub(crate) fn registrar_until_stdin_closes() {
    let addr: Addr = std::env::var(HUB_ADDR_ENV).unwrap().parse().unwrap();
    let r = harness::run(
        scaled(Duration::from_secs(120)),
        harness::root().name("hub").listen_at(addr).run(async |_n| {
            ready_then_wait_for_stdin().await;
            Ok(())
        }),
    );
    r.expect("the registrar ran");
}

/// Scenario: a program called `beta` that joins the registrar named by `BROOD_REGISTRAR`
/// (secret from `BROOD_SECRET_FILE`), starts `far` on the cell's backend, prints
/// `READY`, and runs until its standard input closes.
pub(crate) fn member_until_stdin_closes() {
    let r = harness::run(
        scaled(Duration::from_secs(120)),
        harness::root().name("beta").run(async |n| {
            n.start_actor("far", ActorOptions::new()).await?;
            ready_then_wait_for_stdin().await;
            Ok(())
        }),
    );
    r.expect("the member ran");
}

async fn ready_then_wait_for_stdin() {
    println!("READY");
    std::io::stdout().flush().unwrap();
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await
    .unwrap();
}

/// A scenario process and the way to stop it.
struct Program(Child);

impl Program {
    fn start(scenario: &str, env: &[(&str, String)]) -> Result<Program, Failed> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(harness::SCENARIO_ENV, scenario)
            .env(harness::TEST_DIR_ENV, harness::test_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "READY" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{scenario} did not start: {line:?}").into());
        }
        Ok(Program(child))
    }

    /// Close its input and wait for its clean exit.
    fn stop(mut self) -> Result<(), Failed> {
        drop(self.0.stdin.take());
        let status = self.0.wait()?;
        if !status.success() {
            return Err(format!("the program ended with {status}").into());
        }
        Ok(())
    }

    fn kill(mut self) -> Result<(), Failed> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn fn_error(e: Failed) -> brood::FnError {
    brood::FnError::msg(format!("{e:?}"))
}

/// Removes the secret's file at the test's end.
struct SecretFile(std::path::PathBuf);

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

type Setup = (TreeSecret, Vec<(&'static str, String)>, Addr, SecretFile);

/// The shared secret, in a file only we can read, and the registrar's address.
fn setup(tag: &str) -> Result<Setup, Failed> {
    let dir = harness::test_dir();
    // Made private, as the transports would make it (they check it when they use it).
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&dir)?;
    let secret = TreeSecret::random();
    let file = dir.join(format!("{tag}.secret"));
    brood::discovery::write_secret_file(&file, &secret)?;
    let addr = Addr::new("uds", dir.join(format!("{tag}.sock")).to_string_lossy());
    let env = vec![
        (HUB_ADDR_ENV, addr.to_string()),
        (REGISTRAR_ENV, addr.to_string()),
        (SECRET_FILE_ENV, file.to_string_lossy().into_owned()),
    ];
    Ok((secret, env, addr, SecretFile(file)))
}

fn two_programs_find_and_call_each_other_through_a_registrar_and_survive_its_restart()
-> Result<(), Failed> {
    let (secret, env, hub_addr, _file) = setup("hub")?;
    let hub = Program::start("registrar_until_stdin_closes", &env)?;
    let beta = Program::start("member_until_stdin_closes", &env)?;
    let mut hub = Some(hub);
    let mut beta = Some(beta);
    within_deadline(
        harness::root()
            .name("alpha")
            .secret(secret)
            .registrar(hub_addr.clone())
            .run(async |n| {
                let cx = n.actor();
                let near = n.start_actor("near", ActorOptions::new()).await?;
                // Another program's actor, found by name and called directly.
                let far = cx
                    .wait_for_actor("far", scaled(Duration::from_secs(5)))
                    .await?;
                let who = far.run(WhoAmI, ()).await?;
                assert_eq!(who.path, "beta/far");
                // One of our children reaches it too, with the same handshake.
                let (sum, caller) = near.run(AddVia, (who.addr.clone(), 40, 2)).await?;
                assert_eq!((sum, caller.as_str()), (42, "near"));
                let listed: Vec<String> = listed_paths(&cx).await?;
                for want in ["alpha", "alpha/near", "beta", "beta/far", "hub"] {
                    assert!(
                        listed.iter().any(|p| p == want),
                        "{want} listed: {listed:?}"
                    );
                }

                // The member dies: its actors are forgotten within a second.
                beta.take().unwrap().kill().map_err(fn_error)?;
                poll_until_async(
                    Duration::from_secs(1),
                    "beta's actors forgotten",
                    async || cx.lookup("far").await.ok().is_some_and(|f| f.is_empty()),
                )
                .await;
                assert!(cx.find_actor("far").await?.is_none());

                // The registrar dies: what it taught us goes; ours stay.
                hub.take().unwrap().kill().map_err(fn_error)?;
                poll_until_async(
                    Duration::from_secs(1),
                    "the registrar's entries dropped",
                    async || cx.lookup("hub").await.ok().is_some_and(|h| h.is_empty()),
                )
                .await;
                assert_eq!(cx.lookup("near").await?.len(), 1, "our own actors stay");

                // It comes back at the same address, and so does a member: both found.
                hub = Some(Program::start("registrar_until_stdin_closes", &env).map_err(fn_error)?);
                beta = Some(Program::start("member_until_stdin_closes", &env).map_err(fn_error)?);
                let far = cx
                    .wait_for_actor("far", scaled(Duration::from_secs(5)))
                    .await?;
                assert_eq!(far.run(WhoAmI, ()).await?.path, "beta/far");
                Ok(())
            }),
    )?;
    beta.take().unwrap().stop()?;
    hub.take().unwrap().stop()?;
    Ok(())
}

/// Tree paths are what lookups by path answer: a second program named like one that
/// joined is refused (and keeps running on its own).
fn a_registrar_refuses_a_second_tree_of_the_same_name() -> Result<(), Failed> {
    let (secret, env, hub_addr, _file) = setup("hub2")?;
    let hub = Program::start("registrar_until_stdin_closes", &env)?;
    let beta = Program::start("member_until_stdin_closes", &env)?;
    within_deadline(
        harness::root()
            .name("beta")
            .secret(secret)
            .registrar(hub_addr.clone())
            .run(async |n| {
                let cx = n.actor();
                // The other beta's actor is never learned: we were refused.
                let r = cx
                    .wait_for_actor("far", scaled(Duration::from_millis(500)))
                    .await;
                assert!(
                    matches!(r, Err(brood::DiscoveryError::Timeout { .. })),
                    "refused, so nothing learned: {r:?}"
                );
                // Our own tree still works.
                n.start_actor("mine", ActorOptions::new()).await?;
                assert_eq!(cx.lookup("mine").await?.len(), 1);
                Ok(())
            }),
    )?;
    beta.stop()?;
    hub.stop()?;
    Ok(())
}

/// A peer that knows the secret but lies: it registers an actor that is not its child,
/// removes another's child, joins under a taken name or sends entries of another tree.
/// Each is refused with a typed error and the table is unchanged; a peer without the
/// secret does not get past the handshake.
fn lying_registrations_are_refused_and_a_stranger_cannot_join() -> Result<(), Failed> {
    use brood::discovery::{ActorInfo, Deregister, Join, Query, REFUSED, Register, Update};
    let secret = TreeSecret::random();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<(Addr, ActorInfo)>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let alpha = harness::root()
        .name("alpha")
        .secret(secret.clone())
        .run(async |n| {
            n.start_actor("kid", ActorOptions::new()).await?;
            let cx = n.actor();
            let kid = cx.lookup("kid").await?.remove(0);
            addr_tx.send((cx.addr().clone(), kid)).unwrap();
            done_rx.await.unwrap();
            // Nothing the liar sent stuck.
            let paths: Vec<String> = listed_paths(&cx).await?;
            assert_eq!(paths, ["alpha", "alpha/kid"]);
            Ok(())
        });
    let liar = async {
        let (alpha_addr, kid) = addr_rx.await.unwrap();
        let r = harness::root()
            .name("liar")
            .secret(secret.clone())
            .run(async |n| {
                let cx = n.actor();
                let alpha = cx.connect(&alpha_addr).await?;
                let refused = |r: Result<(), brood::PortalError>, what: &str| match r {
                    Err(e) if e.remote().is_some_and(|r| r.kind == REFUSED) => {}
                    other => panic!("{what} was not refused: {other:?}"),
                };
                // An actor that is not our child, claimed as alpha's kid's child.
                let mut fake: ActorInfo = kid.clone();
                fake.id = brood::ActorId::new("fake");
                fake.path = "alpha/kid/fake".to_owned();
                fake.parent = Some(kid.id.clone());
                refused(
                    alpha.run(Register, fake).await,
                    "registering another's child",
                );
                refused(
                    alpha.run(Deregister, kid.id.clone()).await,
                    "removing another's child",
                );
                // Joining under a name alpha's table has.
                let taken = alpha.open_context(Join, "alpha".to_owned()).await;
                assert!(
                    taken
                        .as_ref()
                        .err()
                        .and_then(|e| e.remote())
                        .is_some_and(|r| r.kind == REFUSED),
                    "joining as alpha was not refused: {:?}",
                    taken.map(|_| ())
                );
                // Joining honestly, then sending another tree's entry: the session ends.
                let (ctx, known) = alpha.open_context(Join, "liar".to_owned()).await?;
                assert!(known.iter().any(|a| a.path == "alpha/kid"), "{known:?}");
                let mut stolen = kid.clone();
                stolen.path = "alpha/stolen".to_owned();
                stolen.id = brood::ActorId::new("stolen");
                let _ = ctx.send(vec![Update::Upsert(stolen)]).await;
                let ended =
                    tokio::time::timeout(scaled(Duration::from_secs(5)), ctx.result()).await;
                match ended {
                    Ok(Err(e)) if e.remote().is_some_and(|r| r.kind == REFUSED) => {}
                    other => panic!("the lying session did not end refused: {other:?}"),
                }
                assert!(
                    alpha
                        .run(brood::discovery::Lookup, Query::Name("stolen".into()))
                        .await?
                        .is_empty()
                );
                alpha.close().await;
                Ok(())
            })
            .await;
        // A stranger (another secret) is refused by the handshake itself.
        let stranger = harness::root()
            .name("stranger")
            .run(async |n| {
                let r = n.actor().connect(&alpha_addr).await;
                assert!(
                    matches!(r, Err(brood::ConnectError::Handshake { .. })),
                    "a stranger got a channel: {r:?}"
                );
                Ok(())
            })
            .await;
        done_tx.send(()).unwrap();
        r.and(stranger)
    };
    let (a, l) = within_deadline(async { tokio::join!(alpha, liar) });
    a?;
    l?;
    Ok(())
}
