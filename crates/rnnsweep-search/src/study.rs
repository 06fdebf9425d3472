//! A [`Study`] handle: a study opened from where it lives (a file or a URL), picked by name,
//! with its stored spec and objective. Every command that reads or changes a finished or
//! running study goes through it; queueing trials by hand (`enqueue`, `retry`) lives here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rnnsweep_model::metrics::Direction;
use serde_json::Value;

use crate::sampler::{Point, Space};
use crate::spec::{Spec, SpecError};
use crate::store::{keys, StorageLocation, Store, StoreError, TrialState};

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
}

pub struct Study {
    pub store: Box<dyn Store>,
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
            .get("metric")
            .and_then(Value::as_str)
            .unwrap_or("objective")
            .to_string())
    }

    /// The spec the study was run with, as stored in it.
    pub fn stored_spec(&self) -> Result<Spec, StudyError> {
        let attrs = self.store.study_user_attrs(self.id)?;
        let text = attrs.get("spec").and_then(Value::as_str).ok_or_else(|| {
            self.invalid(format!(
                "study `{}` was not written by rnnsweep (no spec)",
                self.name
            ))
        })?;
        let file = attrs
            .get("spec_file")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("spec.yaml"));
        let mut spec = Spec::parse(text, &file)?;
        // The study lives where it was found, whatever the spec said.
        spec.storage = self.location.clone();
        Ok(spec)
    }

    pub fn space(&self) -> Result<Space, StudyError> {
        Ok(crate::dispatch::space_of(&self.stored_spec()?))
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
            let attrs = BTreeMap::from([
                (
                    keys::FIXED_PARAMS.to_string(),
                    crate::store::fixed_params_attr(&t.params),
                ),
                (
                    keys::FAILED_TRIAL.to_string(),
                    t.system_attrs
                        .get(keys::FAILED_TRIAL)
                        .cloned()
                        .unwrap_or(Value::from(t.number)),
                ),
                (
                    keys::RETRY_HISTORY.to_string(),
                    Value::Array(crate::store::recovery::retry_history(t)),
                ),
            ]);
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
