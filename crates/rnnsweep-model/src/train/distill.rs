//! Knowledge distillation (Hinton, Vinyals & Dean, 2015): a student network learns from a
//! teacher's probabilities as well as from the labels, so one network can carry what an
//! ensemble knows. Rows without labels (a competition's test file) add to what it learns from
//! the teacher alone.
//!
//! Each row's loss is `α·w·CE(y, z) + (1 − α)·T²·CE(q_T, z/T)`: the class-weighted hard loss
//! of today's training, plus the cross-entropy between the teacher's probabilities softened by
//! the temperature `T` and the student's logits divided by `T`. The `T²` keeps the soft term's
//! gradients on the scale of the hard one's whatever `T` is (Hinton et al., section 2). An
//! unlabelled row has `w = 0`: only the soft term.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::encoder::Padded;
use crate::error::{ModelError, Result};
use crate::nn::loss::{bce_with_logits, softmax_cross_entropy};

/// How much the student follows the labels and how far the teacher's probabilities are
/// softened.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSettings {
    /// The hard (label) term's share, in [0, 1): 0 learns from the teacher alone.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Softening of both the teacher's probabilities and the student's logits (> 0).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

// Measured on the real tweets (README, "Quality"): chosen on the calibration rows among
// alpha 0 / 0.2 / 0.5 and temperature 1 / 2 / 3, the student taught by the ensemble alone at
// temperature 2 matched the ensemble's AP (Tang et al. 2019 also use the teacher alone).
fn default_alpha() -> f64 {
    0.0
}

fn default_temperature() -> f64 {
    2.0
}

impl Default for DistillSettings {
    fn default() -> Self {
        Self {
            alpha: default_alpha(),
            temperature: default_temperature(),
        }
    }
}

impl DistillSettings {
    /// `at` names where the settings came from (a flag or a spec key).
    pub fn validate(&self, at: &str) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(ModelError::Config {
                at: format!("{at}{field}"),
                message,
            })
        };
        if !(0.0..1.0).contains(&self.alpha) {
            return bad(
                "alpha",
                format!(
                    "{} is not in [0, 1): at 1 the teacher would not count at all",
                    self.alpha
                ),
            );
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(
                "temperature",
                format!("{} is not a positive number", self.temperature),
            );
        }
        Ok(())
    }
}

/// What a student learns from besides its labelled rows.
#[derive(Debug, Clone)]
pub struct SoftTargets {
    pub settings: DistillSettings,
    /// The teacher's probabilities for the training rows, in their order, row-major
    /// `[rows, outputs]` (a softmax task's K class probabilities per row).
    pub train: Vec<f32>,
    /// Rows without labels, padded as the training rows are.
    pub unlabelled: Padded,
    /// The teacher's probabilities for them, laid out as `train`.
    pub unlabelled_probabilities: Vec<f32>,
}

/// Probabilities a teacher gives in a distillation can be 0 or 1 in f32; their log-odds are
/// kept finite.
const EDGE: f32 = 1e-7;

/// The teacher's probabilities softened by `temperature`: `σ(logit(p)/T)` for each sigmoid
/// output (`width` 1), `softmax(log p / T)` over each row of a `width`-class softmax.
pub fn soften(probabilities: &[f32], width: usize, temperature: f64) -> Vec<f32> {
    let t = temperature as f32;
    if width <= 1 {
        return probabilities
            .iter()
            .map(|&p| {
                let p = p.clamp(EDGE, 1.0 - EDGE);
                let z = (p / (1.0 - p)).ln() / t;
                1.0 / (1.0 + (-z).exp())
            })
            .collect();
    }
    probabilities
        .chunks(width)
        .flat_map(|row| {
            let logs: Vec<f32> = row.iter().map(|&p| p.max(EDGE).ln() / t).collect();
            let top = logs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = logs.iter().map(|&l| (l - top).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.into_iter().map(move |e| e / sum)
        })
        .collect()
}

/// Per-row soft term `T²·CE(q_T, z/T)` for `[rows, outputs]` logits against softened teacher
/// probabilities of the same shape (the mean over the labels of a multi-label or binary net's
/// sigmoids, as the hard loss takes it).
pub fn soft_term(
    logits: &Tensor,
    softened: &Tensor,
    softmax: bool,
    temperature: f64,
) -> Result<Tensor> {
    let scaled = (logits / temperature)?;
    let per_row = if softmax {
        softmax_cross_entropy(&scaled, softened)?
    } else if scaled.rank() == 2 {
        bce_with_logits(&scaled, softened)?.mean(1)?
    } else {
        bce_with_logits(&scaled, softened)?
    };
    Ok((per_row * (temperature * temperature))?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::train::data_loss;

    fn scalar(t: &Tensor) -> f64 {
        f64::from(t.to_scalar::<f32>().unwrap())
    }

    /// `ln(1 + e^x)`, the hand formula's building block.
    fn softplus(x: f64) -> f64 {
        (1.0 + x.exp()).ln()
    }

    #[test]
    fn softening_a_probability_divides_its_log_odds_by_the_temperature() {
        // logit(0.9) = ln 9 = 2.1972; halved: σ(1.0986) = 0.75 exactly (3/(1+3)).
        let q = soften(&[0.9, 0.5, 0.1], 1, 2.0);
        assert!((q[0] - 0.75).abs() < 1e-6, "{q:?}");
        assert!((q[1] - 0.5).abs() < 1e-6);
        assert!((q[2] - 0.25).abs() < 1e-6);
        // A softmax row (0.6, 0.3, 0.1) at T = 2: proportional to √0.6, √0.3, √0.1.
        let q = soften(&[0.6, 0.3, 0.1], 3, 2.0);
        let roots = [0.6f64.sqrt(), 0.3f64.sqrt(), 0.1f64.sqrt()];
        let sum: f64 = roots.iter().sum();
        for (got, root) in q.iter().zip(roots) {
            assert!((f64::from(*got) - root / sum).abs() < 1e-6, "{q:?}");
        }
        // At T = 1 nothing changes, and certain probabilities stay finite.
        let q = soften(&[0.3, 0.0, 1.0], 1, 1.0);
        assert!((q[0] - 0.3).abs() < 1e-6);
        assert!(q.iter().all(|p| p.is_finite()));
    }

    #[test]
    fn a_binary_batch_loss_mixes_the_weighted_labels_and_the_softened_teacher() {
        // Three rows: two labelled (class weights 2 and 1), one unlabelled (weight 0).
        let logits = [0.5f32, -1.0, 2.0];
        let labels = [1f32, 0.0, 0.0];
        let weights = [2f32, 1.0, 0.0];
        let teacher = [0.9f32, 0.2, 0.6];
        let settings = DistillSettings {
            alpha: 0.25,
            temperature: 2.0,
        };
        let dev = Device::Cpu;
        let z = Tensor::new(&logits, &dev).unwrap();
        let got = data_loss(&z, &labels, &weights, Some((&teacher, settings)), 1, false).unwrap();
        // By hand: BCE(z, y) = softplus(z) − z·y; the soft target q = σ(logit(p)/2) and the
        // soft term 4·(softplus(z/2) − (z/2)·q); the batch loss is their α-mix summed over
        // the rows over 3.
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let mut sum = 0.0;
        for r in 0..3 {
            let z = f64::from(logits[r]);
            let y = f64::from(labels[r]);
            let p = f64::from(teacher[r]);
            let hard = softplus(z) - z * y;
            let q = sigmoid((p / (1.0 - p)).ln() / 2.0);
            let soft = 4.0 * (softplus(z / 2.0) - z / 2.0 * q);
            sum += 0.25 * f64::from(weights[r]) * hard + 0.75 * soft;
        }
        let want = sum / 3.0;
        // Written out: (2.15236 + 2.00055 + 2.28825) / 3 = 2.14705.
        assert!((want - 2.147_05).abs() < 1e-4, "hand value {want}");
        assert!(
            (scalar(&got) - want).abs() < 1e-5,
            "{} vs {want}",
            scalar(&got)
        );
        // Without a teacher it is today's class-weighted loss.
        let plain = data_loss(&z, &labels, &weights, None, 1, false).unwrap();
        let hard: f64 = (0..3)
            .map(|r| {
                let z = f64::from(logits[r]);
                f64::from(weights[r]) * (softplus(z) - z * f64::from(labels[r]))
            })
            .sum::<f64>()
            / 3.0;
        assert!((scalar(&plain) - hard).abs() < 1e-5);
    }

    #[test]
    fn a_softmax_batch_loss_takes_the_teachers_class_distribution() {
        // One row of three classes, label 0, weight 1, teacher (0.6, 0.3, 0.1), α = 0.5, T = 2.
        let logits = [1.0f32, 0.0, -1.0];
        let teacher = [0.6f32, 0.3, 0.1];
        let settings = DistillSettings {
            alpha: 0.5,
            temperature: 2.0,
        };
        let z = Tensor::from_vec(logits.to_vec(), (1, 3), &Device::Cpu).unwrap();
        let got = data_loss(&z, &[0.0], &[1.0], Some((&teacher, settings)), 3, false).unwrap();
        let lse = |v: &[f64]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let z64: Vec<f64> = logits.iter().map(|&x| f64::from(x)).collect();
        let hard = lse(&z64) - z64[0];
        let roots = [0.6f64.sqrt(), 0.3f64.sqrt(), 0.1f64.sqrt()];
        let total: f64 = roots.iter().sum();
        let half: Vec<f64> = z64.iter().map(|x| x / 2.0).collect();
        let soft: f64 = roots
            .iter()
            .zip(&half)
            .map(|(r, z)| r / total * (lse(&half) - z))
            .sum::<f64>()
            * 4.0;
        let want = 0.5 * hard + 0.5 * soft;
        // Written out: 0.5·0.40761 + 0.5·4·1.04040 = 2.28460.
        assert!((want - 2.284_60).abs() < 1e-4, "hand value {want}");
        assert!(
            (scalar(&got) - want).abs() < 1e-5,
            "{} vs {want}",
            scalar(&got)
        );
    }

    #[test]
    fn a_multi_label_batch_loss_averages_each_rows_labels() {
        // One row, two independent labels (1, 0), teacher (0.8, 0.4), α = 0 (teacher only),
        // T = 1: the mean over the labels of BCE(z, p).
        let z = Tensor::from_vec(vec![0.3f32, -0.7], (1, 2), &Device::Cpu).unwrap();
        let settings = DistillSettings {
            alpha: 0.0,
            temperature: 1.0,
        };
        let got = data_loss(
            &z,
            &[1.0, 0.0],
            &[1.0],
            Some((&[0.8, 0.4], settings)),
            2,
            true,
        )
        .unwrap();
        let want = ((softplus(0.3) - 0.3 * 0.8) + (softplus(-0.7) + 0.7 * 0.4)) / 2.0;
        assert!(
            (scalar(&got) - want).abs() < 1e-5,
            "{} vs {want}",
            scalar(&got)
        );
    }

    #[test]
    fn settings_outside_their_range_name_the_field() {
        let at = |s: DistillSettings| match s.validate("final.distill.") {
            Err(ModelError::Config { at, .. }) => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            at(DistillSettings {
                alpha: 1.0,
                temperature: 1.0
            }),
            "final.distill.alpha"
        );
        assert_eq!(
            at(DistillSettings {
                alpha: 0.5,
                temperature: 0.0
            }),
            "final.distill.temperature"
        );
        assert!(DistillSettings::default().validate("x").is_ok());
    }
}
