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

use crate::config::ModelConfig;
use crate::data::Table;
use crate::dataset::{
    class_weights, epoch_batches, longest, mix, pad_sequences, stratified_split, Padded,
};
use crate::error::{ModelError, Result};
use crate::metrics::{classify, direction_of, Direction};
use crate::net::{bce_with_logits, IdBatch, Net};
use crate::optim::{KerasOptimizer, OptimizerScalars};
use crate::tokenizer::Tokenizer;

/// Padded rows with their labels.
#[derive(Debug, Clone)]
pub struct Examples {
    pub ids: Padded,
    pub labels: Vec<u8>,
}

impl Examples {
    fn select(all: &Padded, labels: &[u8], rows: &[usize]) -> Self {
        let mut ids = Vec::with_capacity(rows.len() * all.len);
        for &r in rows {
            ids.extend_from_slice(all.row(r));
        }
        Self {
            ids: Padded {
                ids,
                rows: rows.len(),
                len: all.len,
            },
            labels: rows.iter().map(|&r| labels[r]).collect(),
        }
    }
}

/// Everything the trainer needs from a labelled file.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub tokenizer: Tokenizer,
    pub sequence_length: usize,
    pub train: Examples,
    pub validation: Examples,
    pub class_weights: [f32; 2],
}

/// Fits the tokenizer on every row of the file (as the report did), pads, and makes the
/// stratified split.
pub fn prepare(table: &Table, cfg: &ModelConfig) -> Result<Prepared> {
    if !table.labelled {
        return Err(ModelError::Config {
            at: table.path.display().to_string(),
            message: "training needs a label column".into(),
        });
    }
    let tokenizer = Tokenizer::fit(Some(cfg.max_words), table.texts());
    let sequences = tokenizer.texts_to_sequences(table.texts());
    let sequence_length = cfg
        .sequence_length
        .unwrap_or_else(|| longest(&sequences))
        .max(1);
    let padded = pad_sequences(&sequences, sequence_length, cfg.padding, cfg.truncating);
    let labels = table.labels();
    let split = stratified_split(&labels, cfg.validation_split, mix(cfg.seed, 0, 0x5917));
    if split.train.is_empty() || split.validation.is_empty() {
        return Err(ModelError::Config {
            at: "validation_split".into(),
            message: format!(
                "{} rows cannot be split into training and validation sets",
                labels.len()
            ),
        });
    }
    let train = Examples::select(&padded, &labels, &split.train);
    let class_weights = if cfg.class_weighting {
        class_weights(&train.labels)
    } else {
        [1.0, 1.0]
    };
    Ok(Prepared {
        tokenizer,
        sequence_length,
        validation: Examples::select(&padded, &labels, &split.validation),
        train,
        class_weights,
    })
}

/// Like [`prepare`], but every row trains and none is held out (the final model after a
/// search, trained on the whole file for a fixed number of epochs).
pub fn prepare_all(table: &Table, cfg: &ModelConfig) -> Result<Prepared> {
    let mut p = prepare(table, cfg)?;
    let rows = p.train.ids.rows + p.validation.ids.rows;
    let mut ids = p.train.ids.ids.clone();
    ids.extend_from_slice(&p.validation.ids.ids);
    let mut labels = p.train.labels.clone();
    labels.extend_from_slice(&p.validation.labels);
    p.train = Examples {
        ids: Padded {
            ids,
            rows,
            len: p.sequence_length,
        },
        labels,
    };
    p.validation = Examples {
        ids: Padded {
            ids: Vec::new(),
            rows: 0,
            len: p.sequence_length,
        },
        labels: Vec::new(),
    };
    if cfg.class_weighting {
        p.class_weights = class_weights(&p.train.labels);
    }
    Ok(p)
}

/// What one epoch reports (also the worker protocol's per-epoch object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_precision: f64,
    pub val_recall: f64,
    pub val_f1: f64,
    pub val_specificity: f64,
    pub val_roc_auc: f64,
    pub val_pr_auc: f64,
    /// `[tn, fp, fn, tp]` on the validation set at threshold 0.5.
    pub confusion: [u64; 4],
    pub seconds: f64,
}

impl EpochReport {
    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "train_loss" => self.train_loss,
            "train_accuracy" => self.train_accuracy,
            "val_loss" => self.val_loss,
            "val_accuracy" => self.val_accuracy,
            "val_precision" => self.val_precision,
            "val_recall" => self.val_recall,
            "val_f1" => self.val_f1,
            "val_specificity" => self.val_specificity,
            "val_roc_auc" => self.val_roc_auc,
            "val_pr_auc" => self.val_pr_auc,
            _ => return None,
        })
    }
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

pub fn fit(
    cfg: &ModelConfig,
    data: &Prepared,
    device: &Device,
    options: &FitOptions,
    mut on_epoch: impl FnMut(&EpochReport) -> Control,
) -> Result<FitOutcome> {
    cfg.validate()?;
    let net = Net::new(cfg, data.tokenizer.id_limit(), device)?;
    let trainable = net.trainable();
    let mut optimizer = KerasOptimizer::new(
        trainable.iter().map(|(_, v)| v.clone()).collect(),
        cfg.optimizer.clone(),
    )?;
    let monitor = cfg.early_stopping.monitor.as_str();
    let direction = direction_of(monitor).ok_or_else(|| ModelError::Config {
        at: "early_stopping.monitor".into(),
        message: format!("`{monitor}` is not a reported metric"),
    })?;

    let mut history: Vec<EpochReport> = Vec::new();
    let mut best_value: Option<f64> = None;
    let mut best_epoch = 0usize;
    let mut best_state: Option<HashMap<String, Tensor>> = None;
    let mut wait = 0usize;

    if let Some(dir) = &options.checkpoint_dir {
        if let Some(warning) = discard_foreign_checkpoint(dir, cfg, options.task.as_ref())? {
            tracing::warn!("{warning}");
        }
        let path = dir.join(CHECKPOINT_FILE);
        if path.exists() {
            let (meta, tensors) = read_checkpoint(&path, device)?;
            let source = path.display().to_string();
            net.load_state(&prefixed(&tensors, "model."), &source)?;
            optimizer.load_state(&prefixed(&tensors, "opt."), meta.optimizer, &source)?;
            let best = prefixed(&tensors, "best.");
            best_state = (!best.is_empty()).then_some(best);
            history = meta.history;
            best_value = meta.best_value;
            best_epoch = meta.best_epoch;
            wait = meta.wait;
            tracing::info!(
                "resuming from {} after epoch {}",
                path.display(),
                meta.epochs_done
            );
        }
    }
    let mut stopped_in_replay = false;
    if options.replay_history {
        for report in &history {
            if on_epoch(report) == Control::Stop {
                stopped_in_replay = true;
                break;
            }
        }
    }

    let train_rows: Vec<usize> = (0..data.train.ids.rows).collect();
    let mut stop = StopReason::Completed;
    let already_stopped = stopped_in_replay
        || (cfg.early_stopping.enabled
            && wait >= cfg.early_stopping.patience
            && !history.is_empty());
    if stopped_in_replay {
        stop = StopReason::Callback;
    } else if already_stopped {
        stop = StopReason::EarlyStopping;
    }
    let mut epoch = history.len();
    while !already_stopped && epoch < cfg.epochs {
        let started = Instant::now();
        let (train_loss, train_accuracy) =
            train_epoch(&net, &mut optimizer, cfg, data, &train_rows, epoch)?;
        let held_out = data.validation.ids.rows > 0;
        let (val_probs, val_loss) = if held_out {
            evaluate_examples(&net, &data.validation, cfg.batch_size)?
        } else {
            (Vec::new(), f64::NAN)
        };
        let mut c = classify(&val_probs, &data.validation.labels, 0.5);
        if !held_out {
            let nan = f64::NAN;
            (c.accuracy, c.precision, c.recall, c.f1, c.specificity) = (nan, nan, nan, nan, nan);
        }
        let report = EpochReport {
            epoch: epoch + 1,
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
            confusion: c.confusion,
            seconds: started.elapsed().as_secs_f64(),
        };
        epoch += 1;

        // Keras EarlyStopping: wait grows each epoch and resets on improvement. Without a
        // validation set there is nothing to monitor: every epoch runs, the last one is kept.
        let value = report.metric(monitor).unwrap_or(f64::NAN);
        let monitoring = held_out || monitor.starts_with("train_");
        if monitoring {
            wait += 1;
        }
        let improved = monitoring
            && match best_value {
                None => !value.is_nan(),
                Some(best) => match direction {
                    Direction::Minimize => value < best - cfg.early_stopping.min_delta,
                    Direction::Maximize => value > best + cfg.early_stopping.min_delta,
                },
            };
        if improved {
            best_value = Some(value);
            best_epoch = report.epoch;
            wait = 0;
            if cfg.early_stopping.restore_best {
                best_state = Some(net.state()?);
            }
        }
        history.push(report.clone());
        if let Some(dir) = &options.checkpoint_dir {
            let meta = CheckpointMeta {
                epochs_done: epoch,
                history: history.clone(),
                best_value,
                best_epoch,
                wait,
                optimizer: optimizer.state()?.1,
                config: cfg.clone(),
                task: options.task.clone(),
            };
            write_checkpoint(dir, &meta, &net, &optimizer, best_state.as_ref())?;
        }
        if on_epoch(&report) == Control::Stop {
            stop = StopReason::Callback;
            break;
        }
        if monitoring && cfg.early_stopping.enabled && wait >= cfg.early_stopping.patience {
            stop = StopReason::EarlyStopping;
            break;
        }
    }
    let final_epoch = history.len();
    let returned_epoch = match (&best_state, cfg.early_stopping.restore_best) {
        (Some(best), true) => {
            net.load_state(best, "best weights")?;
            best_epoch
        }
        _ => final_epoch,
    };
    Ok(FitOutcome {
        net,
        history,
        best_epoch: returned_epoch,
        stop,
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
    epoch: usize,
) -> Result<(f64, f64)> {
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    for (b, batch_rows) in epoch_batches(rows, cfg.batch_size, cfg.seed, epoch)
        .iter()
        .enumerate()
    {
        let n = batch_rows.len();
        let ids = batch_ids(&data.train, batch_rows);
        let labels: Vec<f32> = batch_rows
            .iter()
            .map(|&r| f32::from(data.train.labels[r]))
            .collect();
        let weights: Vec<f32> = batch_rows
            .iter()
            .map(|&r| data.class_weights[usize::from(data.train.labels[r])])
            .collect();
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
    let logits = net.forward(batch, Some(rng))?;
    let y = Tensor::from_vec(labels.to_vec(), n, &net.device)?;
    let w = Tensor::from_vec(weights.to_vec(), n, &net.device)?;
    // Keras's sample-weighted "sum over batch size" reduction.
    let data_loss = (bce_with_logits(&logits, &y)?.mul(&w)?.sum_all()? / n as f64)?;
    let loss = data_loss.add(&net.l2_penalty()?)?;
    let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    if !value.is_finite() {
        return Ok(BatchStep {
            loss: value,
            correct: 0,
        });
    }
    optimizer.backward_step(&loss)?;
    let logits: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
    let correct = logits
        .iter()
        .zip(labels)
        .filter(|(z, y)| (**z >= 0.0) == (**y > 0.5))
        .count();
    Ok(BatchStep {
        loss: value,
        correct,
    })
}

/// Logits in inference mode, `batch_size` rows at a time.
pub fn predict_logits(net: &Net, ids: &Padded, batch_size: usize) -> Result<Vec<f32>> {
    let mut logits = Vec::with_capacity(ids.rows);
    let bs = batch_size.max(1);
    for start in (0..ids.rows).step_by(bs) {
        let n = bs.min(ids.rows - start);
        let chunk = &ids.ids[start * ids.len..(start + n) * ids.len];
        let z = net.forward(
            &IdBatch {
                ids: chunk,
                batch: n,
                time: ids.len,
            },
            None,
        )?;
        logits.extend(z.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    }
    Ok(logits)
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Probabilities in inference mode.
pub fn predict_padded(net: &Net, ids: &Padded, batch_size: usize) -> Result<Vec<f32>> {
    Ok(predict_logits(net, ids, batch_size)?
        .into_iter()
        .map(sigmoid)
        .collect())
}

/// Probabilities and the unweighted loss (BCE from logits + L2), as Keras reports `val_loss`
/// (class weights apply to training only).
pub fn evaluate_examples(
    net: &Net,
    examples: &Examples,
    batch_size: usize,
) -> Result<(Vec<f32>, f64)> {
    let logits = predict_logits(net, &examples.ids, batch_size)?;
    let total: f64 = logits
        .iter()
        .zip(&examples.labels)
        .map(|(&z, &y)| {
            let z = f64::from(z);
            z.max(0.0) - z * f64::from(y) + (-z.abs()).exp().ln_1p()
        })
        .sum();
    let l2: f32 = net.l2_penalty()?.to_dtype(DType::F32)?.to_scalar()?;
    let probs = logits.into_iter().map(sigmoid).collect();
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
