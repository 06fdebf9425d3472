//! The reader steps: YAML into the raw types, then each section validated into its typed
//! form, every error naming `file:line:column`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rnnsweep_model::config::set_path;
use rnnsweep_model::config::ModelConfig;
use rnnsweep_model::data::Columns;
use rnnsweep_model::metrics::{direction_of, Direction, Metric};
use rnnsweep_model::train::distill::DistillSettings;
use serde_json::Value;

use crate::pruning::EarlyTerminate;
use crate::sampling::Method;
use crate::space::Distribution;
use crate::spec::duration::parse_duration;
use crate::spec::final_model::FinalDistill;
use crate::spec::locate::{locate, locate_item};
use crate::spec::raw::{
    DistributionName, RawData, RawDistill, RawMethod, RawParam, RawSpec, WandbModule,
};
use crate::spec::{FunctionTrial, Spec, SpecError, TrialKind, WandbProgram};
use crate::store::StorageLocation;

pub(super) fn read(text: &str, path: &Path) -> Result<Spec, SpecError> {
    let r = Reader {
        text,
        file: path.display().to_string(),
        base_dir: path.parent().unwrap_or(Path::new(".")),
    };
    let raw = r.raw()?;
    let (method, mut notes) = r.method(&raw);
    let name = r.basics(&raw, path)?;
    notes.extend(r.wandb_notes(&raw));
    let function = r.function(&raw)?;
    let program = r.program(&raw)?;
    let (metric, direction) = r.objective(&raw, function.as_ref(), &mut notes)?;
    let (max_duration, heartbeat_grace) = r.durations(&raw)?;
    let trial_timeout = r.optional_duration(&raw.trial_timeout, "trial_timeout")?;
    let silence_timeout = r.optional_duration(&raw.silence_timeout, "silence_timeout")?;
    let command = raw.trial.as_ref().and_then(|t| t.command.clone());
    let data = r.data(
        &raw,
        function.is_some() || command.is_some() || program.is_some(),
    )?;
    let train_file = r.base_dir.join(&data.train);
    let validation_file = data.validation.as_ref().map(|v| r.base_dir.join(v));
    let labels = r.label_rule(&data)?;
    let training = r.training(&raw, &data)?;
    let parameters = r.parameters(&raw, method, &training, function.as_ref())?;
    let storage = r.storage(&raw, &name)?;
    // W&B's meaning without `run_cap`: a grid runs every point, the others until stopped.
    let run_cap = raw.run_cap.unwrap_or(usize::MAX);
    let resources = raw.resources.clone().unwrap_or_default();
    let warnings = resources.validate().map_err(|m| r.err(&["resources"], m))?;
    let early_terminate = r.early_terminate(&raw, &training, function.as_ref())?;
    let spec = Spec {
        resources,
        warnings,
        notes,
        storage,
        name,
        train_file,
        reads_data: raw.data.is_some(),
        validation_file,
        columns: data.columns,
        labels,
        method,
        seed: raw.seed,
        metric,
        direction,
        run_cap,
        metric_target: raw.metric.as_ref().and_then(|m| m.target),
        max_duration,
        // A tenth of the run's trials, at least 3: a broken setup costs a few trials, not
        // the whole run_cap, while a few unlucky configurations do not end a long search.
        max_failures: raw.max_failures.unwrap_or(match run_cap {
            usize::MAX => 10,
            n => n.div_ceil(10).max(3),
        }),
        max_initial_failures: raw.max_initial_failures.unwrap_or(3),
        trial_timeout,
        silence_timeout,
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
        final_distill: r.final_distill(&raw)?,
        final_ensemble: match raw.final_model.as_ref().map(|f| f.ensemble) {
            Some(0) => return Err(r.err(&["final", "ensemble"], "must be at least 1".into())),
            k => k,
        },
        heartbeat_grace,
        training,
        parameters,
        trial: match (function, command, program) {
            (Some(f), _, _) => TrialKind::Function(f),
            (None, Some(argv), _) => TrialKind::Command(argv),
            (None, None, Some(p)) => TrialKind::Program(p),
            (None, None, None) => TrialKind::Model,
        },
        tpe: raw.tpe.unwrap_or_default(),
        early_terminate,
        enqueue: raw.enqueue.clone(),
        source: text.to_string(),
        path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    };
    let key: &[&str] = if spec.training.get("lstm_impl").is_some() && raw.training.is_some() {
        &["training", "lstm_impl"]
    } else {
        &["resources"]
    };
    spec.check_lstm_on_devices().map_err(|m| {
        let mut e = r.err(key, String::new());
        e.message = m;
        e
    })?;
    r.enqueued(&spec)?;
    Ok(spec)
}

/// Reads one spec's text: each step validates a section and names file:line:column in errors.
struct Reader<'a> {
    text: &'a str,
    file: String,
    /// Relative paths in the spec are relative to its folder.
    base_dir: &'a Path,
}

impl Reader<'_> {
    /// Every `enqueue` entry must be a point of the space, so a typo fails here, before a
    /// study exists, and not as a FAIL trial an hour later.
    fn enqueued(&self, spec: &Spec) -> Result<(), SpecError> {
        let space = spec.space();
        for (i, entry) in spec.enqueue.iter().enumerate() {
            if let Err(m) = space.resolve_fixed(entry) {
                return Err(SpecError {
                    at: match locate_item(self.text, "enqueue", i) {
                        Some((l, c)) => format!("{}:{l}:{c}", self.file),
                        None => self.file.clone(),
                    },
                    message: format!("enqueue[{i}]: {m}"),
                });
            }
        }
        Ok(())
    }

    fn final_distill(&self, raw: &RawSpec) -> Result<Option<FinalDistill>, SpecError> {
        let Some(distill) = raw.final_model.as_ref().and_then(|f| f.distill.as_ref()) else {
            return Ok(None);
        };
        let (settings, unlabelled) = match distill {
            RawDistill::On(false) => return Ok(None),
            RawDistill::On(true) => (DistillSettings::default(), None),
            RawDistill::Settings(s) => {
                let default = DistillSettings::default();
                (
                    DistillSettings {
                        alpha: s.alpha.unwrap_or(default.alpha),
                        temperature: s.temperature.unwrap_or(default.temperature),
                    },
                    s.unlabelled.as_ref().map(|u| self.base_dir.join(u)),
                )
            }
        };
        if let Err(rnnsweep_model::error::ModelError::Config { at, message }) =
            settings.validate("")
        {
            return Err(self.err(&["final", "distill", &at], message));
        }
        Ok(Some(FinalDistill {
            settings,
            unlabelled,
        }))
    }

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

    /// The study's name (W&B's files have none: the spec file's name without extension).
    fn basics(&self, raw: &RawSpec, path: &Path) -> Result<String, SpecError> {
        let name = match &raw.name {
            Some(n) => n.clone(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        if name.trim().is_empty() || name.contains('/') {
            return Err(self.err(&["name"], "must be a non-empty name without `/`".into()));
        }
        if raw.run_cap == Some(0) {
            return Err(self.err(&["run_cap"], "must be at least 1".into()));
        }
        Ok(name)
    }

    /// W&B's top-level keys that mean nothing here, named in one note.
    fn wandb_notes(&self, raw: &RawSpec) -> Vec<String> {
        let unused: Vec<&str> = [
            ("description", raw.description.is_some()),
            ("project", raw.project.is_some()),
            ("entity", raw.entity.is_some()),
            ("controller", raw.controller.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, given)| given.then_some(key))
        .collect();
        if unused.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = unused.iter().map(|k| format!("`{k}`")).collect();
        vec![format!(
            "{}: {} {} W&B's and not used here (kept with the study's spec)",
            self.file,
            keys.join(", "),
            if unused.len() == 1 { "is" } else { "are" }
        )]
    }

    /// W&B's way of giving the trial: `program` and its `command` with W&B's macros.
    fn program(&self, raw: &RawSpec) -> Result<Option<WandbProgram>, SpecError> {
        if raw.program.is_none() && raw.command.is_none() {
            return Ok(None);
        }
        if raw.trial.is_some() {
            let key = if raw.program.is_some() {
                "program"
            } else {
                "command"
            };
            return Err(self.err(
                &[key],
                "give the trial either W&B's way (`program`, `command`) or as `trial`, not both"
                    .into(),
            ));
        }
        let command = raw.command.clone().unwrap_or_else(|| {
            ["${env}", "${interpreter}", "${program}", "${args}"]
                .map(String::from)
                .to_vec()
        });
        if command.is_empty() {
            return Err(self.err(&["command"], "needs at least one element".into()));
        }
        let program = match &raw.program {
            Some(p) => Some(self.base_dir.join(p)),
            None if command.iter().any(|a| a.contains("${program}")) => {
                return Err(self.err(
                    &["command"],
                    "uses ${program} but the spec gives no `program`".into(),
                ))
            }
            None => None,
        };
        for arg in &command {
            let mut rest = arg.as_str();
            while let Some(i) = rest.find("${") {
                let end = rest[i..].find('}').map_or(rest.len(), |j| i + j + 1);
                let macro_name = &rest[i..end];
                if !WANDB_MACROS.contains(&macro_name) {
                    return Err(self.err(
                        &["command"],
                        format!(
                            "`{macro_name}` is not one of W&B's macros ({})",
                            WANDB_MACROS.join(", ")
                        ),
                    ));
                }
                rest = &rest[end..];
            }
        }
        Ok(Some(WandbProgram {
            program,
            command,
            shim: raw.wandb != Some(WandbModule::Real),
        }))
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
        notes: &mut Vec<String>,
    ) -> Result<(String, Direction), SpecError> {
        let own_trial = raw.program.is_some()
            || raw.command.is_some()
            || raw.trial.as_ref().is_some_and(|t| t.command.is_some());
        if let Some(m) = raw
            .metric
            .as_ref()
            .filter(|m| own_trial && direction_of(&m.name).is_none())
        {
            // A user's script reports its own metrics: any name, W&B's default goal.
            if m.goal.is_none() {
                notes.push(format!(
                    "{}: metric `{}` has no goal: minimize (W&B's default)",
                    self.err(&["metric"], String::new()).at,
                    m.name
                ));
            }
            return Ok((m.name.clone(), m.goal.unwrap_or(Direction::Minimize)));
        }
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

    fn optional_duration(
        &self,
        v: &Option<Value>,
        key: &str,
    ) -> Result<Option<Duration>, SpecError> {
        match v {
            None => Ok(None),
            Some(v) => match parse_duration(v) {
                Some(d) if !d.is_zero() => Ok(Some(d)),
                _ => Err(self.err(
                    &[key],
                    format!("{v} is not a positive duration such as 90s, 30m or 2h"),
                )),
            },
        }
    }

    /// A function or a user's command may read no data file; the built-in model needs one.
    fn data(&self, raw: &RawSpec, data_optional: bool) -> Result<RawData, SpecError> {
        let data = match (&raw.data, data_optional) {
            (Some(d), _) => d.clone(),
            (None, true) => RawData {
                train: String::new(),
                validation: None,
                columns: Columns::default(),
                validation_split: None,
                max_words: None,
                seed: None,
                labels: None,
                positive: None,
            },
            (None, false) => {
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
            rnnsweep_model::error::ModelError::Config { at, message } => {
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
        let mut flat = Vec::new();
        flatten(&raw.parameters, &mut Vec::new(), &mut flat);
        for (keys, p) in &flat {
            let name = &keys.join(".");
            let d = to_distribution(name, p).map_err(|(field, m)| {
                // The YAML path to the parameter: `parameters.optimizer.parameters.lr`.
                let mut path = vec!["parameters"];
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        path.push("parameters");
                    }
                    path.push(k.as_str());
                }
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
        let probe_model = raw.trial.is_none() && raw.program.is_none() && raw.command.is_none();
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
                crate::space::trial_config::build_config(training, &single)
                    .map_err(|m| self.err(&["parameters", name], format!("value {probe}: {m}")))?;
            }
        }

        Ok(parameters)
    }

    fn storage(&self, raw: &RawSpec, name: &str) -> Result<StorageLocation, SpecError> {
        let storage = match raw.storage.as_deref() {
            None => StorageLocation::Sqlite(PathBuf::from("results").join(format!("{name}.db"))),
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
            if let crate::pruning::EarlyTerminate::Hyperband {
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

/// W&B's command macros.
const WANDB_MACROS: [&str; 8] = [
    "${env}",
    "${interpreter}",
    "${program}",
    "${args}",
    "${args_no_hyphens}",
    "${args_no_boolean_flags}",
    "${args_json}",
    "${args_json_file}",
];

/// Nested parameters (`optimizer: {parameters: {lr: …}}`) as key paths to their leaves.
fn flatten<'a>(
    params: &'a BTreeMap<String, RawParam>,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, &'a RawParam)>,
) {
    for (name, p) in params {
        prefix.push(name.clone());
        match &p.parameters {
            Some(inner) => flatten(inner, prefix, out),
            None => out.push((prefix.clone(), p)),
        }
        prefix.pop();
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
