//! The training loop: seeded epochs, class-weighted loss, per-epoch validation metrics handed
//! to a callback that may stop training, early stopping with best weights restored, and a
//! checkpoint after each epoch from which training continues bit-identically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::Optimizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::BatchingMode;
use crate::config::ModelConfig;
use crate::dataset::{bucket_batches, epoch_batches, mix, Examples, Padded, Prepared};
use crate::error::{ModelError, Result};
use crate::metrics::{
    classify, classify_binary_as_classes, classify_multiclass, direction_of, ClassScores,
    Direction, Metric,
};
use crate::net::{bce_with_logits, softmax_cross_entropy, IdBatch, Net};
use crate::optim::{KerasOptimizer, OptimizerScalars};

/// What one epoch reports (also the worker protocol's per-epoch object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_loss: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_accuracy: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_loss: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_accuracy: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_precision: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_recall: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_f1: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_specificity: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_roc_auc: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_pr_auc: f64,
    /// F1 at 0.5, whatever the threshold (absent in reports from before thresholds).
    #[serde(
        default = "nan",
        rename = "val_f1_at_0.5",
        deserialize_with = "f64_or_nan"
    )]
    pub val_f1_at_half: f64,
    /// The decision threshold the validation metrics above were computed at: the
    /// configuration's fixed value, or the one chosen on the calibration rows after this epoch.
    #[serde(default = "half", deserialize_with = "f64_or_nan")]
    pub threshold: f64,
    /// `[tn, fp, fn, tp]` on the validation set at `threshold` (zeros for K classes).
    pub confusion: [u64; 4],
    pub seconds: f64,
    /// Mean F1 over the classes (both classes of a binary task).
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub val_macro_f1: f64,
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub val_weighted_f1: f64,
    /// Mean negative log-probability of the true class (no class weights, no L2).
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub val_log_loss: f64,
    /// Per-class precision, recall and F1 on the validation rows (K > 2 classes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_per_class: Vec<ClassScores>,
    /// `[true][predicted]` counts on the validation rows (K > 2 classes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_confusion_matrix: Vec<Vec<u64>>,
}

impl EpochReport {
    pub fn metric(&self, name: &str) -> Option<f64> {
        Metric::from_name(name).map(|m| self.get(m))
    }

    pub fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::TrainLoss => self.train_loss,
            Metric::TrainAccuracy => self.train_accuracy,
            Metric::ValLoss => self.val_loss,
            Metric::ValAccuracy => self.val_accuracy,
            Metric::ValPrecision => self.val_precision,
            Metric::ValRecall => self.val_recall,
            Metric::ValF1 => self.val_f1,
            Metric::ValSpecificity => self.val_specificity,
            Metric::ValRocAuc => self.val_roc_auc,
            Metric::ValPrAuc => self.val_pr_auc,
            Metric::ValF1AtHalf => self.val_f1_at_half,
            Metric::ValMacroF1 => self.val_macro_f1,
            Metric::ValWeightedF1 => self.val_weighted_f1,
            Metric::ValLogLoss => self.val_log_loss,
        }
    }
}

/// NaN travels as JSON `null` (a metric with no validation rows, or one a K-class task does
/// not have); read back, it is NaN again, so checkpoints with such epochs resume.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nan() -> f64 {
    f64::NAN
}

fn half() -> f64 {
    0.5
}

/// Writes a run's per-epoch history as CSV (`history.csv` in a model folder).
pub fn write_history(path: &Path, history: &[EpochReport]) -> Result<()> {
    let io = |e: std::io::Error| ModelError::Artifact {
        path: path.display().to_string(),
        message: format!("cannot write: {e}"),
    };
    let mut w = csv::Writer::from_path(path).map_err(|e| ModelError::Artifact {
        path: path.display().to_string(),
        message: format!("cannot write: {e}"),
    })?;
    let mut header: Vec<&str> = vec!["epoch"];
    header.extend(Metric::ALL.map(Metric::name));
    header.extend(["threshold", "tn", "fp", "fn", "tp", "seconds"]);
    w.write_record(&header).map_err(|e| io(e.into()))?;
    for r in history {
        let mut row = vec![r.epoch.to_string()];
        row.extend(Metric::ALL.map(|m| r.get(m).to_string()));
        row.push(r.threshold.to_string());
        row.extend(r.confusion.map(|c| c.to_string()));
        row.push(format!("{:.3}", r.seconds));
        w.write_record(&row).map_err(|e| io(e.into()))?;
    }
    w.flush().map_err(io)
}

/// The per-epoch callback's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All configured epochs ran.
    Completed,
    EarlyStopping,
    /// The callback asked to stop (e.g. a pruner).
    Callback,
}

pub struct FitOutcome {
    pub net: Net,
    pub history: Vec<EpochReport>,
    /// 1-based epoch whose weights the returned net holds.
    pub best_epoch: usize,
    pub stop: StopReason,
    /// The decision threshold for the returned net ([`calibrate`]).
    pub threshold: f64,
    /// A K-class net's per-class offsets to its log-probabilities (empty for binary).
    pub offsets: Vec<f64>,
    /// A multi-label net's threshold per label.
    pub label_thresholds: Vec<f64>,
    /// The returned net's probabilities for the calibration rows (empty for a fixed
    /// threshold): what an ensemble averages to choose its own threshold.
    pub calibration_probabilities: Vec<f32>,
}

/// Where and whether to checkpoint.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// A directory for `checkpoint.safetensors`; an existing checkpoint there is resumed.
    pub checkpoint_dir: Option<PathBuf>,
    /// On resume, hand the restored epochs to the callback again before training goes on
    /// (a re-run trial in a new record needs its whole history).
    pub replay_history: bool,
    /// What the checkpoint must have been written for besides the configuration (see
    /// [`task_fingerprint`]); a checkpoint for another task is discarded, never resumed.
    pub task: Option<serde_json::Value>,
}

/// The task a checkpoint belongs to: the data file (path, size, modification time). With the
/// configuration (parameters and seed included) it decides whether a checkpoint is resumed.
pub fn task_fingerprint(data_file: &Path) -> serde_json::Value {
    let path = std::path::absolute(data_file).unwrap_or_else(|_| data_file.to_path_buf());
    let meta = std::fs::metadata(data_file).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string());
    serde_json::json!({
        "data": path.display().to_string(),
        "bytes": meta.map(|m| m.len()),
        "modified_ns": modified,
    })
}

/// [`task_fingerprint`] of the training file and, when validation rows come from their own
/// file, of that file too.
pub fn data_fingerprint(train: &Path, validation: Option<&Path>) -> serde_json::Value {
    match validation {
        None => task_fingerprint(train),
        Some(v) => serde_json::json!({
            "train": task_fingerprint(train),
            "validation": task_fingerprint(v),
        }),
    }
}

/// Removes a checkpoint in `dir` that was written for another configuration or task, and
/// says so (one line naming the folder); `None` when there is none or it belongs here.
pub fn discard_foreign_checkpoint(
    dir: &Path,
    cfg: &ModelConfig,
    task: Option<&serde_json::Value>,
) -> Result<Option<String>> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let why = match read_checkpoint(&path, &Device::Cpu) {
        Err(e) => format!("it is unreadable ({e})"),
        Ok((meta, _)) if meta.config != *cfg => "it was written for another configuration".into(),
        Ok((meta, _)) if meta.task.as_ref() != task => {
            "it was written for other data (file, size or time changed)".into()
        }
        Ok(_) => return Ok(None),
    };
    std::fs::remove_file(&path).map_err(|e| ModelError::Artifact {
        path: path.display().to_string(),
        message: format!("cannot remove a foreign checkpoint: {e}"),
    })?;
    Ok(Some(format!(
        "{}: the checkpoint there was not resumed because {why}; training starts fresh",
        dir.display()
    )))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointMeta {
    epochs_done: usize,
    history: Vec<EpochReport>,
    best_value: Option<f64>,
    best_epoch: usize,
    wait: usize,
    optimizer: OptimizerScalars,
    config: ModelConfig,
    #[serde(default)]
    task: Option<serde_json::Value>,
}

const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Keras's `EarlyStopping` callback: watches one metric, counts epochs without improvement,
/// and keeps the best epoch's weights to restore.
struct EarlyStopping<'a> {
    settings: &'a crate::config::EarlyStopping,
    direction: Direction,
    best_value: Option<f64>,
    best_epoch: usize,
    best_state: Option<HashMap<String, Tensor>>,
    wait: usize,
}

impl<'a> EarlyStopping<'a> {
    fn new(settings: &'a crate::config::EarlyStopping) -> Result<Self> {
        let monitor = settings.monitor.as_str();
        let direction = direction_of(monitor).ok_or_else(|| ModelError::Config {
            at: "early_stopping.monitor".into(),
            message: format!("`{monitor}` is not a reported metric"),
        })?;
        Ok(Self {
            settings,
            direction,
            best_value: None,
            best_epoch: 0,
            best_state: None,
            wait: 0,
        })
    }

    /// Without a validation set there is nothing to monitor but training metrics: every
    /// epoch runs, the last one is kept.
    fn monitoring(&self, held_out: bool) -> bool {
        held_out || self.settings.monitor.starts_with("train_")
    }

    /// Records an epoch: the wait grows each epoch and resets on improvement (Keras's rule).
    fn observe(&mut self, report: &EpochReport, held_out: bool, net: &Net) -> Result<()> {
        if !self.monitoring(held_out) {
            return Ok(());
        }
        self.wait += 1;
        let value = report.metric(&self.settings.monitor).unwrap_or(f64::NAN);
        let delta = self.settings.min_delta;
        let improved = match self.best_value {
            None => !value.is_nan(),
            Some(best) => match self.direction {
                Direction::Minimize => value < best - delta,
                Direction::Maximize => value > best + delta,
            },
        };
        if improved {
            self.best_value = Some(value);
            self.best_epoch = report.epoch;
            self.wait = 0;
            if self.settings.restore_best {
                self.best_state = Some(net.state()?);
            }
        }
        Ok(())
    }

    fn should_stop(&self, held_out: bool) -> bool {
        self.monitoring(held_out) && self.settings.enabled && self.wait >= self.settings.patience
    }

    /// Puts the best epoch's weights back (when asked to) and says which epoch the net holds.
    fn restore(&self, net: &Net, last_epoch: usize) -> Result<usize> {
        match (&self.best_state, self.settings.restore_best) {
            (Some(best), true) => {
                net.load_state(best, "best weights")?;
                Ok(self.best_epoch)
            }
            _ => Ok(last_epoch),
        }
    }
}

/// Saves the run after each epoch and resumes it from there: weights, optimizer state, the
/// early-stopping state and the history, in one file written atomically. A checkpoint written
/// for another configuration or task is discarded, never resumed.
struct Checkpointer<'a> {
    dir: Option<&'a Path>,
    cfg: &'a ModelConfig,
    task: Option<&'a serde_json::Value>,
}

impl Checkpointer<'_> {
    /// Loads a checkpoint into `net`, `optimizer` and `stopping`; returns its history.
    fn resume(
        &self,
        net: &Net,
        optimizer: &mut KerasOptimizer,
        stopping: &mut EarlyStopping,
        device: &Device,
    ) -> Result<Vec<EpochReport>> {
        let Some(dir) = self.dir else {
            return Ok(Vec::new());
        };
        if let Some(warning) = discard_foreign_checkpoint(dir, self.cfg, self.task)? {
            tracing::warn!("{warning}");
        }
        let path = dir.join(CHECKPOINT_FILE);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let (meta, tensors) = read_checkpoint(&path, device)?;
        let source = path.display().to_string();
        net.load_state(&prefixed(&tensors, "model."), &source)?;
        optimizer.load_state(&prefixed(&tensors, "opt."), meta.optimizer, &source)?;
        let best = prefixed(&tensors, "best.");
        stopping.best_state = (!best.is_empty()).then_some(best);
        stopping.best_value = meta.best_value;
        stopping.best_epoch = meta.best_epoch;
        stopping.wait = meta.wait;
        tracing::info!(
            "resuming from {} after epoch {}",
            path.display(),
            meta.epochs_done
        );
        Ok(meta.history)
    }

    fn save(
        &self,
        history: &[EpochReport],
        stopping: &EarlyStopping,
        net: &Net,
        optimizer: &KerasOptimizer,
    ) -> Result<()> {
        let Some(dir) = self.dir else {
            return Ok(());
        };
        let meta = CheckpointMeta {
            epochs_done: history.len(),
            history: history.to_vec(),
            best_value: stopping.best_value,
            best_epoch: stopping.best_epoch,
            wait: stopping.wait,
            optimizer: optimizer.state()?.1,
            config: self.cfg.clone(),
            task: self.task.cloned(),
        };
        write_checkpoint(dir, &meta, net, optimizer, stopping.best_state.as_ref())
    }
}

/// Validation metrics after an epoch (NaN where there are no validation rows).
fn evaluate_epoch(
    net: &Net,
    data: &Prepared,
    cfg: &ModelConfig,
    epoch: usize,
    (train_loss, train_accuracy): (f64, f64),
    started: Instant,
) -> Result<EpochReport> {
    if net.outputs > 1 || net.multi_label {
        return evaluate_epoch_classes(
            net,
            data,
            cfg,
            epoch,
            (train_loss, train_accuracy),
            started,
        );
    }
    let held_out = data.validation.ids.rows > 0;
    let (val_probs, val_loss) = if held_out {
        evaluate_examples(net, &data.validation, cfg.batch_size)?
    } else {
        (Vec::new(), f64::NAN)
    };
    let threshold = calibrate(net, data, cfg)?.threshold;
    let mut c = classify(&val_probs, &data.validation.labels, threshold as f32);
    let at_half = classify(&val_probs, &data.validation.labels, 0.5).f1;
    let classes = binary_names(data);
    let both = classify_binary_as_classes(
        &val_probs,
        &data.validation.labels,
        threshold as f32,
        &classes,
    );
    let log_loss = crate::metrics::log_loss(
        &val_probs
            .iter()
            .flat_map(|&p| [1.0 - p, p])
            .collect::<Vec<_>>(),
        &data.validation.labels,
        2,
    );
    if !held_out {
        let nan = f64::NAN;
        (c.accuracy, c.precision, c.recall, c.f1, c.specificity) = (nan, nan, nan, nan, nan);
    }
    let or_nan = |v: f64| if held_out { v } else { f64::NAN };
    Ok(EpochReport {
        epoch,
        train_loss,
        train_accuracy,
        val_loss,
        val_accuracy: c.accuracy,
        val_precision: c.precision,
        val_recall: c.recall,
        val_f1: c.f1,
        val_specificity: c.specificity,
        val_roc_auc: c.roc_auc,
        val_pr_auc: c.pr_auc,
        val_f1_at_half: or_nan(at_half),
        threshold,
        confusion: c.confusion,
        seconds: started.elapsed().as_secs_f64(),
        val_macro_f1: or_nan(both.macro_f1),
        val_weighted_f1: or_nan(both.weighted_f1),
        val_log_loss: or_nan(log_loss),
        val_per_class: Vec::new(),
        val_confusion_matrix: Vec::new(),
    })
}

/// A binary task's two class names (`0`, `1` for data prepared before names).
fn binary_names(data: &Prepared) -> Vec<String> {
    if data.classes.len() == 2 {
        data.classes.clone()
    } else {
        vec!["0".into(), "1".into()]
    }
}

/// K-class and multi-label validation metrics: `val_precision`, `val_recall`, `val_f1`,
/// `val_roc_auc` and `val_pr_auc` are the macro means over the classes (argmax after the
/// per-class offsets) or over the labels (each at its own threshold; `val_roc_auc` is then the
/// mean column ROC-AUC and `val_accuracy` the subset accuracy).
fn evaluate_epoch_classes(
    net: &Net,
    data: &Prepared,
    cfg: &ModelConfig,
    epoch: usize,
    (train_loss, train_accuracy): (f64, f64),
    started: Instant,
) -> Result<EpochReport> {
    let nan = f64::NAN;
    let mut report = EpochReport {
        epoch,
        train_loss,
        train_accuracy,
        val_loss: nan,
        val_accuracy: nan,
        val_precision: nan,
        val_recall: nan,
        val_f1: nan,
        val_specificity: nan,
        val_roc_auc: nan,
        val_pr_auc: nan,
        val_f1_at_half: nan,
        threshold: nan,
        confusion: [0; 4],
        seconds: 0.0,
        val_macro_f1: nan,
        val_weighted_f1: nan,
        val_log_loss: nan,
        val_per_class: Vec::new(),
        val_confusion_matrix: Vec::new(),
    };
    if data.validation.ids.rows > 0 {
        let (probs, val_loss) = evaluate_examples(net, &data.validation, cfg.batch_size)?;
        let decision = calibrate(net, data, cfg)?;
        let v = &data.validation;
        let (m, log_loss) = if net.multi_label {
            (
                crate::metrics::classify_multilabel(
                    &probs,
                    &v.targets,
                    &data.classes,
                    &decision.label_thresholds,
                ),
                crate::metrics::multilabel_log_loss(&probs, &v.targets),
            )
        } else {
            (
                classify_multiclass(&probs, &v.labels, &data.classes, Some(&decision.offsets)),
                crate::metrics::log_loss(&probs, &v.labels, net.outputs),
            )
        };
        report.val_loss = val_loss;
        report.val_accuracy = m.accuracy;
        report.val_precision = m.macro_precision;
        report.val_recall = m.macro_recall;
        report.val_f1 = m.macro_f1;
        report.val_roc_auc = m.roc_auc;
        report.val_pr_auc = m.pr_auc;
        report.val_macro_f1 = m.macro_f1;
        report.val_weighted_f1 = m.weighted_f1;
        report.val_log_loss = log_loss;
        report.val_per_class = m.per_class;
        report.val_confusion_matrix = m.confusion;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// How the net as it is now decides: the binary threshold (fixed, or chosen on the calibration
/// rows, which neither train nor validate) or a K-class model's per-class offsets, with the
/// net's probabilities for those rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrated {
    pub threshold: f64,
    /// A multi-label net's threshold per label (empty otherwise).
    pub label_thresholds: Vec<f64>,
    /// Per class (K-class models); empty for a binary model.
    pub offsets: Vec<f64>,
    /// Empty when nothing was chosen on calibration rows.
    pub probabilities: Vec<f32>,
}

pub fn calibrate(net: &Net, data: &Prepared, cfg: &ModelConfig) -> Result<Calibrated> {
    let k = net.outputs;
    let fixed = |offsets: Vec<f64>| Calibrated {
        threshold: cfg.threshold.value,
        label_thresholds: if net.multi_label {
            vec![cfg.threshold.value; k]
        } else {
            Vec::new()
        },
        offsets,
        probabilities: Vec::new(),
    };
    if !cfg.threshold.needs_calibration() || data.calibration.ids.rows == 0 {
        return Ok(fixed(if k > 1 && !net.multi_label {
            vec![0.0; k]
        } else {
            Vec::new()
        }));
    }
    let probabilities = predict_padded(net, &data.calibration.ids, cfg.batch_size)?;
    Ok(if net.multi_label {
        let label_thresholds = crate::threshold::per_label_thresholds(
            &cfg.threshold,
            &probabilities,
            &data.calibration.targets,
            k,
        );
        Calibrated {
            threshold: cfg.threshold.value,
            label_thresholds,
            offsets: Vec::new(),
            probabilities,
        }
    } else if k > 1 {
        Calibrated {
            threshold: cfg.threshold.value,
            label_thresholds: Vec::new(),
            offsets: cfg
                .threshold
                .choose_offsets(&probabilities, &data.calibration.labels, k),
            probabilities,
        }
    } else {
        Calibrated {
            threshold: cfg
                .threshold
                .choose(&probabilities, &data.calibration.labels),
            label_thresholds: Vec::new(),
            offsets: Vec::new(),
            probabilities,
        }
    })
}

/// Trains a configuration: epochs of seeded mini-batches, validation metrics after each,
/// early stopping, a checkpoint per epoch (resumed when present), and the kept epoch's
/// weights in the returned net. `on_epoch` sees every epoch and may stop the run.
pub fn fit(
    cfg: &ModelConfig,
    data: &Prepared,
    device: &Device,
    options: &FitOptions,
    mut on_epoch: impl FnMut(&EpochReport) -> Control,
) -> Result<FitOutcome> {
    cfg.validate()?;
    if data.outputs() > 1
        && !data.multi_label
        && !matches!(
            cfg.threshold.mode,
            crate::threshold::ThresholdMode::Fixed | crate::threshold::ThresholdMode::MaxMacroF1
        )
    {
        return Err(ModelError::Config {
            at: "threshold".into(),
            message: format!(
                "`{}` chooses one binary threshold; a {}-class task is decided by argmax, or with \
                 per-class offsets (`max_macro_f1`)",
                serde_json::to_value(cfg.threshold.mode)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                data.classes.len()
            ),
        });
    }
    let net = Net::for_task(
        cfg,
        data.tokenizer.id_limit(),
        data.outputs(),
        data.multi_label,
        device,
    )?;
    let trainable = net.trainable();
    let mut optimizer = KerasOptimizer::new(
        trainable.iter().map(|(_, v)| v.clone()).collect(),
        cfg.optimizer.clone(),
    )?;
    let mut stopping = EarlyStopping::new(&cfg.early_stopping)?;
    let checkpointer = Checkpointer {
        dir: options.checkpoint_dir.as_deref(),
        cfg,
        task: options.task.as_ref(),
    };
    let mut history = checkpointer.resume(&net, &mut optimizer, &mut stopping, device)?;
    let held_out = data.validation.ids.rows > 0;

    let mut stop = StopReason::Completed;
    if options.replay_history && history.iter().any(|r| on_epoch(r) == Control::Stop) {
        stop = StopReason::Callback;
    } else if !history.is_empty() && stopping.should_stop(held_out) {
        stop = StopReason::EarlyStopping;
    }
    let train_rows: Vec<usize> = (0..data.train.ids.rows).collect();
    let lengths = data.train.ids.lengths();
    while stop == StopReason::Completed && history.len() < cfg.epochs {
        let epoch = history.len();
        let started = Instant::now();
        let train = train_epoch(
            &net,
            &mut optimizer,
            cfg,
            data,
            &train_rows,
            &lengths,
            epoch,
        )?;
        let report = evaluate_epoch(&net, data, cfg, epoch + 1, train, started)?;
        stopping.observe(&report, held_out, &net)?;
        history.push(report.clone());
        checkpointer.save(&history, &stopping, &net, &optimizer)?;
        if on_epoch(&report) == Control::Stop {
            stop = StopReason::Callback;
        } else if stopping.should_stop(held_out) {
            stop = StopReason::EarlyStopping;
        }
    }
    let best_epoch = stopping.restore(&net, history.len())?;
    let Calibrated {
        threshold,
        label_thresholds,
        offsets,
        probabilities: calibration_probabilities,
    } = calibrate(&net, data, cfg)?;
    Ok(FitOutcome {
        net,
        history,
        best_epoch,
        stop,
        threshold,
        label_thresholds,
        offsets,
        calibration_probabilities,
    })
}

fn batch_ids(examples: &Examples, rows: &[usize]) -> Vec<u32> {
    let mut ids = Vec::with_capacity(rows.len() * examples.ids.len);
    for &r in rows {
        ids.extend_from_slice(examples.ids.row(r));
    }
    ids
}

fn train_epoch(
    net: &Net,
    optimizer: &mut KerasOptimizer,
    cfg: &ModelConfig,
    data: &Prepared,
    rows: &[usize],
    lengths: &[usize],
    epoch: usize,
) -> Result<(f64, f64)> {
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    let batches = match cfg.batching.mode {
        BatchingMode::Shuffle => epoch_batches(rows, cfg.batch_size, cfg.seed, epoch),
        BatchingMode::Bucket => bucket_batches(
            rows,
            lengths,
            cfg.batch_size,
            cfg.batching.bucket_size,
            cfg.seed,
            epoch,
        ),
    };
    for (b, batch_rows) in batches.iter().enumerate() {
        let n = batch_rows.len();
        let ids = batch_ids(&data.train, batch_rows);
        let (labels, weights): (Vec<f32>, Vec<f32>) = if data.multi_label {
            let k = data.classes.len();
            let targets = &data.train.targets;
            (
                batch_rows
                    .iter()
                    .flat_map(|&r| targets[r * k..(r + 1) * k].iter().map(|&t| f32::from(t)))
                    .collect(),
                vec![1.0; n],
            )
        } else {
            (
                batch_rows
                    .iter()
                    .map(|&r| f32::from(data.train.labels[r]))
                    .collect(),
                batch_rows
                    .iter()
                    .map(|&r| data.class_weights[usize::from(data.train.labels[r])])
                    .collect(),
            )
        };
        let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, epoch as u64 + 1, b as u64 + 1));
        let step = train_batch(
            net,
            optimizer,
            &IdBatch {
                ids: &ids,
                batch: n,
                time: data.train.ids.len,
            },
            &labels,
            &weights,
            &mut rng,
        )?;
        if !step.loss.is_finite() {
            return Err(ModelError::NonFinite {
                epoch: epoch + 1,
                batch: b + 1,
                value: step.loss,
            });
        }
        loss_sum += f64::from(step.loss) * n as f64;
        correct += step.correct;
        seen += n;
    }
    Ok((loss_sum / seen as f64, correct as f64 / seen as f64))
}

/// What one optimizer step reports.
#[derive(Debug, Clone, Copy)]
pub struct BatchStep {
    /// The batch's loss (class-weighted cross-entropy plus L2), before the update.
    pub loss: f32,
    /// Rows classified right at threshold 0.5, before the update.
    pub correct: usize,
}

/// One training step on one batch: forward with dropout from `rng`, Keras's sample-weighted
/// loss, backward, optimizer update. A non-finite loss is reported, not applied.
pub fn train_batch(
    net: &Net,
    optimizer: &mut KerasOptimizer,
    batch: &IdBatch,
    labels: &[f32],
    weights: &[f32],
    rng: &mut ChaCha8Rng,
) -> Result<BatchStep> {
    let n = batch.batch;
    let k = net.outputs;
    let (logits, rows) = net.forward_rows(batch, Some(rng))?;
    let w = Tensor::from_vec(weights.to_vec(), n, &net.device)?;
    let per_row = if net.multi_label {
        // Keras's binary cross-entropy of K sigmoids: the mean over the labels of each row.
        let y = Tensor::from_vec(labels.to_vec(), (n, k), &net.device)?;
        bce_with_logits(&logits, &y)?.mean(1)?
    } else if k == 1 {
        let y = Tensor::from_vec(labels.to_vec(), n, &net.device)?;
        bce_with_logits(&logits, &y)?
    } else {
        softmax_cross_entropy(&logits, &one_hot(labels, k, &net.device)?)?
    };
    // Keras's sample-weighted "sum over batch size" reduction.
    let data_loss = (per_row.mul(&w)?.sum_all()? / n as f64)?;
    let loss = data_loss.add(&net.l2_penalty()?)?;
    let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    if !value.is_finite() {
        return Ok(BatchStep {
            loss: value,
            correct: 0,
        });
    }
    let grads = loss.backward()?;
    let row_grads = match &rows {
        Some(r) => grads.get(r.rows.as_tensor()).cloned(),
        None => None,
    };
    let sparse = rows
        .as_ref()
        .zip(row_grads.as_ref())
        .map(|(r, g)| (&net.embedding, r.ids.as_slice(), g));
    optimizer.step_with_rows(&grads, sparse)?;
    let correct = if net.multi_label {
        // Rows with every label right (scikit-learn's subset accuracy).
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        logits
            .chunks(k)
            .zip(labels.chunks(k))
            .filter(|(z, y)| z.iter().zip(*y).all(|(z, y)| (*z >= 0.0) == (*y > 0.5)))
            .count()
    } else if k == 1 {
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        logits
            .iter()
            .zip(labels)
            .filter(|(z, y)| (**z >= 0.0) == (**y > 0.5))
            .count()
    } else {
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        crate::metrics::argmax_classes(&logits, k, None)
            .iter()
            .zip(labels)
            .filter(|(p, y)| f32::from(**p) == **y)
            .count()
    };
    Ok(BatchStep {
        loss: value,
        correct,
    })
}

/// `[rows, K]` one-hot targets from class indices (given as `f32`, as [`train_batch`] takes them).
fn one_hot(labels: &[f32], k: usize, device: &Device) -> Result<Tensor> {
    let mut data = vec![0f32; labels.len() * k];
    for (r, &y) in labels.iter().enumerate() {
        let class = (y as usize).min(k - 1);
        data[r * k + class] = 1.0;
    }
    Ok(Tensor::from_vec(data, (labels.len(), k), device)?)
}

/// Logits in inference mode, `batch_size` rows at a time, in the rows' order (row-major
/// `[rows, K]` for a K-output net). Rows are batched
/// longest first, so each batch (cut to its own longest row) carries little padding.
pub fn predict_logits(net: &Net, ids: &Padded, batch_size: usize) -> Result<Vec<f32>> {
    let lengths = ids.lengths();
    let mut order: Vec<usize> = (0..ids.rows).collect();
    order.sort_by_key(|&r| std::cmp::Reverse(lengths[r]));
    let k = net.outputs;
    let mut logits = vec![0f32; ids.rows * k];
    for rows in order.chunks(batch_size.max(1)) {
        let mut chunk = Vec::with_capacity(rows.len() * ids.len);
        for &r in rows {
            chunk.extend_from_slice(ids.row(r));
        }
        let z = net.forward(
            &IdBatch {
                ids: &chunk,
                batch: rows.len(),
                time: ids.len,
            },
            None,
        )?;
        let z = z.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for (&r, z) in rows.iter().zip(z.chunks(k)) {
            logits[r * k..(r + 1) * k].copy_from_slice(z);
        }
    }
    Ok(logits)
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Probabilities in inference mode: class 1's for a binary net, row-major `[rows, K]`
/// softmax probabilities for K classes.
pub fn predict_padded(net: &Net, ids: &Padded, batch_size: usize) -> Result<Vec<f32>> {
    let logits = predict_logits(net, ids, batch_size)?;
    Ok(probabilities_of(&logits, head_width(net)))
}

/// The width [`probabilities_of`] normalises over: 1 (each logit its own sigmoid) for binary
/// and multi-label nets, K for a softmax.
fn head_width(net: &Net) -> usize {
    crate::dataset::normalised_width(net.outputs, net.multi_label)
}

/// Logits → probabilities: the sigmoid of each for one output, a softmax per row for K.
pub fn probabilities_of(logits: &[f32], outputs: usize) -> Vec<f32> {
    if outputs == 1 {
        return logits.iter().copied().map(sigmoid).collect();
    }
    let mut probs = Vec::with_capacity(logits.len());
    for row in logits.chunks(outputs) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = row.iter().map(|&z| (z - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        probs.extend(exp.iter().map(|e| e / sum));
    }
    probs
}

/// The log-probability of the true class from one row of logits (stable log-softmax).
fn log_softmax_at(row: &[f32], class: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&z| f64::from(z - max).exp()).sum();
    f64::from(row[class] - max) - sum.ln()
}

/// Probabilities and the unweighted loss (BCE from logits + L2), as Keras reports `val_loss`
/// (class weights apply to training only).
pub fn evaluate_examples(
    net: &Net,
    examples: &Examples,
    batch_size: usize,
) -> Result<(Vec<f32>, f64)> {
    let logits = predict_logits(net, &examples.ids, batch_size)?;
    let k = net.outputs;
    let bce = |z: f32, y: u8| {
        let z = f64::from(z);
        z.max(0.0) - z * f64::from(y) + (-z.abs()).exp().ln_1p()
    };
    let total: f64 = if net.multi_label {
        logits
            .iter()
            .zip(&examples.targets)
            .map(|(&z, &y)| bce(z, y))
            .sum::<f64>()
            / k as f64
    } else if k == 1 {
        logits
            .iter()
            .zip(&examples.labels)
            .map(|(&z, &y)| {
                let z = f64::from(z);
                z.max(0.0) - z * f64::from(y) + (-z.abs()).exp().ln_1p()
            })
            .sum()
    } else {
        logits
            .chunks(k)
            .zip(&examples.labels)
            .map(|(row, &y)| -log_softmax_at(row, usize::from(y).min(k - 1)))
            .sum()
    };
    let l2: f32 = net.l2_penalty()?.to_dtype(DType::F32)?.to_scalar()?;
    let probs = probabilities_of(&logits, head_width(net));
    Ok((
        probs,
        total / examples.labels.len().max(1) as f64 + f64::from(l2),
    ))
}

fn prefixed(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .map(|rest| (rest.to_string(), v.clone()))
        })
        .collect()
}

fn write_checkpoint(
    dir: &Path,
    meta: &CheckpointMeta,
    net: &Net,
    optimizer: &KerasOptimizer,
    best: Option<&HashMap<String, Tensor>>,
) -> Result<()> {
    let io = |source| ModelError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut all: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in net.state()? {
        all.insert(format!("model.{k}"), v);
    }
    for (k, v) in optimizer.state()?.0 {
        all.insert(format!("opt.{k}"), v);
    }
    if let Some(best) = best {
        for (k, v) in best {
            all.insert(format!("best.{k}"), v.clone());
        }
    }
    // The metadata travels inside the same file so one rename makes the checkpoint atomic.
    let json = serde_json::to_vec(meta).map_err(|e| ModelError::Artifact {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let len = json.len();
    all.insert(
        "meta.json".into(),
        Tensor::from_vec(json, len, &Device::Cpu)?,
    );
    let all: HashMap<String, Tensor> = all
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    candle_core::safetensors::save(&all, &tmp)?;
    std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE)).map_err(io)?;
    Ok(())
}

fn read_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(CheckpointMeta, HashMap<String, Tensor>)> {
    let bad = |message: String| ModelError::Artifact {
        path: path.display().to_string(),
        message,
    };
    let tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| bad(format!("unreadable checkpoint: {e}")))?;
    let meta = tensors
        .get("meta.json")
        .ok_or_else(|| bad("checkpoint has no metadata".into()))?
        .to_vec1::<u8>()?;
    let meta: CheckpointMeta =
        serde_json::from_slice(&meta).map_err(|e| bad(format!("bad checkpoint metadata: {e}")))?;
    Ok((meta, tensors))
}
