//! Samplers: propose a trial's parameters from the study so far. `grid` walks the full
//! cartesian product once in a seeded order; `random` draws from a generator seeded by the
//! spec's seed and the trial number, without repeats while a finite space lasts.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rnnsweep_model::metrics::Direction;
use rnnsweep_model::seed::mix;
use serde::{Deserialize, Serialize};

use crate::space::{Point, Space, MAX_GRID_POINTS};
use crate::store::TrialRecord;

pub mod synthetic;
pub mod tpe;

/// The spec's `method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Grid,
    Random,
    Tpe,
}

/// The one place a `method` becomes a sampler (the sweep and its dry run both ask here, so
/// the plan shows what the sweep will draw).
pub fn build(
    method: Method,
    space: &Space,
    seed: u64,
    direction: Direction,
    tpe: &tpe::TpeSettings,
) -> Result<Box<dyn Sampler>, String> {
    Ok(match method {
        Method::Random => Box::new(RandomSampler::new(space.clone(), seed)),
        Method::Tpe => Box::new(tpe::TpeSampler::new(
            space.clone(),
            seed,
            direction,
            tpe.clone(),
        )),
        Method::Grid => Box::new(GridSampler::new(space.clone(), seed).ok_or_else(|| {
            format!("the grid has more than {MAX_GRID_POINTS} points: use method: random")
        })?),
    })
}

/// Optuna's sampler seam, reduced to what a process-based driver needs.
pub trait Sampler {
    /// Parameters for trial `number` given every trial so far; `None` when nothing is left.
    fn sample(&mut self, trials: &[TrialRecord], number: i64) -> Option<Point>;

    /// Whether `sample` looks at the trials (loading them costs time in big studies).
    fn needs_history(&self) -> bool {
        true
    }
}

pub struct GridSampler {
    space: Space,
    order: Vec<Point>,
}

impl GridSampler {
    pub fn new(space: Space, seed: u64) -> Option<Self> {
        let mut order = space.grid()?;
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(seed, 0, 0x6121)));
        Some(Self { space, order })
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Sampler for GridSampler {
    fn sample(&mut self, trials: &[TrialRecord], _number: i64) -> Option<Point> {
        let seen = self.space.seen(trials);
        self.order
            .iter()
            .find(|p| !seen.contains(&Space::key(p)))
            .cloned()
    }
}

pub struct RandomSampler {
    space: Space,
    seed: u64,
    /// Distinct points of a finite space (None when continuous or huge).
    finite: Option<usize>,
}

impl RandomSampler {
    pub fn new(space: Space, seed: u64) -> Self {
        let finite = space.grid().map(|g| g.len());
        Self {
            space,
            seed,
            finite,
        }
    }
}

impl Sampler for RandomSampler {
    fn needs_history(&self) -> bool {
        // Only to avoid repeats in a finite space.
        self.finite.is_some()
    }

    fn sample(&mut self, trials: &[TrialRecord], number: i64) -> Option<Point> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, number as u64, 0x5A3D));
        let draw = |rng: &mut ChaCha8Rng| -> Point {
            let p: Point = self
                .space
                .parameters
                .iter()
                .map(|(n, d)| (n.clone(), d.sample(rng)))
                .collect();
            self.space.active(&p)
        };
        let Some(size) = self.finite else {
            return Some(draw(&mut rng));
        };
        let seen = self.space.seen(trials);
        if seen.len() >= size {
            return None;
        }
        // Redraw from the same stream until a new point comes up; once rejection gets slow,
        // pick uniformly among the points still unseen.
        for _ in 0..64 {
            let p = draw(&mut rng);
            if !seen.contains(&Space::key(&p)) {
                return Some(p);
            }
        }
        let left: Vec<Point> = self
            .space
            .grid()?
            .into_iter()
            .filter(|p| !seen.contains(&Space::key(p)))
            .collect();
        left.choose(&mut rng).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Distribution;
    use crate::store::TrialState;
    use rnnsweep_model::config::ModelConfig;
    use serde_json::json;
    use std::collections::{BTreeMap, HashSet};

    fn space() -> Space {
        Space {
            parameters: vec![
                (
                    "dense.1.units".into(),
                    Distribution::Categorical(vec![json!(8), json!(16)]),
                ),
                (
                    "dense_layers".into(),
                    Distribution::Categorical(vec![json!(1), json!(2)]),
                ),
                (
                    "optimizer".into(),
                    Distribution::Categorical(vec![json!("adam"), json!("sgd"), json!("rmsprop")]),
                ),
            ],
            training: serde_json::to_value(ModelConfig::default()).unwrap(),
        }
    }

    #[test]
    fn queued_values_are_checked_against_the_space() {
        let mut s = space();
        s.parameters.extend([
            (
                "learning_rate".to_string(),
                Distribution::LogUniform {
                    min: 1e-4,
                    max: 1e-2,
                },
            ),
            (
                "lstm_units".to_string(),
                Distribution::Categorical(vec![json!(8), json!([8, 8])]),
            ),
            ("epochs".to_string(), Distribution::Constant(json!(3))),
            (
                "batch_size".to_string(),
                Distribution::IntUniform { min: 16, max: 64 },
            ),
        ]);
        let ok = s
            .resolve_fixed(
                &json!({"dense_layers": 1, "optimizer": "sgd", "learning_rate": 0.002,
                                   "lstm_units": "[8, 8]", "batch_size": 32.0}),
            )
            .unwrap();
        // The inactive layer parameter is not needed; the constant fills itself in; Optuna's
        // JSON text of a list choice and a whole float are read as the space's values.
        assert_eq!(
            s.decode(&ok),
            Point::from([
                ("batch_size".into(), json!(32)),
                ("dense_layers".into(), json!(1)),
                ("epochs".into(), json!(3)),
                ("learning_rate".into(), json!(0.002)),
                ("lstm_units".into(), json!([8, 8])),
                ("optimizer".into(), json!("sgd")),
            ])
        );
        let full = json!({"dense_layers": 2, "optimizer": "sgd", "learning_rate": 0.002,
                          "lstm_units": 8, "batch_size": 32});
        assert_eq!(
            s.resolve_fixed(&full).unwrap_err(),
            "parameter `dense.1.units` has no queued value"
        );
        let mut bad = full.clone();
        bad["dense.1.units"] = json!(12);
        assert_eq!(
            s.resolve_fixed(&bad).unwrap_err(),
            "parameter `dense.1.units` = 12 is outside the search space: it must be one of [8, 16]"
        );
        bad["dense.1.units"] = json!(8);
        bad["learning_rate"] = json!(0.5);
        assert_eq!(
            s.resolve_fixed(&bad).unwrap_err(),
            "parameter `learning_rate` = 0.5 is outside the search space: it must be a number in [0.0001, 0.01] (log scale)"
        );
        bad["learning_rate"] = json!(0.002);
        bad["batch_size"] = json!(32.5);
        assert!(s
            .resolve_fixed(&bad)
            .unwrap_err()
            .starts_with("parameter `batch_size` = 32.5 is outside"));
        bad["batch_size"] = json!(32);
        bad["units"] = json!(3);
        assert!(s
            .resolve_fixed(&bad)
            .unwrap_err()
            .starts_with("parameter `units` is not in the study's search space"));
        assert!(s.resolve_fixed(&json!([1, 2])).is_err());
    }

    fn record(space: &Space, number: i64, p: &Point) -> TrialRecord {
        TrialRecord {
            trial_id: number + 1,
            number,
            state: TrialState::Complete,
            params: space.to_stored(p),
            value: None,
            intermediate: vec![],
            user_attrs: BTreeMap::new(),
            system_attrs: BTreeMap::new(),
            datetime_start: None,
            datetime_complete: None,
        }
    }

    fn run(sampler: &mut dyn Sampler, space: &Space, n: usize) -> Vec<Point> {
        let mut trials = Vec::new();
        let mut points = Vec::new();
        for i in 0..n {
            let Some(p) = sampler.sample(&trials, i as i64) else {
                break;
            };
            trials.push(record(space, i as i64, &p));
            points.push(p);
        }
        points
    }

    #[test]
    fn grid_visits_each_active_point_once_in_a_seeded_order() {
        let s = space();
        // dense_layers=1 makes dense.1.units inactive: 3·1 + 3·2 = 9 distinct points, not 12.
        let mut g = GridSampler::new(s.clone(), 5).unwrap();
        assert_eq!(g.len(), 9);
        let points = run(&mut g, &s, 100);
        assert_eq!(points.len(), 9);
        let distinct: HashSet<String> = points.iter().map(Space::key).collect();
        assert_eq!(distinct.len(), 9);
        assert!(points
            .iter()
            .filter(|p| p["dense_layers"] == 1)
            .all(|p| !p.contains_key("dense.1.units")));
        let again = run(&mut GridSampler::new(s.clone(), 5).unwrap(), &s, 100);
        assert_eq!(points, again);
        assert_ne!(
            points,
            run(&mut GridSampler::new(s.clone(), 6).unwrap(), &s, 100)
        );
    }

    #[test]
    fn grid_continues_where_a_resumed_study_stopped() {
        let s = space();
        let full = run(&mut GridSampler::new(s.clone(), 1).unwrap(), &s, 100);
        // A study that ran 4 points, then a fresh sampler (a new driver process) picks up.
        let trials: Vec<TrialRecord> = full[..4]
            .iter()
            .enumerate()
            .map(|(i, p)| record(&s, i as i64, p))
            .collect();
        let mut resumed = GridSampler::new(s.clone(), 1).unwrap();
        assert_eq!(resumed.sample(&trials, 4).unwrap(), full[4]);
    }

    #[test]
    fn random_is_reproducible_and_does_not_repeat_a_finite_space() {
        let s = space();
        let a = run(&mut RandomSampler::new(s.clone(), 3), &s, 20);
        assert_eq!(a.len(), 9, "stops once all 9 points are used");
        assert_eq!(a.iter().map(Space::key).collect::<HashSet<_>>().len(), 9);
        assert_eq!(a, run(&mut RandomSampler::new(s.clone(), 3), &s, 20));
        assert_ne!(a, run(&mut RandomSampler::new(s.clone(), 4), &s, 20));
    }

    #[test]
    fn random_continuous_draws_depend_on_seed_and_number_only() {
        let s = Space {
            parameters: vec![(
                "learning_rate".into(),
                Distribution::LogUniform {
                    min: 1e-4,
                    max: 1e-1,
                },
            )],
            training: space().training,
        };
        let mut r = RandomSampler::new(s.clone(), 9);
        let p7 = r.sample(&[], 7).unwrap();
        assert_eq!(RandomSampler::new(s, 9).sample(&[], 7).unwrap(), p7);
        assert_ne!(r.sample(&[], 8).unwrap(), p7);
    }
}
