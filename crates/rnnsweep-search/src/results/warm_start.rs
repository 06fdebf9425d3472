//! `run --warm-start OLD.db`: a new study starts from an old one's finished trials (Optuna's
//! `add_trials`), so its sampler (TPE above all) learns from them instead of from scratch.
//!
//! A trial is taken when every one of its parameters lies in the new space; it is written as
//! it was (state, values, intermediate values, attributes, per-epoch history), its parameters
//! stored with the new space's distributions, under the next free number, marked
//! [`keys::WARM_START_OF`]. A study takes each source once (resuming does not copy again).
//! Taken trials count toward `run_cap`, as Optuna's `MaxTrialsCallback` counts added trials.
//!
//! A spec's `enqueue` starts a study from configurations instead ([`queue_spec_trials`]):
//! Optuna's `enqueue_trial`, written in the spec.

use std::collections::BTreeMap;

use rnnsweep_model::metrics::Direction;
use serde_json::{json, Value};

use crate::results::error::StudyError;
use crate::results::study::Study;
use crate::space::Space;
use crate::store::{keys, Store, TrialState};

/// Queues each of the spec's `enqueue` entries that study `study` has not queued before (in
/// the spec's order, as Optuna's `enqueue_trial` would), so resuming, or running the spec again
/// after adding an entry, queues only what is new. Returns how many were queued now.
pub fn queue_spec_trials(
    store: &mut dyn Store,
    study: i64,
    entries: &[Value],
) -> Result<usize, StudyError> {
    let queued: Vec<Value> = store
        .trials(study)?
        .into_iter()
        .filter_map(|t| t.system_attrs.get(keys::SPEC_ENQUEUE).cloned())
        .collect();
    let mut now = 0;
    for entry in entries {
        if queued.contains(entry) {
            continue;
        }
        let attrs = BTreeMap::from([
            (keys::FIXED_PARAMS.to_string(), entry.clone()),
            (keys::SPEC_ENQUEUE.to_string(), entry.clone()),
        ]);
        store.enqueue(study, &attrs)?;
        now += 1;
    }
    Ok(now)
}

/// What [`warm_start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmStarted {
    /// `storage#study` of the source.
    pub source: String,
    /// Trials written into the study.
    pub taken: usize,
    /// Finished trials left out because a parameter is not in this space (or lies outside it).
    pub outside: usize,
    /// The study had already taken this source: nothing was written.
    pub already: bool,
}

/// Copies `source`'s finished trials into study `study` of `store`, whose search space is
/// `space`, objective `metric` and direction `direction`.
pub fn warm_start(
    source: &Study,
    store: &mut dyn Store,
    study: i64,
    space: &Space,
    metric: &str,
    direction: Direction,
) -> Result<WarmStarted, StudyError> {
    let name = format!("{}#{}", source.location, source.name);
    let invalid = |message: String| StudyError::Invalid {
        at: format!("--warm-start {}", source.location),
        message,
    };
    let source_metric = source.objective()?;
    if source_metric != metric || source.direction != direction {
        return Err(invalid(format!(
            "study `{}` {} {source_metric}; this one {} {metric}: their values cannot be compared",
            source.name,
            verb(source.direction),
            verb(direction)
        )));
    }
    let attrs = store.study_system_attrs(study)?;
    let mut taken_from: Vec<Value> = attrs
        .get(keys::WARM_STARTED_FROM)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if taken_from.iter().any(|v| v.as_str() == Some(name.as_str())) {
        return Ok(WarmStarted {
            source: name,
            taken: 0,
            outside: 0,
            already: true,
        });
    }
    let existing = store.trials(study)?;
    let mut number = existing.iter().map(|t| t.number + 1).max().unwrap_or(0);
    let (mut taken, mut outside) = (0, 0);
    for trial in source.trials()? {
        if !matches!(trial.state, TrialState::Complete | TrialState::Pruned) {
            continue;
        }
        let point = space.decode(&trial.params);
        if point.len() != trial.params.len() || trial.params.is_empty() {
            outside += 1;
            continue;
        }
        let epochs = source.epochs(trial.trial_id)?;
        let mut copy = trial.clone();
        copy.params = space.to_stored(&point);
        copy.number = number;
        // What pointed at the source study's own trials means nothing here.
        for key in [
            keys::FIXED_PARAMS,
            keys::CONFIRM_OF,
            keys::RESUME_FROM,
            keys::REQUEUED_AS,
            keys::FAILED_TRIAL,
            keys::RETRY_HISTORY,
        ] {
            copy.system_attrs.remove(key);
        }
        copy.system_attrs.insert(
            keys::WARM_START_OF.to_string(),
            json!({"storage": source.location.to_string(), "study": source.name, "number": trial.number}),
        );
        store.import_trial(study, &copy, &epochs)?;
        number += 1;
        taken += 1;
    }
    taken_from.push(Value::from(name.clone()));
    store.set_study_system_attr(study, keys::WARM_STARTED_FROM, &Value::Array(taken_from))?;
    Ok(WarmStarted {
        source: name,
        taken,
        outside,
        already: false,
    })
}

fn verb(direction: Direction) -> &'static str {
    match direction {
        Direction::Minimize => "minimizes",
        Direction::Maximize => "maximizes",
    }
}
