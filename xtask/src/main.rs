//! brood's developer tasks, run as `cargo xtask <command>`.
//!
//! - `cargo xtask test`: the workspace test suite over the matrix of spawn backends and
//!   transports, with one summary table and the reasons of skipped tests.
//! - `cargo xtask bench`: the benches, compared with their OS floors and checked against
//!   the performance targets.
//! - `cargo xtask fuzz`: the fuzz targets (nightly, cargo-fuzz), each for a while with its
//!   corpus.
//! - `cargo xtask circles`: the module circles inside each crate of the workspace.
//!
//! It depends on a few libraries (clap, serde_json, quick-xml, anstream, syn) and never
//! on the workspace's own crates, so that it builds once and quickly.
//!
//! Its modules form layers, none using one above it: `error`, `run` (running cargo) and
//! `metadata` at the bottom; `python`, `summary` and `nextest` (reading test results), and
//! `unprivileged` (running the sandbox tests as another user); then one module per
//! command (`matrix`, `bench`, `fuzz`, `circles`), and this file, which only parses the
//! command line and dispatches.

#![forbid(unsafe_code)]

mod bench;
mod circles;
mod error;
mod fuzz;
mod matrix;
mod metadata;
mod nextest;
mod python;
mod run;
mod summary;
mod unprivileged;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;
use crate::python::PythonTier;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "brood's developer tasks: the test matrix, the benchmark report, the fuzz targets \
             and the module-circle check"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the workspace tests once per (backend, transport) cell and print a matrix.
    ///
    /// Each cell runs `cargo nextest run --workspace --no-fail-fast --profile matrix` (or
    /// `cargo test` without nextest) with BROOD_BACKEND, BROOD_TRANSPORT and
    /// BROOD_SKIP_REPORT set, and reads nextest's JUnit report and test list; doctests run
    /// once, after the first cell. Run as root, it then runs the suite's `sandbox::` tests
    /// again as the unprivileged user brood-sbx (created if missing), once per selected
    /// process backend (proc, fork), as extra rows. Exits non-zero if any cell fails.
    Test(TestArgs),
    /// Run the benches, compare each with its floor and check the performance targets.
    ///
    /// Runs `cargo bench -p brood --bench <spawn|rpc|stream|footprint>` (skipping
    /// missing targets), then reads criterion's results and writes the report to
    /// <target dir>/brood-bench.md too. Unmet targets do not make it fail.
    Bench(BenchArgs),
    /// Build the fuzz targets (fuzz/, with cargo +nightly fuzz) and run each for a while.
    ///
    /// Each target starts from its checked-in corpus (fuzz/corpus/<target>/); prints the
    /// executions and coverage of each and a verdict. Fails if any target crashes (the
    /// input is saved under fuzz/artifacts/<target>/) or if nightly or cargo-fuzz is
    /// missing.
    Fuzz(FuzzArgs),
    /// Find module circles: modules of one crate that use each other's items.
    ///
    /// Reads the module tree of every library and binary of every workspace member
    /// (`cargo metadata`), test modules excluded, and prints each group of modules that
    /// depend on each other in a circle, with the edges that close it. Fails if any.
    Circles(CirclesArgs),
}

#[derive(Debug, Args)]
struct CirclesArgs {
    /// For each edge of a circle, print the path that makes it and its file.
    #[arg(long, short)]
    verbose: bool,
    /// Packages to check (default: every workspace member).
    #[arg(value_name = "PACKAGE")]
    packages: Vec<String>,
}

#[derive(Debug, Args)]
struct FuzzArgs {
    /// Seconds of fuzzing per target.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    time: u64,
    /// Targets to fuzz at once (default: one per core).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Targets to run (default: every one in fuzz/fuzz_targets/).
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
}

#[derive(Debug, Args)]
struct TestArgs {
    /// Spawn backends to run: `all` (every available one) or a comma-separated list of
    /// proc, fork, subint.
    #[arg(long, value_name = "LIST", default_value = "all")]
    backend: String,
    /// Transports to run: `all` (every available one) or a comma-separated list of
    /// uds, shm.
    #[arg(long, value_name = "LIST", default_value = "all")]
    transport: String,
    /// CPython to build and test against: 3.11 is the system python3; 3.14 is
    /// provisioned by ../shared/tools/python314-sysroot.sh (or $BROOD_PY314_SYSROOT_SCRIPT).
    #[arg(long, value_name = "TIER", value_enum, default_value_t = PythonTier::Py311)]
    python: PythonTier,
    /// Use `cargo test` even when cargo-nextest is installed.
    #[arg(long)]
    no_nextest: bool,
    /// Extra arguments for the test runner of every cell (after `--`).
    #[arg(last = true, value_name = "EXTRA")]
    extra: Vec<String>,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Short criterion runs: --warm-up-time 0.5 --measurement-time 2 --sample-size 10.
    #[arg(long)]
    quick: bool,
    /// CPython to build against. With 3.14 only the benches whose numbers depend on the
    /// Python tier run (spawn, parallel); their ids carry the tier.
    #[arg(long, value_enum, default_value_t = PythonTier::default())]
    python: PythonTier,
    /// Only benchmarks whose id matches this regex (criterion's filter).
    #[arg(long, value_name = "REGEX")]
    filter: Option<String>,
    /// Run nothing: print the report and draw the charts from the results criterion
    /// kept (all of them then count as current).
    #[arg(long)]
    report_only: bool,
}

/// The workspace root: the parent of this crate's manifest directory. `cargo run` sets
/// `CARGO_MANIFEST_DIR` at run time too, which stays right if the tree was moved after
/// xtask was built; the compile-time value covers running the binary directly.
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = workspace_root();
    let outcome = match cli.command {
        Task::Test(args) => matrix::run(
            &matrix::TestOptions {
                backends: args.backend,
                transports: args.transport,
                python: args.python,
                no_nextest: args.no_nextest,
                extra: args.extra,
            },
            &root,
        ),
        Task::Bench(args) => bench::run(
            &bench::BenchOptions {
                quick: args.quick,
                filter: args.filter,
                python: args.python,
                report_only: args.report_only,
            },
            &root,
        ),
        Task::Fuzz(args) => fuzz::run(
            &fuzz::FuzzOptions {
                time: args.time,
                jobs: args.jobs,
                targets: args.targets,
            },
            &root,
        ),
        Task::Circles(args) => circles::run(
            &circles::CirclesOptions {
                packages: args.packages,
                verbose: args.verbose,
            },
            &root,
        ),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Error::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Error::Failed(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_test_arguments() {
        let cli = Cli::try_parse_from([
            "xtask",
            "test",
            "--backend",
            "proc",
            "--python",
            "3.14",
            "--no-nextest",
            "--",
            "--test-threads",
            "1",
        ])
        .unwrap();
        let Task::Test(args) = cli.command else {
            panic!("not test")
        };
        assert_eq!(args.backend, "proc");
        assert_eq!(args.transport, "all");
        assert_eq!(args.python, PythonTier::Py314);
        assert!(args.no_nextest);
        assert_eq!(args.extra, ["--test-threads", "1"]);
        assert!(Cli::try_parse_from(["xtask", "test", "--python", "3.12"]).is_err());
    }

    #[test]
    fn parses_bench_arguments() {
        let cli = Cli::try_parse_from(["xtask", "bench", "--quick", "--filter", "rpc"]).unwrap();
        let Task::Bench(args) = cli.command else {
            panic!("not bench")
        };
        assert!(args.quick);
        assert_eq!(args.filter.as_deref(), Some("rpc"));
    }

    #[test]
    fn parses_fuzz_arguments() {
        let cli =
            Cli::try_parse_from(["xtask", "fuzz", "--time", "5", "pyvalue", "handshake"]).unwrap();
        let Task::Fuzz(args) = cli.command else {
            panic!("not fuzz")
        };
        assert_eq!(args.time, 5);
        assert_eq!(args.jobs, None);
        assert_eq!(args.targets, ["pyvalue", "handshake"]);
        let Task::Fuzz(args) = Cli::try_parse_from(["xtask", "fuzz"]).unwrap().command else {
            panic!("not fuzz")
        };
        assert_eq!(args.time, 20);
        assert!(args.targets.is_empty());
    }

    #[test]
    fn parses_circles_arguments() {
        let cli = Cli::try_parse_from(["xtask", "circles", "-v", "spawn-api"]).unwrap();
        let Task::Circles(args) = cli.command else {
            panic!("not circles")
        };
        assert!(args.verbose);
        assert_eq!(args.packages, ["spawn-api"]);
    }
}
