//! The benchmark results as plain data: what one criterion measurement is, the bench
//! groups in report order, and the look-ups the report and the targets share.
//!
//! The bottom of the bench modules: it reads no file and renders nothing (that is
//! `criterion`, `report` and `targets`, above it).

use std::cmp::Ordering;

/// The bench targets of the `brood` package, run in this order (a missing one is
/// skipped); their criterion groups are reported in the same order.
pub(super) const BENCHES: &[&str] = &[
    "spawn",
    "spawn_subint",
    "rpc",
    "discovery",
    "restart",
    "stream",
    "shm",
    "shm_peers",
    "footprint",
    "parallel",
    "scaling",
];

/// The file the footprint bench writes into criterion's directory: a flat JSON object
/// of `"name": bytes` pairs (unique set sizes).
pub(super) const FOOTPRINT_FILE: &str = "footprint-uss.json";

/// Work per iteration, as declared by the bench with criterion's `Throughput`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Throughput {
    /// Bytes per iteration (criterion's `Bytes`, `BytesDecimal`, and `Bits` / 8).
    Bytes(f64),
    /// Elements (messages) per iteration.
    Elements(f64),
}

/// One criterion measurement.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BenchResult {
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
    pub(super) fn is_floor(&self) -> bool {
        self.function
            .as_deref()
            .is_some_and(|f| f.starts_with("floor"))
    }

    /// The row label: function id and parameter.
    pub(super) fn label(&self) -> String {
        match (&self.function, &self.value) {
            (Some(f), Some(v)) => format!("{f}/{v}"),
            (Some(f), None) => f.clone(),
            (None, Some(v)) => v.clone(),
            (None, None) => self.group.clone(),
        }
    }

    /// Elements per second, if the bench declared an element throughput.
    pub(super) fn elements_per_sec(&self) -> Option<f64> {
        match self.throughput {
            Some(Throughput::Elements(n)) if self.mean_ns > 0.0 => Some(n * 1e9 / self.mean_ns),
            _ => None,
        }
    }

    /// Bytes per second, if the bench declared a byte throughput.
    pub(super) fn bytes_per_sec(&self) -> Option<f64> {
        match self.throughput {
            Some(Throughput::Bytes(n)) if self.mean_ns > 0.0 => Some(n * 1e9 / self.mean_ns),
            _ => None,
        }
    }
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
pub(super) fn sort_results(results: &mut [BenchResult]) {
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
pub(super) fn floor_of<'a>(
    result: &BenchResult,
    all: &'a [BenchResult],
) -> Option<&'a BenchResult> {
    all.iter()
        .filter(|f| f.group == result.group && f.value == result.value && f.is_floor())
        .min_by(|a, b| a.mean_ns.partial_cmp(&b.mean_ns).unwrap_or(Ordering::Equal))
}

/// The result of `group`/`function` with parameter `value`.
pub(super) fn find<'a>(
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

    #[test]
    fn sizes_sort_by_magnitude() {
        assert_eq!(size_key("1MiB"), Some(1048576.0));
        assert_eq!(size_key("64B"), Some(64.0));
        assert_eq!(size_key("4 KiB"), Some(4096.0));
        assert_eq!(size_key("fast"), None);
        assert_eq!(size_key(""), None);
    }
}
