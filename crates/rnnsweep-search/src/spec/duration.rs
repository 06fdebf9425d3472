//! Durations as a spec writes them: seconds as a number, or `90s`, `20m`, `1.5h`, `2d`.

use std::time::Duration;

use serde_json::Value;

/// `None` for anything else, zero and negative durations included.
pub fn parse_duration(v: &Value) -> Option<Duration> {
    if let Some(x) = v.as_f64() {
        return (x > 0.0).then(|| Duration::from_secs_f64(x));
    }
    let s = v.as_str()?.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic())?);
    let n: f64 = num.trim().parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}
