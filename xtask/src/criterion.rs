//! Reading criterion's results: `<criterion dir>/**/new/{estimates,benchmark}.json`,
//! plus the footprint bench's flat report.
//!
//! Criterion nests one directory per `/` in a benchmark id, and sanitises the names, so
//! the tree is walked for `new/estimates.json` and each benchmark is identified by the
//! ids recorded in its `benchmark.json`, not by its path.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::bench::BENCHES;
use crate::json::{self, Value};

/// Work per iteration, as declared by the bench with criterion's `Throughput`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Throughput {
    /// Bytes per iteration (criterion's `Bytes`, `BytesDecimal`, and `Bits` / 8).
    Bytes(f64),
    /// Elements (messages) per iteration.
    Elements(f64),
}

/// One criterion measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    /// Criterion's group id (e.g. `rpc`).
    pub group: String,
    /// The function id within the group (e.g. `brood-uds`, `floor-socketpair`).
    pub function: Option<String>,
    /// The parameter, for `BenchmarkId::new(name, param)` (e.g. `64B`).
    pub value: Option<String>,
    /// Mean time per iteration, in nanoseconds.
    pub mean_ns: f64,
    /// The declared throughput, if any.
    pub throughput: Option<Throughput>,
    /// Whether the result predates this run (e.g. excluded by `--filter`).
    pub stale: bool,
}

impl BenchResult {
    /// Whether this is a floor: its function id starts with `floor`.
    pub fn is_floor(&self) -> bool {
        self.function
            .as_deref()
            .is_some_and(|f| f.starts_with("floor"))
    }

    /// The row label: function id and parameter.
    pub fn label(&self) -> String {
        match (&self.function, &self.value) {
            (Some(f), Some(v)) => format!("{f}/{v}"),
            (Some(f), None) => f.clone(),
            (None, Some(v)) => v.clone(),
            (None, None) => self.group.clone(),
        }
    }

    /// Elements per second, if the bench declared an element throughput.
    pub fn elements_per_sec(&self) -> Option<f64> {
        match self.throughput {
            Some(Throughput::Elements(n)) if self.mean_ns > 0.0 => Some(n * 1e9 / self.mean_ns),
            _ => None,
        }
    }

    /// Bytes per second, if the bench declared a byte throughput.
    pub fn bytes_per_sec(&self) -> Option<f64> {
        match self.throughput {
            Some(Throughput::Bytes(n)) if self.mean_ns > 0.0 => Some(n * 1e9 / self.mean_ns),
            _ => None,
        }
    }
}

/// `mean.point_estimate` (nanoseconds) from a criterion `estimates.json`.
///
/// # Errors
/// When the text is not JSON or has no finite, non-negative mean.
pub fn parse_estimates(text: &str) -> Result<f64, String> {
    let doc = json::parse(text).map_err(|e| e.to_string())?;
    let mean = doc
        .get("mean")
        .and_then(|m| m.get("point_estimate"))
        .and_then(Value::as_f64)
        .ok_or("no mean.point_estimate")?;
    if mean.is_finite() && mean >= 0.0 {
        Ok(mean)
    } else {
        Err(format!("mean.point_estimate is {mean}"))
    }
}

/// The identity and throughput of a criterion `benchmark.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchMeta {
    /// `group_id`.
    pub group: String,
    /// `function_id`.
    pub function: Option<String>,
    /// `value_str`.
    pub value: Option<String>,
    /// `throughput`.
    pub throughput: Option<Throughput>,
}

/// Read a criterion `benchmark.json`.
///
/// # Errors
/// When the text is not JSON or has no string `group_id`. An unknown throughput kind is
/// not an error: it reads as no throughput.
pub fn parse_benchmark(text: &str) -> Result<BenchMeta, String> {
    let doc = json::parse(text).map_err(|e| e.to_string())?;
    let group = doc
        .get("group_id")
        .and_then(Value::as_str)
        .ok_or("no group_id")?
        .to_owned();
    let opt_str = |key: &str| doc.get(key).and_then(Value::as_str).map(str::to_owned);
    let throughput = doc.get("throughput").and_then(|t| {
        let (kind, n) = t.as_object()?.first()?;
        let n = n.as_f64()?;
        match kind.as_str() {
            "Bytes" | "BytesDecimal" => Some(Throughput::Bytes(n)),
            "Bits" => Some(Throughput::Bytes(n / 8.0)),
            "Elements" => Some(Throughput::Elements(n)),
            _ => None,
        }
    });
    Ok(BenchMeta {
        group,
        function: opt_str("function_id"),
        value: opt_str("value_str"),
        throughput,
    })
}

/// Read a footprint report: a flat object of `"name": bytes`. Members that are not
/// numbers are ignored, so the bench may add notes such as `"unit": "bytes"`.
///
/// # Errors
/// When the text is not JSON or not an object.
pub fn parse_footprint(text: &str) -> Result<Vec<(String, f64)>, String> {
    let doc = json::parse(text).map_err(|e| e.to_string())?;
    let members = doc.as_object().ok_or("not a JSON object")?;
    Ok(members
        .iter()
        .filter_map(|(k, v)| v.as_f64().map(|n| (k.clone(), n)))
        .collect())
}

/// Every `…/new/estimates.json` under `criterion_dir`, with its `benchmark.json`.
/// Results older than `since` are marked stale. Unreadable results become warnings.
pub fn load_results(
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

/// Parse sizes such as `64B`, `1KiB`, `1MiB`, `4096` so parameters sort by magnitude.
fn size_key(value: &str) -> Option<f64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let number: f64 = value[..split].parse().ok()?;
    let scale = match value[split..].trim() {
        "" | "B" => 1.0,
        "k" | "K" | "KB" | "kB" => 1e3,
        "KiB" => 1024.0,
        "M" | "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "G" | "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * scale)
}

fn group_rank(group: &str) -> usize {
    BENCHES
        .iter()
        .position(|b| *b == group)
        .unwrap_or(BENCHES.len())
}

/// Sort for the report: groups in [`BENCHES`] order, then parameters by size, floors
/// first.
pub fn sort_results(results: &mut [BenchResult]) {
    results.sort_by(|a, b| {
        let value_key = |r: &BenchResult| {
            let v = r.value.as_deref();
            (v.is_some(), v.and_then(size_key))
        };
        group_rank(&a.group)
            .cmp(&group_rank(&b.group))
            .then_with(|| a.group.cmp(&b.group))
            .then_with(|| {
                let (ka, kb) = (value_key(a), value_key(b));
                ka.0.cmp(&kb.0).then_with(|| match (ka.1, kb.1) {
                    (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                })
            })
            .then_with(|| a.value.cmp(&b.value))
            .then_with(|| b.is_floor().cmp(&a.is_floor()))
            .then_with(|| a.function.cmp(&b.function))
    });
}

/// The floor a result is compared with: the fastest floor of the same group and
/// parameter.
pub fn floor_of<'a>(result: &BenchResult, all: &'a [BenchResult]) -> Option<&'a BenchResult> {
    all.iter()
        .filter(|f| f.group == result.group && f.value == result.value && f.is_floor())
        .min_by(|a, b| a.mean_ns.partial_cmp(&b.mean_ns).unwrap_or(Ordering::Equal))
}

/// The result of `group`/`function` with parameter `value`.
pub fn find<'a>(
    results: &'a [BenchResult],
    group: &str,
    function: &str,
    value: Option<&str>,
) -> Option<&'a BenchResult> {
    results.iter().find(|r| {
        r.group == group && r.function.as_deref() == Some(function) && r.value.as_deref() == value
    })
}

/// Results to test the report and the targets with.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A result without throughput.
    pub(crate) fn result(
        group: &str,
        function: &str,
        value: Option<&str>,
        mean_ns: f64,
    ) -> BenchResult {
        BenchResult {
            group: group.into(),
            function: Some(function.into()),
            value: value.map(Into::into),
            mean_ns,
            throughput: None,
            stale: false,
        }
    }

    /// One result or more per target, meeting all but the rpc one.
    pub(crate) fn sample() -> Vec<BenchResult> {
        let mut stream64 = result("stream", "brood-uds", Some("64B"), 2_000.0);
        stream64.throughput = Some(Throughput::Elements(1.0));
        let mut stream1m = result("stream", "brood-uds", Some("1MiB"), 1_000_000.0);
        stream1m.throughput = Some(Throughput::Bytes(1048576.0));
        let mut floor1m = result("stream", "floor-uds", Some("1MiB"), 800_000.0);
        floor1m.throughput = Some(Throughput::Bytes(1048576.0));
        vec![
            result("spawn", "brood-proc", None, 1_400_000.0),
            result("spawn", "floor-exec", None, 1_000_000.0),
            result("rpc", "brood-uds", None, 30_000.0),
            result("rpc", "floor-socketpair", None, 10_000.0),
            stream64,
            stream1m,
            floor1m,
        ]
    }
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

    #[test]
    fn sizes_sort_by_magnitude() {
        assert_eq!(size_key("1MiB"), Some(1048576.0));
        assert_eq!(size_key("64B"), Some(64.0));
        assert_eq!(size_key("4 KiB"), Some(4096.0));
        assert_eq!(size_key("fast"), None);
        assert_eq!(size_key(""), None);
    }
}
