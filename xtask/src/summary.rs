//! Reading what a test run printed: nextest's and libtest's summaries, and the harness's
//! skip report.

use crate::run::strip_ansi;

/// How many tests ended which way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tests that passed (flaky and leaky ones included: they did pass in the end).
    pub passed: u64,
    /// Tests that failed, timed out or could not be started.
    pub failed: u64,
    /// Tests that were skipped or ignored.
    pub skipped: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// Find nextest's final `Summary [ 1.2s] 45 tests run: 44 passed, 1 failed, 3 skipped`
/// line and read its counts; `None` when there is none (the build failed, or nextest did
/// not get as far as running tests).
///
/// When several summary lines appear, the last one wins: it is the one of the run that
/// finished last.
pub fn parse_nextest<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Counts> {
    lines
        .into_iter()
        .filter_map(|line| parse_nextest_line(&strip_ansi(line)))
        .last()
}

fn parse_nextest_line(line: &str) -> Option<Counts> {
    let rest = line.trim_start().strip_prefix("Summary")?;
    let rest = rest.trim_start().strip_prefix('[')?;
    let (_, rest) = rest.split_once(']')?;
    let (head, tail) = rest.split_once(':')?;
    // "45 tests run", "1 test run", or "3/45 tests run" when the run was cancelled.
    let mut head_words = head.split_whitespace();
    let total = head_words.next()?;
    if !total.split('/').all(|n| n.parse::<u64>().is_ok()) {
        return None;
    }
    if !matches!(head_words.next(), Some("test" | "tests")) || head_words.next() != Some("run") {
        return None;
    }
    let mut counts = Counts::default();
    for item in tail.split(',') {
        // "44 passed (2 flaky)": the parenthesised part only qualifies the count.
        let item = item.split('(').next().unwrap_or_default().trim();
        let Some((number, label)) = item.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(n) = number.parse::<u64>() else {
            continue;
        };
        match label.trim() {
            "passed" => counts.passed += n,
            "skipped" => counts.skipped += n,
            // Subsets of "passed", reported again on their own.
            "flaky" | "leaky" => {}
            // "failed", "timed out", "exec failed", "leaky failed", ...: anything else
            // that ended a test badly.
            other if other.contains("fail") || other.contains("timed out") => counts.failed += n,
            // Unknown words (e.g. "not run" after a cancellation) are not test outcomes;
            // the cell still fails through nextest's exit status.
            _ => {}
        }
    }
    Some(counts)
}

/// Sum libtest's `test result: ok. 12 passed; 0 failed; 3 ignored; ...` lines, one per
/// test binary (or per crate's doctests); ignored tests count as skipped. `None` when no
/// such line appears (the build failed).
///
/// Sections are not told apart by cargo's `Running` / `Doc-tests` headers: those go to
/// stderr and the results to stdout, so their relative order is not reliable once the two
/// pipes are read separately. Callers run doctests as a separate command instead.
pub fn parse_cargo_test<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Counts> {
    lines
        .into_iter()
        .filter_map(|line| parse_test_result_line(strip_ansi(line).trim()))
        .reduce(|mut total, counts| {
            total.add(counts);
            total
        })
}

fn parse_test_result_line(line: &str) -> Option<Counts> {
    let rest = line.strip_prefix("test result:")?;
    // Skip the verdict ("ok." / "FAILED."): the counts are what matter.
    let (_, rest) = rest.split_once('.')?;
    let mut counts = Counts::default();
    let mut seen = false;
    for item in rest.split(';') {
        let mut words = item.split_whitespace();
        let (Some(number), Some(label)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = number.parse::<u64>() else {
            continue;
        };
        match label {
            "passed" => counts.passed += n,
            "failed" => counts.failed += n,
            "ignored" => counts.skipped += n,
            _ => continue,
        }
        seen = true;
    }
    seen.then_some(counts)
}

/// One line of the harness's skip report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The backend the test was run for.
    pub backend: String,
    /// The transport the test was run for.
    pub transport: String,
    /// The test's name.
    pub test: String,
    /// Why it skipped itself.
    pub reason: String,
}

/// The skips reported by one or more cells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkipReport {
    /// Distinct skips, in the order first reported.
    pub skips: Vec<Skip>,
    /// Lines that were not `backend\ttransport\ttest[\treason]`, kept to be shown.
    pub malformed: Vec<String>,
}

impl SkipReport {
    /// Add the lines of one report file: `backend\ttransport\ttest\treason`.
    ///
    /// Test binaries may be run (and so report) more than once, so a repeated (backend,
    /// transport, test) triple keeps only its first reason. Blank lines are ignored; a
    /// missing reason is empty. A line with fewer than three or more than four fields is
    /// kept as malformed rather than guessed at: it is typically two writers' lines
    /// interleaved.
    pub fn add_text(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            let (backend, transport, test, reason) = match fields[..] {
                [b, t, name] => (b, t, name, ""),
                [b, t, name, reason] => (b, t, name, reason),
                _ => {
                    self.malformed.push(line.to_owned());
                    continue;
                }
            };
            if test.is_empty() {
                self.malformed.push(line.to_owned());
                continue;
            }
            let seen = self
                .skips
                .iter()
                .any(|s| s.backend == backend && s.transport == transport && s.test == test);
            if !seen {
                self.skips.push(Skip {
                    backend: backend.to_owned(),
                    transport: transport.to_owned(),
                    test: test.to_owned(),
                    reason: reason.to_owned(),
                });
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn parse_skip_report(text: &str) -> SkipReport {
    let mut report = SkipReport::default();
    report.add_text(text);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(passed: u64, failed: u64, skipped: u64) -> Counts {
        Counts {
            passed,
            failed,
            skipped,
        }
    }

    #[test]
    fn nextest_summary_variants() {
        let cases = [
            (
                "     Summary [  12.345s] 45 tests run: 44 passed, 1 failed, 3 skipped",
                counts(44, 1, 3),
            ),
            (
                "     Summary [   0.006s] 45 tests run: 45 passed, 0 skipped",
                counts(45, 0, 0),
            ),
            (
                "     Summary [   0.001s] 1 test run: 1 passed",
                counts(1, 0, 0),
            ),
            (
                "     Summary [   2.008s] 3 tests run: 1 passed, 1 failed, 1 timed out, 1 skipped",
                counts(1, 2, 1),
            ),
            (
                "     Summary [   1.000s] 5 tests run: 5 passed (2 flaky, 1 leaky), 0 skipped",
                counts(5, 0, 0),
            ),
            (
                "     Summary [   1.000s] 5 tests run: 4 passed, 2 flaky, 1 leaky, 1 timed out",
                counts(4, 1, 0),
            ),
            (
                "     Summary [   0.500s] 3/10 tests run: 2 passed, 1 failed, 0 skipped",
                counts(2, 1, 0),
            ),
            (
                "\u{1b}[32;1m     Summary\u{1b}[0m [   0.010s] \u{1b}[1m2\u{1b}[0m tests run: \
                 \u{1b}[1m2\u{1b}[0m \u{1b}[32;1mpassed\u{1b}[0m, \u{1b}[1m0\u{1b}[0m skipped",
                counts(2, 0, 0),
            ),
        ];
        for (line, want) in cases {
            let text = format!("    Starting 45 tests across 3 binaries\n{line}\nerror: x\n");
            assert_eq!(parse_nextest(text.lines()), Some(want), "{line}");
        }
    }

    #[test]
    fn nextest_without_summary() {
        let text = "   Compiling brood v0.1.0\nerror[E0425]: cannot find value `x`\n\
                    error: could not compile `brood`\n";
        assert_eq!(parse_nextest(text.lines()), None);
        // Lookalikes that are not the final summary.
        assert_eq!(parse_nextest(["Summary of changes: 3 passed"]), None);
        assert_eq!(
            parse_nextest(["  Summary [1s] many tests run: 3 passed"]),
            None
        );
    }

    #[test]
    fn cargo_test_sums_binaries() {
        let text = "\
     Running unittests src/lib.rs (target/debug/deps/brood-1)
test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s
     Running tests/tree.rs (target/debug/deps/tree-2)
test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 1 filtered out; finished in 1.20s
   Doc-tests brood
test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.50s
";
        assert_eq!(parse_cargo_test(text.lines()), Some(counts(23, 2, 4)));
        let coloured = "test result: \u{1b}[32mok\u{1b}[0m. 1 passed; 0 failed; 0 ignored; \
                        0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!(parse_cargo_test([coloured]), Some(counts(1, 0, 0)));
    }

    #[test]
    fn cargo_test_without_results() {
        let got = parse_cargo_test(["error: could not compile `brood`", "test result: ok."]);
        assert_eq!(got, None);
        let zero = "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(parse_cargo_test([zero]), Some(Counts::default()));
    }

    #[test]
    fn skip_report_dedups() {
        let text = "\
proc\tuds\tportal::stream_backpressure\tneeds shm transport
proc\tuds\tnursery::fork_bomb\tfork backend not built
proc\tuds\tportal::stream_backpressure\tneeds shm transport
proc\tuds\tportal::stream_backpressure\tanother reason

proc\tuds\tno_reason
proc\tshm\tportal::stream_backpressure\tneeds 2 GiB\r
";
        let report = parse_skip_report(text);
        let got: Vec<_> = report
            .skips
            .iter()
            .map(|s| {
                (
                    s.backend.as_str(),
                    s.transport.as_str(),
                    s.test.as_str(),
                    s.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "proc",
                    "uds",
                    "portal::stream_backpressure",
                    "needs shm transport"
                ),
                (
                    "proc",
                    "uds",
                    "nursery::fork_bomb",
                    "fork backend not built"
                ),
                ("proc", "uds", "no_reason", ""),
                ("proc", "shm", "portal::stream_backpressure", "needs 2 GiB"),
            ]
        );
        assert!(report.malformed.is_empty());
        assert_eq!(parse_skip_report(""), SkipReport::default());
    }

    #[test]
    fn skip_report_keeps_malformed_lines() {
        let mut report = parse_skip_report("garbage\nprocproc\tudsuds\ta\tb\tc\tshm\n");
        assert!(report.skips.is_empty());
        assert_eq!(report.malformed.len(), 2);
        // A second cell's file merges in, still deduplicated.
        report.add_text("fork\tuds\tt1\twhy\nfork\tuds\tt1\twhy\n");
        assert_eq!(report.skips.len(), 1);
    }
}
