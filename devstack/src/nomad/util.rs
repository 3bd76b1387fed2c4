//! Small helpers shared by the dev Nomad: Go-style durations (the wire format of
//! `?wait=` and of Consul check intervals), RFC 3339 timestamps without a date
//! library, and JSON accessors that never panic on client-supplied jobs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub(crate) use switchyard_jobspec::parse_go_duration;

/// Formats a duration the way Go clients send it to Consul (`1s`, `1500ms`).
pub(crate) fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// Nanoseconds since the Unix epoch (Nomad's `SubmitTime`, `CreateTime`).
pub(crate) fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp with nanoseconds (Nomad's `StartedAt`, `Timestamp`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let sod = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), after H. Hinnant's public algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        d.subsec_nanos()
    )
}

/// Duration stored as integer nanoseconds in a job; `default` when absent.
pub(crate) fn ns_field(v: &Value, key: &str, default: Duration) -> Duration {
    match v.get(key) {
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Duration::from_nanos)
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0)
                    .map(|f| Duration::from_nanos(f as u64))
            })
            .unwrap_or(default),
        _ => default,
    }
}

/// String field of a JSON object, or "".
pub(crate) fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Array field of a JSON object, or an empty slice (null and missing alike).
pub(crate) fn arr_field<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_round_trip() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn rfc3339_known_instant() {
        let t = UNIX_EPOCH + Duration::new(1_636_017_252, 49_956_000);
        assert_eq!(rfc3339(t), "2021-11-04T09:14:12.049956000Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
    }
}
