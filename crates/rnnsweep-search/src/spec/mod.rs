//! The sweep spec: YAML whose keys follow W&B sweeps where the meaning is the same, parsed into
//! raw serde types, then validated into a typed [`Spec`]. Every error names file:line:column.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rnnsweep_model::data::Columns;
use rnnsweep_model::metrics::Direction;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::devices::Resources;
use crate::pruning::EarlyTerminate;
use crate::sampling::synthetic::Function;
use crate::sampling::tpe::TpeSettings;
use crate::sampling::Method;
use crate::space::{Distribution, Space};
use crate::store::StorageLocation;
use final_model::SelectionRule;

pub mod duration;
pub mod final_model;
pub mod locate;
mod raw;
mod reader;

#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct SpecError {
    /// `file:line:column`, or the file alone when no position is known.
    pub at: String,
    pub message: String,
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
    /// A script given W&B's way (`program`, `command` with W&B's macros).
    Program(WandbProgram),
}

/// A W&B sweep's trial: `command` with its macros expanded per trial.
#[derive(Debug, Clone, PartialEq)]
pub struct WandbProgram {
    /// `program`, relative to the spec's folder.
    pub program: Option<PathBuf>,
    pub command: Vec<String>,
    /// Put rnnsweep's `wandb` stand-in first on the script's `PYTHONPATH`.
    pub shim: bool,
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
    /// Whether the spec names a data file (a user's command or a function may need none).
    pub reads_data: bool,
    /// `data.validation`: validation rows from this file (same columns) instead of a split.
    pub validation_file: Option<PathBuf>,
    pub columns: Columns,
    /// `data.labels` and `data.positive`: how label values become classes.
    pub labels: rnnsweep_model::data::LabelRule,
    pub method: Method,
    pub seed: u64,
    pub metric: String,
    pub direction: Direction,
    /// Finished trials wanted; `usize::MAX` when the spec gives none (W&B: run until stopped,
    /// a grid until every point ran).
    pub run_cap: usize,
    /// `metric.target`: stop once a trial's objective reaches it.
    pub metric_target: Option<f64>,
    pub max_duration: Option<Duration>,
    /// Stop once this many failed trials have been counted in a run.
    pub max_failures: usize,
    /// Stop at once when the first this-many trials of a run all fail: a broken setup (0: never).
    pub max_initial_failures: usize,
    /// A trial running longer than this is stopped and FAILs.
    pub trial_timeout: Option<Duration>,
    /// A trial that writes no protocol line for this long is stopped and FAILs.
    pub silence_timeout: Option<Duration>,
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
    pub final_selection: SelectionRule,
    /// `final: {combine}`: how the ensemble combines its members' probabilities.
    pub final_combine: rnnsweep_model::artifact::Combine,
    /// `final: {distill}`: hand over one student trained on the ensemble's probabilities.
    pub final_distill: Option<final_model::FinalDistill>,
    /// `enqueue`: configurations the spec vouches for (`{parameter: value}`, checked against
    /// the space), queued once per study and run first, to their end: never pruned.
    pub enqueue: Vec<Value>,
    /// Where the spec was read from (relative paths in it are relative to its folder).
    pub path: PathBuf,
}

impl Spec {
    /// The search space this spec describes.
    pub fn space(&self) -> Space {
        Space {
            parameters: self.parameters.clone(),
            training: self.training.clone(),
        }
    }

    /// The labelled training table and, with `data.validation`, the validation table.
    /// The fused LSTM runs on the CPU only: a spec that asks for it with a GPU among its devices
    /// would fail every trial at its start, so it fails here, naming the key.
    pub fn check_lstm_on_devices(&self) -> Result<(), String> {
        let devices = self.resources.device_names()?;
        let Some(gpu) = devices
            .iter()
            .find(|d| **d != rnnsweep_model::device::DeviceName::Cpu)
        else {
            return Ok(());
        };
        let fused = Value::from("fused");
        if self.trial.trains_model() && self.training.get("lstm_impl") == Some(&fused) {
            return Err(format!(
                "training.lstm_impl: fused runs on the CPU only, and resources.devices has {gpu} (use auto, which picks the fused kernel on CPU slots, or reference)"
            ));
        }
        let searched = self.parameters.iter().find(|(name, d)| {
            name == "lstm_impl" && d.grid_values().is_some_and(|v| v.contains(&fused))
        });
        if let (true, Some(_)) = (self.trial.trains_model(), searched) {
            return Err(format!(
                "parameters.lstm_impl: fused runs on the CPU only, and resources.devices has {gpu} (use auto, which picks the fused kernel on CPU slots, or reference)"
            ));
        }
        Ok(())
    }

    /// The data files the trials read: gone mid-sweep, they stop it (not each trial).
    pub fn data_files(&self) -> Vec<&Path> {
        let mut files = Vec::new();
        if self.reads_data {
            files.push(self.train_file.as_path());
        }
        files.extend(self.validation_file.as_deref());
        files
    }

    pub fn tables(
        &self,
    ) -> Result<
        (
            rnnsweep_model::data::Table,
            Option<rnnsweep_model::data::Table>,
        ),
        rnnsweep_model::error::ModelError,
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
        reader::read(text, path)
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
            "exp/s.yaml:9:1: unknown field `run_caps`, expected one of `name`, `description`, `project`, `entity`, `controller`, `program`, `command`, `wandb`, `storage`, `data`, `method`, `seed`, `metric`, `run_cap`, `max_duration`, `max_failures`, `max_retries`, `max_initial_failures`, `trial_timeout`, `silence_timeout`, `heartbeat_grace`, `training`, `parameters`, `trial`, `resources`, `tpe`, `early_terminate`, `final`, `enqueue`"
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
            "exp/s.yaml:11:3: training: unknown field `epoch`, expected one of `max_words`, `embedding_dim`, `lstm_units`, `lstm_dropout`, `batch_norm`, `batch_norm_momentum`, `dense`, `dense_dropout`, `optimizer`, `batch_size`, `epochs`, `early_stopping`, `sequence_length`, `padding`, `truncating`, `validation_split`, `class_weighting`, `seed`, `lstm_impl`, `cell`, `batching`, `pooling`, `embedding_dropout`, `embedding_update`, `tokenizer`, `inputs`, `view_dropout`, `char_sequence_length`, `ngram_sequence_length`, `threshold`, `calibration_split`"
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
        assert_eq!(s.final_selection, SelectionRule::Top);
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
    fn the_final_model_can_be_a_distilled_student() {
        let with = |f: &str| GOOD.replace("run_cap: 4", &format!("run_cap: 4\nfinal: {f}"));
        let s = parse(&with("{ensemble: 3, distill: true}")).unwrap();
        assert_eq!(
            s.final_distill,
            Some(final_model::FinalDistill {
                settings: rnnsweep_model::train::distill::DistillSettings::default(),
                unlabelled: None,
            })
        );
        let s = parse(&with(
            "{ensemble: 3, distill: {alpha: 0.2, temperature: 3, unlabelled: data/test.csv}}",
        ))
        .unwrap();
        let d = s.final_distill.unwrap();
        assert_eq!((d.settings.alpha, d.settings.temperature), (0.2, 3.0));
        assert_eq!(d.unlabelled, Some(PathBuf::from("exp/data/test.csv")));
        assert_eq!(
            parse(&with("{ensemble: 3, distill: false}"))
                .unwrap()
                .final_distill,
            None
        );
        assert_eq!(parse(GOOD).unwrap().final_distill, None);
        let e = message(&with("{ensemble: 3, distill: {alpha: 1.5}}"));
        assert!(
            e.starts_with("exp/s.yaml:") && e.contains("final.distill.alpha: 1.5 is not in [0, 1)"),
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
            Some(crate::pruning::EarlyTerminate::Hyperband { brackets, .. }) => {
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
    fn failure_limits_default_to_a_few_trials_and_time_limits_are_read_as_durations() {
        let s = parse(GOOD).unwrap();
        assert_eq!((s.max_failures, s.max_initial_failures), (3, 3));
        assert_eq!((s.trial_timeout, s.silence_timeout), (None, None));
        let big = parse(&GOOD.replace("run_cap: 4", "run_cap: 400")).unwrap();
        assert_eq!(big.max_failures, 40);
        let odd = parse(&GOOD.replace("run_cap: 4", "run_cap: 41")).unwrap();
        assert_eq!(odd.max_failures, 5);
        let set = parse(&GOOD.replace(
            "run_cap: 4",
            "run_cap: 4\nmax_initial_failures: 0\ntrial_timeout: 2h\nsilence_timeout: 90",
        ))
        .unwrap();
        assert_eq!(set.max_initial_failures, 0);
        assert_eq!(set.trial_timeout, Some(Duration::from_secs(7200)));
        assert_eq!(set.silence_timeout, Some(Duration::from_secs(90)));
        let e = message(&GOOD.replace("run_cap: 4", "run_cap: 4\nsilence_timeout: soon"));
        assert_eq!(
            e,
            "exp/s.yaml:9:1: silence_timeout: \"soon\" is not a positive duration such as 90s, 30m or 2h"
        );
    }

    #[test]
    fn a_command_trial_needs_no_data_but_the_built_in_model_does() {
        let no_data = GOOD.replace("data:\n  train: data/sample.csv\n  seed: 7\n", "");
        let e = message(&no_data);
        assert!(e.contains("missing field `data`"), "{e}");
        let command = parse(&format!(
            "{no_data}trial: {{command: [python3, train.py]}}\n"
        ))
        .unwrap();
        assert!(command.data_files().is_empty());
        assert!(matches!(command.trial, TrialKind::Command(_)));
        assert_eq!(
            parse(GOOD).unwrap().data_files(),
            vec![Path::new("exp/data/sample.csv")]
        );
    }

    const WANDB: &str = "\
description: sweep example
program: train.py
project: sweeps-examples
controller: {type: local}
method: bayes
metric: {name: loss_metric, goal: minimize, target: 0.5}
parameters:
  base: {values: [10, 15]}
  optimizer:
    parameters:
      lr: {values: [0.001, 0.0001]}
";

    #[test]
    fn a_w_and_b_sweep_file_reads_as_w_and_b_means_it() {
        let s = Spec::parse(WANDB, Path::new("exp/sweep-bayes.yaml")).unwrap();
        assert_eq!(s.name, "sweep-bayes", "no name: the file's");
        assert_eq!(s.run_cap, usize::MAX, "no run_cap: until stopped");
        assert_eq!(s.max_failures, 10);
        assert_eq!(
            (s.metric.as_str(), s.direction),
            ("loss_metric", Direction::Minimize)
        );
        assert_eq!(s.metric_target, Some(0.5));
        let names: Vec<&str> = s.parameters.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["base", "optimizer.lr"]);
        assert!(s.data_files().is_empty());
        assert_eq!(
            s.trial,
            TrialKind::Program(WandbProgram {
                program: Some(PathBuf::from("exp/train.py")),
                command: ["${env}", "${interpreter}", "${program}", "${args}"]
                    .map(String::from)
                    .to_vec(),
                shim: true,
            })
        );
        assert!(
            s.notes.iter().any(|n| n
                == "exp/sweep-bayes.yaml: `description`, `project`, `controller` are W&B's and not used here (kept with the study's spec)"),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn w_and_b_command_mistakes_name_the_key() {
        let at = |text: &str| {
            Spec::parse(text, Path::new("s.yaml"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            at(&WANDB.replace("program: train.py", "program: train.py\ncommand:\n  - ${program}\n  - ${argz}")),
            "s.yaml:3:1: command: `${argz}` is not one of W&B's macros (${env}, ${interpreter}, ${program}, ${args}, ${args_no_hyphens}, ${args_no_boolean_flags}, ${args_json}, ${args_json_file})"
        );
        assert!(at(&format!("{WANDB}trial: {{command: [x]}}\n")).contains(
            "program: give the trial either W&B's way (`program`, `command`) or as `trial`, not both"
        ));
        assert!(at(&WANDB.replace(
            "      lr: {values: [0.001, 0.0001]}",
            "      lr: {values: []}"
        ))
        .starts_with("s.yaml:11:12: parameters.optimizer.parameters.lr.values: is empty"));
    }

    #[test]
    fn the_fused_lstm_with_a_gpu_device_is_refused_before_any_trial() {
        let fused = GOOD.replace(
            "  lstm_units: [16]",
            "  lstm_units: [16]\n  lstm_impl: fused",
        );
        let mut s = parse(&fused).unwrap();
        assert_eq!(
            s.check_lstm_on_devices(),
            Ok(()),
            "fused on the CPU is fine"
        );
        // What `--devices cpu,cuda:1` (or a cuda build's spec) asks for.
        s.resources.devices = vec!["cpu".into(), "cuda:1".into()];
        assert_eq!(
            s.check_lstm_on_devices(),
            Err("training.lstm_impl: fused runs on the CPU only, and resources.devices has cuda:1 (use auto, which picks the fused kernel on CPU slots, or reference)".into())
        );
        let mut auto = parse(GOOD).unwrap();
        auto.resources.devices = vec!["cuda:0".into()];
        assert_eq!(auto.check_lstm_on_devices(), Ok(()));
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

        /// Whether the spec was accepted; a refusal must name the file and say something.
        fn check(text: &str) -> bool {
            match Spec::parse(text, Path::new("fuzz.yaml")) {
                Ok(_) => true,
                Err(e) => {
                    let m = e.to_string();
                    assert!(m.starts_with("fuzz.yaml"), "{m:?} for {text:?}");
                    assert!(m.len() > "fuzz.yaml: ".len() + 3, "{m:?}");
                    false
                }
            }
        }

        #[test]
        fn random_token_soup_and_mutated_specs_never_panic() {
            let refused = std::cell::Cell::new(0usize);
            rnnsweep_model::fuzz::run(50_000, tokens(), |text| {
                refused.set(refused.get() + usize::from(!check(&text)));
                Ok(())
            });
            let soup_refused = refused.replace(0);
            let accepted = std::cell::Cell::new(0usize);
            rnnsweep_model::fuzz::run(50_000, mutated(), |text| {
                let ok = check(&text);
                accepted.set(accepted.get() + usize::from(ok));
                refused.set(refused.get() + usize::from(!ok));
                Ok(())
            });
            // The generators must reach both sides: soup is refused nearly always, and
            // mutations of a valid spec are both accepted and refused in earnest.
            eprintln!(
                "soup refused {soup_refused}; mutations accepted {}, refused {}",
                accepted.get(),
                refused.get()
            );
            assert!(soup_refused > 45_000, "soup refused only {soup_refused}");
            assert!(
                accepted.get() > 1_000,
                "mutations accepted {}",
                accepted.get()
            );
            assert!(refused.get() > 1_000, "mutations refused {}", refused.get());
        }
    }
}
