//! A [`Study`] handle: a study opened from where it lives (a file or a URL), picked by name,
//! with its stored spec and objective. Every command that reads or changes a finished or
//! running study goes through it: queueing trials by hand (`enqueue`, `retry`), the best trial
//! and its retraining into a final model, and copying studies between stores.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rnnsweep_model::dataset::{prepare_all, prepare_with};
use rnnsweep_model::metrics::Direction;
use rnnsweep_model::train::checkpoint::data_fingerprint;
use serde_json::Value;

use crate::results::confirm::confirmed_ranking;
use crate::results::error::StudyError;
use crate::results::leaderboard::rank;
use crate::results::plots::TrialData;
use crate::results::retrain::{RetrainOptions, RetrainPlan};
use crate::selection::{self, Selection};
use crate::space::trial_config::build_config;
use crate::space::{Point, Space};
use crate::spec::final_model::SelectionRule;
use crate::spec::Spec;
use crate::store::recovery::retry_attrs;
use crate::store::{keys, StorageLocation, Store, StudySummary, TrialRecord, TrialState};

/// A stored study, opened. Its store stays inside: commands read and change a study through
/// these methods, so every reader sees the same ranking and every change the same checks.
pub struct Study {
    store: Box<dyn Store>,
    pub location: StorageLocation,
    pub id: i64,
    pub name: String,
    pub direction: Direction,
}

/// Which failed trials `retry` queues again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySelection {
    /// Every FAIL trial that has not been re-queued already.
    AllFailed,
    Trial(i64),
}

impl Study {
    /// Every trial of the study, in number order.
    pub fn trials(&self) -> Result<Vec<TrialRecord>, StudyError> {
        Ok(self.store.trials(self.id)?)
    }

    /// One trial's per-epoch metrics, in epoch order.
    pub fn epochs(&self, trial_id: i64) -> Result<Vec<(i64, serde_json::Value)>, StudyError> {
        Ok(self.store.epochs(trial_id)?)
    }

    /// Trial counts by state and the best value.
    pub fn summary(&self) -> Result<StudySummary, StudyError> {
        Ok(self.store.summary(self.id)?)
    }

    /// Opens an existing study; `name` is needed when the store holds several.
    pub fn open(location: &StorageLocation, name: Option<&str>) -> Result<Self, StudyError> {
        let store = location.open_existing()?;
        let at = location.to_string();
        let studies = store.studies()?;
        let chosen =
            match name {
                Some(n) => studies.into_iter().find(|s| s.name == n).ok_or_else(|| {
                    StudyError::Invalid {
                        at: at.clone(),
                        message: format!("no study named `{n}`"),
                    }
                })?,
                None if studies.len() == 1 => {
                    studies
                        .into_iter()
                        .next()
                        .ok_or_else(|| StudyError::Invalid {
                            at: at.clone(),
                            message: "the file holds no study".into(),
                        })?
                }
                None if studies.is_empty() => {
                    return Err(StudyError::Invalid {
                        at,
                        message: "the file holds no study".into(),
                    })
                }
                None => {
                    return Err(StudyError::Invalid {
                        message: format!(
                            "the file holds several studies ({}); choose one with --study",
                            studies
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        at,
                    })
                }
            };
        Ok(Self {
            store,
            location: location.clone(),
            id: chosen.study_id,
            name: chosen.name,
            direction: chosen.direction,
        })
    }

    fn invalid(&self, message: String) -> StudyError {
        StudyError::Invalid {
            at: self.location.to_string(),
            message,
        }
    }

    /// The metric the study optimises (`objective` for a study rnnsweep did not write).
    pub fn objective(&self) -> Result<String, StudyError> {
        Ok(self
            .store
            .study_user_attrs(self.id)?
            .get(keys::METRIC)
            .and_then(Value::as_str)
            .unwrap_or("objective")
            .to_string())
    }

    /// The spec the study was run with, as stored in it.
    pub fn stored_spec(&self) -> Result<Spec, StudyError> {
        let attrs = self.store.study_user_attrs(self.id)?;
        let text = attrs
            .get(keys::SPEC)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                self.invalid(format!(
                    "study `{}` was not written by rnnsweep (no spec)",
                    self.name
                ))
            })?;
        let file = attrs
            .get(keys::SPEC_FILE)
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("spec.yaml"));
        let mut spec = Spec::parse(text, &file)?;
        // The study lives where it was found, whatever the spec said.
        spec.storage = self.location.clone();
        Ok(spec)
    }

    /// Every trial with its per-epoch history (for plots and exports).
    pub fn trials_with_epochs(&self) -> Result<Vec<TrialData>, StudyError> {
        self.store
            .trials(self.id)?
            .into_iter()
            .map(|record| {
                Ok(TrialData {
                    epochs: self.store.epochs(record.trial_id)?,
                    record,
                })
            })
            .collect()
    }

    /// The best trial (the first of [`Study::top_trials`]): by the mean over seeds when `confirm` has repeated some
    /// configurations (the original trial of the best confirmed one), else by its value.
    pub fn best_trial(&self) -> Result<TrialRecord, StudyError> {
        let mut top = self.top_trials(1)?;
        Ok(top.remove(0))
    }

    /// The best trial's configuration set up to train again for a final model: on every row
    /// of the training file for the trial's kept epoch count, or with the validation split.
    pub fn retrain_best(&self, options: &RetrainOptions) -> Result<RetrainPlan, StudyError> {
        self.retrain(self.best_trial()?, options)
    }

    /// The `k` best configurations: confirmed ones by their mean first, then the other
    /// trials by their value (a configuration's `confirm` repeats are not counted again).
    pub fn top_trials(&self, k: usize) -> Result<Vec<TrialRecord>, StudyError> {
        let trials = self.store.trials(self.id)?;
        let mut out: Vec<TrialRecord> = confirmed_ranking(&trials, self.direction)
            .iter()
            .filter_map(|c| trials.iter().find(|t| t.number == c.trial).cloned())
            .collect();
        let originals: Vec<TrialRecord> = trials
            .iter()
            .filter(|t| t.repeat_of().is_none())
            .cloned()
            .collect();
        for row in rank(&originals, &self.objective()?, self.direction, None) {
            if row.rank.is_some() && !out.iter().any(|t| t.number == row.number) {
                if let Some(t) = originals.iter().find(|t| t.number == row.number) {
                    out.push(t.clone());
                }
            }
        }
        out.truncate(k);
        if out.is_empty() {
            return Err(self.invalid(format!("study `{}` has no completed trial", self.name)));
        }
        Ok(out)
    }

    /// An ensemble's `k` members: chosen greedily on validation predictions from the best 50
    /// configurations (auto-sklearn's `ensemble_nbest`; [`selection::select`]); returns
    /// the candidates and the selection (indices into the candidates).
    pub fn choose_ensemble(
        &self,
        k: usize,
        rule: SelectionRule,
        combine: rnnsweep_model::artifact::Combine,
    ) -> Result<(Vec<TrialRecord>, Selection), StudyError> {
        let candidates = match rule {
            SelectionRule::Top => self.top_trials(k)?,
            SelectionRule::Greedy => self.top_trials(k.max(selection::CANDIDATES))?,
        };
        let ranked: Vec<&TrialRecord> = candidates.iter().collect();
        let selection = selection::choose(&ranked, k, rule, combine);
        Ok((candidates, selection))
    }

    /// A trial's configuration set up to train again (see [`Study::retrain_best`]).
    pub fn retrain(
        &self,
        best: TrialRecord,
        options: &RetrainOptions,
    ) -> Result<RetrainPlan, StudyError> {
        let spec = self.stored_spec()?;
        // Taken into the space, a list choice is a list again (stored, it is Optuna's JSON text).
        let mut params = best.param_values();
        params.extend(spec.space().decode(&best.params));
        let mut cfg = build_config(&spec.training, &params)
            .map_err(|m| self.invalid(format!("best trial's configuration: {m}")))?;
        let (table, validation) = spec.tables()?;
        let device = rnnsweep_model::device::open(&options.device)?;
        let data = if options.keep_validation {
            if let Some(n) = options.epochs {
                cfg.epochs = n;
            }
            prepare_with(&table, validation.as_ref(), &cfg)?
        } else {
            let kept = best
                .user_attrs
                .get(keys::BEST_EPOCH)
                .and_then(Value::as_u64)
                .map(|v| v as usize);
            cfg.epochs = options.epochs.or(kept).unwrap_or(cfg.epochs).max(1);
            prepare_all(&table, validation.as_ref(), &cfg)?
        };
        let task = serde_json::json!({
            "data": data_fingerprint(&spec.train_file, spec.validation_file.as_deref()),
            "keep_validation": options.keep_validation,
        });
        Ok(RetrainPlan {
            trial: best,
            config: cfg,
            data,
            device,
            task,
            distill: None,
        })
    }

    pub fn space(&self) -> Result<Space, StudyError> {
        Ok(self.stored_spec()?.space())
    }

    /// Queues a trial with exactly these values (Optuna's `enqueue_trial`), after checking
    /// them against the study's search space; returns the new trial's number.
    pub fn enqueue(&mut self, values: &Point) -> Result<i64, StudyError> {
        let given = Value::Object(values.clone().into_iter().collect());
        self.space()?
            .resolve_fixed(&given)
            .map_err(|m| self.invalid(m))?;
        let attrs = BTreeMap::from([(keys::FIXED_PARAMS.to_string(), given)]);
        Ok(self.store.enqueue(self.id, &attrs)?)
    }

    /// Queues `repeats` runs with fresh seeds of each of the `top` best trials' configurations
    /// (less the repeats already there); returns (repeated trial, new trial numbers).
    pub fn confirm(
        &mut self,
        top: usize,
        repeats: usize,
    ) -> Result<Vec<(i64, Vec<i64>)>, StudyError> {
        let trials = self.store.trials(self.id)?;
        let base_seed = self
            .stored_spec()
            .ok()
            .and_then(|s| s.training.get("seed").and_then(Value::as_u64))
            .unwrap_or(0);
        let plan = crate::results::confirm::repeats_to_queue(
            &trials,
            self.direction,
            top,
            repeats,
            base_seed,
        );
        let mut out = Vec::new();
        for (number, seeds) in plan {
            let Some(original) = trials.iter().find(|t| t.number == number) else {
                continue;
            };
            let values: serde_json::Map<String, Value> =
                original.param_values().into_iter().collect();
            let mut queued = Vec::new();
            for seed in seeds {
                let attrs = BTreeMap::from([
                    (
                        keys::FIXED_PARAMS.to_string(),
                        Value::Object(values.clone()),
                    ),
                    (keys::CONFIRM_OF.to_string(), Value::from(number)),
                    (keys::SEED.to_string(), Value::from(seed)),
                ]);
                queued.push(self.store.enqueue(self.id, &attrs)?);
            }
            out.push((number, queued));
        }
        Ok(out)
    }

    /// Queues failed trials again with their values, as Optuna's `RetryFailedTrialCallback`
    /// does (same keys: `failed_trial`, `retry_history`); returns (failed, new) numbers.
    pub fn retry(&mut self, which: RetrySelection) -> Result<Vec<(i64, i64)>, StudyError> {
        let trials = self.store.trials(self.id)?;
        let chosen: Vec<_> = match which {
            RetrySelection::Trial(n) => {
                let t = trials.iter().find(|t| t.number == n).ok_or_else(|| {
                    self.invalid(format!("study `{}` has no trial {n}", self.name))
                })?;
                if t.state != TrialState::Fail {
                    return Err(self.invalid(format!(
                        "trial {n} is {}; only FAIL trials are retried",
                        t.state.as_str()
                    )));
                }
                if let Some(again) = t.system_attrs.get(keys::REQUEUED_AS) {
                    return Err(self.invalid(format!(
                        "trial {n} was already queued again as trial {again}"
                    )));
                }
                vec![t]
            }
            RetrySelection::AllFailed => trials
                .iter()
                .filter(|t| {
                    t.state == TrialState::Fail && !t.system_attrs.contains_key(keys::REQUEUED_AS)
                })
                .collect(),
        };
        let mut out = Vec::new();
        for t in chosen {
            let attrs = retry_attrs(t);
            let number = self.store.enqueue(self.id, &attrs)?;
            self.store.set_trial_system_attr(
                t.trial_id,
                keys::REQUEUED_AS,
                &Value::from(number),
            )?;
            out.push((t.number, number));
        }
        Ok(out)
    }
}

/// Copies studies (every one, or the one named) between stores, trials as they are; a study
/// that already has trials at the destination is refused before anything is written.
/// Returns each copied study's name and trial count.
pub fn copy_studies(
    from: &StorageLocation,
    to: &StorageLocation,
    only: Option<&str>,
) -> Result<Vec<(String, usize)>, StudyError> {
    let source = from.open_existing()?;
    let studies: Vec<_> = source
        .studies()?
        .into_iter()
        .filter(|s| only.is_none_or(|n| s.name == n))
        .collect();
    if studies.is_empty() {
        return Err(StudyError::Invalid {
            at: from.to_string(),
            message: format!(
                "no study{} to copy",
                only.map(|n| format!(" named `{n}`")).unwrap_or_default()
            ),
        });
    }
    let mut dest = to.open()?;
    for s in &studies {
        if let Some(id) = dest.study_id(&s.name)? {
            let n = dest.trials(id)?.len();
            if n > 0 {
                return Err(StudyError::Invalid {
                    at: to.to_string(),
                    message: format!(
                        "study `{}` already exists there with {n} trials; nothing was copied",
                        s.name
                    ),
                });
            }
        }
    }
    let mut out = Vec::new();
    for s in studies {
        let user = source.study_user_attrs(s.study_id)?;
        let system = source.study_system_attrs(s.study_id)?;
        let id = dest.open_study(&s.name, s.direction, &user, &system)?;
        let trials = source.trials(s.study_id)?;
        for t in &trials {
            dest.import_trial(id, t, &source.epochs(t.trial_id)?)?;
        }
        out.push((s.name, trials.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures;
    use serde_json::json;

    fn trial(number: i64, state: TrialState, value: Option<f64>) -> TrialRecord {
        fixtures::trial(number, state, value, (16 + number) as f64)
    }

    /// A maximising study `s` holding these trials, opened as a user would.
    fn study_with(dir: &tempfile::TempDir, trials: &[TrialRecord]) -> Study {
        let location = StorageLocation::Sqlite(dir.path().join("s.db"));
        let mut store = location.open().unwrap();
        let attrs = BTreeMap::from([(keys::METRIC.to_string(), json!("val_f1"))]);
        let id = store
            .open_study("s", Direction::Maximize, &attrs, &BTreeMap::new())
            .unwrap();
        for t in trials {
            store.import_trial(id, t, &[]).unwrap();
        }
        Study::open(&location, None).unwrap()
    }

    fn numbers(trials: &[TrialRecord]) -> Vec<i64> {
        trials.iter().map(|t| t.number).collect()
    }

    #[test]
    fn best_and_top_rank_by_value_with_ties_to_the_earlier_trial() {
        let dir = tempfile::tempdir().unwrap();
        let study = study_with(
            &dir,
            &[
                trial(0, TrialState::Complete, Some(0.80)),
                trial(1, TrialState::Complete, Some(0.90)),
                trial(2, TrialState::Complete, Some(0.90)),
                trial(3, TrialState::Fail, None),
                trial(4, TrialState::Complete, Some(0.85)),
            ],
        );
        assert_eq!(study.objective().unwrap(), "val_f1");
        assert_eq!(numbers(&study.top_trials(3).unwrap()), [1, 2, 4]);
        assert_eq!(numbers(&study.top_trials(10).unwrap()), [1, 2, 4, 0]);
        assert_eq!(study.best_trial().unwrap().number, 1);
    }

    #[test]
    fn a_confirmed_configuration_comes_first_and_its_repeats_are_not_counted_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut repeat = trial(5, TrialState::Complete, Some(0.95));
        repeat
            .system_attrs
            .insert(keys::CONFIRM_OF.into(), json!(0));
        let study = study_with(
            &dir,
            &[
                trial(0, TrialState::Complete, Some(0.80)),
                trial(1, TrialState::Complete, Some(0.90)),
                repeat,
            ],
        );
        // Trial 0's mean over seeds (0.875) is confirmed; trial 1's single 0.90 is not.
        assert_eq!(study.best_trial().unwrap().number, 0);
        assert_eq!(numbers(&study.top_trials(5).unwrap()), [0, 1]);
    }

    #[test]
    fn an_empty_study_has_no_best_trial_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let study = study_with(&dir, &[trial(0, TrialState::Fail, None)]);
        let e = study.best_trial().unwrap_err().to_string();
        assert!(e.ends_with("study `s` has no completed trial"), "{e}");
    }

    #[test]
    fn retry_queues_a_failed_trial_once_with_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut study = study_with(
            &dir,
            &[
                trial(0, TrialState::Complete, Some(0.5)),
                trial(1, TrialState::Fail, None),
            ],
        );
        let e = study
            .retry(RetrySelection::Trial(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("trial 0 is COMPLETE; only FAIL trials are retried"),
            "{e}"
        );
        assert_eq!(study.retry(RetrySelection::AllFailed).unwrap(), [(1, 2)]);
        let trials = study.trials().unwrap();
        let queued = &trials[2];
        assert_eq!(queued.state, TrialState::Waiting);
        assert_eq!(
            queued.system_attrs[keys::FIXED_PARAMS],
            json!({"units": 17})
        );
        assert_eq!(queued.system_attrs[keys::FAILED_TRIAL], json!(1));
        assert_eq!(trials[1].system_attrs[keys::REQUEUED_AS], json!(2));
        let e = study
            .retry(RetrySelection::Trial(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("trial 1 was already queued again as trial 2"),
            "{e}"
        );
        assert!(study.retry(RetrySelection::AllFailed).unwrap().is_empty());
    }

    #[test]
    fn a_file_with_several_studies_needs_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let location = StorageLocation::Sqlite(dir.path().join("s.db"));
        let mut store = location.open().unwrap();
        for name in ["a", "b"] {
            store
                .open_study(
                    name,
                    Direction::Minimize,
                    &BTreeMap::new(),
                    &BTreeMap::new(),
                )
                .unwrap();
        }
        let e = Study::open(&location, None).err().unwrap().to_string();
        assert!(
            e.ends_with("the file holds several studies (a, b); choose one with --study"),
            "{e}"
        );
        let e = Study::open(&location, Some("c")).err().unwrap().to_string();
        assert!(e.ends_with("no study named `c`"), "{e}");
        assert_eq!(
            Study::open(&location, Some("b"))
                .unwrap()
                .objective()
                .unwrap(),
            "objective"
        );
    }
}
