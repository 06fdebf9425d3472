//! Numbers and parameter values written for people: the leaderboard, the dry run, progress
//! lines and `best` all print them the same way.

use serde_json::Value;

/// A float for people to read: about four significant digits (`0.004913`, `123.5`,
/// `1.235e-7`). Files keep full precision.
pub fn sig4(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-4..=5).contains(&magnitude) {
        return format!("{x:.3e}");
    }
    let decimals = (3 - magnitude).max(0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A parameter value for people to read (floats at about four significant digits).
pub fn short_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(|| n.to_string(), sig4),
        other => other.to_string(),
    }
}

/// A spec's `run_cap` for people: `none` when it has none (W&B: run until stopped).
pub fn run_cap_text(run_cap: usize) -> String {
    match run_cap {
        usize::MAX => "none".into(),
        n => n.to_string(),
    }
}

/// A duration as a spec would write it: `90s`, `2m30s`, `1h5m`, `0.5s`.
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        return format!("{}s", sig4(secs));
    }
    let whole = d.as_secs();
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    match (h, m, s) {
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// An error and its causes as one line, each thing said once: a cause whose text its wrapper
/// already quotes is skipped, and a part repeated right after itself is dropped (`a: b: b`).
pub fn said_once<I: IntoIterator<Item = String>>(chain: I) -> String {
    let mut message = String::new();
    for part in chain {
        if part.is_empty() || message.contains(&part) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&part);
    }
    let mut parts: Vec<&str> = Vec::new();
    for p in message.split(": ") {
        if parts.last() != Some(&p) {
            parts.push(p);
        }
    }
    parts.join(": ")
}

/// [`said_once`] over a `std::error::Error` and its sources.
pub fn error_said_once(err: &dyn std::error::Error) -> String {
    said_once(std::iter::successors(Some(err), |e| e.source()).map(ToString::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn people_read_four_significant_digits() {
        assert_eq!(sig4(0.0049128401861577315), "0.004913");
        assert_eq!(sig4(123.456), "123.5");
        assert_eq!(sig4(0.1), "0.1");
        assert_eq!(sig4(2.0), "2");
        assert_eq!(sig4(1.23456e-7), "1.235e-7");
        assert_eq!(short_value(&json!(0.0049128401861577315)), "0.004913");
        assert_eq!(short_value(&json!(64)), "64");
        assert_eq!(short_value(&json!("adam")), "adam");
    }

    #[test]
    fn an_error_chain_says_each_thing_once() {
        let chain = |parts: &[&str]| said_once(parts.iter().map(|p| p.to_string()));
        assert_eq!(
            chain(&[
                "/r/t-6/checkpoint: No space left on device (os error 28)",
                "No space left on device (os error 28)",
                "No space left on device (os error 28)",
            ]),
            "/r/t-6/checkpoint: No space left on device (os error 28)"
        );
        assert_eq!(
            chain(&["cannot save: disk full: disk full", "disk full"]),
            "cannot save: disk full"
        );
        assert_eq!(
            chain(&["spec.yaml:3:1: bad", "other cause"]),
            "spec.yaml:3:1: bad: other cause"
        );
    }

    #[test]
    fn durations_read_as_a_spec_writes_them() {
        use std::time::Duration;
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(human_duration(Duration::from_secs(3900)), "1h5m");
    }
}
