//! Footprint: the unique memory (USS: `Private_Clean + Private_Dirty` from
//! `/proc/<pid>/smaps_rollup`) of an idle child actor, of this root process and of a
//! `sleep` process as the floor. Not a criterion timing: it prints a table and writes
//! `footprint-uss.json` (a flat `{"name": bytes}` object) into criterion's directory,
//! where `cargo xtask bench` reads it.
//!
//! Criterion-style arguments (`--bench`, `--warm-up-time 0.5`, a filter...) are accepted
//! and ignored.

mod common;

use std::io;
use std::process::Command;
use std::time::Duration;

use brood::ActorOptions;
use common::files::{criterion_dir, uss};
use common::{Pid, Ping};

/// The file `cargo xtask bench` reads.
const REPORT_FILE: &str = "footprint-uss.json";

/// How long a process idles before it is measured.
const SETTLE: Duration = Duration::from_millis(300);

/// The USS of a `sleep 30` process, killed once measured.
fn sleep_process_uss() -> io::Result<u64> {
    let mut child = Command::new("sleep").arg("30").spawn()?;
    std::thread::sleep(SETTLE);
    let measured = uss(child.id());
    child.kill()?;
    child.wait()?;
    measured
}

fn fmt_size(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    let actors = common::enter();
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) measure as a
    // smoke test but leave the results file alone.
    let benching = std::env::args().any(|a| a == "--bench");
    let rt = common::current_thread_rt();

    let (child, root) = common::in_root(&rt, &actors, async |n| {
        let p = n.start_actor("idle", ActorOptions::new()).await?;
        p.run(Ping, ()).await?;
        tokio::time::sleep(SETTLE).await;
        let pid = p.run(Pid, ()).await?;
        let child = uss(pid)?;
        let root = uss(std::process::id())?;
        p.cancel_actor().await;
        Ok((child, root))
    });
    let sleep = sleep_process_uss().expect("measure a sleep process");

    let rows = [
        ("idle-child-proc", child),
        ("idle-root-process", root),
        ("floor-sleep-process", sleep),
    ];
    println!("footprint (USS = Private_Clean + Private_Dirty)");
    for (name, bytes) in rows {
        println!("  {name:<20} {bytes:>10} B  {:>10}", fmt_size(bytes));
    }

    if !benching {
        println!("not run by `cargo bench`: {REPORT_FILE} not written");
        return;
    }
    let json = format!(
        "{{{}}}\n",
        rows.iter()
            .map(|(name, bytes)| format!("\"{name}\": {bytes}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dir = criterion_dir();
    let path = dir.join(REPORT_FILE);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, json))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    println!("written to {}", path.display());
}
