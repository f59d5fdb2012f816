//! `cargo xtask bench`: run brood's benches, then compare them with their floors.
//!
//! Every bench group measures brood next to a "floor": the cheapest way the OS offers to
//! do the same thing (exec a process, a socketpair round trip, ...). Absolute numbers vary
//! between machines; the ratio to the floor is what the performance targets are about,
//! so the report puts each measurement next to its floor and checks the targets.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use crate::Error;
use crate::criterion::{BenchResult, floor_of, load_results, parse_footprint};
use crate::json::{self, Value};
use crate::run;
use crate::targets::{Status, TARGETS};

/// The bench targets of the `brood` package, run in this order; a missing one is skipped.
pub const BENCHES: &[&str] = &[
    "spawn",
    "spawn_subint",
    "rpc",
    "stream",
    "footprint",
    "parallel",
];

/// The facade features a bench is built with, when not the defaults. Process-actor
/// benches leave out `subint`: a spawned process actor is the program started again, and
/// a program that links CPython pays for loading it at every start (measured: +0.7 ms per
/// exec here), which is not what a Rust-only program pays.
fn bench_features(name: &str) -> Option<&'static str> {
    match name {
        "spawn" | "rpc" | "stream" | "footprint" => Some("proc,fork,uds"),
        _ => None,
    }
}

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

/// The file the footprint bench writes into criterion's directory: a flat JSON object
/// of `"name": bytes` pairs (unique set sizes).
pub const FOOTPRINT_FILE: &str = "footprint-uss.json";

/// Name of the markdown copy of the report, in the target directory.
pub const REPORT_FILE: &str = "brood-bench.md";

/// What `cargo xtask bench` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// `--quick`.
    pub quick: bool,
    /// `--filter`: criterion's benchmark filter regex.
    pub filter: Option<String>,
    /// `--python`: the CPython tier to build against.
    pub python: crate::python::PythonTier,
}

/// Arguments for the bench binaries (after cargo's `--`).
pub fn criterion_args(opts: &BenchOptions) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if opts.quick {
        args.extend(QUICK_ARGS.iter().map(|s| (*s).to_owned()));
    }
    if let Some(filter) = &opts.filter {
        args.push(filter.clone());
    }
    args
}

/// A duration given in nanoseconds, in the largest unit that keeps it >= 1.
pub fn fmt_time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Scale to an SI prefix: (value, prefix).
fn si(n: f64) -> (f64, &'static str) {
    if n >= 1e9 {
        (n / 1e9, "G")
    } else if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e3 {
        (n / 1e3, "k")
    } else {
        (n, "")
    }
}

/// A message rate, e.g. `512.3 k msgs/s`.
pub fn fmt_msgs(per_sec: f64) -> String {
    match si(per_sec) {
        (n, "") => format!("{n:.1} msgs/s"),
        (n, prefix) => format!("{n:.2} {prefix} msgs/s"),
    }
}

/// A byte rate, in decimal units (GB/s = 10^9 bytes per second).
pub fn fmt_bytes_rate(per_sec: f64) -> String {
    let (n, prefix) = si(per_sec);
    format!("{n:.2} {prefix}B/s")
}

/// A size in binary units.
pub fn fmt_size(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
    } else if bytes >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
    } else if bytes >= 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

/// How one bench target's run went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// It ran and exited successfully.
    Ran,
    /// The package has no such bench target yet.
    NoSuchTarget,
    /// It failed to build or run.
    Failed(String),
}

/// Everything the report shows.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The bench runs, by target name.
    pub runs: Vec<(String, RunOutcome)>,
    /// The criterion results, sorted.
    pub results: Vec<BenchResult>,
    /// The footprint entries, in file order.
    pub footprint: Vec<(String, f64)>,
    /// Whether the footprint file predates this run.
    pub footprint_stale: bool,
    /// Problems reading results.
    pub warnings: Vec<String>,
}

/// The comparison table's rows (header first): group, benchmark, mean, throughput, ratio.
fn table_rows(results: &[BenchResult]) -> Vec<[String; 5]> {
    let mut rows = vec![[
        "group".to_owned(),
        "benchmark".to_owned(),
        "mean".to_owned(),
        "throughput".to_owned(),
        "vs floor".to_owned(),
    ]];
    for r in results {
        let throughput = match (r.elements_per_sec(), r.bytes_per_sec()) {
            (Some(rate), _) => fmt_msgs(rate),
            (_, Some(rate)) => fmt_bytes_rate(rate),
            _ => String::new(),
        };
        let ratio = match floor_of(r, results) {
            Some(f) if f.function == r.function => "floor".to_owned(),
            Some(f) if f.mean_ns > 0.0 => format!(
                "{:.2}x {}",
                r.mean_ns / f.mean_ns,
                f.function.as_deref().unwrap_or("floor")
            ),
            _ => String::new(),
        };
        let label = if r.stale {
            format!("{} (old)", r.label())
        } else {
            r.label()
        };
        rows.push([
            r.group.clone(),
            label,
            fmt_time(r.mean_ns),
            throughput,
            ratio,
        ]);
    }
    rows
}

fn aligned<const N: usize>(rows: &[[String; N]], out: &mut String) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| {
                let pad = w - c.chars().count();
                format!("{c}{}", " ".repeat(pad))
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
}

fn markdown<const N: usize>(rows: &[[String; N]], out: &mut String) {
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let _ = writeln!(out, "|{}", "---|".repeat(N));
        }
    }
}

/// Which of the two layouts to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for the terminal.
    Text,
    /// Markdown tables for notes.
    Markdown,
}

impl Report {
    /// The targets' verdicts, in [`TARGETS`] order.
    pub fn verdicts(&self) -> Vec<(String, Status, String)> {
        TARGETS
            .iter()
            .map(|t| {
                let (status, detail) = t.evaluate(&self.results, &self.footprint);
                (t.describe(), status, detail)
            })
            .collect()
    }

    /// Render the whole report.
    pub fn render(&self, format: Format) -> String {
        let md = format == Format::Markdown;
        let mut out = String::new();
        let heading = |out: &mut String, text: &str| {
            if md {
                let _ = writeln!(out, "\n## {text}\n");
            } else {
                let _ = writeln!(out, "\n{text}");
            }
        };
        out.push_str(if md {
            "# brood benchmarks\n"
        } else {
            "brood benchmarks\n"
        });

        heading(&mut out, "runs");
        for (name, outcome) in &self.runs {
            let what = match outcome {
                RunOutcome::Ran => "ran".to_owned(),
                RunOutcome::NoSuchTarget => "skipped: no such bench target yet".to_owned(),
                RunOutcome::Failed(why) => format!("FAILED: {why}"),
            };
            let _ = writeln!(out, "{}{name}: {what}", if md { "- " } else { "  " });
        }

        heading(&mut out, "comparison");
        if self.results.is_empty() {
            out.push_str("(no criterion results found)\n");
        } else {
            let rows = table_rows(&self.results);
            if md {
                markdown(&rows, &mut out);
            } else {
                aligned(&rows, &mut out);
            }
            if self.results.iter().any(|r| r.stale) {
                out.push_str(if md { "\n" } else { "" });
                out.push_str("(old): not re-measured in this run; an earlier result\n");
            }
        }

        if !self.footprint.is_empty() {
            heading(&mut out, "footprint (USS)");
            let mut rows = vec![["name".to_owned(), "bytes".to_owned(), "size".to_owned()]];
            rows.extend(
                self.footprint
                    .iter()
                    .map(|(k, v)| [k.clone(), format!("{v:.0}"), fmt_size(*v)]),
            );
            if md {
                markdown(&rows, &mut out);
            } else {
                aligned(&rows, &mut out);
            }
            if self.footprint_stale {
                // In markdown, a line right after a table would read as one more row.
                out.push_str(if md { "\n" } else { "" });
                out.push_str("(old): not re-measured in this run; an earlier result\n");
            }
        }

        heading(&mut out, "targets");
        let verdicts = self.verdicts();
        let mut rows = vec![[
            "status".to_owned(),
            "target".to_owned(),
            "measured".to_owned(),
        ]];
        rows.extend(verdicts.iter().map(|(what, status, detail)| {
            [status.word().to_owned(), what.clone(), detail.clone()]
        }));
        if md {
            markdown(&rows, &mut out);
            out.push('\n');
        } else {
            aligned(&rows, &mut out);
        }
        let count = |s: Status| verdicts.iter().filter(|v| v.1 == s).count();
        let _ = writeln!(
            out,
            "targets: {} passed, {} failed, {} missing (of {})",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Missing),
            verdicts.len()
        );

        if !self.warnings.is_empty() {
            heading(&mut out, "warnings");
            for w in &self.warnings {
                let _ = writeln!(out, "{}{w}", if md { "- " } else { "  " });
            }
        }
        out
    }
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else what `cargo metadata` says (it
/// knows about `build.target-dir` in config files), else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        // cargo resolves a relative CARGO_TARGET_DIR against its working directory,
        // which is ours.
        let dir = PathBuf::from(dir);
        return std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or(dir);
    }
    metadata_target_dir(root).unwrap_or_else(|| root.join("target"))
}

fn metadata_target_dir(root: &Path) -> Option<PathBuf> {
    let output = Command::new(run::cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let doc = json::parse(&String::from_utf8_lossy(&output.stdout)).ok()?;
    doc.get("target_directory")
        .and_then(Value::as_str)
        .map(PathBuf::from)
}

/// Where criterion keeps its results: `CRITERION_HOME` (criterion's own override), else
/// `<target dir>/criterion`.
pub fn criterion_dir(target: &Path) -> PathBuf {
    match std::env::var_os("CRITERION_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => target.join("criterion"),
    }
}

/// The benches whose numbers depend on the Python tier.
const PYTHON_BENCHES: &[&str] = &["spawn_subint", "parallel"];

fn run_benches(opts: &BenchOptions, root: &Path) -> Result<Vec<(String, RunOutcome)>, Error> {
    let extra = criterion_args(opts);
    let mut env = run::color_env();
    let tier = opts.python;
    let benches = if tier == crate::python::PythonTier::Py311 {
        BENCHES
    } else {
        println!(
            "==> provisioning CPython {} (the first time takes ~10 s)",
            tier.version()
        );
        env.extend(crate::python::provision(tier, root)?);
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
        let mut args: Vec<String> = ["bench", "-p", "brood", "--bench", name]
            .map(String::from)
            .into();
        if let Some(features) = bench_features(name) {
            args.extend(["--no-default-features", "--features", features].map(String::from));
        }
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
    if tier == crate::python::PythonTier::Py311
        && opts.filter.as_deref().is_none_or(|f| f.contains("spawn"))
    {
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

/// The facade features of the static build: every process backend and transport, no
/// component that needs a shared library.
const STATIC_FEATURES: &str = "proc,fork,uds";

/// Run the benches, print the report and write its markdown copy. `Ok(false)` when a
/// bench failed to build or run; unmet targets do not make it fail (it is a report).
///
/// # Errors
/// [`Error::Failed`] when cargo cannot be started or the report cannot be written.
pub fn run(opts: &BenchOptions, root: &Path) -> Result<bool, Error> {
    let started = SystemTime::now();
    let runs = run_benches(opts, root)?;
    let target = target_dir(root);
    let crit = criterion_dir(&target);
    let (results, mut warnings) = load_results(&crit, Some(started));

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
    use crate::criterion::sort_results;
    use crate::criterion::test_support::{result, sample};

    #[test]
    fn table_compares_with_the_matching_floor() {
        let mut results = sample();
        results.push(result("stream", "floor-pipe", Some("1MiB"), 900_000.0));
        results.push(result("stream", "floor-uds", Some("64B"), 1_000.0));
        sort_results(&mut results);
        let labels: Vec<String> = results.iter().map(BenchResult::label).collect();
        assert_eq!(
            labels,
            [
                "floor-exec",
                "brood-proc",
                "floor-socketpair",
                "brood-uds",
                "floor-uds/64B",
                "brood-uds/64B",
                "floor-pipe/1MiB",
                "floor-uds/1MiB",
                "brood-uds/1MiB",
            ]
        );
        let rows = table_rows(&results);
        let ratio = |label: &str| {
            rows.iter()
                .find(|r| r[1] == label)
                .map(|r| r[4].clone())
                .unwrap()
        };
        assert_eq!(ratio("brood-proc"), "1.40x floor-exec");
        assert_eq!(ratio("floor-exec"), "floor");
        assert_eq!(ratio("brood-uds/64B"), "2.00x floor-uds");
        // Two floors at 1MiB: the fastest is the reference.
        assert_eq!(ratio("brood-uds/1MiB"), "1.25x floor-uds");
        assert_eq!(ratio("floor-pipe/1MiB"), "1.12x floor-uds");
        let row = rows.iter().find(|r| r[1] == "brood-uds/1MiB").unwrap();
        assert_eq!(row[2], "1.00 ms");
        assert_eq!(row[3], "1.05 GB/s");
    }

    #[test]
    fn report_renders_both_formats() {
        let report = Report {
            runs: vec![
                ("spawn".into(), RunOutcome::Ran),
                ("footprint".into(), RunOutcome::NoSuchTarget),
            ],
            results: sample(),
            footprint: vec![("idle-child-proc".into(), 1_000_000.0)],
            footprint_stale: false,
            warnings: vec![],
        };
        let text = report.render(Format::Text);
        assert!(
            text.contains("targets: 4 passed, 1 failed, 6 missing (of 11)"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("FAIL")
                && l.contains("rpc: brood-uds time / floor-socketpair <= 2.00x")),
            "{text}"
        );
        let md = report.render(Format::Markdown);
        assert!(md.starts_with("# brood benchmarks\n"));
        assert!(md.contains(
            "| group | benchmark | mean | throughput | vs floor |\n|---|---|---|---|---|\n"
        ));
        assert!(!md.contains("(old)"));
        assert!(
            md.contains("| spawn | brood-proc | 1.40 ms |  | 1.40x floor-exec |"),
            "{md}"
        );
    }

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

    #[test]
    fn units() {
        assert_eq!(fmt_time(512.0), "512.0 ns");
        assert_eq!(fmt_time(1_234.0), "1.23 µs");
        assert_eq!(fmt_time(2_500_000.0), "2.50 ms");
        assert_eq!(fmt_time(3e9), "3.00 s");
        assert_eq!(fmt_size(4.0 * 1024.0 * 1024.0), "4.00 MiB");
    }

    #[test]
    fn stale_results_are_marked() {
        let mut results = sample();
        results[0].stale = true;
        let report = Report {
            results,
            footprint: vec![("idle-child-proc".into(), 1.0)],
            footprint_stale: true,
            ..Report::default()
        };
        let md = report.render(Format::Markdown);
        assert!(md.contains("| spawn | brood-proc (old) |"), "{md}");
        assert!(md.contains("|\n\n(old): not re-measured"), "{md}");
        let text = report.render(Format::Text);
        assert_eq!(text.matches("(old): not re-measured").count(), 2, "{text}");
    }
}
