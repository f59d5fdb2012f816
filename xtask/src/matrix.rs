//! `cargo xtask test`: the workspace suite once per (backend, transport) cell.
//!
//! brood's tests pick the spawn backend and the transport from `BROOD_BACKEND` and
//! `BROOD_TRANSPORT`, so a full check means running the same suite once per combination.
//! This module chooses the cells, runs them, and prints one matrix of results.
//!
//! A cell's results are read from nextest's structured output (its JUnit report and test
//! list, see `nextest.rs`). Without nextest, a cell runs `cargo test`, whose only
//! summary on stable Rust is the `test result:` line of each test binary (see
//! `summary.rs`); doctests always run that way, once.
//!
//! Run as root with the `proc` or `fork` backend selected, the matrix then runs the
//! suite's `sandbox::` tests once more per such backend as an unprivileged user (see
//! `unprivileged.rs`): one more row each, under the `uds` column.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::Error;
use crate::nextest::{self, Outcome, TestCase, ToolConfig};
use crate::python::{self, PythonTier};
use crate::run::{self, Captured};
use crate::summary::{self, Counts, SkipReport};
use crate::unprivileged::{self, Account, Stage, Switch};

/// A spawn backend or transport that the matrix knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Component {
    /// Its key, as in `BROOD_BACKEND` / `BROOD_TRANSPORT`.
    pub name: &'static str,
    /// Whether it is implemented yet; unimplemented ones are known (so a typo and "not
    /// built yet" give different errors) but never run.
    pub available: bool,
}

/// The spawn backends, in matrix row order.
pub(crate) const BACKENDS: &[Component] = &[
    Component {
        name: "proc",
        available: true,
    },
    Component {
        name: "fork",
        available: true,
    },
    Component {
        name: "subint",
        available: true,
    },
];

/// The transports, in matrix column order.
pub(crate) const TRANSPORTS: &[Component] = &[
    Component {
        name: "uds",
        available: true,
    },
    Component {
        name: "shm",
        available: true,
    },
];

/// Turn a `--backend` / `--transport` argument (`all` or a comma-separated list) into
/// the components to run, in table order. `kind` is "backend" or "transport", for
/// messages.
///
/// # Errors
/// [`Error::Usage`] for an unknown name (listing the known ones), for a known name that
/// is not available yet, or for a list that selects nothing.
pub(crate) fn select(
    list: &str,
    table: &'static [Component],
    kind: &str,
) -> Result<Vec<&'static Component>, Error> {
    let mut wanted: Vec<&'static Component> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "all" {
            wanted.extend(table.iter().filter(|c| c.available));
            continue;
        }
        let Some(component) = table.iter().find(|c| c.name == item) else {
            let known: Vec<_> = table.iter().map(|c| c.name).collect();
            return Err(Error::Usage(format!(
                "unknown {kind} \"{item}\"; known {kind}s: {}",
                known.join(", ")
            )));
        };
        if !component.available {
            let available: Vec<_> = table
                .iter()
                .filter(|c| c.available)
                .map(|c| c.name)
                .collect();
            return Err(Error::Usage(format!(
                "{kind} \"{item}\" is not built yet; available {kind}s: {}",
                available.join(", ")
            )));
        }
        wanted.push(component);
    }
    if wanted.is_empty() {
        return Err(Error::Usage(format!("no {kind} selected by \"{list}\"")));
    }
    // Table order, each once, whatever order and repetitions the user typed.
    Ok(table
        .iter()
        .filter(|c| wanted.iter().any(|w| w.name == c.name))
        .collect())
}

/// What `cargo xtask test` was asked to do.
#[derive(Clone, Debug)]
pub(crate) struct TestOptions {
    /// `--backend`.
    pub backends: String,
    /// `--transport`.
    pub transports: String,
    /// `--python`.
    pub python: PythonTier,
    /// `--no-nextest`.
    pub no_nextest: bool,
    /// Arguments after `--`, passed to the test runner of every cell.
    pub extra: Vec<String>,
}

/// The outcome of one cell (or of the doctest run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CellResult {
    /// Row key: the backend (or "doctests").
    pub backend: String,
    /// Column key: the transport.
    pub transport: String,
    /// The counts, if the runner got as far as printing a summary.
    pub counts: Option<Counts>,
    /// Whether the cell is green: zero exit status and no failed test.
    pub ok: bool,
    /// Why a cell is red when the counts do not say (e.g. "build failed").
    pub note: Option<String>,
    /// The tests that failed, each with how (e.g. "test failure with exit code 101"):
    /// known with nextest only.
    pub failures: Vec<(String, String)>,
}

impl CellResult {
    /// A cell that never got to its tests, and why.
    fn failed(backend: &str, transport: &str, why: String) -> Self {
        CellResult {
            backend: backend.to_owned(),
            transport: transport.to_owned(),
            counts: None,
            ok: false,
            note: Some(why),
            failures: Vec::new(),
        }
    }

    fn from_run(
        backend: &str,
        transport: &str,
        counts: Option<Counts>,
        captured: &Captured,
    ) -> Self {
        let exit_ok = captured.status.success();
        let note = match counts {
            None if exit_ok => Some("no test summary found".to_owned()),
            None => Some("build failed".to_owned()),
            Some(c) if !exit_ok && c.failed == 0 => Some(format!("{}", captured.status)),
            Some(_) => None,
        };
        CellResult {
            backend: backend.to_owned(),
            transport: transport.to_owned(),
            ok: exit_ok && counts.is_some_and(|c| c.failed == 0),
            counts,
            note,
            failures: Vec::new(),
        }
    }
}

/// Which test runner the cells use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    Nextest,
    CargoTest,
}

/// Run the matrix and print its summary; `Ok(true)` when every cell passed.
///
/// # Errors
/// [`Error::Usage`] for a bad selection, [`Error::Failed`] when the Python tier cannot be
/// provisioned or cargo cannot be started.
pub(crate) fn run(opts: &TestOptions, root: &Path) -> Result<bool, Error> {
    let backends = select(&opts.backends, BACKENDS, "backend")?;
    let transports = select(&opts.transports, TRANSPORTS, "transport")?;
    let runner = if opts.no_nextest {
        Runner::CargoTest
    } else if nextest_installed(root) {
        Runner::Nextest
    } else {
        println!("note: cargo-nextest is not installed; running `cargo test` instead");
        Runner::CargoTest
    };
    let tool_config = if runner == Runner::Nextest {
        let config = ToolConfig::create()
            .map_err(|e| Error::Failed(format!("cannot write nextest's tool config file: {e}")))?;
        Some(config)
    } else {
        None
    };
    let mut base_env = python::provision(opts.python, root)?;
    base_env.extend(run::color_env());

    let cells: Vec<(&str, &str)> = backends
        .iter()
        .flat_map(|b| transports.iter().map(move |t| (b.name, t.name)))
        .collect();
    let mut results = Vec::new();
    let mut doctests = None;
    let mut skips = SkipReport::default();
    for (index, &(backend, transport)) in cells.iter().enumerate() {
        let first = index == 0;
        let skip_file = skip_report_path(backend, transport);
        // A report left over by an earlier, interrupted run would be read as this one's.
        let _ = std::fs::remove_file(&skip_file);
        let mut env = base_env.clone();
        env.push(("BROOD_BACKEND".into(), backend.into()));
        env.push(("BROOD_TRANSPORT".into(), transport.into()));
        env.push((
            "BROOD_SKIP_REPORT".into(),
            skip_file.to_string_lossy().into_owned(),
        ));

        let args = runner_args(runner, tool_config.as_ref(), &opts.extra);
        println!(
            "==> [{}/{}] backend={backend} transport={transport}: {}",
            index + 1,
            cells.len(),
            run::display_command("cargo", &args)
        );
        let cell = match &tool_config {
            Some(config) => {
                let cell = NextestCell {
                    backend,
                    transport,
                    config,
                    extra: &opts.extra,
                };
                cell.run(&args, root, &env)?
            }
            None => {
                let captured = run_cargo(&args, root, &env)?;
                let counts = summary::parse_cargo_test(captured.lines());
                CellResult::from_run(backend, transport, counts, &captured)
            }
        };
        results.push(cell);
        if first {
            // nextest cannot run doctests, and they do not depend on the cell: one run,
            // with the first cell's environment, covers them in both modes. Nothing
            // structured reports doctests on stable Rust (libtest's JSON output needs
            // `-Z unstable-options`): their counts come from libtest's `test result:`
            // line, one per crate.
            let doc_args = ["test", "--workspace", "--doc", "--no-fail-fast"];
            println!("==> doctests: {}", run::display_command("cargo", &doc_args));
            let doc = run_cargo(&doc_args, root, &env)?;
            let counts = summary::parse_cargo_test(doc.lines());
            doctests = Some(CellResult::from_run("doctests", transport, counts, &doc));
        }
        // No file means no test skipped itself.
        if let Ok(bytes) = std::fs::read(&skip_file) {
            skips.add_text(&String::from_utf8_lossy(&bytes));
        }
        let _ = std::fs::remove_file(&skip_file);
    }

    let title = match opts.python {
        PythonTier::Py311 => "brood test matrix".to_owned(),
        tier => format!("brood test matrix (CPython {})", tier.version()),
    };
    let unprivileged_rows = unprivileged_step(&backends, &transports, &base_env, root, &mut skips);
    let transport_names: Vec<&str> = transports.iter().map(|t| t.name).collect();
    let mut backend_names: Vec<&str> = backends.iter().map(|b| b.name).collect();
    backend_names.extend(unprivileged_rows.iter().map(|c| c.backend.as_str()));
    results.extend(unprivileged_rows.iter().cloned());
    println!();
    print!(
        "{}",
        render(
            &title,
            &backend_names,
            &transport_names,
            &results,
            doctests.as_ref(),
            &skips
        )
    );
    let all_ok = results.iter().chain(doctests.as_ref()).all(|c| c.ok);
    if !all_ok {
        let red: Vec<String> = results
            .iter()
            .chain(doctests.as_ref())
            .filter(|c| !c.ok)
            .map(|c| {
                if c.backend == "doctests" {
                    c.backend.clone()
                } else {
                    format!("{}/{}", c.backend, c.transport)
                }
            })
            .collect();
        println!("FAILED: {}", red.join(", "));
    }
    Ok(all_ok)
}

/// The matrix row of the sandbox tests of `backend` run as the unprivileged user.
fn unprivileged_label(backend: &str) -> String {
    format!("{backend} (unprivileged sandbox)")
}

/// After the cells: the suite's sandbox tests once more per selected process backend, as
/// the unprivileged user [`unprivileged::USER`] (created if needed), over `uds` (or the
/// first selected transport without it). Needs root, to create and switch to the user;
/// otherwise says so and returns no row. Each row is red if its run fails or runs no
/// test at all. The skips of these runs are added to `skips` under the rows' labels.
fn unprivileged_step(
    backends: &[&Component],
    transports: &[&Component],
    env: &[(String, String)],
    root: &Path,
    skips: &mut SkipReport,
) -> Vec<CellResult> {
    let wanted: Vec<&str> = backends
        .iter()
        .map(|b| b.name)
        .filter(|b| unprivileged::BACKENDS.contains(b))
        .collect();
    let Some(transport) = transports
        .iter()
        .map(|t| t.name)
        .find(|t| *t == "uds")
        .or_else(|| transports.first().map(|t| t.name))
    else {
        return Vec::new();
    };
    if wanted.is_empty() {
        return Vec::new();
    }
    if unprivileged::effective_uid() != Some(0) {
        println!(
            "note: the unprivileged sandbox step needs root (to create user {} and switch \
             to it): skipped; the cells above ran the sandbox tests as the current user",
            unprivileged::USER
        );
        return Vec::new();
    }
    let started = Instant::now();
    println!(
        "==> unprivileged sandbox: the `{}` tests as user {}, backend {}, transport {transport}",
        unprivileged::FILTER,
        unprivileged::USER,
        wanted.join(", ")
    );
    let rows = match prepare_unprivileged(root, env) {
        Ok((account, switch, stage)) => wanted
            .iter()
            .map(|backend| {
                run_unprivileged(backend, transport, env, &account, &switch, &stage, skips)
            })
            .collect(),
        Err(e) => {
            println!("error: unprivileged sandbox step: {e}");
            wanted
                .iter()
                .map(|backend| {
                    CellResult::failed(&unprivileged_label(backend), transport, e.clone())
                })
                .collect()
        }
    };
    println!(
        "<== unprivileged sandbox: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    rows
}

/// The user, the way to switch to it, and the suite binary staged where it can run it.
fn prepare_unprivileged(
    root: &Path,
    env: &[(String, String)],
) -> Result<(Account, Switch, Stage), String> {
    let switch =
        Switch::find().ok_or("neither setpriv nor runuser (util-linux) is installed".to_owned())?;
    let account = unprivileged::ensure_user(unprivileged::USER)?;
    let binary = unprivileged::suite_binary(root, env)?;
    let stage = Stage::prepare(&binary, &account, &switch)?;
    for note in &stage.notes {
        println!("note: {note}");
    }
    Ok((account, switch, stage))
}

/// Run the sandbox tests of `backend` as `account` and read the row's result.
fn run_unprivileged(
    backend: &str,
    transport: &str,
    env: &[(String, String)],
    account: &Account,
    switch: &Switch,
    stage: &Stage,
    skips: &mut SkipReport,
) -> CellResult {
    let label = unprivileged_label(backend);
    let skip_file = stage.skip_report(backend);
    let _ = std::fs::remove_file(&skip_file);
    let child_env =
        unprivileged::child_env(backend, transport, stage, env, |k| std::env::var(k).ok());
    let args = unprivileged::command_args(switch, account, stage, &child_env);
    println!(
        "==> {label}: {}",
        run::display_command(&switch.program().display().to_string(), &args)
    );
    let cell = match unprivileged::run_tests(switch, &args, stage) {
        Ok(captured) => unprivileged_cell(&label, transport, &captured),
        Err(e) => CellResult::failed(&label, transport, e),
    };
    if let Ok(bytes) = std::fs::read(&skip_file) {
        skips.add_text(&unprivileged::relabel_skips(
            &String::from_utf8_lossy(&bytes),
            &label,
        ));
    }
    cell
}

/// A row of the unprivileged step from the suite's output: red when the run fails, and
/// when no test ran at all (a filter that matches nothing, or every test skipped, would
/// otherwise pass without checking anything).
fn unprivileged_cell(label: &str, transport: &str, captured: &Captured) -> CellResult {
    let counts = summary::parse_cargo_test(captured.lines());
    let mut cell = CellResult::from_run(label, transport, counts, captured);
    match counts {
        // The binary was built before: no summary means it did not get to its tests.
        None => cell.note = Some(format!("no test summary ({})", captured.status)),
        Some(c) if c.passed + c.failed == 0 => {
            cell.ok = false;
            cell.note = Some(format!("no `{}` test ran", unprivileged::FILTER));
        }
        Some(_) => {}
    }
    cell.failures = unprivileged::failed_tests(captured.stdout.iter().map(String::as_str))
        .into_iter()
        .map(|test| {
            (
                format!("harness::suite {test}"),
                format!("test failure as user {}", unprivileged::USER),
            )
        })
        .collect();
    cell
}

fn nextest_installed(root: &Path) -> bool {
    Command::new(run::cargo())
        .args(["nextest", "--version"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One cell run with nextest.
struct NextestCell<'a> {
    backend: &'a str,
    transport: &'a str,
    config: &'a ToolConfig,
    /// The user's extra arguments (`--`), also given to the test list when it takes them.
    extra: &'a [String],
}

impl NextestCell<'_> {
    /// Run the cell (`args`: the whole nextest command line) and read its results: the
    /// JUnit report for what ran, the test list for what was skipped.
    fn run(
        &self,
        args: &[String],
        root: &Path,
        env: &[(String, String)],
    ) -> Result<CellResult, Error> {
        let junit = self.config.junit_path();
        // A report left by the previous cell would be read as this one's.
        let _ = std::fs::remove_file(&junit);
        let captured = run_cargo(args, root, env)?;
        let mut notes = Vec::new();
        let cases = match std::fs::read_to_string(&junit) {
            Ok(text) => match nextest::parse_junit(&text) {
                Ok(cases) => Some(cases),
                Err(e) => {
                    notes.push(e);
                    None
                }
            },
            // No report: nextest did not get as far as running tests (the build failed).
            Err(_) => None,
        };
        let counts = cases.as_ref().map(|cases| {
            let listed = match self.list(root, env) {
                Ok(listed) => Some(listed),
                Err(e) => {
                    notes.push(format!("skipped tests not counted: {e}"));
                    None
                }
            };
            nextest::counts(cases, listed.as_ref())
        });
        let mut cell = CellResult::from_run(self.backend, self.transport, counts, &captured);
        cell.failures = cases.iter().flatten().filter_map(failure).collect();
        if !notes.is_empty() {
            notes.extend(cell.note.take());
            cell.note = Some(notes.join("; "));
        }
        Ok(cell)
    }

    /// Every test of the workspace, as `cargo nextest list` gives them in the cell's
    /// environment (a test that skips itself in this cell is listed as ignored). The
    /// build is the run's, so this only lists. With the user's extra arguments, so that
    /// build options and filters match the run's; without them if nextest refuses them
    /// (options only `run` has, such as `--test-threads`).
    fn list(
        &self,
        root: &Path,
        env: &[(String, String)],
    ) -> Result<BTreeSet<nextest::TestId>, String> {
        let with_extra = self.list_with(self.extra, root, env);
        match with_extra {
            Err(_) if !self.extra.is_empty() => self.list_with(&[], root, env),
            listed => listed,
        }
    }

    fn list_with(
        &self,
        extra: &[String],
        root: &Path,
        env: &[(String, String)],
    ) -> Result<BTreeSet<nextest::TestId>, String> {
        let output = Command::new(run::cargo())
            .args(["nextest", "list", "--workspace", "--message-format", "json"])
            .args(["--tool-config-file", &self.config.arg()])
            .args(extra)
            .current_dir(root)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run cargo nextest list: {e}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            return Err(format!(
                "cargo nextest list failed ({}){}",
                output.status,
                last.map(|l| format!(": {}", anstream::adapter::strip_str(l)))
                    .unwrap_or_default()
            ));
        }
        nextest::parse_list(&String::from_utf8_lossy(&output.stdout))
    }
}

/// A failed test's name and how it failed.
fn failure(case: &TestCase) -> Option<(String, String)> {
    match &case.outcome {
        Outcome::Failed(how) => Some((format!("{} {}", case.id.binary, case.id.name), how.clone())),
        Outcome::Passed | Outcome::Skipped => None,
    }
}

/// The cargo arguments of a cell. nextest runs with the matrix's profile, which writes
/// the JUnit report into the tool config's store. Plain `cargo test` gets `--tests`,
/// which leaves out doctests: they run once on their own, as with nextest.
fn runner_args(runner: Runner, config: Option<&ToolConfig>, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = match runner {
        Runner::Nextest => ["nextest", "run", "--workspace", "--no-fail-fast"]
            .map(String::from)
            .into(),
        Runner::CargoTest => ["test", "--workspace", "--no-fail-fast", "--tests"]
            .map(String::from)
            .into(),
    };
    if runner == Runner::Nextest {
        args.extend(["--profile".to_owned(), nextest::PROFILE.to_owned()]);
        if let Some(config) = config {
            args.extend(["--tool-config-file".to_owned(), config.arg()]);
        }
    }
    args.extend(extra.iter().cloned());
    args
}

fn run_cargo<S: AsRef<OsStr>>(
    args: &[S],
    root: &Path,
    env: &[(String, String)],
) -> Result<Captured, Error> {
    run::tee(&run::cargo(), args, root, env)
        .map_err(|e| Error::Failed(format!("cannot run cargo: {e}")))
}

/// Where a cell's tests report their skips: unique per xtask process and cell, so that
/// concurrent matrices and the cells of one matrix never mix their reports.
fn skip_report_path(backend: &str, transport: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "brood-skips-{}-{backend}-{transport}.tsv",
        std::process::id()
    ))
}

fn cell_text(cell: &CellResult, with_skipped: bool) -> String {
    let mut text = match cell.counts {
        Some(c) if with_skipped || c.skipped > 0 => format!(
            "{} passed, {} failed, {} skipped",
            c.passed, c.failed, c.skipped
        ),
        Some(c) => format!("{} passed, {} failed", c.passed, c.failed),
        None => String::new(),
    };
    if let Some(note) = &cell.note {
        if text.is_empty() {
            text = note.clone();
        } else {
            let _ = write!(text, " ({note})");
        }
    }
    if !cell.ok {
        text.push_str("  FAILED");
    }
    text
}

/// Lay out the matrix: rows are backends, columns transports, then a doctests row and the
/// skip list. Cells that were not run are blank.
pub(crate) fn render(
    title: &str,
    backends: &[&str],
    transports: &[&str],
    cells: &[CellResult],
    doctests: Option<&CellResult>,
    skips: &SkipReport,
) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["backend \\ transport".to_owned()];
    header.extend(transports.iter().map(|t| (*t).to_owned()));
    rows.push(header);
    for backend in backends {
        let mut row = vec![(*backend).to_owned()];
        for transport in transports {
            let cell = cells
                .iter()
                .find(|c| c.backend == *backend && c.transport == *transport);
            row.push(cell.map(|c| cell_text(c, true)).unwrap_or_default());
        }
        rows.push(row);
    }
    if let Some(doc) = doctests {
        // Doctests do not vary by transport: one value, under the first column.
        let mut row = vec!["doctests".to_owned(), cell_text(doc, false)];
        row.resize(transports.len() + 1, String::new());
        rows.push(row);
    }

    let columns = transports.len() + 1;
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("{title}\n");
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(text, &w)| format!("{text:<w$}"))
            .collect();
        out.push_str(line.join(" | ").trim_end());
        out.push('\n');
    }
    let failures: Vec<_> = cells
        .iter()
        .chain(doctests)
        .flat_map(|c| c.failures.iter().map(move |f| (c, f)))
        .collect();
    if !failures.is_empty() {
        out.push_str("failed tests:\n");
        for (cell, (test, how)) in failures {
            let _ = writeln!(out, "  {}/{}  {test}: {how}", cell.backend, cell.transport);
        }
    }
    out.push_str("skipped tests:\n");
    if skips.skips.is_empty() {
        out.push_str("  (none)\n");
    }
    for skip in &skips.skips {
        let reason = if skip.reason.is_empty() {
            "(no reason given)"
        } else {
            &skip.reason
        };
        let _ = writeln!(
            out,
            "  {}/{}  {}: {reason}",
            skip.backend, skip.transport, skip.test
        );
    }
    if let Some(first) = skips.malformed.first() {
        let _ = writeln!(
            out,
            "  warning: {} malformed skip-report line(s) ignored (write each line with one \
             write call); first: {first:?}",
            skips.malformed.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_text(r: Result<Vec<&'static Component>, Error>) -> String {
        match r {
            Err(Error::Usage(msg)) => msg,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    fn names(r: Result<Vec<&'static Component>, Error>) -> Vec<&'static str> {
        r.unwrap().iter().map(|c| c.name).collect()
    }

    #[test]
    fn unknown_backend_lists_known_ones() {
        assert_eq!(
            err_text(select("foo", BACKENDS, "backend")),
            "unknown backend \"foo\"; known backends: proc, fork, subint"
        );
        assert_eq!(
            err_text(select("uds,tcp", TRANSPORTS, "transport")),
            "unknown transport \"tcp\"; known transports: uds, shm"
        );
    }

    #[test]
    fn unavailable_component_is_not_built_yet() {
        // A table with a component that is known but not built yet says so in the same
        // words, alone or listed beside available ones, and `all` leaves it out.
        const TABLE: &[Component] = &[
            Component {
                name: "uds",
                available: true,
            },
            Component {
                name: "later",
                available: false,
            },
        ];
        let msg = err_text(select("later", TABLE, "transport"));
        assert!(
            msg.contains("transport \"later\" is not built yet"),
            "{msg}"
        );
        assert!(msg.contains("available transports: uds"), "{msg}");
        let msg = err_text(select("uds,later", TABLE, "transport"));
        assert!(msg.contains("\"later\" is not built yet"), "{msg}");
        let msg = err_text(select("later", TABLE, "backend"));
        assert!(msg.contains("backend \"later\" is not built yet"), "{msg}");
        assert_eq!(names(select("all", TABLE, "backend")), ["uds"]);
    }

    #[test]
    fn every_backend_and_transport_is_built() {
        assert!(BACKENDS.iter().all(|c| c.available));
        assert!(TRANSPORTS.iter().all(|c| c.available));
    }

    #[test]
    fn selections() {
        assert_eq!(
            names(select("all", BACKENDS, "backend")),
            ["proc", "fork", "subint"]
        );
        assert_eq!(
            names(select("subint,proc", BACKENDS, "backend")),
            ["proc", "subint"]
        );
        assert_eq!(
            names(select("fork,proc", BACKENDS, "backend")),
            ["proc", "fork"]
        );
        assert_eq!(names(select("proc", BACKENDS, "backend")), ["proc"]);
        assert_eq!(
            names(select(" proc , proc,", BACKENDS, "backend")),
            ["proc"]
        );
        assert_eq!(
            names(select("all", TRANSPORTS, "transport")),
            ["uds", "shm"]
        );
        assert_eq!(
            names(select("shm,uds", TRANSPORTS, "transport")),
            ["uds", "shm"]
        );
        assert_eq!(names(select("shm", TRANSPORTS, "transport")), ["shm"]);
        assert!(err_text(select(",", BACKENDS, "backend")).contains("no backend"));
    }

    fn cell(backend: &str, transport: &str, counts: Option<Counts>, ok: bool) -> CellResult {
        CellResult {
            backend: backend.into(),
            transport: transport.into(),
            counts,
            ok,
            note: None,
            failures: Vec::new(),
        }
    }

    #[test]
    fn renders_aligned_matrix() {
        let c = |p, f, s| {
            Some(Counts {
                passed: p,
                failed: f,
                skipped: s,
            })
        };
        let cells = [
            cell("proc", "uds", c(57, 0, 0), true),
            CellResult {
                failures: vec![(
                    "harness::suite teardown::reap".into(),
                    "test failure with exit code 101".into(),
                )],
                ..cell("proc", "shm", c(50, 1, 6), false)
            },
            CellResult {
                note: Some("build failed".into()),
                ..cell("fork", "uds", None, false)
            },
        ];
        let doc = cell("doctests", "uds", c(31, 0, 0), true);
        let skips = summary::parse_skip_report("proc\tshm\tportal::big\tneeds 2 GiB\n");
        let out = render(
            "brood test matrix",
            &["proc", "fork"],
            &["uds", "shm"],
            &cells,
            Some(&doc),
            &skips,
        );
        let want = "\
brood test matrix
backend \\ transport | uds                            | shm
proc                | 57 passed, 0 failed, 0 skipped | 50 passed, 1 failed, 6 skipped  FAILED
fork                | build failed  FAILED           |
doctests            | 31 passed, 0 failed            |
failed tests:
  proc/shm  harness::suite teardown::reap: test failure with exit code 101
skipped tests:
  proc/shm  portal::big: needs 2 GiB
";
        assert_eq!(out, want);
    }

    #[test]
    fn renders_example_layout() {
        let counts = Counts {
            passed: 57,
            failed: 0,
            skipped: 0,
        };
        let out = render(
            "brood test matrix",
            &["proc"],
            &["uds"],
            &[cell("proc", "uds", Some(counts), true)],
            Some(&cell(
                "doctests",
                "uds",
                Some(Counts {
                    passed: 31,
                    ..Counts::default()
                }),
                true,
            )),
            &SkipReport::default(),
        );
        assert_eq!(
            out,
            "brood test matrix\n\
             backend \\ transport | uds\n\
             proc                | 57 passed, 0 failed, 0 skipped\n\
             doctests            | 31 passed, 0 failed\n\
             skipped tests:\n  (none)\n"
        );
    }

    fn captured(code: i32, stdout: &str) -> Captured {
        use std::os::unix::process::ExitStatusExt as _;
        Captured {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.lines().map(String::from).collect(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn unprivileged_rows() {
        let label = unprivileged_label("proc");
        assert_eq!(label, "proc (unprivileged sandbox)");
        let green = unprivileged_cell(
            &label,
            "uds",
            &captured(
                0,
                "test sandbox::a ... ok\n\
                 test result: ok. 1 passed; 0 failed; 1 ignored; 0 measured; 9 filtered out; \
                 finished in 0.10s",
            ),
        );
        assert!(green.ok, "{green:?}");
        assert_eq!(cell_text(&green, true), "1 passed, 0 failed, 1 skipped");

        let red = unprivileged_cell(
            &label,
            "uds",
            &captured(
                101,
                "test sandbox::a ... FAILED\n\
                 test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 9 filtered \
                 out; finished in 0.10s",
            ),
        );
        assert!(!red.ok);
        assert_eq!(
            red.failures,
            [(
                "harness::suite sandbox::a".to_owned(),
                "test failure as user brood-sbx".to_owned()
            )]
        );

        // Nothing ran: a step that cannot fail is a failure.
        let none = unprivileged_cell(
            &label,
            "uds",
            &captured(
                0,
                "test result: ok. 0 passed; 0 failed; 2 ignored; 0 measured; 9 filtered out; \
                 finished in 0.00s",
            ),
        );
        assert!(!none.ok);
        assert_eq!(
            cell_text(&none, true),
            "0 passed, 0 failed, 2 skipped (no `sandbox::` test ran)  FAILED"
        );

        // No summary: the binary did not get as far as running tests.
        let broken = unprivileged_cell(&label, "uds", &captured(127, "env: not found"));
        assert!(!broken.ok);
        assert_eq!(
            cell_text(&broken, true),
            "no test summary (exit status: 127)  FAILED"
        );
    }

    #[test]
    fn runner_arguments() {
        let extra = vec!["--".to_owned(), "--test-threads=1".to_owned()];
        assert_eq!(
            runner_args(Runner::CargoTest, None, &extra),
            [
                "test",
                "--workspace",
                "--no-fail-fast",
                "--tests",
                "--",
                "--test-threads=1"
            ]
        );
        assert_eq!(
            runner_args(Runner::Nextest, None, &[]),
            [
                "nextest",
                "run",
                "--workspace",
                "--no-fail-fast",
                "--profile",
                "matrix"
            ]
        );
    }
}
