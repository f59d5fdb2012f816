//! `cargo xtask bench`: run brood's benches, then compare them with their floors.
//!
//! Every bench group measures brood next to a "floor": the cheapest way the OS offers to
//! do the same thing (exec a process, a socketpair round trip, ...). Absolute numbers vary
//! between machines; the ratio to the floor is what the performance targets are about,
//! so the report puts each measurement next to its floor and checks the targets.
//!
//! The modules below form layers, each using only those under it: `results` (plain data:
//! a measurement, the groups' order) and `units` (number formatting) at the bottom, then
//! `criterion` (reading criterion's files) and `targets` (the performance targets), then
//! `report` (rendering), and this module on top, which runs the benches.

mod charts;
mod criterion;
mod report;
mod results;
mod targets;
mod units;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use self::criterion::{load_results, parse_footprint};
use self::report::{Format, REPORT_FILE, Report, RunOutcome};
use self::results::{BENCHES, FOOTPRINT_FILE};
use crate::error::Error;
use crate::metadata::target_dir;
use crate::python::{self, PythonTier};
use crate::run;

/// The facade features of the static build: every process backend and transport, no
/// component that needs a shared library (a static program cannot `dlopen` libpython).
/// (`shm` needs none, and the benches' shared code uses its regions: without it the
/// static build did not compile.)
const STATIC_FEATURES: &str = "proc,fork,uds,shm";

/// Criterion settings for `--quick`: enough samples to spot a gross regression in
/// seconds, not to measure precisely.
const QUICK_ARGS: &[&str] = &[
    "--warm-up-time",
    "0.5",
    "--measurement-time",
    "2",
    "--sample-size",
    "10",
];

/// What `cargo xtask bench` was asked to do.
#[derive(Clone, Debug, Default)]
pub(crate) struct BenchOptions {
    /// `--quick`.
    pub quick: bool,
    /// `--filter`: criterion's benchmark filter regex.
    pub filter: Option<String>,
    /// `--python`: the CPython tier to build against.
    pub python: PythonTier,
    /// `--report-only`: run nothing, report the results criterion kept.
    pub report_only: bool,
}

/// Arguments for the bench binaries (after cargo's `--`).
pub(crate) fn criterion_args(opts: &BenchOptions) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if opts.quick {
        args.extend(QUICK_ARGS.iter().map(|s| (*s).to_owned()));
    }
    if let Some(filter) = &opts.filter {
        args.push(filter.clone());
    }
    args
}

/// Where criterion keeps its results: `CRITERION_HOME` (criterion's own override), else
/// `<target dir>/criterion`.
pub(crate) fn criterion_dir(target: &Path) -> PathBuf {
    match std::env::var_os("CRITERION_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => target.join("criterion"),
    }
}

/// Where the charts go: `charts/` in criterion's directory.
pub(crate) fn charts_dir(criterion: &Path) -> PathBuf {
    criterion.join("charts")
}

/// The benches whose numbers depend on the Python tier.
const PYTHON_BENCHES: &[&str] = &["spawn_subint", "parallel"];

fn run_benches(opts: &BenchOptions, root: &Path) -> Result<Vec<(String, RunOutcome)>, Error> {
    let extra = criterion_args(opts);
    let mut env = run::color_env();
    let tier = opts.python;
    let benches = if tier == PythonTier::Py311 {
        BENCHES
    } else {
        println!(
            "==> provisioning CPython {} (the first time takes ~10 s)",
            tier.version()
        );
        env.extend(python::provision(tier, root)?);
        // The tier's build has its own target dir; keep one criterion directory, and tell
        // the spawn rows apart by their suffix.
        let crit = criterion_dir(&target_dir(root));
        env.push(("CRITERION_HOME".into(), crit.display().to_string()));
        env.push((
            "BROOD_BENCH_VARIANT".into(),
            format!("py{}", tier.version()),
        ));
        PYTHON_BENCHES
    };
    let mut runs = Vec::new();
    for (index, name) in benches.iter().enumerate() {
        // Every bench measures the default build, `subint` included, as a user's program
        // is built: CPython is loaded by the first interpreter, so a process actor that
        // never runs Python does not pay for it at exec (it did while the program linked
        // libpython: +0.65 ms an exec, so the process benches were built without subint).
        let mut args: Vec<String> = ["bench", "-p", "brood", "--bench", name]
            .map(String::from)
            .into();
        if !extra.is_empty() {
            args.push("--".into());
            args.extend(extra.iter().cloned());
        }
        println!(
            "==> [{}/{}] {}",
            index + 1,
            benches.len(),
            run::display_command("cargo", &args)
        );
        let captured = run::tee(&run::cargo(), &args, root, &env)
            .map_err(|e| Error::Failed(format!("cannot run cargo: {e}")))?;
        let outcome = if captured.status.success() {
            RunOutcome::Ran
        } else if captured
            .lines()
            .any(|l| l.contains("no bench target named"))
        {
            println!("note: brood has no bench target `{name}` yet; skipped");
            RunOutcome::NoSuchTarget
        } else {
            RunOutcome::Failed(captured.status.to_string())
        };
        runs.push(((*name).to_owned(), outcome));
    }
    if tier == PythonTier::Py311 && opts.filter.as_deref().is_none_or(|f| f.contains("spawn")) {
        runs.push(run_static_spawn(&extra, root)?);
    }
    Ok(runs)
}

/// The host triple a statically linked bench is built for: naming the target keeps
/// `RUSTFLAGS` off build scripts and proc-macros.
const HOST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Run the spawn bench again from a statically linked build (`+crt-static`, no Python),
/// its ids suffixed `-static`, into the same criterion directory. A spawned actor is the
/// program started again: how fast a binary starts is part of how fast it spawns.
fn run_static_spawn(extra: &[String], root: &Path) -> Result<(String, RunOutcome), Error> {
    let target = target_dir(root);
    let crit = criterion_dir(&target);
    let mut env = run::color_env();
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !rustflags.is_empty() {
        rustflags.push(' ');
    }
    rustflags.push_str("-C target-feature=+crt-static");
    env.push(("RUSTFLAGS".into(), rustflags));
    env.push((
        "CARGO_TARGET_DIR".into(),
        target.join("static").display().to_string(),
    ));
    env.push(("CRITERION_HOME".into(), crit.display().to_string()));
    env.push(("BROOD_BENCH_VARIANT".into(), "static".into()));
    let mut args: Vec<String> = [
        "bench",
        "-p",
        "brood",
        "--bench",
        "spawn",
        "--no-default-features",
        "--features",
        STATIC_FEATURES,
        "--target",
        HOST_TRIPLE,
    ]
    .map(String::from)
    .into();
    if !extra.is_empty() {
        args.push("--".into());
        args.extend(extra.iter().cloned());
    }
    println!(
        "==> [static] RUSTFLAGS=+crt-static {}",
        run::display_command("cargo", &args)
    );
    let captured = run::tee(&run::cargo(), &args, root, &env)
        .map_err(|e| Error::Failed(format!("cannot run cargo: {e}")))?;
    let outcome = if captured.status.success() {
        RunOutcome::Ran
    } else {
        RunOutcome::Failed(captured.status.to_string())
    };
    Ok(("spawn (static)".to_owned(), outcome))
}

/// Run the benches, print the report and write its markdown copy. `Ok(false)` when a
/// bench failed to build or run; unmet targets do not make it fail (it is a report).
///
/// # Errors
/// [`Error::Failed`] when cargo cannot be started or the report cannot be written.
pub(crate) fn run(opts: &BenchOptions, root: &Path) -> Result<bool, Error> {
    let started = SystemTime::now();
    let runs = if opts.report_only {
        Vec::new()
    } else {
        run_benches(opts, root)?
    };
    let target = target_dir(root);
    let crit = criterion_dir(&target);
    let since = (!opts.report_only).then_some(started);
    let (results, mut warnings) = load_results(&crit, since);

    let mut footprint = Vec::new();
    let mut footprint_stale = false;
    // The footprint bench writes next to criterion's results; with CRITERION_HOME set it
    // may still have used the target dir.
    let candidates = [
        crit.join(FOOTPRINT_FILE),
        target.join("criterion").join(FOOTPRINT_FILE),
    ];
    if let Some(path) = candidates.iter().find(|p| p.is_file()) {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_footprint(&t))
        {
            Ok(entries) => footprint = entries,
            Err(e) => warnings.push(format!("{}: {e}", path.display())),
        }
        footprint_stale = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m < started);
    }

    match charts::write_all(&results, &charts_dir(&crit)) {
        Ok(files) => println!(
            "==> {} charts written to {}",
            files.len(),
            charts_dir(&crit).display()
        ),
        Err(e) => warnings.push(format!("charts: {e}")),
    }
    let report = Report {
        runs,
        results,
        footprint,
        footprint_stale,
        warnings,
    };
    println!();
    print!("{}", report.render(Format::Text));
    let md_path = target.join(REPORT_FILE);
    std::fs::create_dir_all(&target)
        .and_then(|()| std::fs::write(&md_path, report.render(Format::Markdown)))
        .map_err(|e| Error::Failed(format!("cannot write {}: {e}", md_path.display())))?;
    println!("report written to {}", md_path.display());
    Ok(!report
        .runs
        .iter()
        .any(|(_, o)| matches!(o, RunOutcome::Failed(_))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_arguments() {
        assert!(criterion_args(&BenchOptions::default()).is_empty());
        let args = criterion_args(&BenchOptions {
            quick: true,
            filter: Some("rpc/.*".into()),
            ..BenchOptions::default()
        });
        assert_eq!(
            args,
            [
                "--warm-up-time",
                "0.5",
                "--measurement-time",
                "2",
                "--sample-size",
                "10",
                "rpc/.*"
            ]
        );
    }
}
