//! The time the spec's final model will take, kept out of `max_duration`, so that the search
//! and `best --retrain` together fit the hour a spec promises.
//!
//! The estimate comes from the study's own measurements: the members `final: {ensemble: K}`
//! would be if the search stopped now (greedy selection on the completed trials' validation
//! predictions, as `best --retrain` will choose them: often fewer than K, and not always the
//! slowest; the K best where selection is `top` or predictions are missing), each trained again for its kept
//! epoch count at its measured seconds per epoch, scaled to the rows a retraining trains on
//! (every row but the calibration slice, so `1 / (1 − validation_split)` of a trial's), at
//! once on the spec's device slots as `best --retrain` trains them; a distilled final model adds its student, the best configuration
//! trained once more, on its labelled rows and the spec's unlabelled file's
//! ([`student_rows_factor`]).

use std::time::Duration;

use serde_json::Value;

use rnnsweep_model::data::{load_csv_with, LabelRule, Labels};

use crate::selection;
use crate::spec::Spec;
use crate::store::{keys, TrialRecord, TrialState};

/// How much longer a distilled student trains than a member of its configuration: the training
/// file's rows plus the spec's unlabelled file's (`final.distill.unlabelled`), over the training
/// file's. 1 without such a file, or when a file cannot be read (`best --retrain` will say why).
pub(crate) fn student_rows_factor(spec: &Spec) -> f64 {
    let Some(path) = spec
        .final_distill
        .as_ref()
        .and_then(|d| d.unlabelled.as_ref())
    else {
        return 1.0;
    };
    let Ok((training, _)) = spec.tables() else {
        return 1.0;
    };
    let rule = LabelRule::same_as(&training);
    match load_csv_with(path, &training.columns, Labels::Optional, &rule) {
        Ok(unlabelled) if !training.rows.is_empty() => {
            1.0 + unlabelled.rows.len() as f64 / training.rows.len() as f64
        }
        _ => 1.0,
    }
}

/// The final model's estimated training time; zero for a spec without a `final` section or a
/// study without a completed trial. `student_rows` is [`student_rows_factor`] (measured once
/// per sweep: it reads the files).
pub(crate) fn final_model_estimate(
    spec: &Spec,
    trials: &[TrialRecord],
    student_rows: f64,
) -> Duration {
    let Some(members) = spec.final_ensemble else {
        return Duration::ZERO;
    };
    let mut completed: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.value.is_some_and(f64::is_finite))
        .filter(|t| t.repeat_of().is_none())
        .collect();
    completed.sort_by(|a, b| {
        spec.direction
            .cmp(a.value.unwrap_or(f64::NAN), b.value.unwrap_or(f64::NAN))
            .then(a.number.cmp(&b.number))
    });
    let rows_factor = if spec.validation_file.is_some() {
        1.0
    } else {
        let split = spec
            .training
            .get("validation_split")
            .and_then(Value::as_f64)
            .filter(|s| (0.0..1.0).contains(s))
            .unwrap_or(0.1);
        1.0 / (1.0 - split)
    };
    // A distilled final model trains the best configuration once more, as its student.
    let student = if spec.final_distill.is_some() {
        completed
            .first()
            .and_then(|t| member_seconds(t))
            .map(|s| s * student_rows)
    } else {
        None
    };
    // The members train at once on the spec's slots (`best --retrain` without `--device`),
    // each slot taking the next member when it is free.
    let slots = crate::devices::DevicePool::new(&spec.resources)
        .map(|p| p.capacity())
        .unwrap_or(1)
        .max(1);
    let chosen = selection::choose(
        &completed,
        members,
        spec.final_selection,
        spec.final_combine,
    );
    let mut load = vec![0.0f64; slots];
    for t in chosen.members().iter().map(|&i| completed[i]) {
        if let Some(s) = member_seconds(t) {
            if let Some(least) = load.iter_mut().min_by(|a, b| a.total_cmp(b)) {
                *least += s;
            }
        }
    }
    let members_seconds = load.iter().copied().fold(0.0, f64::max);
    let seconds = (members_seconds + student.unwrap_or(0.0)) * rows_factor;
    Duration::from_secs_f64(seconds.max(0.0))
}

/// One trial retrained: its kept epochs at its measured seconds per epoch (the whole trial's
/// time over the epochs it ran, so process start and data loading are counted too).
fn member_seconds(trial: &TrialRecord) -> Option<f64> {
    let attr = |key: &str| trial.user_attrs.get(key).and_then(Value::as_f64);
    let duration = attr(keys::DURATION_S)?;
    let epochs = attr(keys::EPOCHS).filter(|e| *e >= 1.0)?;
    let kept = attr(keys::BEST_EPOCH)
        .filter(|e| *e >= 1.0)
        .unwrap_or(epochs);
    Some(duration / epochs * kept)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn trial(number: i64, value: f64, duration: f64, epochs: u64, best: u64) -> TrialRecord {
        TrialRecord {
            trial_id: number,
            number,
            state: TrialState::Complete,
            params: BTreeMap::new(),
            value: Some(value),
            intermediate: Vec::new(),
            user_attrs: BTreeMap::from([
                (keys::DURATION_S.to_string(), Value::from(duration)),
                (keys::EPOCHS.to_string(), Value::from(epochs)),
                (keys::BEST_EPOCH.to_string(), Value::from(best)),
            ]),
            system_attrs: BTreeMap::new(),
            datetime_start: None,
            datetime_complete: None,
        }
    }

    fn spec(text: &str) -> Spec {
        Spec::parse(text, std::path::Path::new("/tmp/s.yaml")).unwrap()
    }

    #[test]
    fn the_reserve_is_the_best_members_kept_epochs_at_their_pace_on_every_row() {
        let base = "name: s\nstorage: s.db\ndata: {train: t.csv}\nmethod: random\nmetric: {name: val_loss}\n\
                    training: {validation_split: 0.2}\nparameters:\n  learning_rate: {values: [0.1, 0.2]}\n";
        let trials = [
            // val_loss: trial 2 is best, then 0, then 1.
            trial(0, 0.30, 100.0, 10, 4),
            trial(1, 0.50, 999.0, 3, 3),
            trial(2, 0.20, 60.0, 6, 6),
        ];
        // No `final` section: nothing is reserved.
        assert_eq!(
            final_model_estimate(&spec(base), &trials, 1.0),
            Duration::ZERO
        );
        // Two members: trial 2 (10 s × 6 epochs) and trial 0 (10 s × 4 kept epochs), on
        // 1 / 0.8 of the rows: (60 + 40) × 1.25 = 125 s.
        let two = spec(&format!("{base}final: {{ensemble: 2}}\n"));
        assert_eq!(
            final_model_estimate(&two, &trials, 1.0),
            Duration::from_secs(125)
        );
        // One member; a failed or running trial is not a candidate.
        let one = spec(&format!("{base}final: {{ensemble: 1}}\n"));
        let mut running = trial(3, 0.01, 1.0, 1, 1);
        running.state = TrialState::Running;
        let mut with_running = trials.to_vec();
        with_running.push(running);
        assert_eq!(
            final_model_estimate(&one, &with_running, 1.0),
            Duration::from_secs(75)
        );
        // On two slots the two members train at once: max(60, 40) × 1.25 = 75 s.
        let parallel = spec(&format!(
            "{base}final: {{ensemble: 2}}\nresources: {{trials_per_device: 2}}\n"
        ));
        assert_eq!(
            final_model_estimate(&parallel, &trials, 1.0),
            Duration::from_secs(75)
        );
        // A distilled student trains the best configuration once more: (60 + 40 + 60) × 1.25.
        let distilled = spec(&format!("{base}final: {{ensemble: 2, distill: true}}\n"));
        assert_eq!(
            final_model_estimate(&distilled, &trials, 1.0),
            Duration::from_secs(200)
        );
        // With as many unlabelled rows as labelled ones the student takes twice as long:
        // (60 + 40 + 2 × 60) × 1.25.
        assert_eq!(
            final_model_estimate(&distilled, &trials, 2.0),
            Duration::from_secs(275)
        );
    }

    /// The members counted are those `best --retrain` will choose: greedy selection on the
    /// trials' validation predictions, which may skip a slow trial and stop short of K.
    #[test]
    fn the_reserve_counts_the_members_greedy_selection_would_choose() {
        let dir = tempfile::tempdir().unwrap();
        let base = "name: s\nstorage: s.db\ndata: {train: t.csv}\nmethod: random\n\
                    metric: {name: val_loss}\ntraining: {validation_split: 0.2}\n\
                    parameters:\n  learning_rate: {values: [0.1, 0.2]}\n";
        // Labels 1 1 0 0 1 0 (the selection module's example): the best trial misranks row 4,
        // its slow twin makes the same mistake, the third is worse alone but right about row
        // 4, so best + third beats best + twin, and adding the twin to them lowers the AP.
        let ids = ["a", "b", "c", "d", "e", "f"];
        let labels = [1, 1, 0, 0, 1, 0];
        let with_predictions = |mut t: TrialRecord, probabilities: &[f32]| {
            let folder = dir.path().join(format!("trial-{}", t.number));
            std::fs::create_dir_all(&folder).unwrap();
            let file = folder.join(crate::predictions::VAL_PREDICTIONS_FILE);
            crate::predictions::write_predictions(&file, &ids, probabilities, &labels).unwrap();
            t.system_attrs.insert(
                keys::TRIAL_DIR.to_string(),
                Value::from(folder.to_str().unwrap()),
            );
            t
        };
        let trials = [
            with_predictions(trial(0, 0.20, 60.0, 6, 6), &[0.9, 0.8, 0.3, 0.7, 0.2, 0.6]),
            with_predictions(
                trial(1, 0.25, 900.0, 9, 9),
                &[0.88, 0.79, 0.31, 0.69, 0.21, 0.59],
            ),
            with_predictions(trial(2, 0.30, 40.0, 4, 4), &[0.4, 0.6, 0.9, 0.2, 0.8, 0.1]),
        ];
        // Asked for 3, selection stops at trial 0 and trial 2: (60 + 40) × 1.25 = 125 s, where
        // the three best would have been (60 + 900 + 40) × 1.25.
        let greedy = spec(&format!(
            "{base}final: {{ensemble: 3, combine: probability}}\n"
        ));
        assert_eq!(
            final_model_estimate(&greedy, &trials, 1.0),
            Duration::from_secs(125)
        );
        // `selection: top` takes the three best, as `best --retrain` then will.
        let top = spec(&format!(
            "{base}final: {{ensemble: 3, combine: probability, selection: top}}\n"
        ));
        assert_eq!(
            final_model_estimate(&top, &trials, 1.0),
            Duration::from_secs(1250)
        );
        // A trial without its file: selection falls back to rank, and so does the estimate.
        let mut without = trials.to_vec();
        without[2].system_attrs.clear();
        assert_eq!(
            final_model_estimate(&greedy, &without, 1.0),
            Duration::from_secs(1250)
        );
    }

    #[test]
    fn the_students_rows_count_the_spec_s_unlabelled_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.csv"),
            "id,label,tweet\n1,0,a b\n2,1,c d\n3,0,e\n4,1,f\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("u.csv"), "id,tweet\n7,x\n8,y\n").unwrap();
        let spec = |final_: &str| {
            Spec::parse(
                &format!(
                    "name: s\nstorage: s.db\ndata: {{train: t.csv}}\nmethod: random\n\
                     metric: {{name: val_loss}}\nfinal: {final_}\n\
                     parameters:\n  learning_rate: {{values: [0.1, 0.2]}}\n"
                ),
                &dir.path().join("s.yaml"),
            )
            .unwrap()
        };
        // Four labelled rows, two unlabelled ones.
        let with = spec("{ensemble: 1, distill: {unlabelled: u.csv}}");
        assert_eq!(student_rows_factor(&with), 1.5);
        assert_eq!(
            student_rows_factor(&spec("{ensemble: 1, distill: true}")),
            1.0
        );
        // A file that cannot be read leaves the estimate as it was; `best` reports it.
        let missing = spec("{ensemble: 1, distill: {unlabelled: gone.csv}}");
        assert_eq!(student_rows_factor(&missing), 1.0);
    }
}
