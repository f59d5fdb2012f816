//! How the bench report writes numbers: times, rates and sizes.

/// A duration given in nanoseconds, in the largest unit that keeps it >= 1.
pub(super) fn fmt_time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Scale to an SI prefix: (value, prefix).
fn si(n: f64) -> (f64, &'static str) {
    if n >= 1e9 {
        (n / 1e9, "G")
    } else if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e3 {
        (n / 1e3, "k")
    } else {
        (n, "")
    }
}

/// A message rate, e.g. `512.3 k msgs/s`.
pub(super) fn fmt_msgs(per_sec: f64) -> String {
    match si(per_sec) {
        (n, "") => format!("{n:.1} msgs/s"),
        (n, prefix) => format!("{n:.2} {prefix} msgs/s"),
    }
}

/// A byte rate, in decimal units (GB/s = 10^9 bytes per second).
pub(super) fn fmt_bytes_rate(per_sec: f64) -> String {
    let (n, prefix) = si(per_sec);
    format!("{n:.2} {prefix}B/s")
}

/// A size in binary units.
pub(super) fn fmt_size(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
    } else if bytes >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
    } else if bytes >= 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_time(512.0), "512.0 ns");
        assert_eq!(fmt_time(1_234.0), "1.23 µs");
        assert_eq!(fmt_time(2_500_000.0), "2.50 ms");
        assert_eq!(fmt_time(3e9), "3.00 s");
        assert_eq!(fmt_size(4.0 * 1024.0 * 1024.0), "4.00 MiB");
        assert_eq!(fmt_msgs(12.0), "12.0 msgs/s");
        assert_eq!(fmt_msgs(500_000.0), "500.00 k msgs/s");
        assert_eq!(fmt_bytes_rate(2.5e9), "2.50 GB/s");
    }
}
