//! Scoring a net: validation metrics after an epoch, the calibrated decision rule, and
//! probabilities with the unweighted loss on any examples.

use std::time::Instant;

use candle_core::DType;

use crate::config::ModelConfig;
use crate::dataset::{Examples, Prepared};
use crate::error::Result;
use crate::metrics::{classify, classify_binary_as_classes, classify_multiclass};
use crate::nn::Net;
use crate::train::history::EpochReport;
use crate::train::predict::{
    head_width, log_softmax_at, predict_logits, predict_padded, probabilities_of,
};

/// Validation metrics after an epoch (NaN where there are no validation rows).
pub(crate) fn evaluate_epoch(
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
