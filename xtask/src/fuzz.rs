//! `cargo xtask fuzz`: build the fuzz targets (`fuzz/`, cargo-fuzz on nightly) and run each
//! for a while with its checked-in corpus; one line per target and a verdict.
//!
//! Each target runs as `cargo +nightly fuzz run <target> <scratch> fuzz/corpus/<target>`:
//! libFuzzer reads both folders and writes what it finds to the first one only
//! (`fuzz/target/xtask-corpus/<target>`, kept between runs), so the checked-in corpus does
//! not change. A target's whole output goes to `fuzz/target/xtask-logs/<target>.log`; a
//! crash (panic, abort, stack overflow, sanitizer report, timeout, out of memory) is
//! saved by libFuzzer under `fuzz/artifacts/<target>/` and fails the task. Up to `--jobs`
//! targets run at once (libFuzzer uses one core per process).

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

/// What to run.
#[derive(Debug)]
pub(crate) struct FuzzOptions {
    /// Seconds of fuzzing per target.
    pub time: u64,
    /// Targets to run at once.
    pub jobs: Option<usize>,
    /// Targets to run (empty: all).
    pub targets: Vec<String>,
}

/// libFuzzer's limit for one input: longer counts as a hang.
const INPUT_TIMEOUT_SECS: u64 = 10;

/// How long a run may take beyond its fuzzing time (start-up, loading the corpus, the last
/// input) before it is killed and counted as hung.
const GRACE: Duration = Duration::from_secs(120);

/// How one target's run went.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    /// Inputs executed.
    execs: Option<u64>,
    /// Average executions per second.
    per_sec: Option<u64>,
    /// libFuzzer's coverage counters: edges (`cov`) and features (`ft`).
    cov: Option<u64>,
    ft: Option<u64>,
    /// Inputs in the corpus at the end, and how many this run added.
    corpus: Option<u64>,
    new_units: Option<u64>,
    /// Peak resident memory, MiB.
    rss_mb: Option<u64>,
    /// What went wrong, if anything (a crash's kind, or why the run did not finish).
    failure: Option<String>,
    /// Where libFuzzer saved the crashing input.
    artifact: Option<String>,
}

/// Run the selected targets; `Ok(true)` when none crashed.
///
/// # Errors
/// [`Error::Usage`] for an unknown target, [`Error::Failed`] when the nightly toolchain or
/// cargo-fuzz is missing, or the targets do not build.
pub(crate) fn run(opts: &FuzzOptions, root: &Path) -> Result<bool, Error> {
    if opts.time == 0 {
        // libFuzzer reads -max_total_time=0 as "no limit".
        return Err(Error::Usage("--time must be at least 1 second".to_owned()));
    }
    let fuzz_dir = root.join("fuzz");
    let all = list_targets(&fuzz_dir)?;
    let targets = select(&opts.targets, &all)?;
    check_tools(root)?;
    let target_dir = fuzz_dir.join("target");

    let started = Instant::now();
    let mut build = vec!["build".to_owned()];
    if targets.len() == 1 {
        build.push(targets[0].clone());
    }
    build.extend(["--target-dir".to_owned(), path_arg(&target_dir)]);
    println!(
        "==> {}",
        crate::run::display_command("cargo +nightly fuzz", &build)
    );
    let status = nightly_cargo(root)
        .arg("fuzz")
        .args(&build)
        .current_dir(root)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| Error::Failed(format!("cannot run cargo +nightly fuzz build: {e}")))?;
    if !status.success() {
        return Err(Error::Failed(format!(
            "the fuzz targets do not build ({status})"
        )));
    }
    println!("built in {:.0?}", started.elapsed());

    let jobs = opts
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, targets.len());
    println!(
        "==> fuzzing {} target{} for {} s each, {jobs} at a time",
        targets.len(),
        if targets.len() == 1 { "" } else { "s" },
        opts.time
    );
    let queue = Mutex::new(targets.iter().cloned().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let Some(target) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let outcome = run_target(root, &target_dir, &target, opts.time);
                    println!("{}", line(&target, &outcome));
                    results.lock().unwrap().push((target, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(t, _)| targets.iter().position(|x| x == t));

    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, o)| o.failure.is_some())
        .map(|(t, _)| t.as_str())
        .collect();
    println!();
    println!("brood fuzz ({} s per target)", opts.time);
    for (target, outcome) in &results {
        println!("  {}", line(target, outcome));
    }
    if failed.is_empty() {
        println!(
            "ok: {} targets, no crash, in {:.0?}",
            results.len(),
            started.elapsed()
        );
    } else {
        for (target, outcome) in results.iter().filter(|(_, o)| o.failure.is_some()) {
            println!();
            println!(
                "{target}: see {} for the whole output",
                path_arg(&log_path(&target_dir, target))
            );
            let text = std::fs::read(log_path(&target_dir, target))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            for l in report_excerpt(&text) {
                println!("  | {l}");
            }
            if let Some(artifact) = &outcome.artifact {
                println!(
                    "  reproduce: cargo +nightly fuzz run {target} {artifact}\n  \
                     minimize:  cargo +nightly fuzz tmin {target} {artifact}\n  \
                     then add the minimized input to fuzz/corpus/{target}/"
                );
            }
        }
        println!("FAILED: {}", failed.join(", "));
    }
    Ok(failed.is_empty())
}

/// The targets in `fuzz/fuzz_targets/`, sorted.
fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>, Error> {
    let dir = fuzz_dir.join("fuzz_targets");
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| Error::Failed(format!("cannot list {}: {e}", dir.display())))?;
    let mut targets: Vec<String> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "rs").then(|| Some(path.file_stem()?.to_str()?.to_owned()))?
        })
        .collect();
    targets.sort();
    Ok(targets)
}

/// The requested targets (all when none is named), in the order given.
fn select(requested: &[String], all: &[String]) -> Result<Vec<String>, Error> {
    if requested.is_empty() {
        return Ok(all.to_vec());
    }
    let mut out = Vec::new();
    for t in requested {
        if !all.contains(t) {
            return Err(Error::Usage(format!(
                "no fuzz target `{t}` (targets: {})",
                all.join(", ")
            )));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// `cargo +nightly`, through rustup's proxy on `PATH` (the `CARGO` that launched xtask is
/// a toolchain's own binary, which knows no `+toolchain`), without the variables of the
/// outer cargo that would pin the nested one to the outer toolchain.
fn nightly_cargo(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").current_dir(root);
    for var in [
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
    ] {
        c.env_remove(var);
    }
    c
}

/// Fail clearly when the nightly toolchain or cargo-fuzz is missing.
fn check_tools(root: &Path) -> Result<(), Error> {
    let works = |args: &[&str]| {
        nightly_cargo(root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&["--version"]) {
        return Err(Error::Failed(
            "`cargo +nightly` does not work: the fuzz targets need the nightly toolchain \
             (rustup toolchain install nightly)"
                .to_owned(),
        ));
    }
    if !works(&["fuzz", "--version"]) {
        return Err(Error::Failed(
            "cargo-fuzz is not installed (cargo install cargo-fuzz --locked)".to_owned(),
        ));
    }
    Ok(())
}

fn log_path(target_dir: &Path, target: &str) -> PathBuf {
    target_dir.join("xtask-logs").join(format!("{target}.log"))
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Fuzz `target` for `secs` seconds; its output goes to its log file.
fn run_target(root: &Path, target_dir: &Path, target: &str, secs: u64) -> Outcome {
    let failed = |why: String| Outcome {
        failure: Some(why),
        ..Outcome::default()
    };
    let scratch = target_dir.join("xtask-corpus").join(target);
    let log = log_path(target_dir, target);
    let files = std::fs::create_dir_all(&scratch)
        .and_then(|()| std::fs::create_dir_all(log.parent().expect("a folder")))
        .and_then(|()| File::create(&log))
        .and_then(|f| Ok((f.try_clone()?, f)));
    let (out, err) = match files {
        Ok(f) => f,
        Err(e) => return failed(format!("cannot prepare {}: {e}", log.display())),
    };
    let seeds = root.join("fuzz").join("corpus").join(target);
    let mut cmd = nightly_cargo(root);
    cmd.args(["fuzz", "run", target, "--target-dir"])
        .arg(target_dir)
        .arg(&scratch);
    // libFuzzer refuses a corpus folder that does not exist (a new target has none yet).
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // Its own process group, so that a run that overstays can be killed with the fuzz
    // binary cargo-fuzz started.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run cargo +nightly fuzz run: {e}")),
    };
    let deadline = Instant::now() + Duration::from_secs(secs) + GRACE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(None) => {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                break None;
            }
            Err(e) => return failed(format!("cannot wait for cargo fuzz run: {e}")),
        }
    };
    let text = std::fs::read(&log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut outcome = parse_output(&text);
    match status {
        None => {
            outcome.failure = Some(format!(
                "still running {} s after its time: killed",
                GRACE.as_secs()
            ));
        }
        Some(s) if !s.success() && outcome.failure.is_none() => {
            outcome.failure = Some(format!("cargo fuzz run failed ({s})"));
        }
        Some(_) => {}
    }
    outcome
}

/// What libFuzzer (and cargo-fuzz) printed about a run.
fn parse_output(text: &str) -> Outcome {
    let mut o = Outcome::default();
    let mut panic_msg = None;
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    for (i, &line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("stat::") {
            let (key, value) = rest.split_once(':').unwrap_or((rest, ""));
            let value = value.trim().parse().ok();
            match key {
                "number_of_executed_units" => o.execs = value,
                "average_exec_per_sec" => o.per_sec = value,
                "new_units_added" => o.new_units = value,
                "peak_rss_mb" => o.rss_mb = value,
                _ => {}
            }
        } else if line.starts_with('#') && line.contains(" cov: ") {
            // `#1234  NEW    cov: 948 ft: 1603 corp: 493/49Kb ...`
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                let value = || {
                    words
                        .clone()
                        .next()
                        .and_then(|v| v.split('/').next()?.parse().ok())
                };
                match w {
                    "cov:" => o.cov = value(),
                    "ft:" => o.ft = value(),
                    "corp:" => o.corpus = value(),
                    _ => {}
                }
            }
        } else if let Some((_, rest)) = line.split_once("ERROR: libFuzzer: ") {
            o.failure.get_or_insert_with(|| rest.to_owned());
        } else if let Some((_, rest)) = line.split_once("ERROR: AddressSanitizer: ") {
            o.failure
                .get_or_insert_with(|| format!("AddressSanitizer: {rest}"));
        } else if line.starts_with("thread '") && line.contains("panicked at") {
            // The message is on the next line.
            let msg = lines.get(i + 1).copied().unwrap_or_default();
            panic_msg.get_or_insert_with(|| format!("{line} {msg}"));
        } else if let Some((_, rest)) = line.split_once("Test unit written to ") {
            o.artifact.get_or_insert_with(|| rest.trim().to_owned());
        }
    }
    if let (Some(failure), Some(panic)) = (&mut o.failure, panic_msg) {
        *failure = format!("{failure}: {panic}");
    }
    o
}

/// Most lines of a crash report worth printing (a CI log is often all there is): from the
/// panic or sanitizer report on.
const EXCERPT_LINES: usize = 60;

/// The crash report in a run's output: from the first panic or sanitizer/libFuzzer error
/// line, at most [`EXCERPT_LINES`] lines; the last lines if there is no such line.
fn report_excerpt(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            (l.starts_with("thread '") && l.contains("panicked at"))
                || l.contains("ERROR: libFuzzer: ")
                || l.contains("ERROR: AddressSanitizer: ")
        })
        .unwrap_or(lines.len().saturating_sub(EXCERPT_LINES / 3));
    let mut out: Vec<String> = Vec::new();
    // A stack overflow repeats its frames by the thousand: collapse each run of the same
    // frame (`#<n> 0x<pc> in <function> <file:line>`) to one line and a count.
    let mut repeats = 0;
    let mut last_frame: Option<&str> = None;
    for line in &lines[start..] {
        let frame = frame_text(line);
        if frame.is_some() && frame == last_frame {
            repeats += 1;
            continue;
        }
        if repeats > 0 {
            out.push(format!("    ... the same frame {repeats} more times"));
            repeats = 0;
        }
        last_frame = frame;
        out.push((*line).to_owned());
        if out.len() >= EXCERPT_LINES {
            break;
        }
    }
    if repeats > 0 {
        out.push(format!("    ... the same frame {repeats} more times"));
    }
    out
}

/// What a stack frame line of a sanitizer report says, without its number and address.
fn frame_text(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (number, rest) = rest.split_once(' ')?;
    number.parse::<u32>().ok()?;
    let (_address, text) = rest.split_once(' ')?;
    Some(text)
}

/// One target's line: its counts, then `ok` or what went wrong.
fn line(target: &str, o: &Outcome) -> String {
    let n = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    let counts = format!(
        "{} execs ({}/s), cov {}, ft {}, corpus {} (+{}), rss {} MiB",
        n(o.execs),
        n(o.per_sec),
        n(o.cov),
        n(o.ft),
        n(o.corpus),
        n(o.new_units),
        n(o.rss_mb)
    );
    match (&o.failure, &o.artifact) {
        (None, _) => format!("{target:<18} ok     {counts}"),
        (Some(f), Some(a)) => format!(
            "{target:<18} CRASH  {counts}\n{:<26}{f}\n{:<26}input: {a}",
            "", ""
        ),
        (Some(f), None) => format!("{target:<18} FAILED {counts}\n{:<26}{f}", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
INFO: Seed: 1234
#2\tINITED cov: 12 ft: 13 corp: 1/1b exec/s: 0 rss: 30Mb
#1024\tpulse  cov: 900 ft: 1500 corp: 480/40Kb lim: 4096 exec/s: 512 rss: 400Mb
#3133839\tDONE   cov: 970 ft: 1659 corp: 513/89Kb lim: 4096 exec/s: 54031 rss: 597Mb
Done 3133839 runs in 59 second(s)
stat::number_of_executed_units: 3133839
stat::average_exec_per_sec:     54031
stat::new_units_added:          271
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              597
";

    #[test]
    fn reads_a_clean_run() {
        let o = parse_output(CLEAN);
        assert_eq!(
            o,
            Outcome {
                execs: Some(3_133_839),
                per_sec: Some(54_031),
                cov: Some(970),
                ft: Some(1659),
                corpus: Some(513),
                new_units: Some(271),
                rss_mb: Some(597),
                failure: None,
                artifact: None,
            }
        );
        assert!(line("frame_body", &o).contains(" ok "));
    }

    #[test]
    fn reads_a_crash() {
        let text = "\
#40\tNEW    cov: 50 ft: 60 corp: 5/100b lim: 4 exec/s: 0 rss: 30Mb
thread '<unnamed>' (123) panicked at crates/x/src/lib.rs:1:2:
boom
==4321== ERROR: libFuzzer: deadly signal
MS: 1 ChangeBit-; base unit: 0
artifact_prefix='/w/fuzz/artifacts/pyvalue/'; Test unit written to /w/fuzz/artifacts/pyvalue/crash-abc
stat::number_of_executed_units: 41
";
        let o = parse_output(text);
        assert_eq!(o.execs, Some(41));
        assert_eq!(o.cov, Some(50));
        let failure = o.failure.as_deref().unwrap();
        assert!(
            failure.starts_with("deadly signal: thread '<unnamed>'") && failure.ends_with("boom"),
            "{failure}"
        );
        assert_eq!(
            o.artifact.as_deref(),
            Some("/w/fuzz/artifacts/pyvalue/crash-abc")
        );
        assert!(line("pyvalue", &o).contains("CRASH"));
    }

    #[test]
    fn quotes_the_report_of_a_crash() {
        let text = "#1 INITED\n#2 NEW\n==1== ERROR: libFuzzer: timeout after 10 seconds\n    #0 frame\nSUMMARY: x\n";
        assert_eq!(
            report_excerpt(text),
            [
                "==1== ERROR: libFuzzer: timeout after 10 seconds",
                "    #0 frame",
                "SUMMARY: x"
            ]
        );
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(report_excerpt(&long).len(), EXCERPT_LINES / 3);
        let overflow = "==1==ERROR: AddressSanitizer: stack-overflow\n    #0 0x1 in a f.rs:1\n    #1 0x2 in b f.rs:2\n    #2 0x2 in b f.rs:2\n    #3 0x2 in b f.rs:2\n    #4 0x3 in main\n";
        assert_eq!(
            report_excerpt(overflow),
            [
                "==1==ERROR: AddressSanitizer: stack-overflow",
                "    #0 0x1 in a f.rs:1",
                "    #1 0x2 in b f.rs:2",
                "    ... the same frame 2 more times",
                "    #4 0x3 in main"
            ]
        );
    }

    #[test]
    fn selects_targets() {
        let all = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(select(&[], &all).unwrap(), all);
        assert_eq!(
            select(&["b".to_owned(), "b".to_owned()], &all).unwrap(),
            ["b"]
        );
        assert!(matches!(
            select(&["c".to_owned()], &all),
            Err(Error::Usage(_))
        ));
    }
}
