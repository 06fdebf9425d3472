//! Cheap objectives for measuring the orchestrator itself (samplers, pruners, overhead):
//! standard test functions, reported as a noisy learning curve per "epoch" that converges to
//! the function's value, so pruners have something to judge.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, StandardNormal};
use rnnsweep_model::seed::mix;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// 2-d, x0 ∈ [−5, 10], x1 ∈ [0, 15]; minimum 0.397887.
    Branin,
    /// 6-d, each xi ∈ [0, 1]; minimum −3.32237.
    Hartmann6,
    /// d-d sphere Σ xi², any bounds; minimum 0.
    Sphere,
}

impl Function {
    pub fn dims(self) -> Option<usize> {
        match self {
            Function::Branin => Some(2),
            Function::Hartmann6 => Some(6),
            Function::Sphere => None,
        }
    }

    pub fn minimum(self) -> f64 {
        match self {
            Function::Branin => 0.397_887_357_729_738,
            Function::Hartmann6 => -3.322_368_011_391_339,
            Function::Sphere => 0.0,
        }
    }

    /// Typical spread of values, which scales the learning curve's early excess.
    fn scale(self) -> f64 {
        match self {
            Function::Branin => 20.0,
            Function::Hartmann6 => 1.0,
            Function::Sphere => 10.0,
        }
    }

    pub fn eval(self, x: &[f64]) -> f64 {
        match self {
            Function::Branin => {
                let (x1, x2) = (x[0], x[1]);
                let pi = std::f64::consts::PI;
                let b = 5.1 / (4.0 * pi * pi);
                let c = 5.0 / pi;
                let t = 1.0 / (8.0 * pi);
                (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
            }
            Function::Hartmann6 => {
                const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
                const A: [[f64; 6]; 4] = [
                    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
                    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
                    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
                    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
                ];
                const P: [[f64; 6]; 4] = [
                    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
                    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
                    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
                    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
                ];
                -(0..4)
                    .map(|i| {
                        ALPHA[i]
                            * (-(0..6)
                                .map(|j| A[i][j] * (x[j] - P[i][j]).powi(2))
                                .sum::<f64>())
                            .exp()
                    })
                    .sum::<f64>()
            }
            Function::Sphere => x.iter().map(|v| v * v).sum(),
        }
    }

    /// The value reported after `epoch` of `epochs`: the function's value plus an excess that
    /// shrinks as 1/epoch, whose size depends on the point (so curves can cross), plus noise.
    pub fn curve(self, x: &[f64], epoch: usize, epochs: usize, noise: f64, seed: u64) -> f64 {
        let f = self.eval(x);
        let hash = x.iter().fold(seed, |h, v| mix(h, v.to_bits(), 0xC0));
        let mut rng = ChaCha8Rng::seed_from_u64(mix(hash, epoch as u64, 0x9015E));
        let steepness = 0.5 + (hash % 1000) as f64 / 1000.0;
        let excess = self.scale() * steepness * (epochs.saturating_sub(epoch)) as f64
            / (epochs.max(1) as f64 * epoch.max(1) as f64);
        let n: f64 = StandardNormal.sample(&mut rng);
        f + excess + noise * n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_minima() {
        let pi = std::f64::consts::PI;
        for x in [[-pi, 12.275], [pi, 2.275], [9.42478, 2.475]] {
            assert!((Function::Branin.eval(&x) - Function::Branin.minimum()).abs() < 1e-5);
        }
        let h = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573];
        assert!((Function::Hartmann6.eval(&h) - Function::Hartmann6.minimum()).abs() < 1e-4);
    }

    #[test]
    fn curves_end_at_the_value_without_noise_and_shrink() {
        let x = [1.0, 2.0];
        let f = Function::Branin.eval(&x);
        let last = Function::Branin.curve(&x, 10, 10, 0.0, 1);
        assert!((last - f).abs() < 1e-12);
        let early = Function::Branin.curve(&x, 1, 10, 0.0, 1);
        assert!(early > Function::Branin.curve(&x, 5, 10, 0.0, 1) && early > f);
    }
}
