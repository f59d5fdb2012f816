//! The charts `cargo xtask bench` writes beside its report: plain SVG files, drawn here
//! without a plotting library (a few rectangles, lines and labels).
//!
//! - one bar chart per group and parameter (`rpc.svg`, `stream-64B.svg`, ...): each row's
//!   mean time per iteration, or its rate when the bench declared a throughput; brood's
//!   rows blue, floors grey, peers orange, so the picture reads like the table;
//! - one line chart per phase of the `scaling` group (`scaling-spawn.svg`, ...): the time
//!   per actor against the number of actors (both axes logarithmic), a line per backend.
//!
//! Above the report's data (`results`, `units`); it reads no file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::results::BenchResult;
use super::units::{fmt_bytes_rate, fmt_msgs, fmt_time};

/// Width of a chart, in SVG units.
const WIDTH: f64 = 760.0;
/// Room left of the bars for the row labels.
const LABEL_W: f64 = 250.0;
/// Height of one bar's row.
const ROW_H: f64 = 24.0;

/// What a bar shows: a time (shorter is better) or a rate (longer is better).
#[derive(Clone, Copy, PartialEq)]
enum Measure {
    Time,
    Elements,
    Bytes,
}

/// Write every chart into `dir` (created if missing); returns the files written.
///
/// # Errors
/// The path and the OS error if a file cannot be written.
pub(super) fn write_all(results: &[BenchResult], dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (name, svg) in bar_charts(results)
        .into_iter()
        .chain(scaling_charts(results))
    {
        let path = dir.join(format!("{name}.svg"));
        std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The bar charts, by file name.
fn bar_charts(results: &[BenchResult]) -> Vec<(String, String)> {
    let mut by_chart: BTreeMap<(String, Option<String>), Vec<&BenchResult>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.group != "scaling" && !r.stale) {
        by_chart
            .entry((r.group.clone(), r.value.clone()))
            .or_default()
            .push(r);
    }
    by_chart
        .into_iter()
        .filter(|(_, rows)| rows.len() > 1)
        .map(|((group, value), rows)| {
            let name = match &value {
                Some(v) => format!("{group}-{v}"),
                None => group.clone(),
            };
            let title = match &value {
                Some(v) => format!("{group} ({v})"),
                None => group.clone(),
            };
            (safe_name(&name), bars(&title, &rows))
        })
        .collect()
}

/// A file name without path separators or odd characters.
fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn bars(title: &str, rows: &[&BenchResult]) -> String {
    let measure = if rows.iter().all(|r| r.elements_per_sec().is_some()) {
        Measure::Elements
    } else if rows.iter().all(|r| r.bytes_per_sec().is_some()) {
        Measure::Bytes
    } else {
        Measure::Time
    };
    let value = |r: &BenchResult| match measure {
        Measure::Time => r.mean_ns,
        Measure::Elements => r.elements_per_sec().unwrap_or(0.0),
        Measure::Bytes => r.bytes_per_sec().unwrap_or(0.0),
    };
    let shown = |v: f64| match measure {
        Measure::Time => fmt_time(v),
        Measure::Elements => fmt_msgs(v),
        Measure::Bytes => fmt_bytes_rate(v),
    };
    let max = rows.iter().map(|r| value(r)).fold(0.0, f64::max).max(1e-9);
    let height = 50.0 + ROW_H * rows.len() as f64 + 20.0;
    let mut svg = header(height);
    let note = match measure {
        Measure::Time => "mean time per iteration (shorter is better)",
        _ => "rate (longer is better)",
    };
    let _ = writeln!(
        svg,
        r##"<text x="10" y="22" font-size="15" font-weight="bold">{}</text><text x="10" y="40" font-size="11" fill="#555">{note}</text>"##,
        escape(title)
    );
    let bar_room = WIDTH - LABEL_W - 110.0;
    for (i, r) in rows.iter().enumerate() {
        let y = 50.0 + ROW_H * i as f64;
        let w = (value(r) / max * bar_room).max(1.0);
        let _ = writeln!(
            svg,
            r#"<text x="{lx}" y="{ty}" font-size="12" text-anchor="end">{label}</text><rect x="{LABEL_W}" y="{y}" width="{w:.1}" height="{bh}" fill="{color}"/><text x="{vx:.1}" y="{ty}" font-size="11">{v}</text>"#,
            lx = LABEL_W - 6.0,
            ty = y + ROW_H * 0.65,
            label = escape(&r.label()),
            bh = ROW_H - 6.0,
            color = color(r),
            vx = LABEL_W + w + 4.0,
            v = escape(&shown(value(r))),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// brood's rows blue, floors grey, peers orange.
fn color(r: &BenchResult) -> &'static str {
    match r.function.as_deref() {
        Some(f) if f.starts_with("floor") => "#9e9e9e",
        Some(f) if f.starts_with("peer") => "#ef8a17",
        _ => "#2f6db5",
    }
}

/// The scaling line charts, by file name: per phase, time per actor against N.
fn scaling_charts(results: &[BenchResult]) -> Vec<(String, String)> {
    // phase -> backend -> [(N, ns per actor)]
    let mut curves: BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.group == "scaling" && !r.stale) {
        let (Some(function), Some(n)) = (&r.function, r.value.as_deref()) else {
            continue;
        };
        let Some((backend, phase)) = function.split_once('-') else {
            continue;
        };
        let Ok(n) = n.parse::<f64>() else {
            continue;
        };
        if n <= 0.0 {
            continue;
        }
        curves
            .entry(phase.to_owned())
            .or_default()
            .entry(backend.to_owned())
            .or_default()
            .push((n, r.mean_ns / n));
    }
    curves
        .into_iter()
        .map(|(phase, lines)| (format!("scaling-{phase}"), lines_chart(&phase, lines)))
        .collect()
}

fn lines_chart(phase: &str, mut lines: BTreeMap<String, Vec<(f64, f64)>>) -> String {
    for points in lines.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let all = || lines.values().flatten();
    let (x0, x1) = bounds(all().map(|p| p.0));
    let (y0, y1) = bounds(all().map(|p| p.1));
    let (left, top, w, h) = (70.0, 50.0, WIDTH - 190.0, 300.0);
    let x = |v: f64| left + (v.log10() - x0) / (x1 - x0) * w;
    let y = |v: f64| top + h - (v.log10() - y0) / (y1 - y0) * h;
    let mut svg = header(top + h + 50.0);
    let _ = writeln!(
        svg,
        r##"<text x="10" y="22" font-size="15" font-weight="bold">scaling: {} per actor</text><text x="10" y="40" font-size="11" fill="#555">time per actor against the number of actors (both axes logarithmic; flat is the goal)</text>"##,
        escape(phase)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>"##
    );
    for decade in (x0.floor() as i32)..=(x1.ceil() as i32) {
        let v = 10f64.powi(decade);
        if v.log10() < x0 || v.log10() > x1 {
            continue;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{v}</text>"#,
            x(v),
            top + h + 16.0
        );
    }
    for (label, v) in [
        (fmt_time(10f64.powf(y0)), 10f64.powf(y0)),
        (fmt_time(10f64.powf(y1)), 10f64.powf(y1)),
    ] {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            left - 4.0,
            y(v) + 4.0,
            escape(&label)
        );
    }
    let palette = ["#2f6db5", "#c0392b", "#27ae60", "#8e44ad", "#ef8a17"];
    for (i, (backend, points)) in lines.iter().enumerate() {
        let color = palette[i % palette.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(n, t)| format!("{:.1},{:.1}", x(n), y(t)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for &(n, t) in points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{backend} N={n}: {}</title></circle>"#,
                x(n),
                y(t),
                escape(&fmt_time(t))
            );
        }
        let ly = top + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{ry}" width="12" height="12" fill="{color}"/><text x="{tx}" y="{ly}" font-size="12">{}</text>"#,
            escape(backend),
            lx = left + w + 14.0,
            ry = ly - 10.0,
            tx = left + w + 30.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The log10 range of `values` (positive ones), widened a little and never empty.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let logs: Vec<f64> = values.filter(|v| *v > 0.0).map(f64::log10).collect();
    let lo = logs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 0.5 {
        let mid = (lo + hi) / 2.0;
        return (mid - 0.25, mid + 0.25);
    }
    (lo - 0.05, hi + 0.05)
}

fn header(height: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>
"#
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::super::results::Throughput;
    use super::*;

    /// A result, with `n` elements per iteration if given.
    fn row(
        group: &str,
        function: &str,
        value: Option<&str>,
        mean_ns: f64,
        n: Option<f64>,
    ) -> BenchResult {
        let mut r = crate::bench::results::test_support::result(group, function, value, mean_ns);
        r.throughput = n.map(Throughput::Elements);
        r
    }

    #[test]
    fn a_bar_chart_per_group_and_a_line_chart_per_scaling_phase() {
        let results = vec![
            row("rpc", "brood-uds", None, 40_000.0, None),
            row("rpc", "floor-socketpair", None, 20_000.0, None),
            row("rpc", "peer-ipc-channel", None, 50_000.0, None),
            // Alone in its chart: nothing to compare, no chart.
            row("footprint", "x", None, 1.0, None),
            row("scaling", "subint-spawn", Some("10"), 1e6, Some(10.0)),
            row("scaling", "subint-spawn", Some("1000"), 1.3e8, Some(1000.0)),
            row("scaling", "fork-spawn", Some("10"), 1e7, Some(10.0)),
        ];
        let bars = bar_charts(&results);
        assert_eq!(bars.len(), 1);
        let (name, svg) = &bars[0];
        assert_eq!(name, "rpc");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("peer-ipc-channel") && svg.contains("#ef8a17"));
        assert!(svg.contains("40.00 µs"), "{svg}");
        let lines = scaling_charts(&results);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, "scaling-spawn");
        assert!(lines[0].1.contains("<polyline") && lines[0].1.contains("subint"));
        assert_eq!(
            lines[0].1.matches("<polyline").count(),
            2,
            "one line per backend"
        );
    }

    #[test]
    fn names_and_labels_are_made_safe() {
        assert_eq!(safe_name("stream-64B"), "stream-64B");
        assert_eq!(safe_name("a/b c"), "a_b_c");
        assert_eq!(escape("<a&b>"), "&lt;a&amp;b&gt;");
        assert_eq!(bounds(std::iter::empty()), (0.0, 1.0));
    }
}
