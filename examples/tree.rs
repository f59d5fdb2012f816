//! Print the live tree of every program that joined a registrar.
//!
//! `cargo run --example tree` (add `-- --watch 2` to refresh every 2 s, `--addr ADDR` to
//! ask another registrar — any root is one — than `BROOD_REGISTRAR` or the well-known one)
//!
//! It reads the secret from `BROOD_SECRET_FILE` (else the well-known registrar's file),
//! lists every actor the registrar knows ([`ActorCx::list_actors_at`]) and asks each one
//! what it is doing right now ([`brood::discovery::Status`]), directly at its address:
//!
//! ```text
//! PATH                      BACKEND   PID      UPTIME  CALLS
//! registrar                 proc      41210    12.4s   1
//! shop                      proc      41388     8.0s   0
//!   shop/cashier            proc      41402     7.9s   3
//!     shop/cashier/audit    subint    41402     7.8s   0
//! ```
//!
//! An actor that ended between the listing and its status shows `gone`.

use std::time::Duration;

use brood::discovery::{ActorStatus, Status};
use brood::{ActorCx, ActorInfo, Addr, Registry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let brood = brood::setup(Registry::new());
    brood.enter();

    let (well_known, well_known_secret) = brood::discovery::well_known()?;
    let mut addr = std::env::var(brood::discovery::REGISTRAR_ENV)
        .ok()
        .filter(|a| !a.is_empty())
        .map(|a| a.parse::<Addr>())
        .transpose()?
        .unwrap_or(well_known);
    let mut watch = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs an address")?.parse()?,
            "--watch" => {
                let secs: f64 = args.next().ok_or("--watch needs seconds")?.parse()?;
                watch = Some(Duration::from_secs_f64(secs.max(0.1)));
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let secret_file = std::env::var_os(brood::discovery::SECRET_FILE_ENV)
        .filter(|f| !f.is_empty())
        .map(Into::into)
        .unwrap_or(well_known_secret);
    let secret = brood::discovery::read_secret_file(&secret_file)
        .map_err(|e| format!("the registrar's secret ({}): {e}", secret_file.display()))?;

    let me = format!("brood-tree-{}", std::process::id());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(
        brood
            .root()
            .name(me.clone())
            .secret(secret)
            .run(async |nursery| {
                let cx = nursery.actor();
                loop {
                    let actors = cx.list_actors_at(&addr).await?;
                    // This tool's own tree, if it joined through BROOD_REGISTRAR, is not shown.
                    let actors: Vec<ActorInfo> =
                        actors.into_iter().filter(|a| a.tree() != me).collect();
                    let mut lines = vec![format!(
                        "{:<40} {:<8} {:>8} {:>9} {:>6}",
                        "PATH", "BACKEND", "PID", "UPTIME", "CALLS"
                    )];
                    for a in &actors {
                        lines.push(row(a, status(&cx, a).await));
                    }
                    if watch.is_some() {
                        // Clear the terminal between frames.
                        print!("\x1b[2J\x1b[H");
                    }
                    println!("{}\n{} actors at {addr}", lines.join("\n"), actors.len());
                    match watch {
                        Some(every) => tokio::time::sleep(every).await,
                        None => return Ok(()),
                    }
                }
            }),
    )?;
    Ok(())
}

async fn status(cx: &ActorCx, actor: &ActorInfo) -> Option<ActorStatus> {
    let portal = cx.portal_to(actor).await.ok()?;
    tokio::time::timeout(Duration::from_secs(1), portal.run(Status, ()))
        .await
        .ok()?
        .ok()
}

fn row(actor: &ActorInfo, status: Option<ActorStatus>) -> String {
    let depth = actor.path.matches('/').count();
    let path = format!("{}{}", "  ".repeat(depth), actor.path);
    match status {
        Some(s) => format!(
            "{path:<40} {:<8} {:>8} {:>8.1}s {:>6}",
            actor.backend,
            actor.pid,
            s.uptime.as_secs_f64(),
            s.calls_in_flight
        ),
        None => format!(
            "{path:<40} {:<8} {:>8} {:>9} {:>6}",
            actor.backend, actor.pid, "gone", "-"
        ),
    }
}
