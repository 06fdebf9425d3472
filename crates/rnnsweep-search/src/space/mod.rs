//! The search space ([`Space`]) and its distributions: sampling, grid enumeration, checking
//! queued values, and conversion to and from Optuna's stored form (a float per parameter;
//! categoricals by index) and distribution JSON.

use std::collections::{BTreeMap, HashSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::store::{StoredParam, TrialRecord};
use trial_config::active;

pub mod trial_config;

/// One parameter's distribution.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// A fixed value (W&B `value`), stored as a one-choice categorical.
    Constant(Value),
    /// W&B `values`.
    Categorical(Vec<Value>),
    IntUniform {
        min: i64,
        max: i64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    QUniform {
        min: f64,
        max: f64,
        q: f64,
    },
    LogUniform {
        min: f64,
        max: f64,
    },
    QLogUniform {
        min: f64,
        max: f64,
        q: f64,
    },
}

/// A sampled parameter value as the model sees it.
pub type ParamValue = Value;

impl Distribution {
    /// Number of distinct values, if finite.
    pub fn cardinality(&self) -> Option<u64> {
        match self {
            Distribution::Constant(_) => Some(1),
            Distribution::Categorical(c) => Some(c.len() as u64),
            Distribution::IntUniform { min, max } => Some((max - min + 1) as u64),
            Distribution::QUniform { min, max, q } => Some(((max - min) / q).floor() as u64 + 1),
            Distribution::QLogUniform { .. } => self.grid_values().map(|v| v.len() as u64),
            Distribution::Uniform { .. } | Distribution::LogUniform { .. } => None,
        }
    }

    /// Every value, for grid search; `None` for continuous distributions.
    pub fn grid_values(&self) -> Option<Vec<Value>> {
        match self {
            Distribution::Constant(v) => Some(vec![v.clone()]),
            Distribution::Categorical(c) => Some(c.clone()),
            Distribution::IntUniform { min, max } => {
                Some((*min..=*max).map(|i| json!(i)).collect())
            }
            Distribution::QUniform { min, max, q } => {
                let n = ((max - min) / q + 1e-9).floor() as i64;
                Some(
                    (0..=n)
                        .map(|k| number(round_to(min + k as f64 * q, *q)))
                        .collect(),
                )
            }
            Distribution::QLogUniform { min, max, q } => {
                // The multiples of q inside [min, max].
                let first = (min / q - 1e-9).ceil() as i64;
                let last = (max / q + 1e-9).floor() as i64;
                Some(
                    (first.max(1)..=last)
                        .map(|k| number(round_to(k as f64 * q, *q)))
                        .collect(),
                )
            }
            Distribution::Uniform { .. } | Distribution::LogUniform { .. } => None,
        }
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> Value {
        match self {
            Distribution::Constant(v) => v.clone(),
            Distribution::Categorical(c) => c[rng.random_range(0..c.len())].clone(),
            Distribution::IntUniform { min, max } => json!(rng.random_range(*min..=*max)),
            Distribution::Uniform { min, max } => json!(min + (max - min) * rng.random::<f64>()),
            Distribution::LogUniform { min, max } => json!(log_uniform(rng, *min, *max)),
            // Uniform over the multiples of q, so each is equally likely (W&B's round(x/q)·q
            // gives the end points half weight).
            Distribution::QUniform { .. } => {
                let values = self.grid_values().unwrap_or_default();
                values[rng.random_range(0..values.len())].clone()
            }
            Distribution::QLogUniform { min, max, q } => {
                let x = log_uniform(rng, *min, *max);
                let (lo, hi) = (first_multiple(*min, *q), (max / q + 1e-9).floor() * q);
                number(round_to(((x / q).round() * q).clamp(lo, hi), *q))
            }
        }
    }

    /// Optuna's `distribution_json` for this parameter.
    pub fn optuna_json(&self) -> String {
        let v = match self {
            Distribution::Constant(v) => {
                json!({"name": "CategoricalDistribution", "attributes": {"choices": [optuna_choice(v)]}})
            }
            Distribution::Categorical(c) => {
                json!({"name": "CategoricalDistribution", "attributes": {"choices": c.iter().map(optuna_choice).collect::<Vec<_>>()}})
            }
            Distribution::IntUniform { min, max } => {
                json!({"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": min, "high": max}})
            }
            Distribution::Uniform { min, max } => {
                json!({"name": "FloatDistribution", "attributes": {"step": null, "low": min, "high": max, "log": false}})
            }
            Distribution::QUniform { min, max, q } => {
                // Optuna requires high − low to be a multiple of the step.
                let high = round_to(min + ((max - min) / q + 1e-9).floor() * q, *q);
                json!({"name": "FloatDistribution", "attributes": {"step": q, "low": min, "high": high, "log": false}})
            }
            Distribution::LogUniform { min, max } => {
                json!({"name": "FloatDistribution", "attributes": {"step": null, "low": min, "high": max, "log": true}})
            }
            Distribution::QLogUniform { min, max, q } => {
                // Optuna has no quantized log float; integer steps of 1 map to a log int.
                if *q == 1.0 && min.fract() == 0.0 && max.fract() == 0.0 {
                    json!({"name": "IntDistribution", "attributes": {"log": true, "step": 1, "low": *min as i64, "high": *max as i64}})
                } else {
                    json!({"name": "FloatDistribution", "attributes": {"step": null, "low": min, "high": max, "log": true}})
                }
            }
        };
        v.to_string()
    }

    /// The value as this distribution holds it, if `value` lies in it: a categorical's choice
    /// (also given as Optuna's JSON text of a list), a whole number for an int range, a
    /// multiple of q for a quantized one.
    pub fn canonical(&self, value: &Value) -> Option<Value> {
        let same = |a: &Value, b: &Value| {
            a == b
                || matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
                // Optuna holds a list choice as its JSON text, however it is spaced.
                || matches!((a, b), (Value::Array(_) | Value::Object(_), Value::String(s))
                    if serde_json::from_str::<Value>(s).is_ok_and(|parsed| &parsed == a))
        };
        let inside = |x: f64, min: f64, max: f64| {
            let tol = 1e-9 * (max - min).abs().max(1.0);
            x >= min - tol && x <= max + tol
        };
        let on_step = |x: f64, origin: f64, q: f64| {
            let k = ((x - origin) / q).round();
            (x - origin - k * q).abs() <= 1e-9 * q.max(1.0)
        };
        match self {
            Distribution::Constant(c) => same(c, value).then(|| c.clone()),
            Distribution::Categorical(c) => c.iter().find(|x| same(x, value)).cloned(),
            Distribution::IntUniform { min, max } => {
                let x = value.as_f64()?;
                (x.fract() == 0.0 && inside(x, *min as f64, *max as f64)).then(|| json!(x as i64))
            }
            Distribution::Uniform { min, max } | Distribution::LogUniform { min, max } => {
                let x = value.as_f64()?;
                inside(x, *min, *max).then(|| number(x))
            }
            Distribution::QUniform { min, max, q } => {
                let x = value.as_f64()?;
                (inside(x, *min, *max) && on_step(x, *min, *q)).then(|| number(round_to(x, *q)))
            }
            Distribution::QLogUniform { min, max, q } => {
                let x = value.as_f64()?;
                (inside(x, *min, *max) && on_step(x, 0.0, *q)).then(|| number(round_to(x, *q)))
            }
        }
    }

    /// How the distribution reads in messages: `one of [adam, sgd]`, `a whole number in [1, 4]`.
    pub fn describe(&self) -> String {
        match self {
            Distribution::Constant(v) => format!("the constant {v}"),
            Distribution::Categorical(c) => format!(
                "one of [{}]",
                c.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Distribution::IntUniform { min, max } => format!("a whole number in [{min}, {max}]"),
            Distribution::Uniform { min, max } => format!("a number in [{min}, {max}]"),
            Distribution::LogUniform { min, max } => {
                format!("a number in [{min}, {max}] (log scale)")
            }
            Distribution::QUniform { min, max, q } => {
                format!("a multiple of {q} from {min} in [{min}, {max}]")
            }
            Distribution::QLogUniform { min, max, q } => {
                format!("a multiple of {q} in [{min}, {max}] (log scale)")
            }
        }
    }

    /// The float Optuna stores in `trial_params.param_value`.
    pub fn to_internal(&self, value: &Value) -> Option<f64> {
        match self {
            Distribution::Constant(_) => Some(0.0),
            Distribution::Categorical(c) => c.iter().position(|x| x == value).map(|i| i as f64),
            _ => value.as_f64(),
        }
    }
}

fn log_uniform(rng: &mut ChaCha8Rng, min: f64, max: f64) -> f64 {
    (min.ln() + (max.ln() - min.ln()) * rng.random::<f64>()).exp()
}

fn first_multiple(min: f64, q: f64) -> f64 {
    ((min / q - 1e-9).ceil()).max(1.0) * q
}

/// Removes float noise from a multiple of q (0.1·3 → 0.3).
fn round_to(x: f64, q: f64) -> f64 {
    let decimals = if q.fract() == 0.0 {
        0
    } else {
        (-q.log10().floor()) as i32 + 6
    };
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Integral floats become JSON integers so `units: 64.0` is `64`.
pub(crate) fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Optuna's categorical choices must be None, bool, int, float or str: lists and maps are
/// stored as their JSON text.
fn optuna_choice(v: &Value) -> Value {
    match v {
        Value::Array(_) | Value::Object(_) => Value::String(v.to_string()),
        other => other.clone(),
    }
}

// The search space as a whole: named distributions plus the fixed settings that decide which
// per-layer parameters are active.

/// Grids larger than this are refused (use random search).
pub const MAX_GRID_POINTS: usize = 1_000_000;

/// The search space: named distributions plus the fixed settings that decide which
/// per-layer parameters are active.
#[derive(Debug, Clone)]
pub struct Space {
    pub parameters: Vec<(String, Distribution)>,
    pub training: Value,
}

pub type Point = BTreeMap<String, Value>;

impl Space {
    /// The point with inactive (conditional) parameters removed.
    pub fn active(&self, point: &Point) -> Point {
        active(&self.training, point).unwrap_or_else(|_| point.clone())
    }

    pub fn to_stored(&self, point: &Point) -> BTreeMap<String, StoredParam> {
        self.parameters
            .iter()
            .filter_map(|(name, d)| {
                let v = point.get(name)?;
                Some((
                    name.clone(),
                    StoredParam {
                        internal: d.to_internal(v)?,
                        distribution_json: d.optuna_json(),
                    },
                ))
            })
            .collect()
    }

    /// The user's values of a stored trial, as this space holds them: each decoded by its
    /// stored distribution (the one decoder, [`StoredParam::value`]), then taken into the
    /// space (a list choice back from Optuna's JSON text, `64.0` as `64`). Parameters not in
    /// this space, or whose value it does not contain, are skipped.
    pub fn decode(&self, stored: &BTreeMap<String, StoredParam>) -> Point {
        self.parameters
            .iter()
            .filter_map(|(name, d)| Some((name.clone(), d.canonical(&stored.get(name)?.value())?)))
            .collect()
    }

    /// The stored parameters of a queued trial from the values it was given (Optuna's
    /// `fixed_params`, `rnnsweep enqueue`, a re-queue): every active parameter must be given and
    /// lie in its distribution; constants may be left out. The error names the parameter.
    pub fn resolve_fixed(&self, fixed: &Value) -> Result<BTreeMap<String, StoredParam>, String> {
        let Some(given) = fixed.as_object() else {
            return Err(format!(
                "the queued values are not a mapping of parameter names: {fixed}"
            ));
        };
        for name in given.keys() {
            if !self.parameters.iter().any(|(n, _)| n == name) {
                return Err(format!(
                    "parameter `{name}` is not in the study's search space (which has: {})",
                    self.parameters
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let mut point = Point::new();
        for (name, d) in &self.parameters {
            let value = match (given.get(name), d) {
                (Some(v), _) => d.canonical(v).ok_or_else(|| {
                    format!(
                        "parameter `{name}` = {v} is outside the search space: it must be {}",
                        d.describe()
                    )
                })?,
                (None, Distribution::Constant(c)) => c.clone(),
                // Whether a missing value matters depends on the layer counts: checked below.
                (None, _) => Value::Null,
            };
            point.insert(name.clone(), value);
        }
        let placeholders: Point = point
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if v.is_null() {
                        Value::from(1)
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        let active =
            active(&self.training, &placeholders).map_err(|m| format!("queued values: {m}"))?;
        if let Some(name) = active.keys().find(|k| point[*k].is_null()) {
            return Err(format!("parameter `{name}` has no queued value"));
        }
        let resolved: Point = point
            .into_iter()
            .filter(|(k, _)| active.contains_key(k))
            .collect();
        Ok(self.to_stored(&resolved))
    }

    pub(crate) fn key(point: &Point) -> String {
        serde_json::to_string(point).unwrap_or_default()
    }

    pub(crate) fn seen(&self, trials: &[TrialRecord]) -> HashSet<String> {
        trials
            .iter()
            .map(|t| Self::key(&self.active(&self.decode(&t.params))))
            .collect()
    }

    /// Every distinct active point, or `None` when a parameter is continuous or the product
    /// is larger than [`MAX_GRID_POINTS`].
    pub fn grid(&self) -> Option<Vec<Point>> {
        let axes: Vec<(String, Vec<Value>)> = self
            .parameters
            .iter()
            .map(|(n, d)| Some((n.clone(), d.grid_values()?)))
            .collect::<Option<_>>()?;
        let total = axes
            .iter()
            .try_fold(1usize, |acc, (_, v)| acc.checked_mul(v.len()))?;
        if total > MAX_GRID_POINTS {
            return None;
        }
        let mut points = Vec::new();
        let mut seen = HashSet::new();
        for i in 0..total {
            let mut rest = i;
            let mut p = Point::new();
            for (name, values) in axes.iter().rev() {
                p.insert(name.clone(), values[rest % values.len()].clone());
                rest /= values.len();
            }
            let a = self.active(&p);
            if seen.insert(Self::key(&a)) {
                points.push(a);
            }
        }
        Some(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grid_values_of_quantized_distributions() {
        let q = Distribution::QUniform {
            min: 0.1,
            max: 0.5,
            q: 0.1,
        };
        assert_eq!(
            q.grid_values().unwrap(),
            vec![json!(0.1), json!(0.2), json!(0.3), json!(0.4), json!(0.5)]
        );
        let ql = Distribution::QLogUniform {
            min: 30.0,
            max: 130.0,
            q: 32.0,
        };
        assert_eq!(
            ql.grid_values().unwrap(),
            vec![json!(32), json!(64), json!(96), json!(128)]
        );
        assert_eq!(
            Distribution::IntUniform { min: 1, max: 3 }.cardinality(),
            Some(3)
        );
        assert_eq!(
            Distribution::Uniform { min: 0.0, max: 1.0 }.grid_values(),
            None
        );
    }

    #[test]
    fn samples_stay_in_range_and_on_the_grid() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let dists = [
            Distribution::IntUniform { min: 2, max: 5 },
            Distribution::Uniform {
                min: -1.0,
                max: 1.0,
            },
            Distribution::LogUniform {
                min: 1e-4,
                max: 1e-1,
            },
            Distribution::QUniform {
                min: 0.0,
                max: 1.0,
                q: 0.25,
            },
            Distribution::QLogUniform {
                min: 16.0,
                max: 512.0,
                q: 16.0,
            },
        ];
        for _ in 0..2000 {
            let v: Vec<f64> = dists
                .iter()
                .map(|d| d.sample(&mut rng).as_f64().unwrap())
                .collect();
            assert!((2.0..=5.0).contains(&v[0]) && v[0].fract() == 0.0);
            assert!((-1.0..1.0).contains(&v[1]));
            assert!((1e-4..=1e-1).contains(&v[2]));
            assert!([0.0, 0.25, 0.5, 0.75, 1.0].contains(&v[3]), "{}", v[3]);
            assert!(
                (16.0..=512.0).contains(&v[4]) && v[4] % 16.0 == 0.0,
                "{}",
                v[4]
            );
        }
    }

    #[test]
    fn log_uniform_is_uniform_in_log_space() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let d = Distribution::LogUniform {
            min: 1e-4,
            max: 1.0,
        };
        let below = (0..10_000)
            .filter(|_| d.sample(&mut rng).as_f64().unwrap() < 1e-2)
            .count();
        assert!((4700..5300).contains(&below), "{below}");
    }

    #[test]
    fn optuna_storage_form_round_trips() {
        let c = Distribution::Categorical(vec![json!("adam"), json!("sgd"), json!([64, 64])]);
        assert_eq!(c.to_internal(&json!("sgd")), Some(1.0));
        let stored = StoredParam {
            internal: 2.0,
            distribution_json: c.optuna_json(),
        };
        assert_eq!(
            stored.value(),
            json!("[64,64]"),
            "Optuna's form of a list choice"
        );
        assert_eq!(c.canonical(&stored.value()), Some(json!([64, 64])));
        assert_eq!(
            c.optuna_json(),
            r#"{"attributes":{"choices":["adam","sgd","[64,64]"]},"name":"CategoricalDistribution"}"#
        );
        let i = Distribution::QLogUniform {
            min: 32.0,
            max: 512.0,
            q: 1.0,
        };
        assert!(i.optuna_json().contains(r#""name":"IntDistribution""#));
        assert!(i.optuna_json().contains(r#""log":true"#));
        let q = Distribution::QUniform {
            min: 0.0,
            max: 1.0,
            q: 0.3,
        };
        assert!(
            q.optuna_json().contains(r#""high":0.9"#),
            "{}",
            q.optuna_json()
        );
    }
}
