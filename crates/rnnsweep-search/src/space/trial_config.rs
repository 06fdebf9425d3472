//! From sampled parameter values to a `ModelConfig`.
//!
//! Parameter names are `ModelConfig` keys as dotted paths (`lstm_dropout`,
//! `optimizer.beta_1`, `dense.0.activation`), two short aliases (`optimizer` for
//! `optimizer.name`, `learning_rate` for `optimizer.learning_rate`), and structural parameters
//! that let the number of layers vary:
//!
//! - `lstm_layers` (count), `lstm_units` (units of every layer, or a list), `lstm_units.<i>`
//!   (layer i only; active only when there are more than i layers);
//! - `dense_layers` (count), `dense_units`, `dense_activation`, `dense_l2` (every dense layer),
//!   `dense.<i>.units|activation|l2` (layer i only; active only when there are more than i).
//!
//! Inactive parameters are dropped from the trial, as Optuna does with conditional spaces.

use std::collections::BTreeMap;

use rnnsweep_model::config::set_path;
use rnnsweep_model::config::ModelConfig;
use serde_json::{json, Value};

fn alias(name: &str) -> &str {
    match name {
        "optimizer" => "optimizer.name",
        "learning_rate" => "optimizer.learning_rate",
        other => other,
    }
}

/// `Some((kind, index))` for per-layer parameters: `lstm_units.2` → ("lstm", 2).
fn layer_of(name: &str) -> Option<(&'static str, usize)> {
    if let Some(rest) = name.strip_prefix("lstm_units.") {
        return rest.parse().ok().map(|i| ("lstm", i));
    }
    let rest = name.strip_prefix("dense.")?;
    let (index, _) = rest.split_once('.')?;
    index.parse().ok().map(|i| ("dense", i))
}

fn as_count(v: &Value, name: &str) -> Result<usize, String> {
    v.as_u64()
        .filter(|&n| n >= 1)
        .map(|n| n as usize)
        .ok_or_else(|| format!("`{name}` must be a whole number ≥ 1, got {v}"))
}

/// Layer counts implied by the fixed settings and the sampled values.
fn layer_counts(
    training: &Value,
    params: &BTreeMap<String, Value>,
) -> Result<(usize, usize), String> {
    let lstm = match params.get("lstm_layers") {
        Some(v) => as_count(v, "lstm_layers")?,
        None => match params.get("lstm_units") {
            Some(Value::Array(a)) => a.len(),
            _ => training["lstm_units"].as_array().map_or(1, Vec::len),
        },
    };
    let dense = match params.get("dense_layers") {
        // Zero dense layers is allowed: the LSTM features go straight to the output.
        Some(v) => v
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("`dense_layers` must be a whole number, got {v}"))?,
        None => training["dense"].as_array().map_or(0, Vec::len),
    };
    Ok((lstm, dense))
}

/// The parameters that apply to this point (per-layer parameters beyond the layer count drop).
pub fn active(
    training: &Value,
    params: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, String> {
    let (lstm, dense) = layer_counts(training, params)?;
    Ok(params
        .iter()
        .filter(|(name, _)| match layer_of(name) {
            Some(("lstm", i)) => i < lstm,
            Some((_, i)) => i < dense,
            None => true,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

/// Builds and validates the configuration for one point.
pub fn build_config(
    training: &Value,
    params: &BTreeMap<String, Value>,
) -> Result<ModelConfig, String> {
    let mut cfg = training.clone();
    let (lstm, dense) = layer_counts(training, params)?;

    // Resize the layer lists first, repeating the last layer's settings.
    let mut units: Vec<Value> = cfg["lstm_units"].as_array().cloned().unwrap_or_default();
    match params.get("lstm_units") {
        Some(Value::Array(a)) => units = a.clone(),
        Some(v) => units = vec![v.clone(); lstm],
        None => {}
    }
    let last = units.last().cloned().unwrap_or(json!(64));
    units.resize(lstm, last);
    cfg["lstm_units"] = Value::Array(units);

    let mut layers: Vec<Value> = cfg["dense"].as_array().cloned().unwrap_or_default();
    let template = layers
        .last()
        .cloned()
        .unwrap_or(json!({"units": 128, "activation": "relu", "l2": 0.0}));
    layers.resize(dense, template);
    for layer in &mut layers {
        for (param, field) in [
            ("dense_units", "units"),
            ("dense_activation", "activation"),
            ("dense_l2", "l2"),
        ] {
            if let Some(v) = params.get(param) {
                layer[field] = v.clone();
            }
        }
    }
    cfg["dense"] = Value::Array(layers);

    for (name, value) in active(training, params)? {
        match name.as_str() {
            "lstm_layers" | "lstm_units" | "dense_layers" | "dense_units" | "dense_activation"
            | "dense_l2" => {}
            _ => set_path(&mut cfg, alias(&name), value.clone())
                .map_err(|m| format!("`{name}`: {m}"))?,
        }
    }
    ModelConfig::from_value(cfg, "").map_err(|e| e.to_string().trim_start_matches(": ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rnnsweep_model::config::Activation;
    use rnnsweep_model::optim::OptimizerName;

    fn training() -> Value {
        serde_json::to_value(ModelConfig::default()).unwrap()
    }

    fn point(items: &[(&str, Value)]) -> BTreeMap<String, Value> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn layer_counts_resize_and_per_layer_values_apply() {
        let p = point(&[
            ("lstm_layers", json!(3)),
            ("lstm_units", json!(64)),
            ("lstm_units.2", json!(16)),
            ("dense_layers", json!(1)),
            ("dense_activation", json!("tanh")),
            ("dense.0.units", json!(32)),
            ("dense.1.units", json!(999)),
            ("optimizer", json!("rmsprop")),
            ("learning_rate", json!(0.01)),
        ]);
        let c = build_config(&training(), &p).unwrap();
        assert_eq!(c.lstm_units, vec![64, 64, 16]);
        assert_eq!(c.dense.len(), 1);
        assert_eq!(c.dense[0].units, 32);
        assert_eq!(c.dense[0].activation, Activation::Tanh);
        assert_eq!(c.dense[0].l2, 0.02, "the report's first layer keeps its L2");
        assert_eq!(c.optimizer.name, OptimizerName::Rmsprop);
        assert_eq!(c.optimizer.learning_rate, Some(0.01));
        let a = active(&training(), &p).unwrap();
        assert!(!a.contains_key("dense.1.units"), "layer 1 does not exist");
        assert!(a.contains_key("lstm_units.2"));
    }

    #[test]
    fn growing_the_dense_stack_repeats_the_last_layer() {
        let c = build_config(&training(), &point(&[("dense_layers", json!(3))])).unwrap();
        assert_eq!(
            c.dense.iter().map(|d| d.units).collect::<Vec<_>>(),
            vec![512, 128, 128]
        );
    }

    #[test]
    fn bad_values_are_reported() {
        let e =
            build_config(&training(), &point(&[("dense_activation", json!("relux"))])).unwrap_err();
        assert!(e.contains("unknown variant `relux`"), "{e}");
        let e = build_config(&training(), &point(&[("lstm_layers", json!(0))])).unwrap_err();
        assert!(
            e.contains("`lstm_layers` must be a whole number ≥ 1"),
            "{e}"
        );
    }
}
