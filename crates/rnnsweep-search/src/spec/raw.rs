//! The spec as YAML gives it: serde types that mirror the file (W&B's key names) before any
//! check. [`super::reader`] turns them into the typed [`super::Spec`].

use std::collections::BTreeMap;

use rnnsweep_model::data::Columns;
use rnnsweep_model::metrics::Direction;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::devices::Resources;
use crate::pruning::EarlyTerminate;
use crate::sampling::synthetic::Function;
use crate::sampling::tpe::TpeSettings;
use crate::spec::final_model::SelectionRule;

/// W&B's names: `bayes` is run by TPE, rnnsweep's model-based sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMethod {
    Grid,
    Random,
    Tpe,
    Bayes,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpec {
    /// Optional as in W&B: the spec file's name without its extension.
    #[serde(default)]
    pub(super) name: Option<String>,
    /// W&B's keys that mean nothing here: kept in the spec's text, noted, never an error.
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) project: Option<String>,
    #[serde(default)]
    pub(super) entity: Option<String>,
    #[serde(default)]
    pub(super) controller: Option<Value>,
    /// W&B's training script; its trials run `command` (W&B's macros), by default
    /// `${env} ${interpreter} ${program} ${args}`.
    #[serde(default)]
    pub(super) program: Option<String>,
    #[serde(default)]
    pub(super) command: Option<Vec<String>>,
    /// `shim` (default): a W&B script's `import wandb` finds rnnsweep's stand-in; `real`
    /// leaves the installed package (the script prints rnnsweep's protocol itself).
    #[serde(default)]
    pub(super) wandb: Option<WandbModule>,
    #[serde(default)]
    pub(super) storage: Option<String>,
    #[serde(default)]
    pub(super) data: Option<RawData>,
    pub(super) method: RawMethod,
    #[serde(default)]
    pub(super) seed: u64,
    #[serde(default)]
    pub(super) metric: Option<RawMetric>,
    /// Optional as in W&B: a grid runs every point, other methods run until stopped.
    #[serde(default)]
    pub(super) run_cap: Option<usize>,
    #[serde(default)]
    pub(super) max_duration: Option<Value>,
    #[serde(default)]
    pub(super) max_failures: Option<usize>,
    #[serde(default)]
    pub(super) max_retries: Option<usize>,
    #[serde(default)]
    pub(super) max_initial_failures: Option<usize>,
    #[serde(default)]
    pub(super) trial_timeout: Option<Value>,
    #[serde(default)]
    pub(super) silence_timeout: Option<Value>,
    #[serde(default)]
    pub(super) heartbeat_grace: Option<Value>,
    #[serde(default)]
    pub(super) training: Option<Value>,
    #[serde(default)]
    pub(super) parameters: BTreeMap<String, RawParam>,
    #[serde(default)]
    pub(super) trial: Option<RawTrial>,
    #[serde(default)]
    pub(super) resources: Option<Resources>,
    #[serde(default)]
    pub(super) tpe: Option<TpeSettings>,
    #[serde(default)]
    pub(super) early_terminate: Option<EarlyTerminate>,
    #[serde(default, rename = "final")]
    pub(super) final_model: Option<RawFinal>,
    /// Optuna's `enqueue_trial`: configurations (`{parameter: value}`) run first, as given.
    #[serde(default)]
    pub(super) enqueue: Vec<Value>,
}

/// `final`: how `best --retrain` builds the model this spec is for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFinal {
    /// Average up to K configurations' probabilities.
    pub(super) ensemble: usize,
    #[serde(default)]
    pub(super) selection: SelectionRule,
    #[serde(default)]
    pub(super) combine: rnnsweep_model::artifact::Combine,
    /// `true`, or the distillation's settings.
    #[serde(default)]
    pub(super) distill: Option<RawDistill>,
}

/// `distill: true` or `distill: {alpha, temperature, unlabelled}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub(super) enum RawDistill {
    On(bool),
    Settings(RawDistillSettings),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDistillSettings {
    #[serde(default)]
    pub(super) alpha: Option<f64>,
    #[serde(default)]
    pub(super) temperature: Option<f64>,
    /// A CSV of rows without labels (same text column) the student learns from too.
    #[serde(default)]
    pub(super) unlabelled: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawData {
    pub(super) train: String,
    /// Validation rows from their own file instead of `validation_split`.
    #[serde(default)]
    pub(super) validation: Option<String>,
    #[serde(default)]
    pub(super) columns: Columns,
    #[serde(default)]
    pub(super) validation_split: Option<f64>,
    #[serde(default)]
    pub(super) max_words: Option<usize>,
    #[serde(default)]
    pub(super) seed: Option<u64>,
    /// The classes and their order (integers or words).
    #[serde(default)]
    pub(super) labels: Option<Vec<Value>>,
    /// One-vs-rest: the positive class, or several.
    #[serde(default)]
    pub(super) positive: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetric {
    pub(super) name: String,
    #[serde(default)]
    pub(super) goal: Option<Direction>,
    /// Stop the sweep once a trial reaches this value (W&B's `metric.target`).
    #[serde(default)]
    pub(super) target: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum WandbModule {
    Shim,
    Real,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParam {
    #[serde(default)]
    pub(super) value: Option<Value>,
    #[serde(default)]
    pub(super) values: Option<Vec<Value>>,
    #[serde(default)]
    pub(super) distribution: Option<DistributionName>,
    #[serde(default)]
    pub(super) min: Option<serde_json::Number>,
    #[serde(default)]
    pub(super) max: Option<serde_json::Number>,
    #[serde(default)]
    pub(super) q: Option<f64>,
    /// W&B's nested parameters: the script sees a nested dict, the study dotted names.
    #[serde(default)]
    pub(super) parameters: Option<BTreeMap<String, RawParam>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum DistributionName {
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
pub(super) struct RawTrial {
    /// A user's training command speaking the worker protocol instead of the built-in BiLSTM;
    /// `{params_json}`, `{trial_file}`, `{number}` and `{device}` in it are replaced.
    #[serde(default)]
    pub(super) command: Option<Vec<String>>,
    /// `function`: a synthetic objective (see [`FunctionTrial`]).
    #[serde(default)]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) name: Option<Function>,
    #[serde(default)]
    pub(super) epochs: Option<usize>,
    #[serde(default)]
    pub(super) noise: Option<f64>,
}
