//! The sweep spec: YAML whose keys follow W&B sweeps where the meaning is the same, parsed into
//! raw serde types, then validated into a typed [`Spec`]. Every error names file:line:column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rnnsweep_model::config::set_path;
use rnnsweep_model::data::Columns;
use rnnsweep_model::metrics::{direction_of, Direction, METRIC_NAMES};
use rnnsweep_model::ModelConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pruner::EarlyTerminate;
use crate::scheduler::Resources;
use crate::space::Distribution;
use crate::synthetic::Function;
use crate::tpe::TpeSettings;

#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct SpecError {
    /// `file:line:column`, or the file alone when no position is known.
    pub at: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Grid,
    Random,
    Tpe,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    storage: Option<String>,
    #[serde(default)]
    data: Option<RawData>,
    method: Method,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    metric: Option<RawMetric>,
    run_cap: usize,
    #[serde(default)]
    max_duration: Option<Value>,
    #[serde(default)]
    max_failures: Option<usize>,
    #[serde(default)]
    heartbeat_grace: Option<Value>,
    #[serde(default)]
    training: Option<Value>,
    #[serde(default)]
    parameters: BTreeMap<String, RawParam>,
    #[serde(default)]
    trial: Option<RawTrial>,
    #[serde(default)]
    resources: Option<Resources>,
    #[serde(default)]
    tpe: Option<TpeSettings>,
    #[serde(default)]
    early_terminate: Option<EarlyTerminate>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    train: String,
    #[serde(default)]
    columns: Columns,
    #[serde(default)]
    validation_split: Option<f64>,
    #[serde(default)]
    max_words: Option<usize>,
    #[serde(default)]
    seed: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    name: String,
    #[serde(default)]
    goal: Option<Direction>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    values: Option<Vec<Value>>,
    #[serde(default)]
    distribution: Option<DistributionName>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    q: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum DistributionName {
    IntUniform,
    Uniform,
    QUniform,
    LogUniformValues,
    QLogUniformValues,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawTrial {
    /// A user's training command speaking the worker protocol instead of the built-in BiLSTM;
    /// `{params_json}`, `{trial_file}`, `{number}` and `{device}` in it are replaced.
    #[serde(default)]
    command: Option<Vec<String>>,
    /// `function`: a synthetic objective (see [`FunctionTrial`]).
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<Function>,
    #[serde(default)]
    epochs: Option<usize>,
    #[serde(default)]
    noise: Option<f64>,
}

/// A synthetic trial: parameters `x0 … x{d-1}`, metric `value` (minimised), a learning curve
/// over `epochs` with Gaussian `noise`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionTrial {
    pub function: Function,
    pub epochs: usize,
    pub noise: f64,
}

/// A validated spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub storage: PathBuf,
    pub train_file: PathBuf,
    pub columns: Columns,
    pub method: Method,
    pub seed: u64,
    pub metric: String,
    pub direction: Direction,
    pub run_cap: usize,
    pub max_duration: Option<Duration>,
    pub max_failures: usize,
    pub heartbeat_grace: Duration,
    /// Fixed model settings (already merged onto the defaults).
    pub training: Value,
    /// Searched parameters, in a fixed (sorted) order.
    pub parameters: Vec<(String, Distribution)>,
    pub command: Option<Vec<String>>,
    /// A synthetic objective instead of a model (`trial: {kind: function, …}`).
    pub function: Option<FunctionTrial>,
    pub tpe: TpeSettings,
    pub early_terminate: Option<EarlyTerminate>,
    pub resources: Resources,
    /// Warnings found while validating (e.g. more threads than cores).
    pub warnings: Vec<String>,
    /// The spec file's text, kept with the study.
    pub source: String,
    /// Where the spec was read from (relative paths in it are relative to its folder).
    pub path: PathBuf,
}

fn parse_duration(v: &Value) -> Option<Duration> {
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

/// Finds the line and column of a key path in block-style YAML (best effort; flow-style
/// mappings are searched within their parent's line).
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    let mut parent_indent: Option<usize> = None;
    let mut found: Option<(usize, usize)> = None;
    for key in path {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(p) = parent_indent {
                if i > start && indent <= p {
                    break;
                }
            }
            let bare = trimmed.trim_start_matches("- ");
            if bare.starts_with(&format!("{key}:")) || bare.starts_with(&format!("\"{key}\":")) {
                hit = Some((i, indent + (trimmed.len() - bare.len())));
                break;
            }
            // Flow style on the parent's line: `lr: {min: 1, max: 0}`.
            if i == start && found.is_some() {
                if let Some(col) = line.find(&format!("{key}:")) {
                    hit = Some((i, col));
                    break;
                }
            }
        }
        let (line, col) = match hit {
            Some(h) => h,
            None => return found.map(|(l, c)| (l + 1, c + 1)),
        };
        found = Some((line, col));
        parent_indent = Some(col);
        start = line;
        if lines[line].trim_end().ends_with(':') {
            start = line + 1;
        }
    }
    found.map(|(l, c)| (l + 1, c + 1))
}

impl Spec {
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            at: path.display().to_string(),
            message: format!("cannot read the spec: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses spec text; `path` places relative files and names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SpecError> {
        let file = path.display().to_string();
        let raw: RawSpec = serde_yaml::from_str(text).map_err(|e| SpecError {
            at: match e.location() {
                Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
                None => file.clone(),
            },
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_string(),
        })?;
        let err = |key_path: &[&str], message: String| SpecError {
            at: match locate(text, key_path) {
                Some((l, c)) => format!("{file}:{l}:{c}"),
                None => file.clone(),
            },
            message: format!("{}: {message}", key_path.join(".")),
        };

        if raw.name.trim().is_empty() || raw.name.contains('/') {
            return Err(err(
                &["name"],
                "must be a non-empty name without `/`".into(),
            ));
        }
        if raw.run_cap == 0 {
            return Err(err(&["run_cap"], "must be at least 1".into()));
        }
        let function = match &raw.trial {
            Some(t) if t.kind.as_deref() == Some("function") => {
                if t.command.is_some() {
                    return Err(err(
                        &["trial", "command"],
                        "a function trial has no command".into(),
                    ));
                }
                let function = t.name.ok_or_else(|| {
                    err(
                        &["trial"],
                        "needs `name`: branin, hartmann6 or sphere".into(),
                    )
                })?;
                Some(FunctionTrial {
                    function,
                    epochs: t.epochs.unwrap_or(10).max(1),
                    noise: t.noise.unwrap_or(0.0).max(0.0),
                })
            }
            Some(t) => {
                if let Some(k) = &t.kind {
                    return Err(err(
                        &["trial", "kind"],
                        format!("`{k}` is not a trial kind (function, or give `command`)"),
                    ));
                }
                if t.command.as_ref().is_none_or(Vec::is_empty) {
                    return Err(err(
                        &["trial"],
                        "needs `command: [program, args…]` or `kind: function`".into(),
                    ));
                }
                None
            }
            None => None,
        };
        let (metric, direction) = match (&raw.metric, &function) {
            (None, Some(_)) => ("value".to_string(), Direction::Minimize),
            (Some(m), Some(_)) => {
                if m.name != "value" {
                    return Err(err(
                        &["metric", "name"],
                        format!("a function trial reports `value`, not `{}`", m.name),
                    ));
                }
                ("value".to_string(), m.goal.unwrap_or(Direction::Minimize))
            }
            (None, None) => ("val_f1".to_string(), Direction::Maximize),
            (Some(m), None) => {
                let natural = direction_of(&m.name).ok_or_else(|| {
                    err(
                        &["metric", "name"],
                        format!(
                            "`{}` is not a metric the trainer reports (one of: {})",
                            m.name,
                            METRIC_NAMES.join(", ")
                        ),
                    )
                })?;
                (m.name.clone(), m.goal.unwrap_or(natural))
            }
        };
        let max_duration = match &raw.max_duration {
            None => None,
            Some(v) => Some(parse_duration(v).ok_or_else(|| {
                err(
                    &["max_duration"],
                    format!("{v} is not a duration such as 90s, 30m or 2h"),
                )
            })?),
        };
        let heartbeat_grace = match &raw.heartbeat_grace {
            None => Duration::from_secs(60),
            Some(v) => parse_duration(v).ok_or_else(|| {
                err(
                    &["heartbeat_grace"],
                    format!("{v} is not a duration such as 30s"),
                )
            })?,
        };

        let base_dir = path.parent().unwrap_or(Path::new("."));
        let data = match (&raw.data, &function) {
            (Some(d), _) => d.clone(),
            (None, Some(_)) => RawData {
                train: String::new(),
                columns: Columns::default(),
                validation_split: None,
                max_words: None,
                seed: None,
            },
            (None, None) => {
                return Err(err(
                    &[],
                    "missing field `data` (data: {train: path/to/train.csv})".into(),
                ))
            }
        };
        let train_file = base_dir.join(&data.train);

        // Fixed settings: defaults, then `training`, then the `data` section's model keys.
        let mut training = serde_json::to_value(ModelConfig::default())
            .map_err(|e| err(&["training"], e.to_string()))?;
        if let Some(t) = &raw.training {
            let Value::Object(map) = t else {
                return Err(err(
                    &["training"],
                    "must be a mapping of model settings".into(),
                ));
            };
            for (k, v) in map {
                set_path(&mut training, k, v.clone()).map_err(|m| err(&["training", k], m))?;
            }
        }
        for (k, v) in [
            ("validation_split", data.validation_split.map(Value::from)),
            ("max_words", data.max_words.map(Value::from)),
            ("seed", data.seed.map(Value::from)),
        ] {
            if let Some(v) = v {
                set_path(&mut training, k, v).map_err(|m| err(&["data", k], m))?;
            }
        }
        ModelConfig::from_value(training.clone(), "training").map_err(|e| match e {
            rnnsweep_model::ModelError::Config { at, message } => {
                // Point at the offending key: a field named in the message, else the field
                // the validation named.
                let unknown = message
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                    .map(str::to_string);
                let key = unknown.unwrap_or_else(|| {
                    at.trim_start_matches("training")
                        .trim_start_matches(": ")
                        .to_string()
                });
                let mut path: Vec<&str> = vec!["training"];
                path.extend(key.split('.').filter(|s| !s.is_empty()));
                let mut e = err(&path, message);
                e.message = format!(
                    "training: {}",
                    e.message
                        .split_once(": ")
                        .map_or(e.message.as_str(), |(_, m)| m)
                );
                e
            }
            other => err(&["training"], other.to_string()),
        })?;

        let mut parameters = Vec::new();
        for (name, p) in &raw.parameters {
            let d = to_distribution(name, p).map_err(|(field, m)| {
                let mut path = vec!["parameters", name.as_str()];
                if let Some(f) = field {
                    path.push(f);
                }
                err(&path, m)
            })?;
            if raw.method == Method::Grid && d.grid_values().is_none() {
                return Err(err(
                    &["parameters", name],
                    "grid search needs `values`, `value` or a quantized distribution (int_uniform, q_uniform, q_log_uniform_values)".into(),
                ));
            }
            parameters.push((name.clone(), d));
        }
        // Every value a parameter can take must make a valid model configuration (a user's
        // own training command defines its own parameters).
        let probe_model = raw.trial.is_none();
        if let Some(f) = &function {
            let names: Vec<&str> = parameters.iter().map(|(n, _)| n.as_str()).collect();
            let wanted: Vec<String> = (0..f.function.dims().unwrap_or(names.len().max(1)))
                .map(|i| format!("x{i}"))
                .collect();
            if names.iter().any(|n| !wanted.iter().any(|w| w == n))
                || (f.function.dims().is_some() && names.len() != wanted.len())
            {
                return Err(err(
                    &["parameters"],
                    format!("{:?} takes parameters {}", f.function, wanted.join(", "))
                        .to_lowercase(),
                ));
            }
        }
        for (name, d) in parameters.iter().filter(|_| probe_model) {
            let probes = match d {
                Distribution::Uniform { min, max } | Distribution::LogUniform { min, max } => {
                    vec![Value::from(*min), Value::from(*max)]
                }
                other => other.grid_values().unwrap_or_default(),
            };
            for probe in probes {
                let single = BTreeMap::from([(name.clone(), probe.clone())]);
                crate::assemble::build_config(&training, &single)
                    .map_err(|m| err(&["parameters", name], format!("value {probe}: {m}")))?;
            }
        }

        let resources = raw.resources.clone().unwrap_or_default();
        let warnings = resources.validate().map_err(|m| err(&["resources"], m))?;
        let mut early_terminate = raw.early_terminate.clone();
        if let Some(e) = &mut early_terminate {
            e.validate().map_err(|m| err(&["early_terminate"], m))?;
            if let crate::pruner::EarlyTerminate::Hyperband {
                max_iter: max_iter @ None,
                ..
            } = e
            {
                let epochs = function
                    .as_ref()
                    .map(|f| f.epochs as i64)
                    .or_else(|| training["epochs"].as_i64());
                *max_iter = epochs;
            }
        }

        Ok(Spec {
            resources,
            warnings,
            storage: raw
                .storage
                .as_deref()
                .map(|s| {
                    if crate::store::is_postgres(s) {
                        PathBuf::from(s)
                    } else {
                        base_dir.join(s)
                    }
                })
                .unwrap_or_else(|| PathBuf::from("results").join(format!("{}.db", raw.name))),
            name: raw.name,
            train_file,
            columns: data.columns,
            method: raw.method,
            seed: raw.seed,
            metric,
            direction,
            run_cap: raw.run_cap,
            max_duration,
            max_failures: raw.max_failures.unwrap_or(raw.run_cap.max(3)),
            heartbeat_grace,
            training,
            parameters,
            command: raw.trial.and_then(|t| t.command),
            function,
            tpe: raw.tpe.unwrap_or_default(),
            early_terminate,
            source: text.to_string(),
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        })
    }

    /// A stable description of the search space, to refuse silent changes on resume.
    pub fn space_fingerprint(&self) -> String {
        let dists: Vec<(String, String)> = self
            .parameters
            .iter()
            .map(|(n, d)| (n.clone(), d.optuna_json()))
            .collect();
        serde_json::json!({"method": self.method, "parameters": dists, "training": self.training, "metric": self.metric}).to_string()
    }
}

type FieldError = (Option<&'static str>, String);

fn to_distribution(name: &str, p: &RawParam) -> Result<Distribution, FieldError> {
    let forms = [
        p.value.is_some(),
        p.values.is_some(),
        p.distribution.is_some(),
    ];
    if forms.iter().filter(|&&f| f).count() != 1 {
        return Err((
            None,
            "give exactly one of `value`, `values` or `distribution`".into(),
        ));
    }
    if name.is_empty() {
        return Err((None, "empty parameter name".into()));
    }
    if let Some(v) = &p.value {
        return Ok(Distribution::Constant(v.clone()));
    }
    if let Some(vs) = &p.values {
        if vs.is_empty() {
            return Err((Some("values"), "is empty".into()));
        }
        for (i, v) in vs.iter().enumerate() {
            if vs[..i].contains(v) {
                return Err((Some("values"), format!("{v} appears twice")));
            }
        }
        return Ok(Distribution::Categorical(vs.clone()));
    }
    let dist = p.distribution.expect("checked above");
    let min = p
        .min
        .ok_or((Some("distribution"), "needs `min`".to_string()))?;
    let max = p
        .max
        .ok_or((Some("distribution"), "needs `max`".to_string()))?;
    if !(min.is_finite() && max.is_finite()) {
        return Err((Some("min"), "min and max must be finite".into()));
    }
    if min > max {
        return Err((Some("min"), format!("min {min} is greater than max {max}")));
    }
    let needs_q = matches!(
        dist,
        DistributionName::QUniform | DistributionName::QLogUniformValues
    );
    let q = match (needs_q, p.q) {
        (true, None) => 1.0,
        (true, Some(q)) if q > 0.0 && q.is_finite() => q,
        (true, Some(q)) => return Err((Some("q"), format!("{q} must be > 0"))),
        (false, Some(_)) => {
            return Err((
                Some("q"),
                "only q_uniform and q_log_uniform_values take `q`".into(),
            ))
        }
        (false, None) => 0.0,
    };
    let log = matches!(
        dist,
        DistributionName::LogUniformValues | DistributionName::QLogUniformValues
    );
    if log && min <= 0.0 {
        return Err((Some("min"), format!("a log range needs min > 0, got {min}")));
    }
    let d = match dist {
        DistributionName::IntUniform => {
            if min.fract() != 0.0 || max.fract() != 0.0 {
                return Err((Some("min"), "int_uniform needs integer min and max".into()));
            }
            Distribution::IntUniform {
                min: min as i64,
                max: max as i64,
            }
        }
        DistributionName::Uniform => Distribution::Uniform { min, max },
        DistributionName::LogUniformValues => Distribution::LogUniform { min, max },
        DistributionName::QUniform => Distribution::QUniform { min, max, q },
        DistributionName::QLogUniformValues => Distribution::QLogUniform { min, max, q },
    };
    if d.grid_values().is_some_and(|v| v.is_empty()) {
        return Err((
            Some("q"),
            format!("no multiple of q = {q} lies in [{min}, {max}] (empty range)"),
        ));
    }
    if matches!(
        d,
        Distribution::Uniform { .. } | Distribution::LogUniform { .. }
    ) && min == max
    {
        return Err((
            Some("max"),
            format!("empty range: min and max are both {min}"),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: demo
data:
  train: data/sample.csv
  seed: 7
method: random
metric:
  name: val_loss
run_cap: 4
max_duration: 30m
training:
  epochs: 3
  lstm_units: [16]
parameters:
  optimizer:
    values: [adam, rmsprop]
  learning_rate:
    distribution: log_uniform_values
    min: 0.0001
    max: 0.01
  dense_layers:
    values: [1, 2]
  dense.1.units:
    values: [8, 16]
";

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text, Path::new("exp/s.yaml"))
    }

    #[test]
    fn a_good_spec_parses() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(s.train_file, PathBuf::from("exp/data/sample.csv"));
        assert_eq!(s.storage, PathBuf::from("results/demo.db"));
        assert_eq!(
            (s.metric.as_str(), s.direction),
            ("val_loss", Direction::Minimize)
        );
        assert_eq!(s.max_duration, Some(Duration::from_secs(1800)));
        assert_eq!(s.parameters.len(), 4);
        assert_eq!(s.training["epochs"], 3);
        assert_eq!(s.training["seed"], 7);
    }

    fn message(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_column() {
        assert_eq!(
            message(&GOOD.replace("run_cap: 4", "run_cap: 4\nrun_caps: 5")),
            "exp/s.yaml:9:1: unknown field `run_caps`, expected one of `name`, `storage`, `data`, `method`, `seed`, `metric`, `run_cap`, `max_duration`, `max_failures`, `heartbeat_grace`, `training`, `parameters`, `trial`, `resources`, `tpe`, `early_terminate`"
        );
        assert_eq!(
            message(&GOOD.replace("min: 0.0001", "min: 0.1")),
            "exp/s.yaml:18:5: parameters.learning_rate.min: min 0.1 is greater than max 0.01"
        );
        assert_eq!(
            message(&GOOD.replace("min: 0.0001", "min: 0")),
            "exp/s.yaml:18:5: parameters.learning_rate.min: a log range needs min > 0, got 0"
        );
        assert_eq!(
            message(&GOOD.replace("values: [1, 2]", "values: []")),
            "exp/s.yaml:21:5: parameters.dense_layers.values: is empty"
        );
        assert_eq!(
            message(&GOOD.replace("name: val_loss", "name: val_f2"))
                .split(" (one of")
                .next()
                .unwrap(),
            "exp/s.yaml:7:3: metric.name: `val_f2` is not a metric the trainer reports"
        );
        assert_eq!(
            message(&GOOD.replace("run_cap: 4", "run_cap: four")),
            "exp/s.yaml:8:10: run_cap: invalid type: string \"four\", expected usize"
        );
        assert_eq!(
            message(&GOOD.replace("[adam, rmsprop]", "[adam, rmsprup]")),
            "exp/s.yaml:14:3: parameters.optimizer: value \"rmsprup\": unknown variant `rmsprup`, expected one of `sgd`, `adam`, `adamw`, `adamax`, `nadam`, `rmsprop`, `adagrad`, `adadelta`"
        );
        assert_eq!(
            message(&GOOD.replace("  epochs: 3", "  epoch: 3")),
            "exp/s.yaml:11:3: training: unknown field `epoch`, expected one of `max_words`, `embedding_dim`, `lstm_units`, `lstm_dropout`, `batch_norm`, `batch_norm_momentum`, `dense`, `dense_dropout`, `optimizer`, `batch_size`, `epochs`, `early_stopping`, `sequence_length`, `padding`, `truncating`, `validation_split`, `class_weighting`, `seed`, `lstm_impl`"
        );
    }

    #[test]
    fn grid_rejects_continuous_parameters() {
        let e = message(&GOOD.replace("method: random", "method: grid"));
        assert!(
            e.starts_with("exp/s.yaml:16:3: parameters.learning_rate: grid search needs"),
            "{e}"
        );
    }

    #[test]
    fn locate_finds_nested_keys_and_flow_style() {
        let text = "a:\n  b:\n    c: 1\n  d: {min: 1, max: 0}\n";
        assert_eq!(locate(text, &["a", "b", "c"]), Some((3, 5)));
        assert_eq!(locate(text, &["a", "d", "max"]), Some((4, 15)));
        assert_eq!(locate(text, &["a", "zz"]), Some((1, 1)));
    }
}
