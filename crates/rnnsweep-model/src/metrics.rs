//! Classification metrics from probabilities and labels, as scikit-learn computes them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Minimize,
    Maximize,
}

/// Every metric a training run reports per epoch: its name (in the worker protocol, the
/// study's attributes and the spec), which way is better, and how a table heads it. The
/// validation metrics are computed on the held-out rows after each epoch ([`classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Class-weighted binary cross-entropy over the epoch's training batches (mean).
    TrainLoss,
    /// Share of training rows classified right at 0.5, during the epoch.
    TrainAccuracy,
    /// Class-weighted binary cross-entropy on the validation rows.
    ValLoss,
    ValAccuracy,
    /// Of the rows flagged hateful, the share that are (class 1).
    ValPrecision,
    /// Of the hateful rows, the share flagged.
    ValRecall,
    /// Harmonic mean of precision and recall (class 1).
    ValF1,
    /// Of the other rows, the share not flagged.
    ValSpecificity,
    /// Area under the ROC curve (threshold-free).
    ValRocAuc,
    /// Average precision, exact with ties, as scikit-learn computes it (threshold-free).
    ValPrAuc,
    /// F1 at threshold 0.5 whatever the model's threshold (`val_f1` is at the model's).
    ValF1AtHalf,
}

impl Metric {
    pub const ALL: [Metric; 11] = [
        Metric::TrainLoss,
        Metric::TrainAccuracy,
        Metric::ValLoss,
        Metric::ValAccuracy,
        Metric::ValPrecision,
        Metric::ValRecall,
        Metric::ValF1,
        Metric::ValSpecificity,
        Metric::ValRocAuc,
        Metric::ValPrAuc,
        Metric::ValF1AtHalf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::TrainLoss => "train_loss",
            Metric::TrainAccuracy => "train_accuracy",
            Metric::ValLoss => "val_loss",
            Metric::ValAccuracy => "val_accuracy",
            Metric::ValPrecision => "val_precision",
            Metric::ValRecall => "val_recall",
            Metric::ValF1 => "val_f1",
            Metric::ValSpecificity => "val_specificity",
            Metric::ValRocAuc => "val_roc_auc",
            Metric::ValPrAuc => "val_pr_auc",
            Metric::ValF1AtHalf => "val_f1_at_0.5",
        }
    }

    /// A table's column header.
    pub fn short(self) -> &'static str {
        match self {
            Metric::TrainLoss => "train_loss",
            Metric::TrainAccuracy => "train_acc",
            Metric::ValLoss => "val_loss",
            Metric::ValAccuracy => "acc",
            Metric::ValPrecision => "precision",
            Metric::ValRecall => "recall",
            Metric::ValF1 => "f1",
            Metric::ValSpecificity => "specificity",
            Metric::ValRocAuc => "roc_auc",
            Metric::ValPrAuc => "pr_auc",
            Metric::ValF1AtHalf => "f1@0.5",
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            Metric::TrainLoss | Metric::ValLoss => Direction::Minimize,
            _ => Direction::Maximize,
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Measured on the validation rows (what a leaderboard compares trials by).
    pub fn is_validation(self) -> bool {
        self.name().starts_with("val_")
    }

    /// Every name, for messages.
    pub fn names() -> String {
        Metric::ALL.map(Metric::name).join(", ")
    }
}

/// Whether a metric is better small or large; `None` for names that are not reported.
pub fn direction_of(metric: &str) -> Option<Direction> {
    Metric::from_name(metric).map(Metric::direction)
}

/// Binary classification results at a threshold, plus the ranking metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub specificity: f64,
    pub roc_auc: f64,
    pub pr_auc: f64,
    /// `[tn, fp, fn, tp]`.
    pub confusion: [u64; 4],
}

/// `ratio` with 0 for an empty denominator (scikit-learn's `zero_division=0`).
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

pub fn classify(probabilities: &[f32], labels: &[u8], threshold: f32) -> Classification {
    let mut c = [0u64; 4];
    for (&p, &y) in probabilities.iter().zip(labels) {
        let predicted = p >= threshold;
        let idx = match (y == 1, predicted) {
            (false, false) => 0,
            (false, true) => 1,
            (true, false) => 2,
            (true, true) => 3,
        };
        c[idx] += 1;
    }
    let [tn, fp, fneg, tp] = c;
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fneg);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Classification {
        accuracy: ratio(tp + tn, tn + fp + fneg + tp),
        precision,
        recall,
        f1,
        specificity: ratio(tn, tn + fp),
        roc_auc: roc_auc(probabilities, labels),
        pr_auc: average_precision(probabilities, labels),
        confusion: c,
    }
}

/// Distinct scores from high to low with the positives and negatives at each.
fn score_groups(scores: &[f32], labels: &[u8]) -> Vec<(u64, u64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut groups: Vec<(u64, u64)> = Vec::new();
    let mut prev: Option<f32> = None;
    for i in order {
        if prev != Some(scores[i]) {
            groups.push((0, 0));
            prev = Some(scores[i]);
        }
        let g = groups.last_mut().expect("pushed above");
        if labels[i] == 1 {
            g.0 += 1;
        } else {
            g.1 += 1;
        }
    }
    groups
}

/// Area under the ROC curve with ties counted as half (the trapezoid over distinct
/// thresholds, as `sklearn.metrics.roc_auc_score`). NaN when a class is absent.
pub fn roc_auc(scores: &[f32], labels: &[u8]) -> f64 {
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    let mut area = 0.0;
    let mut tp = 0.0;
    for (p, n) in score_groups(scores, labels) {
        // Negatives in this group rank below the positives seen before it, and tie with the
        // positives in it.
        area += n as f64 * (tp + p as f64 / 2.0);
        tp += p as f64;
    }
    area / (pos * neg)
}

/// Average precision, `Σ (Rₙ − Rₙ₋₁) Pₙ` over distinct thresholds
/// (`sklearn.metrics.average_precision_score`). NaN without positives.
pub fn average_precision(scores: &[f32], labels: &[u8]) -> f64 {
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    if pos == 0.0 {
        return f64::NAN;
    }
    let (mut tp, mut fp, mut ap) = (0.0, 0.0, 0.0);
    for (p, n) in score_groups(scores, labels) {
        tp += p as f64;
        fp += n as f64;
        ap += (p as f64 / pos) * (tp / (tp + fp));
    }
    ap
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values as scikit-learn 1.9.1 computes them:
    //   roc_auc_score(y, s), average_precision_score(y, s)
    const Y: [u8; 10] = [0, 0, 1, 1, 0, 1, 0, 0, 1, 0];
    const S: [f32; 10] = [0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.05, 0.4, 0.35, 0.2];

    #[test]
    fn auc_with_ties_matches_scikit_learn() {
        // Hand count: positives 0.35, 0.8, 0.9, 0.35; negatives 0.1, 0.4, 0.4, 0.05, 0.4, 0.2.
        // Pairs won: 0.9 and 0.8 beat all 6 (12); each 0.35 beats 0.1, 0.05, 0.2 (3 each → 6).
        // AUC = 18 / 24 = 0.75.
        assert!((roc_auc(&S, &Y) - 0.75).abs() < 1e-12);
        // AP: thresholds 0.9 (P=1, R=.25), 0.8 (P=1, R=.5), 0.4 (3 neg: P=2/5, R=.5),
        // 0.35 (P=4/7, R=1) → 0.25 + 0.25 + 0 + 0.5·4/7 = 0.785714…
        assert!((average_precision(&S, &Y) - (0.5 + 0.5 * 4.0 / 7.0)).abs() < 1e-12);
    }

    #[test]
    fn tied_scores_give_half_credit() {
        assert!((roc_auc(&[0.5, 0.5], &[0, 1]) - 0.5).abs() < 1e-12);
        assert!((average_precision(&[0.5, 0.5], &[0, 1]) - 0.5).abs() < 1e-12);
        assert!(roc_auc(&[0.1, 0.2], &[1, 1]).is_nan());
    }

    #[test]
    fn threshold_metrics_from_the_confusion_matrix() {
        let c = classify(&S, &Y, 0.5);
        // Predicted positive: 0.8, 0.9 (both positive). tp=2, fp=0, fn=2, tn=6.
        assert_eq!(c.confusion, [6, 0, 2, 2]);
        assert!((c.accuracy - 0.8).abs() < 1e-12);
        assert!((c.precision - 1.0).abs() < 1e-12);
        assert!((c.recall - 0.5).abs() < 1e-12);
        assert!((c.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.specificity - 1.0).abs() < 1e-12);
        let none = classify(&[0.1, 0.2], &[1, 0], 0.5);
        assert_eq!((none.precision, none.f1), (0.0, 0.0));
    }

    #[test]
    fn only_reported_metrics_have_a_direction() {
        assert_eq!(direction_of("val_loss"), Some(Direction::Minimize));
        assert_eq!(direction_of("val_f1"), Some(Direction::Maximize));
        assert_eq!(direction_of("f1"), None);
    }
}
