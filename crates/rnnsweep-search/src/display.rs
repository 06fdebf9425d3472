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
}
