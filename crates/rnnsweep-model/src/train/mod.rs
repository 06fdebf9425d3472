//! The training loop: seeded epochs, class-weighted loss, per-epoch validation metrics handed
//! to a callback that may stop training, early stopping with best weights restored, and a
//! checkpoint after each epoch from which training continues bit-identically.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::BatchingMode;
use crate::config::ModelConfig;
use crate::dataset::{bucket_batches, epoch_batches, Examples, Prepared};
use crate::encoder::Padded;
use crate::error::{ModelError, Result};
use crate::nn::loss::{bce_with_logits, softmax_cross_entropy};
use crate::nn::{EmbeddingRows, IdBatch, Net};
use crate::optim::KerasOptimizer;
use crate::seed::mix;
use checkpoint::Checkpointer;
use distill::{soft_term, soften, DistillSettings, SoftTargets};
use early_stopping::EarlyStopping;
use evaluate::{calibrate, evaluate_epoch, Calibrated};
use history::EpochReport;

pub mod checkpoint;
pub mod distill;
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
    /// Learn from a teacher's probabilities too ([`distill`]); the checkpoint's `task` should
    /// name the teacher, since the rows' targets differ.
    pub distill: Option<SoftTargets>,
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
    let net = Net::for_views(
        cfg,
        &data.encoder.shapes(),
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
    let soft = options
        .distill
        .as_ref()
        .map(|t| TeacherRows::of(t, data, &net))
        .transpose()?;
    let labelled = data.train.ids.rows;
    let extra = soft.as_ref().map_or(0, |s| s.unlabelled.rows);
    // Unlabelled rows follow the labelled ones: row `labelled + i` is unlabelled row `i`.
    let mut lengths = data.train.ids.lengths();
    if let Some(s) = &soft {
        lengths.extend(s.unlabelled.lengths());
    }
    let rows = TrainingRows {
        rows: (0..labelled + extra).collect(),
        lengths,
    };
    while stop == StopReason::Completed && history.len() < cfg.epochs {
        let epoch = history.len();
        let started = Instant::now();
        let train = train_epoch(&net, &mut optimizer, cfg, data, &rows, soft.as_ref(), epoch)?;
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

fn batch_ids(examples: &Examples, unlabelled: Option<&Padded>, rows: &[usize]) -> Vec<u32> {
    let labelled = examples.ids.rows;
    let mut ids = Vec::with_capacity(rows.len() * examples.ids.len);
    for &r in rows {
        match unlabelled {
            Some(extra) if r >= labelled => ids.extend_from_slice(extra.row(r - labelled)),
            _ => ids.extend_from_slice(examples.ids.row(r)),
        }
    }
    ids
}

/// Every row an epoch trains on, with its length for bucketing.
struct TrainingRows {
    rows: Vec<usize>,
    lengths: Vec<usize>,
}

/// A distillation's teacher probabilities, checked, for every row the student trains on.
struct TeacherRows<'a> {
    settings: DistillSettings,
    /// `[labelled rows + unlabelled rows, outputs]`, in that order.
    targets: Vec<f32>,
    unlabelled: &'a Padded,
}

impl<'a> TeacherRows<'a> {
    fn of(t: &'a SoftTargets, data: &Prepared, net: &Net) -> Result<Self> {
        t.settings.validate("distill.")?;
        let k = net.outputs;
        let mismatch = |what: &str, rows: usize, got: usize| ModelError::Config {
            at: "distill".into(),
            message: format!(
                "the teacher gave {got} probabilities for {rows} {what} rows of {k} output(s)"
            ),
        };
        if t.train.len() != data.train.ids.rows * k {
            return Err(mismatch("training", data.train.ids.rows, t.train.len()));
        }
        if t.unlabelled_probabilities.len() != t.unlabelled.rows * k {
            return Err(mismatch(
                "unlabelled",
                t.unlabelled.rows,
                t.unlabelled_probabilities.len(),
            ));
        }
        if t.unlabelled.rows > 0 && t.unlabelled.len != data.train.ids.len {
            return Err(ModelError::Config {
                at: "distill".into(),
                message: format!(
                    "unlabelled rows padded to {} steps, training rows to {}",
                    t.unlabelled.len, data.train.ids.len
                ),
            });
        }
        let mut targets = t.train.clone();
        targets.extend_from_slice(&t.unlabelled_probabilities);
        Ok(Self {
            settings: t.settings,
            targets,
            unlabelled: &t.unlabelled,
        })
    }
}

fn train_epoch(
    net: &Net,
    optimizer: &mut KerasOptimizer,
    cfg: &ModelConfig,
    data: &Prepared,
    rows: &TrainingRows,
    soft: Option<&TeacherRows>,
    epoch: usize,
) -> Result<(f64, f64)> {
    let (mut loss_sum, mut correct, mut seen, mut labelled_seen) = (0f64, 0usize, 0usize, 0usize);
    let labelled = data.train.ids.rows;
    let k = data.outputs();
    let batches = match cfg.batching.mode {
        BatchingMode::Shuffle => epoch_batches(&rows.rows, cfg.batch_size, cfg.seed, epoch),
        BatchingMode::Bucket => bucket_batches(
            &rows.rows,
            &rows.lengths,
            cfg.batch_size,
            cfg.batching.bucket_size,
            cfg.seed,
            epoch,
        ),
    };
    for (b, batch_rows) in batches.iter().enumerate() {
        let n = batch_rows.len();
        let ids = batch_ids(&data.train, soft.map(|s| s.unlabelled), batch_rows);
        // An unlabelled row has weight 0 and placeholder labels: only the teacher teaches it.
        let (labels, weights): (Vec<f32>, Vec<f32>) = if data.multi_label {
            let targets = &data.train.targets;
            (
                batch_rows
                    .iter()
                    .flat_map(|&r| {
                        (0..k).map(move |c| {
                            if r < labelled {
                                f32::from(targets[r * k + c])
                            } else {
                                0.0
                            }
                        })
                    })
                    .collect(),
                batch_rows
                    .iter()
                    .map(|&r| if r < labelled { 1.0 } else { 0.0 })
                    .collect(),
            )
        } else {
            batch_rows
                .iter()
                .map(
                    |&r| match data.train.labels.get(r).filter(|_| r < labelled) {
                        Some(&y) => (f32::from(y), data.class_weights[usize::from(y)]),
                        None => (0.0, 0.0),
                    },
                )
                .unzip()
        };
        let teacher: Option<Vec<f32>> = soft.map(|s| {
            batch_rows
                .iter()
                .flat_map(|&r| s.targets[r * k..(r + 1) * k].iter().copied())
                .collect()
        });
        let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, epoch as u64 + 1, b as u64 + 1));
        let step = train_batch_with(
            net,
            optimizer,
            &IdBatch {
                ids: &ids,
                batch: n,
                time: data.train.ids.len,
            },
            &labels,
            &weights,
            teacher.as_deref().zip(soft.map(|s| s.settings)),
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
        labelled_seen += batch_rows.iter().filter(|&&r| r < labelled).count();
    }
    Ok((
        loss_sum / seen as f64,
        correct as f64 / labelled_seen.max(1) as f64,
    ))
}

/// What one optimizer step reports.
#[derive(Debug, Clone, Copy)]
pub struct BatchStep {
    /// The batch's loss (class-weighted cross-entropy plus L2), before the update.
    pub loss: f32,
    /// Labelled rows classified right at threshold 0.5, before the update.
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
    train_batch_with(net, optimizer, batch, labels, weights, None, rng)
}

/// [`train_batch`], with a teacher's probabilities for the rows (`[rows, outputs]`) when
/// distilling; a row of weight 0 is unlabelled and counts neither in the hard loss nor in
/// `correct`.
pub fn train_batch_with(
    net: &Net,
    optimizer: &mut KerasOptimizer,
    batch: &IdBatch,
    labels: &[f32],
    weights: &[f32],
    teacher: Option<(&[f32], DistillSettings)>,
    rng: &mut ChaCha8Rng,
) -> Result<BatchStep> {
    let k = net.outputs;
    let (logits, rows) = net.forward_rows(batch, Some(rng))?;
    let data_loss = data_loss(&logits, labels, weights, teacher, k, net.multi_label)?;
    let loss = data_loss.add(&net.l2_penalty()?)?;
    let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    if !value.is_finite() {
        return Ok(BatchStep {
            loss: value,
            correct: 0,
        });
    }
    let grads = loss.backward()?;
    let row_grads: Vec<(&EmbeddingRows, Tensor)> = rows
        .iter()
        .filter_map(|r| grads.get(r.rows.as_tensor()).map(|g| (r, g.clone())))
        .collect();
    let sparse: Vec<(&Var, &[u32], &Tensor)> = row_grads
        .iter()
        .map(|(r, g)| (&net.towers[r.tower].embedding, r.ids.as_slice(), g))
        .collect();
    optimizer.step_with_rows(&grads, &sparse)?;
    let correct = if net.multi_label {
        // Rows with every label right (scikit-learn's subset accuracy).
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        logits
            .chunks(k)
            .zip(labels.chunks(k))
            .zip(weights)
            .filter(|((z, y), &w)| {
                w > 0.0 && z.iter().zip(*y).all(|(z, y)| (*z >= 0.0) == (*y > 0.5))
            })
            .count()
    } else if k == 1 {
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        logits
            .iter()
            .zip(labels)
            .zip(weights)
            .filter(|((z, y), &w)| w > 0.0 && (**z >= 0.0) == (**y > 0.5))
            .count()
    } else {
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        crate::metrics::argmax_classes(&logits, k, None)
            .iter()
            .zip(labels)
            .zip(weights)
            .filter(|((p, y), &w)| w > 0.0 && f32::from(**p) == **y)
            .count()
    };
    Ok(BatchStep {
        loss: value,
        correct,
    })
}

/// The batch's data loss, Keras's sample-weighted "sum over batch size" reduction of the
/// per-row cross-entropy (`labels` are class indices, or `[rows, K]` 0/1 targets for a
/// multi-label net); with a teacher, each row's loss is [`distill`]'s mix of that and the
/// softened teacher's term.
pub(crate) fn data_loss(
    logits: &Tensor,
    labels: &[f32],
    weights: &[f32],
    teacher: Option<(&[f32], DistillSettings)>,
    k: usize,
    multi_label: bool,
) -> Result<Tensor> {
    let device = logits.device();
    let n = weights.len();
    let w = Tensor::from_vec(weights.to_vec(), n, device)?;
    let hard = if multi_label {
        // Keras's binary cross-entropy of K sigmoids: the mean over the labels of each row.
        let y = Tensor::from_vec(labels.to_vec(), (n, k), device)?;
        bce_with_logits(logits, &y)?.mean(1)?
    } else if k == 1 {
        let y = Tensor::from_vec(labels.to_vec(), n, device)?;
        bce_with_logits(logits, &y)?
    } else {
        softmax_cross_entropy(logits, &one_hot(labels, k, device)?)?
    };
    let weighted = hard.mul(&w)?;
    let per_row = match teacher {
        None => weighted,
        Some((probabilities, settings)) => {
            let shape = if k == 1 && logits.rank() == 1 {
                vec![n]
            } else {
                vec![n, k]
            };
            let softmax = k > 1 && !multi_label;
            let width = if softmax { k } else { 1 };
            let q = soften(probabilities, width, settings.temperature);
            let q = Tensor::from_vec(q, shape, device)?.to_dtype(logits.dtype())?;
            let soft = soft_term(logits, &q, softmax, settings.temperature)?;
            ((weighted * settings.alpha)? + (soft * (1.0 - settings.alpha))?)?
        }
    };
    Ok((per_row.sum_all()? / n as f64)?)
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
