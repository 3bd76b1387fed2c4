//! Go-style duration strings (`10s`, `1m30s`, `1.5s`, `250ms`).
//!
//! Consul speaks Go's `time.Duration` text format everywhere: the `wait`
//! query parameter, check `Interval`/`Timeout`/`TTL` and
//! `DeregisterCriticalServiceAfter`. The Go client sends `<n>ms` for `wait`
//! and strings like `"10s"` in bodies, and decoders also accept a bare
//! number of nanoseconds. `humantime` does not accept fractions or the `us`
//! unit and formats differently, so the grammar is implemented here.

use std::time::Duration;

/// Parses a Go duration string. Negative durations are rejected because no
/// Consul field gives them a meaning.
pub(crate) fn parse_go(input: &str) -> Option<Duration> {
    let s = input.trim();
    if s.is_empty() {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut total_nanos: f64 = 0.0;
    while pos < bytes.len() {
        let start = pos;
        while pos < bytes.len() && (bytes.get(pos)?.is_ascii_digit() || *bytes.get(pos)? == b'.') {
            pos += 1;
        }
        if start == pos {
            return None;
        }
        let number: f64 = s.get(start..pos)?.parse().ok()?;
        let unit_start = pos;
        while pos < bytes.len() && !(bytes.get(pos)?.is_ascii_digit() || *bytes.get(pos)? == b'.') {
            pos += 1;
        }
        let unit = s.get(unit_start..pos)?;
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total_nanos += number * scale;
    }
    // Go durations are i64 nanoseconds (about 292 years); larger values are
    // rejected rather than risking overflow in deadline arithmetic.
    if !total_nanos.is_finite() || total_nanos > i64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total_nanos.round() as u64))
}

/// Parses a duration given either as a Go duration string or as a JSON
/// number of nanoseconds (both forms appear in the wild).
pub(crate) fn parse_json(value: &serde_json::Value) -> Result<Option<Duration>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) if s.is_empty() => Ok(None),
        serde_json::Value::String(s) => parse_go(s)
            .map(Some)
            .ok_or_else(|| format!("invalid duration {s:?}")),
        serde_json::Value::Number(n) => n
            .as_u64()
            .filter(|n| i64::try_from(*n).is_ok())
            .map(|n| Some(Duration::from_nanos(n)))
            .ok_or_else(|| format!("invalid duration {n}")),
        other => Err(format!("invalid duration {other}")),
    }
}

/// Formats like Go's `Duration.String()`: `0s`, `1.5s`, `1m30s`, `250ms`.
pub(crate) fn format_go(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let rem = nanos % 3_600_000_000_000;
    let minutes = rem / 60_000_000_000;
    let rem = rem % 60_000_000_000;
    let seconds = trim_fraction(rem, 1_000_000_000);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        assert_eq!(parse_go("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go("0"), Some(Duration::ZERO));
        assert_eq!(parse_go("10"), None);
        assert_eq!(parse_go("abc"), None);
        assert_eq!(parse_go("-1s"), None);
        assert_eq!(parse_go(""), None);
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go(Duration::ZERO), "0s");
        assert_eq!(format_go(Duration::from_secs(10)), "10s");
        assert_eq!(format_go(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go(Duration::from_millis(250)), "250ms");
        assert_eq!(format_go(Duration::from_secs(5400)), "1h30m0s");
    }
}
