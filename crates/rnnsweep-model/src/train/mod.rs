//! The training loop: seeded epochs, class-weighted loss, per-epoch validation metrics handed
//! to a callback that may stop training, early stopping with best weights restored, and a
//! checkpoint after each epoch from which training continues bit-identically.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::Optimizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::BatchingMode;
use crate::config::ModelConfig;
use crate::dataset::{bucket_batches, epoch_batches, Examples, Prepared};
use crate::error::{ModelError, Result};
use crate::nn::loss::{bce_with_logits, softmax_cross_entropy};
use crate::nn::{IdBatch, Net};
use crate::optim::KerasOptimizer;
use crate::seed::mix;
use checkpoint::Checkpointer;
use early_stopping::EarlyStopping;
use evaluate::{calibrate, evaluate_epoch, Calibrated};
use history::EpochReport;

pub mod checkpoint;
pub mod early_stopping;
pub mod evaluate;
pub mod history;
pub mod predict;

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
    /// [`checkpoint::task_fingerprint`]); a checkpoint for another task is discarded, never
    /// resumed.
    pub task: Option<serde_json::Value>,
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
