//! The sweep spec: YAML whose keys follow W&B sweeps where the meaning is the same, parsed into
//! raw serde types, then validated into a typed [`Spec`]. Every error names file:line:column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rnnsweep_model::config::set_path;
use rnnsweep_model::data::Columns;
use rnnsweep_model::metrics::{direction_of, Direction, Metric};
use rnnsweep_model::ModelConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::devices::Resources;
use crate::pruner::EarlyTerminate;
use crate::space::Distribution;
use crate::store::StorageLocation;
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

/// W&B's names: `bayes` is run by TPE, rnnsweep's model-based sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawMethod {
    Grid,
    Random,
    Tpe,
    Bayes,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    storage: Option<String>,
    #[serde(default)]
    data: Option<RawData>,
    method: RawMethod,
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
    max_retries: Option<usize>,
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
    #[serde(default, rename = "final")]
    final_model: Option<RawFinal>,
}

/// `final`: how `best --retrain` builds the model this spec is for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawFinal {
    /// Average up to K configurations' probabilities.
    ensemble: usize,
    #[serde(default)]
    selection: crate::ensemble::SelectionRule,
    #[serde(default)]
    combine: rnnsweep_model::artifact::Combine,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    train: String,
    /// Validation rows from their own file instead of `validation_split`.
    #[serde(default)]
    validation: Option<String>,
    #[serde(default)]
    columns: Columns,
    #[serde(default)]
    validation_split: Option<f64>,
    #[serde(default)]
    max_words: Option<usize>,
    #[serde(default)]
    seed: Option<u64>,
    /// The classes and their order (integers or words).
    #[serde(default)]
    labels: Option<Vec<Value>>,
    /// One-vs-rest: the positive class, or several.
    #[serde(default)]
    positive: Option<Value>,
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
    min: Option<serde_json::Number>,
    #[serde(default)]
    max: Option<serde_json::Number>,
    #[serde(default)]
    q: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum DistributionName {
    /// W&B's explicit forms of `values` and `value`.
    Categorical,
    Constant,
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

/// What each trial runs.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialKind {
    /// The built-in BiLSTM worker trains the fixed settings plus the trial's parameters.
    Model,
    /// A user's command speaking the worker protocol (`{params_json}`, `{trial_file}`,
    /// `{number}` and `{device}` in it are replaced).
    Command(Vec<String>),
    /// A synthetic objective, for measuring the orchestrator.
    Function(FunctionTrial),
}

impl TrialKind {
    pub fn trains_model(&self) -> bool {
        matches!(self, TrialKind::Model)
    }

    pub fn function(&self) -> Option<&FunctionTrial> {
        match self {
            TrialKind::Function(f) => Some(f),
            _ => None,
        }
    }
}

/// A validated spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub storage: StorageLocation,
    pub train_file: PathBuf,
    /// `data.validation`: validation rows from this file (same columns) instead of a split.
    pub validation_file: Option<PathBuf>,
    pub columns: Columns,
    /// `data.labels` and `data.positive`: how label values become classes.
    pub labels: rnnsweep_model::data::LabelRule,
    pub method: Method,
    pub seed: u64,
    pub metric: String,
    pub direction: Direction,
    pub run_cap: usize,
    pub max_duration: Option<Duration>,
    pub max_failures: usize,
    /// How often a trial whose driver died is re-queued before it stays FAIL.
    pub max_retries: usize,
    pub heartbeat_grace: Duration,
    /// Fixed model settings (already merged onto the defaults).
    pub training: Value,
    /// Searched parameters, in a fixed (sorted) order.
    pub parameters: Vec<(String, Distribution)>,
    /// The built-in model, a user's command, or a synthetic function.
    pub trial: TrialKind,
    pub tpe: TpeSettings,
    pub early_terminate: Option<EarlyTerminate>,
    pub resources: Resources,
    /// Warnings found while validating (e.g. more threads than cores).
    pub warnings: Vec<String>,
    /// How a W&B spec was read where rnnsweep's meaning differs (e.g. `method: bayes`).
    pub notes: Vec<String>,
    /// The spec file's text, kept with the study.
    pub source: String,
    /// `final: {ensemble: K}`: what plain `best --retrain` builds for this spec.
    pub final_ensemble: Option<usize>,
    /// `final: {selection}`: how the ensemble's members are chosen.
    pub final_selection: crate::ensemble::SelectionRule,
    /// `final: {combine}`: how the ensemble combines its members' probabilities.
    pub final_combine: rnnsweep_model::artifact::Combine,
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
    /// The labelled training table and, with `data.validation`, the validation table.
    pub fn tables(
        &self,
    ) -> Result<
        (
            rnnsweep_model::data::Table,
            Option<rnnsweep_model::data::Table>,
        ),
        rnnsweep_model::ModelError,
    > {
        Ok(rnnsweep_model::data::load_labelled(
            &self.train_file,
            self.validation_file.as_deref(),
            &self.columns,
            &self.labels,
        )?)
    }

    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            at: path.display().to_string(),
            message: format!("cannot read the spec: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses spec text; `path` places relative files and names the file in errors. The steps:
    /// YAML into raw types, then each section validated into its typed form.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SpecError> {
        let r = Reader {
            text,
            file: path.display().to_string(),
            base_dir: path.parent().unwrap_or(Path::new(".")),
        };
        let raw = r.raw()?;
        let (method, notes) = r.method(&raw);
        r.basics(&raw)?;
        let function = r.function(&raw)?;
        let (metric, direction) = r.objective(&raw, function.as_ref())?;
        let (max_duration, heartbeat_grace) = r.durations(&raw)?;
        let data = r.data(&raw, function.as_ref())?;
        let train_file = r.base_dir.join(&data.train);
        let validation_file = data.validation.as_ref().map(|v| r.base_dir.join(v));
        let labels = r.label_rule(&data)?;
        let training = r.training(&raw, &data)?;
        let parameters = r.parameters(&raw, method, &training, function.as_ref())?;
        let storage = r.storage(&raw)?;
        let resources = raw.resources.clone().unwrap_or_default();
        let warnings = resources.validate().map_err(|m| r.err(&["resources"], m))?;
        let early_terminate = r.early_terminate(&raw, &training, function.as_ref())?;
        Ok(Spec {
            resources,
            warnings,
            notes,
            storage,
            name: raw.name,
            train_file,
            validation_file,
            columns: data.columns,
            labels,
            method,
            seed: raw.seed,
            metric,
            direction,
            run_cap: raw.run_cap,
            max_duration,
            max_failures: raw.max_failures.unwrap_or(raw.run_cap.max(3)),
            // Optuna's RetryFailedTrialCallback users typically allow two retries.
            max_retries: raw.max_retries.unwrap_or(2),
            final_selection: raw
                .final_model
                .as_ref()
                .map(|f| f.selection)
                .unwrap_or_default(),
            final_combine: raw
                .final_model
                .as_ref()
                .map(|f| f.combine)
                .unwrap_or_default(),
            final_ensemble: match raw.final_model.as_ref().map(|f| f.ensemble) {
                Some(0) => return Err(r.err(&["final", "ensemble"], "must be at least 1".into())),
                k => k,
            },
            heartbeat_grace,
            training,
            parameters,
            trial: match (function, raw.trial.and_then(|t| t.command)) {
                (Some(f), _) => TrialKind::Function(f),
                (None, Some(argv)) => TrialKind::Command(argv),
                (None, None) => TrialKind::Model,
            },
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

/// Reads one spec's text: each step validates a section and names file:line:column in errors.
struct Reader<'a> {
    text: &'a str,
    file: String,
    /// Relative paths in the spec are relative to its folder.
    base_dir: &'a Path,
}

impl Reader<'_> {
    fn err(&self, key_path: &[&str], message: String) -> SpecError {
        SpecError {
            at: match locate(self.text, key_path) {
                Some((l, c)) => format!("{}:{l}:{c}", self.file),
                None => self.file.clone(),
            },
            message: format!("{}: {message}", key_path.join(".")),
        }
    }

    fn raw(&self) -> Result<RawSpec, SpecError> {
        serde_yaml::from_str(self.text).map_err(|e| SpecError {
            at: match e.location() {
                Some(l) => format!("{}:{}:{}", self.file, l.line(), l.column()),
                None => self.file.clone(),
            },
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// The sampler, and a note where a W&B name means something close but not the same.
    fn method(&self, raw: &RawSpec) -> (Method, Vec<String>) {
        let mut notes = Vec::new();
        let method = match raw.method {
            RawMethod::Grid => Method::Grid,
            RawMethod::Random => Method::Random,
            RawMethod::Tpe => Method::Tpe,
            RawMethod::Bayes => {
                notes.push(format!(
                    "{}: method: bayes runs TPE (Tree-structured Parzen Estimator), rnnsweep's model-based sampler; write `method: tpe` to silence this note",
                    self.err(&["method"], String::new()).at
                ));
                Method::Tpe
            }
        };
        (method, notes)
    }

    fn basics(&self, raw: &RawSpec) -> Result<(), SpecError> {
        if raw.name.trim().is_empty() || raw.name.contains('/') {
            return Err(self.err(&["name"], "must be a non-empty name without `/`".into()));
        }
        if raw.run_cap == 0 {
            return Err(self.err(&["run_cap"], "must be at least 1".into()));
        }
        Ok(())
    }

    /// A synthetic trial's settings (`trial: {kind: function, …}`), checking `trial` too.
    fn function(&self, raw: &RawSpec) -> Result<Option<FunctionTrial>, SpecError> {
        let function = match &raw.trial {
            Some(t) if t.kind.as_deref() == Some("function") => {
                if t.command.is_some() {
                    return Err(self.err(
                        &["trial", "command"],
                        "a function trial has no command".into(),
                    ));
                }
                let function = t.name.ok_or_else(|| {
                    self.err(
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
                    return Err(self.err(
                        &["trial", "kind"],
                        format!("`{k}` is not a trial kind (function, or give `command`)"),
                    ));
                }
                if t.command.as_ref().is_none_or(Vec::is_empty) {
                    return Err(self.err(
                        &["trial"],
                        "needs `command: [program, args…]` or `kind: function`".into(),
                    ));
                }
                None
            }
            None => None,
        };
        Ok(function)
    }

    /// The metric the study optimises and its direction.
    fn objective(
        &self,
        raw: &RawSpec,
        function: Option<&FunctionTrial>,
    ) -> Result<(String, Direction), SpecError> {
        let (metric, direction) = match (&raw.metric, function) {
            (None, Some(_)) => ("value".to_string(), Direction::Minimize),
            (Some(m), Some(_)) => {
                if m.name != "value" {
                    return Err(self.err(
                        &["metric", "name"],
                        format!("a function trial reports `value`, not `{}`", m.name),
                    ));
                }
                ("value".to_string(), m.goal.unwrap_or(Direction::Minimize))
            }
            (None, None) => ("val_f1".to_string(), Direction::Maximize),
            (Some(m), None) => {
                let natural = direction_of(&m.name).ok_or_else(|| {
                    self.err(
                        &["metric", "name"],
                        format!(
                            "`{}` is not a metric the trainer reports (one of: {})",
                            m.name,
                            Metric::names()
                        ),
                    )
                })?;
                (m.name.clone(), m.goal.unwrap_or(natural))
            }
        };
        Ok((metric, direction))
    }

    fn durations(&self, raw: &RawSpec) -> Result<(Option<Duration>, Duration), SpecError> {
        let max_duration = match &raw.max_duration {
            None => None,
            Some(v) => Some(parse_duration(v).ok_or_else(|| {
                self.err(
                    &["max_duration"],
                    format!("{v} is not a duration such as 90s, 30m or 2h"),
                )
            })?),
        };
        let heartbeat_grace = match &raw.heartbeat_grace {
            None => Duration::from_secs(60),
            Some(v) => parse_duration(v).ok_or_else(|| {
                self.err(
                    &["heartbeat_grace"],
                    format!("{v} is not a duration such as 30s"),
                )
            })?,
        };

        Ok((max_duration, heartbeat_grace))
    }

    fn data(&self, raw: &RawSpec, function: Option<&FunctionTrial>) -> Result<RawData, SpecError> {
        let data = match (&raw.data, function) {
            (Some(d), _) => d.clone(),
            (None, Some(_)) => RawData {
                train: String::new(),
                validation: None,
                columns: Columns::default(),
                validation_split: None,
                max_words: None,
                seed: None,
                labels: None,
                positive: None,
            },
            (None, None) => {
                return Err(self.err(
                    &[],
                    "missing field `data` (data: {train: path/to/train.csv})".into(),
                ))
            }
        };
        if data.validation.is_some() && data.validation_split.is_some() {
            return Err(self.err(
                &["data", "validation_split"],
                "give either `validation` (a file) or `validation_split`, not both".into(),
            ));
        }
        Ok(data)
    }

    /// `data.labels` (the classes, in order) and `data.positive` (one name or a list).
    fn label_rule(&self, data: &RawData) -> Result<rnnsweep_model::data::LabelRule, SpecError> {
        let name = |v: &Value, at: &[&str]| match v {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.err(
                at,
                format!("a class is a number or a non-empty word, not `{other}`"),
            )),
        };
        let classes = match &data.labels {
            None => None,
            Some(list) if list.len() < 2 => {
                return Err(self.err(&["data", "labels"], "give two or more classes".into()))
            }
            Some(list) => Some(
                list.iter()
                    .map(|v| name(v, &["data", "labels"]))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let positive = match &data.positive {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| name(v, &["data", "positive"]))
                .collect::<Result<Vec<_>, _>>()?,
            Some(v) => vec![name(v, &["data", "positive"])?],
        };
        if let Some(classes) = &classes {
            if let Some(p) = positive.iter().find(|p| !classes.contains(p)) {
                return Err(self.err(
                    &["data", "positive"],
                    format!("`{p}` is not one of `labels` ({})", classes.join(", ")),
                ));
            }
        }
        Ok(rnnsweep_model::data::LabelRule { classes, positive })
    }

    /// Fixed settings: defaults, then `training`, then the `data` section's model keys.
    fn training(&self, raw: &RawSpec, data: &RawData) -> Result<Value, SpecError> {
        let mut training = serde_json::to_value(ModelConfig::default())
            .map_err(|e| self.err(&["training"], e.to_string()))?;
        if let Some(t) = &raw.training {
            let Value::Object(map) = t else {
                return Err(self.err(&["training"], "must be a mapping of model settings".into()));
            };
            for (k, v) in map {
                set_path(&mut training, k, v.clone()).map_err(|m| self.err(&["training", k], m))?;
            }
        }
        for (k, v) in [
            ("validation_split", data.validation_split.map(Value::from)),
            ("max_words", data.max_words.map(Value::from)),
            ("seed", data.seed.map(Value::from)),
        ] {
            if let Some(v) = v {
                set_path(&mut training, k, v).map_err(|m| self.err(&["data", k], m))?;
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
                let mut e = self.err(&path, message);
                e.message = format!(
                    "training: {}",
                    e.message
                        .split_once(": ")
                        .map_or(e.message.as_str(), |(_, m)| m)
                );
                e
            }
            other => self.err(&["training"], other.to_string()),
        })?;

        Ok(training)
    }

    /// The searched parameters, each checked to make a valid model with every value it takes.
    fn parameters(
        &self,
        raw: &RawSpec,
        method: Method,
        training: &Value,
        function: Option<&FunctionTrial>,
    ) -> Result<Vec<(String, Distribution)>, SpecError> {
        let mut parameters = Vec::new();
        for (name, p) in &raw.parameters {
            let d = to_distribution(name, p).map_err(|(field, m)| {
                let mut path = vec!["parameters", name.as_str()];
                if let Some(f) = field {
                    path.push(f);
                }
                self.err(&path, m)
            })?;
            if method == Method::Grid && d.grid_values().is_none() {
                return Err(self.err(
                    &["parameters", name],
                    "grid search needs `values`, `value` or a quantized distribution (int_uniform, q_uniform, q_log_uniform_values)".into(),
                ));
            }
            parameters.push((name.clone(), d));
        }
        // Every value a parameter can take must make a valid model configuration (a user's
        // own training command defines its own parameters).
        let probe_model = raw.trial.is_none();
        if let Some(f) = function {
            let names: Vec<&str> = parameters.iter().map(|(n, _)| n.as_str()).collect();
            let wanted: Vec<String> = (0..f.function.dims().unwrap_or(names.len().max(1)))
                .map(|i| format!("x{i}"))
                .collect();
            if names.iter().any(|n| !wanted.iter().any(|w| w == n))
                || (f.function.dims().is_some() && names.len() != wanted.len())
            {
                return Err(self.err(
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
                crate::trial_config::build_config(training, &single)
                    .map_err(|m| self.err(&["parameters", name], format!("value {probe}: {m}")))?;
            }
        }

        Ok(parameters)
    }

    fn storage(&self, raw: &RawSpec) -> Result<StorageLocation, SpecError> {
        let storage = match raw.storage.as_deref() {
            None => {
                StorageLocation::Sqlite(PathBuf::from("results").join(format!("{}.db", raw.name)))
            }
            Some(s) => match StorageLocation::parse(s).map_err(|m| self.err(&["storage"], m))? {
                // A relative study file is relative to the spec, like the data file.
                StorageLocation::Sqlite(p) => StorageLocation::Sqlite(self.base_dir.join(p)),
                pg => pg,
            },
        };
        Ok(storage)
    }

    /// The pruner; hyperband's `max_iter` defaults to the trial's epochs.
    fn early_terminate(
        &self,
        raw: &RawSpec,
        training: &Value,
        function: Option<&FunctionTrial>,
    ) -> Result<Option<EarlyTerminate>, SpecError> {
        let mut early_terminate = raw.early_terminate.clone();
        if let Some(e) = &mut early_terminate {
            e.validate()
                .map_err(|m| self.err(&["early_terminate"], m))?;
            if let crate::pruner::EarlyTerminate::Hyperband {
                max_iter: max_iter @ None,
                ..
            } = e
            {
                let epochs = function
                    .map(|f| f.epochs as i64)
                    .or_else(|| training["epochs"].as_i64());
                *max_iter = epochs;
            }
        }

        Ok(early_terminate)
    }
}

type FieldError = (Option<&'static str>, String);

fn to_distribution(name: &str, p: &RawParam) -> Result<Distribution, FieldError> {
    if name.is_empty() {
        return Err((None, "empty parameter name".into()));
    }
    // W&B: `distribution: categorical` with `values`, `constant` with `value`; min and max
    // without a distribution are int_uniform when both are integers, else uniform.
    let dist = match (p.distribution, &p.value, &p.values) {
        (Some(DistributionName::Categorical), None, Some(_)) => None,
        (Some(DistributionName::Categorical), _, _) => {
            return Err((Some("distribution"), "categorical needs `values`".into()))
        }
        (Some(DistributionName::Constant), Some(_), None) => None,
        (Some(DistributionName::Constant), _, _) => {
            return Err((Some("distribution"), "constant needs `value`".into()))
        }
        (Some(d), None, None) => Some(d),
        (None, None, None) if p.min.is_some() || p.max.is_some() => {
            let integral = |n: &Option<serde_json::Number>| {
                n.as_ref().is_some_and(|n| n.is_i64() || n.is_u64())
            };
            Some(if integral(&p.min) && integral(&p.max) {
                DistributionName::IntUniform
            } else {
                DistributionName::Uniform
            })
        }
        (None, Some(_), None) | (None, None, Some(_)) => None,
        _ => {
            return Err((
                None,
                "give exactly one of `value`, `values` or `distribution` (or `min` and `max`)"
                    .into(),
            ))
        }
    };
    let Some(dist) = dist else {
        if p.min.is_some() || p.max.is_some() || p.q.is_some() {
            return Err((
                None,
                "`min`, `max` and `q` go with a numeric distribution, not with `value`/`values`"
                    .into(),
            ));
        }
        if let Some(v) = &p.value {
            return Ok(Distribution::Constant(v.clone()));
        }
        let vs = p.values.as_ref().expect("matched above");
        if vs.is_empty() {
            return Err((Some("values"), "is empty".into()));
        }
        for (i, v) in vs.iter().enumerate() {
            if vs[..i].contains(v) {
                return Err((Some("values"), format!("{v} appears twice")));
            }
        }
        return Ok(Distribution::Categorical(vs.clone()));
    };
    let number = |n: &Option<serde_json::Number>, field: &'static str| -> Result<f64, FieldError> {
        n.as_ref()
            .ok_or((Some("distribution"), format!("needs `{field}`")))?
            .as_f64()
            .ok_or((Some(field), "is not a number".to_string()))
    };
    let min = number(&p.min, "min")?;
    let max = number(&p.max, "max")?;
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
        DistributionName::Categorical | DistributionName::Constant => {
            unreachable!("handled before the numeric forms")
        }
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
        assert_eq!(
            s.storage,
            StorageLocation::Sqlite(PathBuf::from("results/demo.db"))
        );
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
            "exp/s.yaml:9:1: unknown field `run_caps`, expected one of `name`, `storage`, `data`, `method`, `seed`, `metric`, `run_cap`, `max_duration`, `max_failures`, `max_retries`, `heartbeat_grace`, `training`, `parameters`, `trial`, `resources`, `tpe`, `early_terminate`, `final`"
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
            "exp/s.yaml:11:3: training: unknown field `epoch`, expected one of `max_words`, `embedding_dim`, `lstm_units`, `lstm_dropout`, `batch_norm`, `batch_norm_momentum`, `dense`, `dense_dropout`, `optimizer`, `batch_size`, `epochs`, `early_stopping`, `sequence_length`, `padding`, `truncating`, `validation_split`, `class_weighting`, `seed`, `lstm_impl`, `cell`, `batching`, `pooling`, `embedding_dropout`, `embedding_update`, `tokenizer`, `threshold`, `calibration_split`"
        );
    }

    #[test]
    fn the_final_model_recipe_travels_with_the_spec() {
        let s = parse(&GOOD.replace(
            "run_cap: 4",
            "run_cap: 4\nfinal: {ensemble: 3, selection: top, combine: logit}",
        ))
        .unwrap();
        assert_eq!(s.final_ensemble, Some(3));
        assert_eq!(s.final_selection, crate::ensemble::SelectionRule::Top);
        assert_eq!(s.final_combine, rnnsweep_model::artifact::Combine::Logit);
        let s = parse(GOOD).unwrap();
        assert_eq!(
            (s.final_ensemble, s.final_combine),
            (None, rnnsweep_model::artifact::Combine::Probability)
        );
        let e = message(&GOOD.replace(
            "run_cap: 4",
            "run_cap: 4\nfinal: {ensemble: 3, combine: median}",
        ));
        assert!(
            e.starts_with("exp/s.yaml:") && e.contains("final.combine: unknown variant `median`"),
            "{e}"
        );
    }

    #[test]
    fn wandb_forms_read_as_wandb_means_them() {
        let s = parse(&GOOD.replace("method: random", "method: bayes")).unwrap();
        assert_eq!(s.method, Method::Tpe);
        assert_eq!(s.notes.len(), 1);
        assert!(
            s.notes[0].starts_with("exp/s.yaml:5:1: method: bayes runs TPE"),
            "{:?}",
            s.notes
        );
        let text = GOOD.replace(
            "  dense_layers:\n    values: [1, 2]\n",
            "  dense_layers:\n    min: 1\n    max: 2\n  lstm_dropout:\n    min: 0\n    max: 0.5\n  batch_size:\n    distribution: constant\n    value: 32\n  optimizer.beta_1:\n    distribution: categorical\n    values: [0.9, 0.95]\n",
        );
        let s = parse(&text).unwrap();
        let d = |n: &str| s.parameters.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(
            d("dense_layers"),
            Distribution::IntUniform { min: 1, max: 2 }
        );
        assert_eq!(
            d("lstm_dropout"),
            Distribution::Uniform { min: 0.0, max: 0.5 }
        );
        assert_eq!(
            d("batch_size"),
            Distribution::Constant(serde_json::json!(32))
        );
        assert_eq!(
            d("optimizer.beta_1"),
            Distribution::Categorical(vec![serde_json::json!(0.9), serde_json::json!(0.95)])
        );
        let with_s = "name: f\nmethod: random\nrun_cap: 2\ntrial: {kind: function, name: sphere, epochs: 9}\nparameters:\n  x0: {min: -1.0, max: 1.0}\nearly_terminate: {type: hyperband, min_iter: 1, eta: 3, s: 2}\n";
        match parse(with_s).unwrap().early_terminate {
            Some(crate::pruner::EarlyTerminate::Hyperband { brackets, .. }) => {
                assert_eq!(brackets, 2)
            }
            other => panic!("{other:?}"),
        }
        // What means something else in W&B stays an error.
        let e = message(&GOOD.replace(
            "distribution: log_uniform_values",
            "distribution: log_uniform",
        ));
        assert!(e.starts_with("exp/s.yaml:17:19: parameters.learning_rate.distribution: unknown variant `log_uniform`"), "{e}");
        let e = message(&GOOD.replace(
            "    values: [adam, rmsprop]",
            "    distribution: categorical\n    value: adam",
        ));
        assert!(
            e.ends_with("parameters.optimizer.distribution: categorical needs `values`"),
            "{e}"
        );
        let e = message(&GOOD.replace(
            "    values: [adam, rmsprop]",
            "    values: [adam]\n    min: 1",
        ));
        assert!(
            e.contains("`min`, `max` and `q` go with a numeric distribution"),
            "{e}"
        );
    }

    #[test]
    fn max_retries_defaults_to_two() {
        assert_eq!(parse(GOOD).unwrap().max_retries, 2);
        assert_eq!(
            parse(&GOOD.replace("run_cap: 4", "run_cap: 4\nmax_retries: 0"))
                .unwrap()
                .max_retries,
            0
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

    /// Hostile specs: random text and mutations of a good spec. No input may panic; every
    /// rejection names the file (and, where it can, the line and column).
    mod hostile {
        use super::*;
        use proptest::prelude::*;

        /// Pieces YAML and the spec's own keys are made of.
        const TOKENS: &[&str] = &[
            "name",
            "method",
            "grid",
            "random",
            "tpe",
            "bayes",
            "run_cap",
            "parameters",
            "values",
            "value",
            "distribution",
            "min",
            "max",
            "q",
            "uniform",
            "int_uniform",
            "q_uniform",
            "log_uniform_values",
            "categorical",
            "constant",
            "training",
            "lstm_units",
            "dense",
            "dense_layers",
            "dense.1.units",
            "lstm_units.3",
            "epochs",
            "early_terminate",
            "type",
            "hyperband",
            "median",
            "s",
            "eta",
            "brackets",
            "resources",
            "devices",
            "cuda:0",
            "cpu",
            "trial",
            "kind",
            "function",
            "sphere",
            "x0",
            "data",
            "train",
            "max_duration",
            "1e308",
            "-1",
            "0",
            "1",
            "2.5",
            "NaN",
            ".inf",
            "-.inf",
            "null",
            "~",
            "true",
            "\"\"",
            "[",
            "]",
            "{",
            "}",
            ":",
            ": ",
            ",",
            "-",
            "- ",
            "&a",
            "*a",
            "!!str",
            "|",
            ">",
            "#",
            "'",
            "\"",
            "\n",
            "\n  ",
            "\n    ",
            " ",
            "\t",
            "?",
            "%YAML 1.2",
            "---",
            "...",
            "\u{0}",
            "é",
            "🤖",
            "99999999999999999999",
            "storage",
            "postgresql://",
            "sqlite:///",
            "max_retries",
        ];

        fn tokens() -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(TOKENS), 0..40)
                .prop_map(|t| t.concat())
        }

        fn mutated() -> impl Strategy<Value = String> {
            let lines: Vec<String> = GOOD.lines().map(str::to_string).collect();
            let n = lines.len();
            (
                proptest::collection::vec((0..n, 0..4u8, proptest::sample::select(TOKENS)), 1..6),
                Just(lines),
            )
                .prop_map(|(edits, mut lines)| {
                    for (at, how, token) in edits {
                        let at = at.min(lines.len().saturating_sub(1));
                        if lines.is_empty() {
                            lines.push(token.to_string());
                            continue;
                        }
                        match how {
                            0 => lines[at] = format!("{}{token}", lines[at]),
                            1 => {
                                let cut = lines[at].len() / 2;
                                let keep: String = lines[at].chars().take(cut).collect();
                                lines[at] = format!("{keep}{token}");
                            }
                            2 => {
                                lines.remove(at);
                            }
                            _ => {
                                let copy = lines[at].clone();
                                lines.insert(at, copy);
                            }
                        }
                    }
                    lines.join("\n")
                })
        }

        fn check(text: &str) {
            if let Err(e) = Spec::parse(text, Path::new("fuzz.yaml")) {
                let m = e.to_string();
                assert!(m.starts_with("fuzz.yaml"), "{m:?} for {text:?}");
                assert!(m.len() > "fuzz.yaml: ".len() + 3, "{m:?}");
            }
        }

        #[test]
        fn random_token_soup_and_mutated_specs_never_panic() {
            let soup = rnnsweep_model::fuzz::run(50_000, tokens(), |text| {
                check(&text);
                Ok(())
            });
            let mutations = rnnsweep_model::fuzz::run(50_000, mutated(), |text| {
                check(&text);
                Ok(())
            });
            assert_eq!(soup + mutations, 100_000);
        }
    }
}
