//! Pruners: decide, after an epoch, whether a trial should stop early. A pure decision over
//! the study's history (Optuna's `prune(study, trial) -> bool`), so it gives the same answer
//! whichever driver asks, with trials running in parallel.
//!
//! - `median` (Optuna's MedianPruner): after `warmup_epochs`, and once `min_trials` other
//!   trials reported that epoch, prune when the trial's best value so far is worse than the
//!   median of the others' values at that epoch.
//! - `hyperband` (W&B's key; asynchronous successive halving, Optuna's SuccessiveHalvingPruner
//!   and HyperbandPruner): rungs at `min_iter · eta^k` epochs up to `max_iter`; at a rung a
//!   trial continues only if it is within the top `1/eta` of the values recorded at that rung
//!   so far. With `brackets > 1`, trials are spread over brackets whose first rung is
//!   `min_iter · eta^b`, and compete within their bracket only.

use serde::{Deserialize, Serialize};

use rnnsweep_model::metrics::Direction;

use crate::store::{TrialRecord, TrialState};

/// The spec's `early_terminate` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum EarlyTerminate {
    Median {
        #[serde(default)]
        warmup_epochs: i64,
        #[serde(default = "default_min_trials")]
        min_trials: usize,
    },
    Hyperband {
        #[serde(default = "one")]
        min_iter: i64,
        #[serde(default)]
        max_iter: Option<i64>,
        #[serde(default = "three")]
        eta: i64,
        /// W&B calls the number of brackets `s`.
        #[serde(default = "one_usize", alias = "s")]
        brackets: usize,
    },
}

fn default_min_trials() -> usize {
    5
}
fn one() -> i64 {
    1
}
fn one_usize() -> usize {
    1
}
fn three() -> i64 {
    3
}

impl EarlyTerminate {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            EarlyTerminate::Median { warmup_epochs, .. } if *warmup_epochs < 0 => {
                Err("warmup_epochs must be ≥ 0".into())
            }
            EarlyTerminate::Hyperband {
                min_iter,
                max_iter,
                eta,
                brackets,
            } => {
                if *min_iter < 1 {
                    return Err("min_iter must be ≥ 1".into());
                }
                if *eta < 2 {
                    return Err("eta must be ≥ 2".into());
                }
                if max_iter.is_some_and(|m| m < *min_iter) {
                    return Err("max_iter must be ≥ min_iter".into());
                }
                if *brackets == 0 {
                    return Err("brackets must be ≥ 1".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Optuna's pruner seam.
pub trait Pruner {
    /// Whether `trial` (which just reported `epoch`) should stop. `trials` is the whole study,
    /// `trial` included.
    fn prune(&self, trials: &[TrialRecord], trial: &TrialRecord, epoch: i64) -> bool;
}

fn value_at(t: &TrialRecord, epoch: i64) -> Option<f64> {
    t.intermediate
        .iter()
        .find(|(s, _)| *s == epoch)
        .and_then(|(_, v)| *v)
        .filter(|v| !v.is_nan())
}

pub struct MedianPruner {
    pub direction: Direction,
    pub warmup_epochs: i64,
    pub min_trials: usize,
}

impl Pruner for MedianPruner {
    fn prune(&self, trials: &[TrialRecord], trial: &TrialRecord, epoch: i64) -> bool {
        if epoch <= self.warmup_epochs {
            return false;
        }
        let Some(current) = value_at(trial, epoch) else {
            // A NaN (diverging) trial is pruned once others exist to compare with.
            return trials
                .iter()
                .any(|t| t.trial_id != trial.trial_id && value_at(t, epoch).is_some());
        };
        let mut others: Vec<f64> = trials
            .iter()
            .filter(|t| {
                t.trial_id != trial.trial_id
                    && matches!(
                        t.state,
                        TrialState::Complete | TrialState::Pruned | TrialState::Running
                    )
            })
            .filter_map(|t| value_at(t, epoch))
            .collect();
        if others.len() < self.min_trials {
            return false;
        }
        others.sort_by(f64::total_cmp);
        let n = others.len();
        let median = if n % 2 == 1 {
            others[n / 2]
        } else {
            (others[n / 2 - 1] + others[n / 2]) / 2.0
        };
        // The trial's best so far, as Optuna's pruner compares.
        let best = trial
            .intermediate
            .iter()
            .filter(|(s, _)| *s <= epoch)
            .filter_map(|(_, v)| *v)
            .filter(|v| !v.is_nan())
            .fold(current, |a, b| self.direction.best(a, b));
        self.direction.better(median, best)
    }
}

pub struct HyperbandPruner {
    pub direction: Direction,
    pub min_iter: i64,
    pub max_iter: Option<i64>,
    pub eta: i64,
    pub brackets: usize,
}

impl HyperbandPruner {
    /// The bracket of a trial: spread by trial number, so it is fixed across drivers.
    pub fn bracket(&self, number: i64) -> usize {
        (number.rem_euclid(self.brackets as i64)) as usize
    }

    /// Rung epochs of a bracket: `min_iter · eta^(bracket + k)`, up to `max_iter`.
    pub fn rungs(&self, bracket: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut r = self.min_iter * self.eta.pow(bracket as u32);
        while self.max_iter.is_none_or(|m| r < m) && out.len() < 32 {
            out.push(r);
            r *= self.eta;
        }
        out
    }
}

impl Pruner for HyperbandPruner {
    fn prune(&self, trials: &[TrialRecord], trial: &TrialRecord, epoch: i64) -> bool {
        let bracket = self.bracket(trial.number);
        if !self.rungs(bracket).contains(&epoch) {
            return false;
        }
        let Some(value) = value_at(trial, epoch) else {
            return true;
        };
        // Everything recorded at this rung in this bracket so far, this trial included.
        let mut competing: Vec<f64> = trials
            .iter()
            .filter(|t| self.bracket(t.number) == bracket && t.state != TrialState::Fail)
            .filter_map(|t| value_at(t, epoch))
            .collect();
        if !trials.iter().any(|t| t.trial_id == trial.trial_id) {
            competing.push(value);
        }
        competing.sort_by(|a, b| self.direction.cmp(*a, *b));
        // Optuna's rule: the k-th best of n with k = max(n / eta, 1).
        let k = (competing.len() / self.eta as usize).max(1);
        self.direction.better(competing[k - 1], value)
    }
}

pub fn build(
    spec: Option<&EarlyTerminate>,
    direction: Direction,
) -> Option<Box<dyn Pruner + Send>> {
    Some(match spec? {
        EarlyTerminate::Median {
            warmup_epochs,
            min_trials,
        } => Box::new(MedianPruner {
            direction,
            warmup_epochs: *warmup_epochs,
            min_trials: *min_trials,
        }),
        EarlyTerminate::Hyperband {
            min_iter,
            max_iter,
            eta,
            brackets,
        } => Box::new(HyperbandPruner {
            direction,
            min_iter: *min_iter,
            max_iter: *max_iter,
            eta: *eta,
            brackets: *brackets,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn trial(number: i64, state: TrialState, curve: &[f64]) -> TrialRecord {
        TrialRecord {
            trial_id: number + 100,
            number,
            state,
            params: BTreeMap::new(),
            value: None,
            intermediate: curve
                .iter()
                .enumerate()
                .map(|(i, v)| (i as i64 + 1, Some(*v)))
                .collect(),
            user_attrs: BTreeMap::new(),
            system_attrs: BTreeMap::new(),
            datetime_start: None,
            datetime_complete: None,
        }
    }

    #[test]
    fn median_prunes_below_the_median_after_warmup_and_enough_trials() {
        let p = MedianPruner {
            direction: Direction::Maximize,
            warmup_epochs: 1,
            min_trials: 3,
        };
        let done = vec![
            trial(0, TrialState::Complete, &[0.5, 0.6, 0.7]),
            trial(1, TrialState::Complete, &[0.4, 0.5, 0.6]),
            trial(2, TrialState::Pruned, &[0.3, 0.4]),
        ];
        let mut all = done.clone();
        let low = trial(3, TrialState::Running, &[0.1, 0.2]);
        all.push(low.clone());
        // Epoch 1 is warm-up; at epoch 2 the others are 0.6, 0.5, 0.4: median 0.5 > 0.2.
        assert!(!p.prune(&all, &low, 1));
        assert!(p.prune(&all, &low, 2));
        let good = trial(4, TrialState::Running, &[0.1, 0.55]);
        assert!(!p.prune(&all, &good, 2));
        // Too few others reported epoch 3 (only two).
        let late = trial(5, TrialState::Running, &[0.0, 0.0, 0.0]);
        assert!(!p.prune(&all, &late, 3));
        // Minimising flips the comparison.
        let m = MedianPruner {
            direction: Direction::Minimize,
            ..p
        };
        assert!(!m.prune(&all, &low, 2));
    }

    #[test]
    fn asha_rungs_and_promotion_follow_optuna() {
        let p = HyperbandPruner {
            direction: Direction::Maximize,
            min_iter: 1,
            max_iter: Some(27),
            eta: 3,
            brackets: 1,
        };
        assert_eq!(p.rungs(0), vec![1, 3, 9]);
        let t0 = trial(0, TrialState::Running, &[0.5]);
        // Alone at the rung: promoted.
        assert!(!p.prune(std::slice::from_ref(&t0), &t0, 1));
        // Not a rung: never pruned.
        assert!(!p.prune(std::slice::from_ref(&t0), &t0, 2));
        let others: Vec<TrialRecord> = (1..6)
            .map(|i| trial(i, TrialState::Complete, &[0.1 * i as f64]))
            .collect();
        // Six values at rung 1: 0.5 (t0), 0.1..0.5 → k = 2, threshold = 2nd best = 0.5.
        let mut all = others.clone();
        all.push(t0.clone());
        assert!(!p.prune(&all, &t0, 1));
        let weak = trial(6, TrialState::Running, &[0.25]);
        all.push(weak.clone());
        assert!(p.prune(&all, &weak, 1));
        let b = HyperbandPruner { brackets: 2, ..p };
        assert_eq!(b.rungs(1), vec![3, 9]);
        assert_eq!(b.bracket(7), 1);
    }
}
