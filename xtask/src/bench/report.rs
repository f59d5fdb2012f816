//! The bench report: what ran, each measurement next to its floor, the footprint, and
//! the targets' verdicts, as aligned text for the terminal or markdown for notes.

use std::fmt::Write as _;

use super::results::{BenchResult, floor_of};
use super::targets::{Status, TARGETS};
use super::units::{fmt_bytes_rate, fmt_msgs, fmt_size, fmt_time};

/// Name of the markdown copy of the report, in the target directory.
pub(super) const REPORT_FILE: &str = "brood-bench.md";

/// How one bench target's run went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RunOutcome {
    /// It ran and exited successfully.
    Ran,
    /// The package has no such bench target yet.
    NoSuchTarget,
    /// It failed to build or run.
    Failed(String),
}

/// Everything the report shows.
#[derive(Clone, Debug, Default)]
pub(super) struct Report {
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
pub(super) enum Format {
    /// Aligned columns for the terminal.
    Text,
    /// Markdown tables for notes.
    Markdown,
}

impl Report {
    /// The targets' verdicts, in [`TARGETS`] order.
    pub(super) fn verdicts(&self) -> Vec<(String, Status, String)> {
        TARGETS
            .iter()
            .map(|t| {
                let (status, detail) = t.evaluate(&self.results, &self.footprint);
                (t.describe(), status, detail)
            })
            .collect()
    }

    /// Render the whole report.
    pub(super) fn render(&self, format: Format) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::sort_results;
    use crate::bench::results::test_support::{result, sample};

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
            text.contains("targets: 4 passed, 1 failed, 51 missing (of 56)"),
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
