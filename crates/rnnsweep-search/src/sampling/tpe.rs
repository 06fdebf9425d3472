//! Tree-structured Parzen Estimator, following Optuna 5.0's `TPESampler` defaults:
//! multivariate (one product kernel per observation over the parameters every trial has, the
//! rest sampled independently), `n_startup_trials = 10` random trials first,
//! `n_ei_candidates = 24`, `gamma(n) = min(ceil(0.1·n), 25)`, `prior_weight = 1.0`, magic clip
//! on, endpoints off, Optuna's weights (flat below 25 observations, then a ramp favouring recent
//! trials), Optuna's categorical kernel, and the constant liar (running trials count as bad,
//! so parallel trials spread out).
//!
//! Where rnnsweep differs: stepped (int / quantized) parameters use the continuous density at
//! the value rather than the mass of the step interval; pruned trials always go to the "bad"
//! group (Optuna ranks them by the step they reached).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, StandardNormal};
use rnnsweep_model::metrics::Direction;
use rnnsweep_model::seed::mix;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sampling::{Point, RandomSampler, Sampler, Space};
use crate::space::{number, Distribution};
use crate::store::{TrialRecord, TrialState};

/// The spec's `tpe` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TpeSettings {
    pub n_startup_trials: usize,
    pub n_ei_candidates: usize,
    pub prior_weight: f64,
}

impl Default for TpeSettings {
    fn default() -> Self {
        Self {
            n_startup_trials: 10,
            n_ei_candidates: 24,
            prior_weight: 1.0,
        }
    }
}

pub struct TpeSampler {
    space: Space,
    seed: u64,
    direction: Direction,
    settings: TpeSettings,
    random: RandomSampler,
}

impl TpeSampler {
    pub fn new(space: Space, seed: u64, direction: Direction, settings: TpeSettings) -> Self {
        Self {
            random: RandomSampler::new(space.clone(), seed),
            space,
            seed,
            direction,
            settings,
        }
    }
}

/// Optuna's `default_gamma`.
fn gamma(n: usize) -> usize {
    ((0.1 * n as f64).ceil() as usize).min(25)
}

/// Optuna's `default_weights`: flat for fewer than 25, then older observations count less.
fn weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp: Vec<f64> = (0..n - 25)
        .map(|i| 1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / ((n - 25).max(2) - 1) as f64)
        .collect();
    ramp.into_iter()
        .chain(std::iter::repeat_n(1.0, 25))
        .collect()
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7), enough for kernel masses.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

/// One dimension of the search space as TPE models it.
enum Dim {
    /// In the internal (possibly log) space.
    Numeric {
        low: f64,
        high: f64,
    },
    Categorical(usize),
}

/// Per-dimension kernels of every component (observations, then the prior).
enum Kernels {
    Numeric {
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        low: f64,
        high: f64,
    },
    Categorical(Vec<Vec<f64>>),
}

/// Optuna's `_ParzenEstimator`: a mixture of product kernels, one per observation, plus a
/// prior component.
struct Mixture {
    weights: Vec<f64>,
    dims: Vec<Kernels>,
}

impl Mixture {
    /// `obs[i][d]`: observation i (oldest first) in dimension d.
    fn new(dims: &[Dim], obs: &[Vec<f64>], prior_weight: f64) -> Self {
        let n = obs.len();
        let mut w = weights(n);
        w.push(prior_weight);
        let total: f64 = w.iter().sum();
        let weights = w.into_iter().map(|x| x / total).collect();
        let kernels = dims
            .iter()
            .enumerate()
            .map(|(d, dim)| {
                let column: Vec<f64> = obs.iter().map(|row| row[d]).collect();
                match dim {
                    Dim::Numeric { low, high } => {
                        let (mut mus, mut sigmas) =
                            (column.clone(), numeric_sigmas(&column, *low, *high));
                        mus.push(0.5 * (low + high));
                        sigmas.push(high - low);
                        Kernels::Numeric {
                            mus,
                            sigmas,
                            low: *low,
                            high: *high,
                        }
                    }
                    Dim::Categorical(k) => {
                        let n_kernels = (n + 1) as f64;
                        let mut rows: Vec<Vec<f64>> = column
                            .iter()
                            .map(|&c| {
                                let mut row = vec![prior_weight / n_kernels; *k];
                                if let Some(slot) = row.get_mut(c as usize) {
                                    *slot += 1.0;
                                }
                                let sum: f64 = row.iter().sum();
                                row.into_iter().map(|x| x / sum).collect()
                            })
                            .collect();
                        rows.push(vec![1.0 / *k as f64; *k]);
                        Kernels::Categorical(rows)
                    }
                }
            })
            .collect();
        Self {
            weights,
            dims: kernels,
        }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let mut u = rng.random::<f64>();
        let mut c = self.weights.len() - 1;
        for (i, w) in self.weights.iter().enumerate() {
            if u < *w {
                c = i;
                break;
            }
            u -= w;
        }
        self.dims
            .iter()
            .map(|k| match k {
                Kernels::Numeric {
                    mus,
                    sigmas,
                    low,
                    high,
                } => {
                    for _ in 0..100 {
                        let z: f64 = StandardNormal.sample(rng);
                        let x = mus[c] + sigmas[c] * z;
                        if (*low..=*high).contains(&x) {
                            return x;
                        }
                    }
                    mus[c].clamp(*low, *high)
                }
                Kernels::Categorical(rows) => {
                    let mut u = rng.random::<f64>();
                    for (i, p) in rows[c].iter().enumerate() {
                        if u < *p {
                            return i as f64;
                        }
                        u -= p;
                    }
                    (rows[c].len() - 1) as f64
                }
            })
            .collect()
    }

    fn log_pdf(&self, x: &[f64]) -> f64 {
        let logs: Vec<f64> = (0..self.weights.len())
            .map(|c| {
                self.weights[c].ln()
                    + self
                        .dims
                        .iter()
                        .zip(x)
                        .map(|(k, &v)| match k {
                            Kernels::Numeric {
                                mus,
                                sigmas,
                                low,
                                high,
                            } => {
                                let (m, s) = (mus[c], sigmas[c]);
                                let mass = (normal_cdf((high - m) / s) - normal_cdf((low - m) / s))
                                    .max(1e-12);
                                let z = (v - m) / s;
                                -0.5 * z * z - (s * (2.0 * std::f64::consts::PI).sqrt() * mass).ln()
                            }
                            Kernels::Categorical(rows) => rows[c]
                                .get(v as usize)
                                .copied()
                                .unwrap_or(1e-12)
                                .max(1e-12)
                                .ln(),
                        })
                        .sum::<f64>()
            })
            .collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
    }
}

/// Optuna's bandwidths: the larger gap to a sorted neighbour (endpoints not considered), then
/// clipped to [range / min(100, 2 + n), range].
fn numeric_sigmas(obs: &[f64], low: f64, high: f64) -> Vec<f64> {
    let n = obs.len();
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| obs[a].total_cmp(&obs[b]));
    let mut with_ends = vec![low];
    with_ends.extend(order.iter().map(|&i| obs[i]));
    with_ends.push(high);
    let mut sorted: Vec<f64> = (1..=n)
        .map(|i| (with_ends[i] - with_ends[i - 1]).max(with_ends[i + 1] - with_ends[i]))
        .collect();
    if with_ends.len() >= 4 {
        sorted[0] = with_ends[2] - with_ends[1];
        sorted[n - 1] = with_ends[n] - with_ends[n - 1];
    }
    let range = high - low;
    let min_sigma = range / (100f64).min(2.0 + n as f64);
    let mut sigmas = vec![0.0; n];
    for (k, &i) in order.iter().enumerate() {
        sigmas[i] = sorted[k].clamp(min_sigma, range);
    }
    sigmas
}

/// A numeric parameter in TPE's internal (possibly log) space.
struct Numeric {
    low: f64,
    high: f64,
    log: bool,
    /// Values are multiples of `step` (in the original space).
    step: Option<f64>,
    integer: bool,
    min: f64,
    max: f64,
}

impl Numeric {
    fn of(d: &Distribution) -> Option<Self> {
        let (min, max, log, step, integer) = match d {
            Distribution::IntUniform { min, max } => {
                (*min as f64, *max as f64, false, Some(1.0), true)
            }
            Distribution::Uniform { min, max } => (*min, *max, false, None, false),
            Distribution::QUniform { min, max, q } => (*min, *max, false, Some(*q), false),
            Distribution::LogUniform { min, max } => (*min, *max, true, None, false),
            Distribution::QLogUniform { min, max, q } => (*min, *max, true, Some(*q), *q == 1.0),
            _ => return None,
        };
        let (mut low, mut high) = if log {
            (min.ln(), max.ln())
        } else {
            (min, max)
        };
        if let (Some(q), false) = (step, log) {
            low -= q / 2.0;
            high += q / 2.0;
        }
        Some(Self {
            low,
            high,
            log,
            step,
            integer,
            min,
            max,
        })
    }

    fn to_internal(&self, v: f64) -> f64 {
        if self.log {
            v.max(1e-300).ln()
        } else {
            v
        }
    }

    fn to_value(&self, x: f64) -> Value {
        let mut v = if self.log { x.exp() } else { x };
        if let Some(q) = self.step {
            let base = if self.log { 0.0 } else { self.min };
            v = base + ((v - base) / q).round() * q;
            // Clear float noise from a multiple of q.
            v = (v / q).round() * q;
        }
        v = v.clamp(self.min, self.max);
        if self.integer {
            Value::from(v.round() as i64)
        } else {
            number(v)
        }
    }
}

impl Sampler for TpeSampler {
    fn sample(&mut self, trials: &[TrialRecord], number: i64) -> Option<Point> {
        let sign = if self.direction == Direction::Maximize {
            -1.0
        } else {
            1.0
        };
        let mut scored: Vec<(&TrialRecord, f64)> = trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .filter_map(|t| Some((t, sign * t.value.filter(|v| v.is_finite())?)))
            .collect();
        if scored.len() < self.settings.n_startup_trials {
            return self.random.sample(trials, number);
        }
        // Oldest first, as Optuna's weights expect; split by rank.
        scored.sort_by_key(|(t, _)| t.number);
        let mut by_score: Vec<usize> = (0..scored.len()).collect();
        by_score.sort_by(|&a, &b| scored[a].1.total_cmp(&scored[b].1));
        let n_below = gamma(scored.len()).max(1);
        let mut is_below = vec![false; scored.len()];
        for &i in &by_score[..n_below] {
            is_below[i] = true;
        }
        let below: Vec<&TrialRecord> = scored
            .iter()
            .zip(&is_below)
            .filter(|(_, b)| **b)
            .map(|(t, _)| t.0)
            .collect();
        let mut above: Vec<&TrialRecord> = scored
            .iter()
            .zip(&is_below)
            .filter(|(_, b)| !**b)
            .map(|(t, _)| t.0)
            .collect();
        above.extend(trials.iter().filter(|t| t.state == TrialState::Pruned));
        above.sort_by_key(|t| t.number);

        // The constant liar: other running trials count as bad, so parallel trials spread out.
        above.extend(
            trials
                .iter()
                .filter(|t| t.state == TrialState::Running && !t.params.is_empty()),
        );
        above.sort_by_key(|t| t.number);

        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, number as u64, 0x7BE));
        // Multivariate over the parameters every finished trial has; the rest one by one.
        let finished: Vec<&TrialRecord> = below
            .iter()
            .chain(&above)
            .copied()
            .filter(|t| t.state != TrialState::Running)
            .collect();
        let joint: Vec<usize> = (0..self.space.parameters.len())
            .filter(|&i| {
                let (name, d) = &self.space.parameters[i];
                !matches!(d, Distribution::Constant(_))
                    && finished.iter().all(|t| t.params.contains_key(name))
            })
            .collect();
        let mut point = Point::new();
        let mut groups: Vec<Vec<usize>> = vec![joint.clone()];
        groups.extend(
            (0..self.space.parameters.len())
                .filter(|i| !joint.contains(i))
                .map(|i| vec![i]),
        );
        for group in groups.into_iter().filter(|g| !g.is_empty()) {
            let params: Vec<&(String, Distribution)> =
                group.iter().map(|&i| &self.space.parameters[i]).collect();
            if let [(name, Distribution::Constant(v))] = params.as_slice() {
                point.insert(name.clone(), v.clone());
                continue;
            }
            let numerics: Vec<Option<Numeric>> =
                params.iter().map(|(_, d)| Numeric::of(d)).collect();
            let dims: Vec<Dim> = params
                .iter()
                .zip(&numerics)
                .map(|((_, d), num)| match (d, num) {
                    (Distribution::Categorical(c), _) => Dim::Categorical(c.len()),
                    (_, Some(n)) => Dim::Numeric {
                        low: n.low,
                        high: n.high,
                    },
                    _ => Dim::Categorical(1),
                })
                .collect();
            // Rows of the trials that have every parameter of the group, in internal space.
            let rows = |group_trials: &[&TrialRecord]| -> Vec<Vec<f64>> {
                group_trials
                    .iter()
                    .filter_map(|t| {
                        params
                            .iter()
                            .zip(&numerics)
                            .map(|((name, _), num)| {
                                let v = t.params.get(name)?.internal;
                                Some(num.as_ref().map_or(v, |n| n.to_internal(v)))
                            })
                            .collect::<Option<Vec<f64>>>()
                    })
                    .collect()
            };
            let l = Mixture::new(&dims, &rows(&below), self.settings.prior_weight);
            let g = Mixture::new(&dims, &rows(&above), self.settings.prior_weight);
            let mut best: (f64, Vec<f64>) = (f64::NEG_INFINITY, Vec::new());
            for _ in 0..self.settings.n_ei_candidates.max(1) {
                let x = l.sample(&mut rng);
                let score = l.log_pdf(&x) - g.log_pdf(&x);
                if score > best.0 || best.1.is_empty() {
                    best = (score, x);
                }
            }
            for (((name, d), num), x) in params.iter().zip(&numerics).zip(&best.1) {
                let value = match (d, num) {
                    (Distribution::Categorical(c), _) => c[(*x as usize).min(c.len() - 1)].clone(),
                    (_, Some(n)) => n.to_value(*x),
                    (Distribution::Constant(v), _) => v.clone(),
                    _ => continue,
                };
                point.insert(name.clone(), value);
            }
        }
        Some(self.space.active(&point))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rnnsweep_model::config::ModelConfig;
    use std::collections::BTreeMap;

    fn space() -> Space {
        Space {
            parameters: vec![
                (
                    "x".into(),
                    Distribution::Uniform {
                        min: -5.0,
                        max: 5.0,
                    },
                ),
                (
                    "k".into(),
                    Distribution::Categorical(vec![
                        Value::from("a"),
                        Value::from("b"),
                        Value::from("c"),
                    ]),
                ),
                ("n".into(), Distribution::IntUniform { min: 1, max: 9 }),
                (
                    "lr".into(),
                    Distribution::LogUniform {
                        min: 1e-4,
                        max: 1e-1,
                    },
                ),
            ],
            training: serde_json::to_value(ModelConfig::default()).unwrap(),
        }
    }

    /// A made-up objective with its minimum at x = 2, k = "b", n = 7, lr = 1e-2.
    fn objective(p: &Point) -> f64 {
        let x = p["x"].as_f64().unwrap();
        let n = p["n"].as_f64().unwrap();
        let lr = p["lr"].as_f64().unwrap();
        (x - 2.0).powi(2)
            + if p["k"] == "b" { 0.0 } else { 3.0 }
            + (n - 7.0).abs()
            + (lr.log10() + 2.0).powi(2)
    }

    fn run(sampler: &mut dyn Sampler, s: &Space, n: usize) -> Vec<(Point, f64)> {
        let mut trials: Vec<TrialRecord> = Vec::new();
        let mut out = Vec::new();
        for i in 0..n {
            let p = sampler.sample(&trials, i as i64).unwrap();
            let v = objective(&p);
            trials.push(TrialRecord {
                trial_id: i as i64 + 1,
                number: i as i64,
                state: TrialState::Complete,
                params: s.to_stored(&p),
                value: Some(v),
                intermediate: vec![],
                user_attrs: BTreeMap::new(),
                system_attrs: BTreeMap::new(),
                datetime_start: None,
                datetime_complete: None,
            });
            out.push((p, v));
        }
        out
    }

    #[test]
    fn tpe_is_reproducible_and_beats_random_on_a_simple_objective() {
        let s = space();
        let mut tpe_wins = 0;
        for seed in 0..8 {
            let tpe = run(
                &mut TpeSampler::new(s.clone(), seed, Direction::Minimize, TpeSettings::default()),
                &s,
                60,
            );
            let again = run(
                &mut TpeSampler::new(s.clone(), seed, Direction::Minimize, TpeSettings::default()),
                &s,
                60,
            );
            assert_eq!(
                tpe.iter().map(|x| x.1).collect::<Vec<_>>(),
                again.iter().map(|x| x.1).collect::<Vec<_>>()
            );
            let random = run(&mut RandomSampler::new(s.clone(), seed), &s, 60);
            let best = |r: &[(Point, f64)]| r.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
            if best(&tpe) < best(&random) {
                tpe_wins += 1;
            }
            // Values stay inside their distributions.
            for (p, _) in &tpe {
                assert!((1..=9).contains(&p["n"].as_i64().unwrap()));
                let lr = p["lr"].as_f64().unwrap();
                assert!((1e-4..=1e-1).contains(&lr));
            }
        }
        assert!(
            tpe_wins >= 6,
            "TPE beat random in only {tpe_wins} of 8 seeds"
        );
    }

    #[test]
    fn optuna_gamma_and_weights() {
        assert_eq!(gamma(10), 1);
        assert_eq!(gamma(11), 2);
        assert_eq!(gamma(1000), 25);
        assert_eq!(weights(3), vec![1.0; 3]);
        let w = weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12 && w[4] == 1.0 && w[29] == 1.0);
    }

    #[test]
    fn parzen_density_integrates_to_one() {
        let p = Mixture::new(
            &[Dim::Numeric {
                low: 0.0,
                high: 1.0,
            }],
            &[vec![0.2], vec![0.25], vec![0.8]],
            1.0,
        );
        let n = 10_000;
        let integral: f64 = (0..n)
            .map(|i| p.log_pdf(&[(i as f64 + 0.5) / n as f64]).exp() / n as f64)
            .sum();
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
        // A categorical kernel is a distribution too.
        let c = Mixture::new(&[Dim::Categorical(3)], &[vec![0.0], vec![2.0]], 1.0);
        let total: f64 = (0..3).map(|k| c.log_pdf(&[k as f64]).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }
}
