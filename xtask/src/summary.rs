//! A cell's counts, libtest's summary lines (read only where nothing structured exists),
//! and the harness's skip report.
//!
//! With nextest, a cell's counts come from its JUnit report and test list (see
//! `nextest.rs`). Two runs have nothing structured to read: plain `cargo test` (the
//! fallback without nextest; libtest's `--format json` needs `-Z unstable-options`, so
//! nightly) and the doctests (`cargo test --doc`, which nextest cannot run). For those the
//! one line libtest prints per test binary, `test result: ok. 12 passed; 0 failed; ...`,
//! is read: a stable format, and only its counts are taken.

/// How many tests ended which way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
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

/// Sum libtest's `test result: ok. 12 passed; 0 failed; 3 ignored; ...` lines, one per
/// test binary (or per crate's doctests); ignored tests count as skipped. `None` when no
/// such line appears (the build failed).
///
/// Sections are not told apart by cargo's `Running` / `Doc-tests` headers: those go to
/// stderr and the results to stdout, so their relative order is not reliable once the two
/// pipes are read separately. Callers run doctests as a separate command instead.
pub(crate) fn parse_cargo_test<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Counts> {
    lines
        .into_iter()
        .filter_map(|line| {
            // Colours (CARGO_TERM_COLOR=always) would split the words.
            let plain = anstream::adapter::strip_str(line).to_string();
            parse_test_result_line(plain.trim())
        })
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
pub(crate) struct Skip {
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
pub(crate) struct SkipReport {
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
    pub(crate) fn add_text(&mut self, text: &str) {
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
