//! Classification metrics from probabilities and labels, as scikit-learn computes them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Minimize,
    Maximize,
}

impl Direction {
    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }

    /// Best first: `Less` when `a` is better than `b` (a total order; NaN sorts as IEEE's
    /// `total_cmp` puts it).
    pub fn cmp(self, a: f64, b: f64) -> std::cmp::Ordering {
        match self {
            Direction::Maximize => b.total_cmp(&a),
            Direction::Minimize => a.total_cmp(&b),
        }
    }

    /// The better of two values.
    pub fn best(self, a: f64, b: f64) -> f64 {
        match self {
            Direction::Maximize => a.max(b),
            Direction::Minimize => a.min(b),
        }
    }
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
    /// The mean of every class's F1 (for a binary task, of both classes'), the multi-class
    /// objective.
    ValMacroF1,
    /// Every class's F1 weighted by its rows.
    ValWeightedF1,
    /// Mean negative log-probability of the true class, unweighted, without L2.
    ValLogLoss,
}

impl Metric {
    pub const ALL: [Metric; 14] = [
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
        Metric::ValMacroF1,
        Metric::ValWeightedF1,
        Metric::ValLogLoss,
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
            Metric::ValMacroF1 => "val_macro_f1",
            Metric::ValWeightedF1 => "val_weighted_f1",
            Metric::ValLogLoss => "val_log_loss",
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
            Metric::ValMacroF1 => "macro_f1",
            Metric::ValWeightedF1 => "weighted_f1",
            Metric::ValLogLoss => "log_loss",
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            Metric::TrainLoss | Metric::ValLoss | Metric::ValLogLoss => Direction::Minimize,
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

/// One class's scores, one-vs-rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Rows of this class.
    pub support: u64,
}

/// Single-label results over K classes, as scikit-learn computes them with
/// `labels=range(K)` (every class counts in the macro means, `zero_division=0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiClass {
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// Per-class F1 weighted by support (`average="weighted"`).
    pub weighted_f1: f64,
    /// One-vs-rest ROC-AUC averaged over the classes that have rows and non-rows
    /// (`roc_auc_score(y, P, multi_class="ovr", average="macro")`).
    pub roc_auc: f64,
    /// One-vs-rest average precision averaged over the classes present
    /// (`average_precision_score(label_binarize(y), P, average="macro")`).
    pub pr_auc: f64,
    pub per_class: Vec<ClassScores>,
    /// `confusion[true][predicted]`, as `sklearn.metrics.confusion_matrix`.
    pub confusion: Vec<Vec<u64>>,
}

/// Each class's F1 weighted by its rows (`average="weighted"`; 0 without rows).
fn support_weighted_f1(per_class: &[ClassScores]) -> f64 {
    let support: u64 = per_class.iter().map(|c| c.support).sum();
    if support == 0 {
        return 0.0;
    }
    per_class
        .iter()
        .map(|c| c.f1 * c.support as f64)
        .sum::<f64>()
        / support as f64
}

/// The mean of the finite values (NaN when there is none).
fn finite_mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// Scores of predicted classes against true ones over `names.len()` classes.
pub fn classify_predicted(
    predicted: &[u8],
    labels: &[u8],
    probabilities: Option<&[f32]>,
    names: &[String],
) -> MultiClass {
    let k = names.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (&p, &y) in predicted.iter().zip(labels) {
        if let Some(cell) = confusion
            .get_mut(usize::from(y))
            .and_then(|row| row.get_mut(usize::from(p)))
        {
            *cell += 1;
        }
    }
    let total: u64 = confusion.iter().flatten().sum();
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let per_class: Vec<ClassScores> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let support: u64 = confusion[c].iter().sum();
            let flagged: u64 = confusion.iter().map(|row| row[c]).sum();
            let precision = ratio(tp, flagged);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassScores {
                class: names[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let mean = |f: fn(&ClassScores) -> f64| per_class.iter().map(f).sum::<f64>() / k.max(1) as f64;
    let weighted_f1 = support_weighted_f1(&per_class);
    let (roc_auc, pr_auc) = match probabilities {
        Some(probs) => {
            let column = |c: usize| -> (Vec<f32>, Vec<u8>) {
                (
                    probs.iter().skip(c).step_by(k).copied().collect(),
                    labels
                        .iter()
                        .map(|&y| u8::from(usize::from(y) == c))
                        .collect(),
                )
            };
            let columns: Vec<_> = (0..k).map(column).collect();
            (
                finite_mean(columns.iter().map(|(s, y)| roc_auc(s, y))),
                finite_mean(columns.iter().map(|(s, y)| average_precision(s, y))),
            )
        }
        None => (f64::NAN, f64::NAN),
    };
    MultiClass {
        accuracy: ratio(correct, total),
        macro_precision: mean(|c| c.precision),
        macro_recall: mean(|c| c.recall),
        macro_f1: mean(|c| c.f1),
        weighted_f1,
        roc_auc,
        pr_auc,
        per_class,
        confusion,
    }
}

/// The class with the highest score (`offsets` added to the log-probabilities first, the
/// per-class decision rule), per row of a row-major `[rows, K]` probability matrix; ties go
/// to the lower class, as `numpy.argmax`.
pub fn argmax_classes(probabilities: &[f32], k: usize, offsets: Option<&[f64]>) -> Vec<u8> {
    probabilities
        .chunks(k.max(1))
        .map(|row| {
            let score = |c: usize| match offsets {
                Some(o) => f64::from(row[c]).max(f64::MIN_POSITIVE).ln() + o[c],
                None => f64::from(row[c]),
            };
            let mut best = 0;
            for c in 1..row.len() {
                if score(c) > score(best) {
                    best = c;
                }
            }
            best as u8
        })
        .collect()
}

/// Multi-class scores from a row-major `[rows, K]` probability matrix, predicted by argmax
/// (with `offsets`, the per-class rule).
pub fn classify_multiclass(
    probabilities: &[f32],
    labels: &[u8],
    names: &[String],
    offsets: Option<&[f64]>,
) -> MultiClass {
    let predicted = argmax_classes(probabilities, names.len(), offsets);
    classify_predicted(&predicted, labels, Some(probabilities), names)
}

/// Binary results seen as two classes (`0`, `1` at `threshold`), for the macro and weighted
/// means a binary task reports too.
pub fn classify_binary_as_classes(
    probabilities: &[f32],
    labels: &[u8],
    threshold: f32,
    names: &[String],
) -> MultiClass {
    let predicted: Vec<u8> = probabilities
        .iter()
        .map(|&p| u8::from(p >= threshold))
        .collect();
    let two: Vec<f32> = probabilities.iter().flat_map(|&p| [1.0 - p, p]).collect();
    classify_predicted(&predicted, labels, Some(&two), names)
}

/// Multi-label results: each label one-vs-rest at its own threshold (`p ≥ t` is positive),
/// as scikit-learn scores a label-indicator matrix: `accuracy` is the subset accuracy (every
/// label of a row right), the macro means are over labels, `roc_auc`/`pr_auc` the mean
/// column ROC-AUC / average precision (over labels with both values present), `confusion`
/// empty. `probabilities` and `targets` are row-major `[rows, K]`.
pub fn classify_multilabel(
    probabilities: &[f32],
    targets: &[u8],
    names: &[String],
    thresholds: &[f64],
) -> MultiClass {
    let k = names.len().max(1);
    let rows = targets.len() / k;
    let column = |c: usize| -> (Vec<f32>, Vec<u8>) {
        (
            probabilities.iter().skip(c).step_by(k).copied().collect(),
            targets.iter().skip(c).step_by(k).copied().collect(),
        )
    };
    let threshold = |c: usize| thresholds.get(c).copied().unwrap_or(0.5) as f32;
    let mut per_class = Vec::new();
    let (mut aucs, mut aps) = (Vec::new(), Vec::new());
    for (c, name) in names.iter().enumerate() {
        let (p, y) = column(c);
        let b = classify(&p, &y, threshold(c));
        aucs.push(b.roc_auc);
        aps.push(b.pr_auc);
        per_class.push(ClassScores {
            class: name.clone(),
            precision: b.precision,
            recall: b.recall,
            f1: b.f1,
            support: b.confusion[2] + b.confusion[3],
        });
    }
    let exact = (0..rows)
        .filter(|&r| {
            (0..k).all(|c| (probabilities[r * k + c] >= threshold(c)) == (targets[r * k + c] == 1))
        })
        .count();
    let mean = |f: fn(&ClassScores) -> f64| per_class.iter().map(f).sum::<f64>() / k as f64;
    MultiClass {
        accuracy: ratio(exact as u64, rows as u64),
        macro_precision: mean(|c| c.precision),
        macro_recall: mean(|c| c.recall),
        macro_f1: mean(|c| c.f1),
        weighted_f1: support_weighted_f1(&per_class),
        roc_auc: finite_mean(aucs.into_iter()),
        pr_auc: finite_mean(aps.into_iter()),
        per_class,
        confusion: Vec::new(),
    }
}

/// Mean binary cross-entropy over every label of every row (Keras's `binary_crossentropy`
/// of a multi-label model, unweighted), probabilities clipped as in [`log_loss`].
pub fn multilabel_log_loss(probabilities: &[f32], targets: &[u8]) -> f64 {
    let eps = f64::from(f32::EPSILON);
    if targets.is_empty() {
        return f64::NAN;
    }
    probabilities
        .iter()
        .zip(targets)
        .map(|(&p, &y)| {
            let p = f64::from(p).clamp(eps, 1.0 - eps);
            if y == 1 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum::<f64>()
        / targets.len() as f64
}

/// Mean negative log-probability of the true class (`sklearn.metrics.log_loss`), probabilities
/// clipped to `[ε, 1 − ε]` with ε = f32's machine epsilon as scikit-learn does for float32.
pub fn log_loss(probabilities: &[f32], labels: &[u8], k: usize) -> f64 {
    let eps = f64::from(f32::EPSILON);
    let rows = labels.len();
    if rows == 0 {
        return f64::NAN;
    }
    let total: f64 = probabilities
        .chunks(k.max(1))
        .zip(labels)
        .map(|(row, &y)| {
            // Rows are renormalised after clipping, as scikit-learn does.
            let clipped: Vec<f64> = row
                .iter()
                .map(|&p| f64::from(p).clamp(eps, 1.0 - eps))
                .collect();
            let sum: f64 = clipped.iter().sum();
            -(clipped[usize::from(y)] / sum).ln()
        })
        .sum();
    total / rows as f64
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

    fn names(k: usize) -> Vec<String> {
        ["a", "b", "c"][..k].iter().map(|s| s.to_string()).collect()
    }

    // y_true = [0, 1, 2, 2, 1, 0, 2, 1], probabilities P below. scikit-learn 1.9:
    //   y_pred = P.argmax(1) = [0, 2, 2, 1, 1, 0, 2, 0]
    //   accuracy_score 0.625; f1_score(average="macro") 0.6222222; average="weighted" 0.6
    //   precision_score(average=None) [0.6667, 0.5, 0.6667]; recall [1.0, 0.3333, 0.6667]
    //   roc_auc_score(y, P, multi_class="ovr") 0.9222222
    //   average_precision_score(label_binarize(y, classes=[0,1,2]), P) 0.8907407
    //   log_loss(y, P) 0.6962578
    const YK: [u8; 8] = [0, 1, 2, 2, 1, 0, 2, 1];
    const PK: [f32; 24] = [
        0.7, 0.2, 0.1, //
        0.2, 0.3, 0.5, //
        0.1, 0.2, 0.7, //
        0.2, 0.5, 0.3, //
        0.3, 0.6, 0.1, //
        0.6, 0.3, 0.1, //
        0.2, 0.2, 0.6, //
        0.5, 0.4, 0.1, //
    ];

    #[test]
    fn multi_class_metrics_match_scikit_learn() {
        let m = classify_multiclass(&PK, &YK, &names(3), None);
        assert_eq!(
            m.confusion,
            vec![vec![2, 0, 0], vec![1, 1, 1], vec![0, 1, 2]]
        );
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(m.accuracy, 0.625), "{}", m.accuracy);
        assert!(close(m.macro_f1, 0.622_222_2), "{}", m.macro_f1);
        assert!(close(m.weighted_f1, 0.6), "{}", m.weighted_f1);
        let precision: Vec<f64> = m.per_class.iter().map(|c| c.precision).collect();
        let recall: Vec<f64> = m.per_class.iter().map(|c| c.recall).collect();
        for (got, want) in precision.iter().zip([2.0 / 3.0, 0.5, 2.0 / 3.0]) {
            assert!(close(*got, want), "{precision:?}");
        }
        for (got, want) in recall.iter().zip([1.0, 1.0 / 3.0, 2.0 / 3.0]) {
            assert!(close(*got, want), "{recall:?}");
        }
        assert_eq!(m.per_class[2].support, 3);
        assert!(close(m.roc_auc, 0.922_222_2), "{}", m.roc_auc);
        assert!(close(m.pr_auc, 0.890_740_7), "{}", m.pr_auc);
        assert!(
            close(log_loss(&PK, &YK, 3), 0.696_257_8),
            "{}",
            log_loss(&PK, &YK, 3)
        );
    }

    #[test]
    fn offsets_move_the_decision_towards_a_class() {
        // Row 2 is 0.2 / 0.3 / 0.5: argmax says class 2; +1 on class 1's log-probability
        // makes it ln 0.3 + 1 = −0.20 against ln 0.5 = −0.69.
        assert_eq!(argmax_classes(&PK[3..6], 3, None), vec![2]);
        assert_eq!(
            argmax_classes(&PK[3..6], 3, Some(&[0.0, 1.0, 0.0])),
            vec![1]
        );
        // Ties go to the lower class.
        assert_eq!(argmax_classes(&[0.4, 0.4, 0.2], 3, None), vec![0]);
    }

    #[test]
    fn a_binary_task_reports_the_macro_means_of_its_two_classes() {
        // At 0.5: class 1 F1 = 2/3 (above); class 0: tp 6, fp 2, fn 0 → F1 = 12/14.
        let m = classify_binary_as_classes(&S, &Y, 0.5, &names(2));
        assert!((m.macro_f1 - (2.0 / 3.0 + 12.0 / 14.0) / 2.0).abs() < 1e-12);
        assert!((m.weighted_f1 - (0.4 * 2.0 / 3.0 + 0.6 * 12.0 / 14.0)).abs() < 1e-12);
        // Class 1's AUC is 0.75 and class 0's is the same ranking reversed.
        assert!((m.roc_auc - 0.75).abs() < 1e-12);
    }

    #[test]
    fn multi_label_metrics_match_scikit_learn() {
        // Y = [[1,0],[0,1],[1,1],[0,0]], P = [[.9,.2],[.4,.7],[.6,.3],[.2,.6]] at 0.5:
        // predicted [[1,0],[0,1],[1,0],[0,1]]. scikit-learn: f1_score(average=None) [1.0, 0.5],
        // macro 0.75, weighted (supports 2, 2) 0.75; accuracy_score (subset) 0.5;
        // roc_auc_score(Y, P) (macro over columns) = mean(1.0, 0.75) = 0.875;
        // average_precision_score(Y, P) = mean(1.0, 0.8333) = 0.9167;
        // log_loss per element mean = mean(−ln .9, −ln .8, −ln .6, −ln .7, −ln .6, −ln .3, −ln .8, −ln .4).
        let y = [1u8, 0, 0, 1, 1, 1, 0, 0];
        let p = [0.9f32, 0.2, 0.4, 0.7, 0.6, 0.3, 0.2, 0.6];
        let m = classify_multilabel(&p, &y, &names(2), &[0.5, 0.5]);
        let f1: Vec<f64> = m.per_class.iter().map(|c| c.f1).collect();
        assert!(
            (f1[0] - 1.0).abs() < 1e-12 && (f1[1] - 0.5).abs() < 1e-12,
            "{f1:?}"
        );
        assert!((m.macro_f1 - 0.75).abs() < 1e-12 && (m.weighted_f1 - 0.75).abs() < 1e-12);
        assert!((m.accuracy - 0.5).abs() < 1e-12);
        assert!((m.roc_auc - 0.875).abs() < 1e-12, "{}", m.roc_auc);
        assert!(
            (m.pr_auc - (1.0 + 5.0 / 6.0) / 2.0).abs() < 1e-9,
            "{}",
            m.pr_auc
        );
        let want = [0.9f64, 0.8, 0.6, 0.7, 0.6, 0.3, 0.8, 0.4]
            .iter()
            .map(|q| -q.ln())
            .sum::<f64>()
            / 8.0;
        assert!((multilabel_log_loss(&p, &y) - want).abs() < 1e-6);
        // A per-label threshold moves that label alone: at 0.65 label 1 loses its false positive.
        let m = classify_multilabel(&p, &y, &names(2), &[0.5, 0.65]);
        assert!((m.per_class[1].f1 - 2.0 / 3.0).abs() < 1e-12 && m.per_class[0].f1 == 1.0);
    }
}
