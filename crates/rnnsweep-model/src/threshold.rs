//! The decision threshold: fixed, or chosen after training on a calibration slice of the
//! training rows (never the validation rows, so validation metrics stay honest).

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    /// `value` (0.5 by default): Keras's `predict > 0.5`.
    #[default]
    Fixed,
    /// The threshold with the best F1 on the calibration slice.
    MaxF1,
    /// The threshold with the best F-beta (`beta`) on the calibration slice.
    MaxFBeta,
    /// The most precise threshold whose recall on the calibration slice is at least `recall`.
    PrecisionAtRecall,
    /// The best macro F1 on the calibration slice: for a binary task the threshold whose mean
    /// of both classes' F1 is highest; for K classes one offset per class added to the
    /// log-probabilities before the argmax ([`Threshold::choose_offsets`]).
    MaxMacroF1,
}

/// How a model turns probabilities into labels. A flat table (not a tagged enum) so a sweep
/// can set `threshold.mode` alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Threshold {
    pub mode: ThresholdMode,
    /// `fixed` only.
    pub value: f64,
    /// `max_f_beta` only: recall counts `beta` times as much as precision.
    pub beta: f64,
    /// `precision_at_recall` only.
    pub recall: f64,
}

impl Default for Threshold {
    fn default() -> Self {
        Self {
            mode: ThresholdMode::Fixed,
            value: 0.5,
            beta: 1.0,
            recall: 0.9,
        }
    }
}

impl Threshold {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the threshold is picked on held-out training rows.
    pub fn needs_calibration(&self) -> bool {
        self.mode != ThresholdMode::Fixed
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &str, message: String| {
            Err(ModelError::Config {
                at: format!("threshold.{field}"),
                message,
            })
        };
        if !(0.0..=1.0).contains(&self.value) {
            return bad("value", format!("{} is not in [0, 1]", self.value));
        }
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return bad("beta", format!("{} must be > 0", self.beta));
        }
        if !(self.recall > 0.0 && self.recall <= 1.0) {
            return bad("recall", format!("{} is not in (0, 1]", self.recall));
        }
        Ok(())
    }

    /// The threshold for these calibration scores: `p ≥ t` is labelled 1. Fixed mode (and a
    /// slice without both classes, where nothing can be chosen) gives `value`.
    pub fn choose(&self, probabilities: &[f32], labels: &[u8]) -> f64 {
        let positives = labels.iter().filter(|&&y| y == 1).count();
        if !self.needs_calibration() || positives == 0 || positives == labels.len() {
            return self.value;
        }
        let cuts = cuts(probabilities, labels);
        let f_beta = |beta: f64, c: &Cut| {
            let b2 = beta * beta;
            let denominator = (1.0 + b2) * c.tp + b2 * (positives as f64 - c.tp) + c.fp;
            if denominator == 0.0 {
                0.0
            } else {
                (1.0 + b2) * c.tp / denominator
            }
        };
        let score = |c: &Cut| -> Option<f64> {
            match self.mode {
                ThresholdMode::Fixed => None,
                ThresholdMode::MaxF1 => Some(f_beta(1.0, c)),
                ThresholdMode::MaxFBeta => Some(f_beta(self.beta, c)),
                ThresholdMode::PrecisionAtRecall => {
                    (c.tp / positives as f64 >= self.recall - 1e-12).then(|| c.tp / (c.tp + c.fp))
                }
                ThresholdMode::MaxMacroF1 => {
                    let negatives = (labels.len() - positives) as f64;
                    let tn = negatives - c.fp;
                    let fn_ = positives as f64 - c.tp;
                    let negative_f1 = if tn > 0.0 {
                        2.0 * tn / (2.0 * tn + fn_ + c.fp)
                    } else {
                        0.0
                    };
                    Some((f_beta(1.0, c) + negative_f1) / 2.0)
                }
            }
        };
        // Scanning from the highest score down, the first best wins: of equally good
        // thresholds the most conservative one.
        let mut best: Option<(f64, usize)> = None;
        for (k, c) in cuts.iter().enumerate() {
            if let Some(s) = score(c) {
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, k));
                }
            }
        }
        let Some((_, k)) = best else {
            return self.value;
        };
        // Halfway to the next lower score, so a new row scoring between the two calibration
        // rows is not decided by which one it happened to equal.
        let at = f64::from(cuts[k].score);
        match cuts.get(k + 1) {
            Some(lower) => (at + f64::from(lower.score)) / 2.0,
            None => at,
        }
    }
}

/// The offsets [`Threshold::choose_offsets`] tries for each class: −4 to 4 in steps of 0.1.
const OFFSET_GRID: std::ops::RangeInclusive<i32> = -40..=40;

impl Threshold {
    /// Per-class offsets to the log-probabilities of a K-class model (row-major `[rows, K]`
    /// probabilities), chosen on calibration rows to maximise macro F1 by coordinate ascent:
    /// class 0 stays at 0, each other class in turn takes the grid value that scores best with
    /// the others fixed (ties keep the smaller move), three rounds. All zeros (plain argmax)
    /// unless the mode is `max_macro_f1` and the rows hold two classes or more.
    pub fn choose_offsets(&self, probabilities: &[f32], labels: &[u8], k: usize) -> Vec<f64> {
        let mut offsets = vec![0.0; k];
        let present = labels
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if self.mode != ThresholdMode::MaxMacroF1 || k < 2 || present < 2 {
            return offsets;
        }
        let names: Vec<String> = (0..k).map(|c| c.to_string()).collect();
        let score = |o: &[f64]| {
            let predicted = crate::metrics::argmax_classes(probabilities, k, Some(o));
            crate::metrics::classify_predicted(&predicted, labels, None, &names).macro_f1
        };
        let mut best = score(&offsets);
        for _ in 0..3 {
            let before = best;
            for c in 1..k {
                let mut chosen = offsets[c];
                let mut trial = offsets.clone();
                // Nearest to the current value first, so a tie keeps the smaller move.
                let mut grid: Vec<f64> = OFFSET_GRID.map(|g| f64::from(g) / 10.0).collect();
                grid.sort_by(|a, b| (a - offsets[c]).abs().total_cmp(&(b - offsets[c]).abs()));
                for value in grid {
                    trial[c] = value;
                    let s = score(&trial);
                    if s > best {
                        best = s;
                        chosen = value;
                    }
                }
                offsets[c] = chosen;
            }
            if best <= before {
                break;
            }
        }
        offsets
    }
}

/// One threshold per label of a multi-label model (row-major `[rows, K]` probabilities and
/// 0/1 targets), each chosen on its own column as a binary threshold; `max_macro_f1` means the
/// best F1 of each label there (the macro F1 over labels is their mean).
pub fn per_label_thresholds(
    rule: &Threshold,
    probabilities: &[f32],
    targets: &[u8],
    k: usize,
) -> Vec<f64> {
    let per_label = Threshold {
        mode: match rule.mode {
            ThresholdMode::MaxMacroF1 => ThresholdMode::MaxF1,
            other => other,
        },
        ..*rule
    };
    (0..k)
        .map(|c| {
            let p: Vec<f32> = probabilities.iter().skip(c).step_by(k).copied().collect();
            let y: Vec<u8> = targets.iter().skip(c).step_by(k).copied().collect();
            per_label.choose(&p, &y)
        })
        .collect()
}

/// Labelling every row scoring ≥ `score` as 1 gives `tp` true and `fp` false positives.
struct Cut {
    score: f32,
    tp: f64,
    fp: f64,
}

/// One cut per distinct score, highest first.
fn cuts(probabilities: &[f32], labels: &[u8]) -> Vec<Cut> {
    let mut order: Vec<usize> = (0..probabilities.len().min(labels.len())).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let mut out: Vec<Cut> = Vec::new();
    let (mut tp, mut fp) = (0.0, 0.0);
    for (i, &r) in order.iter().enumerate() {
        if labels[r] == 1 {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_its_score = order
            .get(i + 1)
            .is_none_or(|&next| probabilities[next] != probabilities[r]);
        if last_of_its_score {
            out.push(Cut {
                score: probabilities[r],
                tp,
                fp,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(mode: ThresholdMode) -> Threshold {
        Threshold {
            mode,
            ..Threshold::default()
        }
    }

    // Scores high to low: 0.9(1) 0.8(0) 0.7(1) 0.6(1) 0.4(0) 0.3(1) 0.2(0) 0.1(0); 4 positives.
    const P: [f32; 8] = [0.3, 0.9, 0.1, 0.7, 0.8, 0.2, 0.6, 0.4];
    const Y: [u8; 8] = [1, 1, 0, 1, 0, 0, 1, 0];

    #[test]
    fn max_f1_picks_the_best_cut_halfway_to_the_next_score() {
        // F1 = 2tp / (2tp + fp + fn) by cut (tp, fp): ≥0.9 (1,0) 0.4; ≥0.8 (1,1) 1/3;
        // ≥0.7 (2,1) 4/7; ≥0.6 (3,1) 0.75; ≥0.4 (3,2) 2/3; ≥0.3 (4,2) 0.8; ≥0.2 (4,3) 8/11;
        // ≥0.1 (4,4) 2/3. Best: ≥0.3, so halfway to 0.2.
        let t = rule(ThresholdMode::MaxF1).choose(&P, &Y);
        assert!((t - 0.25).abs() < 1e-7, "{t}");
    }

    #[test]
    fn f_beta_below_one_weighs_precision_more() {
        // F0.5 = 1.25tp / (1.25tp + 0.25fn + fp): ≥0.9 0.625; ≥0.7 0.625; ≥0.6 0.75;
        // ≥0.3 5/7. Best: ≥0.6, halfway to 0.4.
        let t = Threshold {
            mode: ThresholdMode::MaxFBeta,
            beta: 0.5,
            ..Threshold::default()
        }
        .choose(&P, &Y);
        assert!((t - 0.5).abs() < 1e-7, "{t}");
        // beta = 1 is max_f1.
        let f1 = Threshold {
            mode: ThresholdMode::MaxFBeta,
            beta: 1.0,
            ..Threshold::default()
        };
        assert_eq!(f1.choose(&P, &Y), rule(ThresholdMode::MaxF1).choose(&P, &Y));
    }

    #[test]
    fn precision_at_recall_is_the_most_precise_cut_reaching_the_recall() {
        let at = |recall| {
            Threshold {
                mode: ThresholdMode::PrecisionAtRecall,
                recall,
                ..Threshold::default()
            }
            .choose(&P, &Y)
        };
        // Recall ≥ 0.75 first at ≥0.6 (precision 3/4); ≥0.4 has 3/5.
        assert!((at(0.75) - 0.5).abs() < 1e-7);
        // Recall 1.0 needs ≥0.3 (precision 4/6).
        assert!((at(1.0) - 0.25).abs() < 1e-7);
        // Recall 0.25: ≥0.9 has precision 1.
        assert!((at(0.25) - 0.85).abs() < 1e-7);
    }

    #[test]
    fn tied_scores_are_one_cut_and_one_class_slices_keep_the_fixed_value() {
        let p = [0.5f32, 0.5, 0.5, 0.2];
        let y = [1u8, 0, 1, 0];
        // One cut at 0.5 (tp 2, fp 1, F1 0.8) beats ≥0.2 (F1 2/3): halfway to 0.2.
        let t = rule(ThresholdMode::MaxF1).choose(&p, &y);
        assert!((t - 0.35).abs() < 1e-7, "{t}");
        assert_eq!(rule(ThresholdMode::MaxF1).choose(&p, &[0, 0, 0, 0]), 0.5);
        assert_eq!(rule(ThresholdMode::MaxF1).choose(&[], &[]), 0.5);
        let fixed = Threshold {
            value: 0.3,
            ..Threshold::default()
        };
        assert_eq!(fixed.choose(&P, &Y), 0.3);
    }

    #[test]
    fn a_sweep_can_switch_the_mode_alone() {
        let t: Threshold = serde_json::from_str(r#"{"mode": "max_f1", "value": 0.5}"#).unwrap();
        assert_eq!(t.mode, ThresholdMode::MaxF1);
        assert!(serde_json::from_str::<Threshold>(r#"{"mode": "best"}"#).is_err());
        assert!(Threshold {
            recall: 0.0,
            ..Threshold::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn max_macro_f1_weighs_both_classes_of_a_binary_task() {
        // Scores high to low with labels 1 1 0 1 0 0 0 0. Cut after 2: class 1 F1 = 4/5,
        // class 0 F1 = 10/11 → 0.8545; after 4: F1₁ = 6/7, F1₀ = 8/9 → 0.8730 (the best; max F1
        // agrees here); after 3: 2/3·… lower.
        let p = [0.9f32, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2];
        let y = [1u8, 1, 0, 1, 0, 0, 0, 0];
        let t = rule(ThresholdMode::MaxMacroF1).choose(&p, &y);
        assert!((t - 0.55).abs() < 1e-6, "{t}");
    }

    #[test]
    fn per_class_offsets_raise_the_macro_f1_of_a_rare_class() {
        // Class 2 is rare and the model is shy of it: its rows have p₂ = 0.4 against p₀ = 0.5,
        // so argmax never predicts it (class 0 F1 2/3, class 1 F1 1, class 2 F1 0); an offset of ln(0.5/0.4) ≈ 0.22 or more on
        // class 2 gets both right without taking a class-0 row (p₂ = 0.1 there).
        let p: Vec<f32> = [
            [0.8, 0.1, 0.1],
            [0.7, 0.2, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.7, 0.1],
            [0.5, 0.1, 0.4],
            [0.5, 0.1, 0.4],
        ]
        .concat();
        let y = [0u8, 0, 1, 1, 2, 2];
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let before = crate::metrics::classify_multiclass(&p, &y, &names, None).macro_f1;
        let offsets = rule(ThresholdMode::MaxMacroF1).choose_offsets(&p, &y, 3);
        let after = crate::metrics::classify_multiclass(&p, &y, &names, Some(&offsets)).macro_f1;
        assert!(
            (before - (2.0 / 3.0 + 1.0 + 0.0) / 3.0).abs() < 1e-9,
            "{before}"
        );
        assert_eq!(after, 1.0, "{offsets:?}");
        assert_eq!(offsets[0], 0.0);
        assert!(
            (0.3 - 0.05..0.3 + 0.05).contains(&offsets[2]),
            "the nearest grid step above 0.22: {offsets:?}"
        );
        // Any other mode is a plain argmax.
        assert_eq!(
            rule(ThresholdMode::Fixed).choose_offsets(&p, &y, 3),
            vec![0.0; 3]
        );
    }
}
