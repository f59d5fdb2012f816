//! Reading criterion's results: `<criterion dir>/**/new/{estimates,benchmark}.json`,
//! plus the footprint bench's flat report.
//!
//! Criterion nests one directory per `/` in a benchmark id, and sanitises the names, so
//! the tree is walked for `new/estimates.json` and each benchmark is identified by the
//! ids recorded in its `benchmark.json`, not by its path. Malformed files are reported as
//! errors, not panics: a half-written results file must not abort a report.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use super::results::{BenchResult, Throughput, sort_results};

/// The part of a criterion `estimates.json` read here.
#[derive(Debug, Deserialize)]
struct Estimates {
    mean: Estimate,
}

#[derive(Debug, Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// `mean.point_estimate` (nanoseconds) from a criterion `estimates.json`.
///
/// # Errors
/// When the text is not JSON or has no finite, non-negative mean.
pub(super) fn parse_estimates(text: &str) -> Result<f64, String> {
    let estimates: Estimates = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mean = estimates.mean.point_estimate;
    if mean.is_finite() && mean >= 0.0 {
        Ok(mean)
    } else {
        Err(format!("mean.point_estimate is {mean}"))
    }
}

/// The identity and throughput of a criterion `benchmark.json`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BenchMeta {
    /// `group_id`.
    pub group: String,
    /// `function_id`.
    pub function: Option<String>,
    /// `value_str`.
    pub value: Option<String>,
    /// `throughput`.
    pub throughput: Option<Throughput>,
}

/// The part of a criterion `benchmark.json` read here.
#[derive(Debug, Deserialize)]
struct BenchmarkFile {
    group_id: String,
    #[serde(default)]
    function_id: Option<String>,
    #[serde(default)]
    value_str: Option<String>,
    /// Criterion's `Throughput` enum, externally tagged: `{"Bytes": 1048576}`. Kept
    /// loose, so that a kind this reader does not know reads as no throughput.
    #[serde(default)]
    throughput: Option<serde_json::Value>,
}

/// Read a criterion `benchmark.json`.
///
/// # Errors
/// When the text is not JSON or has no string `group_id`. An unknown throughput kind is
/// not an error: it reads as no throughput.
pub(super) fn parse_benchmark(text: &str) -> Result<BenchMeta, String> {
    let file: BenchmarkFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let throughput = file.throughput.as_ref().and_then(|t| {
        let (kind, n) = t.as_object()?.iter().next()?;
        let n = n.as_f64()?;
        match kind.as_str() {
            "Bytes" | "BytesDecimal" => Some(Throughput::Bytes(n)),
            "Bits" => Some(Throughput::Bytes(n / 8.0)),
            "Elements" => Some(Throughput::Elements(n)),
            _ => None,
        }
    });
    Ok(BenchMeta {
        group: file.group_id,
        function: file.function_id,
        value: file.value_str,
        throughput,
    })
}

/// A JSON object's members in file order (serde_json's own map sorts them by key).
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Read a footprint report: a flat object of `"name": bytes`, in file order. Members
/// that are not numbers are ignored, so the bench may add notes such as
/// `"unit": "bytes"`.
///
/// # Errors
/// When the text is not JSON or not an object.
pub(super) fn parse_footprint(text: &str) -> Result<Vec<(String, f64)>, String> {
    let Members(members) = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(members
        .into_iter()
        .filter_map(|(k, v)| v.as_f64().map(|n| (k, n)))
        .collect())
}

/// Every `…/new/estimates.json` under `criterion_dir`, with its `benchmark.json`.
/// Results older than `since` are marked stale. Unreadable results become warnings.
pub(super) fn load_results(
    criterion_dir: &Path,
    since: Option<SystemTime>,
) -> (Vec<BenchResult>, Vec<String>) {
    let mut dirs = Vec::new();
    find_new_dirs(criterion_dir, 0, &mut dirs);
    let mut results = Vec::new();
    let mut warnings = Vec::new();
    for dir in dirs {
        match load_one(criterion_dir, &dir, since) {
            Ok(r) => results.push(r),
            Err(e) => warnings.push(format!("{}: {e}", dir.display())),
        }
    }
    sort_results(&mut results);
    (results, warnings)
}

fn find_new_dirs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    // Criterion nests one directory per `/` in a benchmark id; a few levels suffice, and
    // the bound keeps a stray deep tree from making the walk slow.
    if depth > 12 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs: Vec<PathBuf> = entries
        .flatten()
        // `file_type` does not follow symlinks, so a link cycle cannot trap the walk.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    subdirs.sort();
    for sub in subdirs {
        match sub.file_name().and_then(|n| n.to_str()) {
            Some("new") if sub.join("estimates.json").is_file() => out.push(sub),
            // HTML reports and the previous run's copies are not this run's results.
            Some("report" | "base" | "change" | "new") => {}
            _ => find_new_dirs(&sub, depth + 1, out),
        }
    }
}

fn load_one(root: &Path, new_dir: &Path, since: Option<SystemTime>) -> Result<BenchResult, String> {
    let estimates = new_dir.join("estimates.json");
    let text = std::fs::read_to_string(&estimates).map_err(|e| e.to_string())?;
    let mean_ns = parse_estimates(&text)?;
    let meta = match std::fs::read_to_string(new_dir.join("benchmark.json")) {
        Ok(text) => parse_benchmark(&text)?,
        Err(_) => meta_from_path(root, new_dir).ok_or("no benchmark.json")?,
    };
    let stale = since.is_some_and(|since| {
        std::fs::metadata(&estimates)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified < since)
    });
    Ok(BenchResult {
        group: meta.group,
        function: meta.function,
        value: meta.value,
        mean_ns,
        throughput: meta.throughput,
        stale,
    })
}

/// Without `benchmark.json`, the directory names are the best identity available
/// (criterion sanitises them, so they may differ slightly from the real ids).
fn meta_from_path(root: &Path, new_dir: &Path) -> Option<BenchMeta> {
    let rel = new_dir.parent()?.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let (group, rest) = parts.split_first()?;
    Some(BenchMeta {
        group: group.clone(),
        function: (!rest.is_empty()).then(|| rest.join("/")),
        value: None,
        throughput: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESTIMATES: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":48123.51,"upper_bound":49810.07},"point_estimate":48901.23,"standard_error":431.8},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":47950.0,"upper_bound":48630.5},"point_estimate":48300.0,"standard_error":170.2},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":612.3,"upper_bound":1302.7},"point_estimate":901.4,"standard_error":172.5},"slope":{"confidence_interval":{"confidence_level":0.95,"lower_bound":48011.2,"upper_bound":49120.9},"point_estimate":48540.6,"standard_error":283.1},"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":2310.4,"upper_bound":6011.8},"point_estimate":4322.9,"standard_error":961.0}}"#;

    const BENCHMARK_PARAM: &str = r#"{"group_id":"stream","function_id":"brood-uds","value_str":"64B","throughput":{"Elements":1000},"full_id":"stream/brood-uds/64B","directory_name":"stream/brood-uds/64B","title":"stream/brood-uds/64B"}"#;

    const BENCHMARK_PLAIN: &str = r#"{
  "group_id": "rpc",
  "function_id": "floor-socketpair",
  "value_str": null,
  "throughput": null,
  "full_id": "rpc/floor-socketpair",
  "directory_name": "rpc/floor-socketpair",
  "title": "rpc/floor-socketpair"
}"#;

    #[test]
    fn reads_estimates() {
        assert_eq!(parse_estimates(ESTIMATES), Ok(48901.23));
        assert!(parse_estimates(r#"{"median":{"point_estimate":1}}"#).is_err());
        assert!(parse_estimates(r#"{"mean":{"point_estimate":-1}}"#).is_err());
        assert!(parse_estimates("{\"mean\":").is_err());
    }

    #[test]
    fn reads_benchmark_ids() {
        let meta = parse_benchmark(BENCHMARK_PARAM).unwrap();
        assert_eq!(meta.group, "stream");
        assert_eq!(meta.function.as_deref(), Some("brood-uds"));
        assert_eq!(meta.value.as_deref(), Some("64B"));
        assert_eq!(meta.throughput, Some(Throughput::Elements(1000.0)));

        let meta = parse_benchmark(BENCHMARK_PLAIN).unwrap();
        assert_eq!(meta.function.as_deref(), Some("floor-socketpair"));
        assert_eq!(meta.value, None);
        assert_eq!(meta.throughput, None);

        let bytes = parse_benchmark(r#"{"group_id":"g","throughput":{"Bytes":1048576}}"#);
        assert_eq!(
            bytes.unwrap().throughput,
            Some(Throughput::Bytes(1048576.0))
        );
        let bits = parse_benchmark(r#"{"group_id":"g","throughput":{"Bits":64}}"#);
        assert_eq!(bits.unwrap().throughput, Some(Throughput::Bytes(8.0)));
        assert!(parse_benchmark(r#"{"function_id":"x"}"#).is_err());
    }

    #[test]
    fn reads_footprint() {
        let got = parse_footprint(
            r#"{"idle-child-proc": 3145728, "unit": "bytes", "idle-parent": 5.5e6}"#,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("idle-child-proc".to_owned(), 3145728.0),
                ("idle-parent".to_owned(), 5.5e6)
            ]
        );
        assert!(parse_footprint("[1]").is_err());
    }

    #[test]
    fn loads_a_criterion_tree() {
        let dir = std::env::temp_dir().join(format!("xtask-crit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |rel: &str, text: &str| {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("stream/brood-uds/64B/new/estimates.json", ESTIMATES);
        write("stream/brood-uds/64B/new/benchmark.json", BENCHMARK_PARAM);
        write("stream/brood-uds/64B/base/estimates.json", ESTIMATES);
        write("stream/report/index.html", "<html/>");
        write("rpc/floor-socketpair/new/estimates.json", ESTIMATES);
        write("rpc/floor-socketpair/new/benchmark.json", BENCHMARK_PLAIN);
        write("rpc/nameless/new/estimates.json", ESTIMATES);
        write("rpc/broken/new/estimates.json", "{\"mean\": ");
        let (results, warnings) = load_results(&dir, None);
        let _ = std::fs::remove_dir_all(&dir);
        let labels: Vec<String> = results.iter().map(BenchResult::label).collect();
        assert_eq!(labels, ["floor-socketpair", "nameless", "brood-uds/64B"]);
        assert_eq!(results[2].mean_ns, 48901.23);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("broken"));
    }
}
