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

/// A trial still running, as the reserve prices it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunningTrial {
    /// Its time so far: what it costs to train again if it completed now.
    pub seconds: f64,
    /// Its best reported value so far.
    pub best_value: Option<f64>,
}

/// The final model as the completed trials set it: its members' and the best configuration's
/// retraining times. Built again whenever a trial finishes (selection reads every candidate's
/// predictions); [`FinalPlan::with_running`] adds the trials still running at every tick.
#[derive(Debug, Clone)]
pub(crate) struct FinalPlan {
    /// Retraining seconds of each member selection would choose now (on the trials' rows).
    members: Vec<f64>,
    /// The best completed trial's objective and retraining seconds (the student's configuration).
    best: Option<(f64, f64)>,
    ensemble: usize,
    slots: usize,
    rows_factor: f64,
    /// The student's rows over a member's, when the final model is distilled.
    student_rows: Option<f64>,
    direction: rnnsweep_model::metrics::Direction,
}

impl FinalPlan {
    pub(crate) fn new(spec: &Spec, trials: &[TrialRecord], student_rows: f64) -> Self {
        let Some(ensemble) = spec.final_ensemble else {
            // Nothing to reserve.
            return Self {
                members: Vec::new(),
                best: None,
                ensemble: 0,
                slots: 1,
                rows_factor: 1.0,
                student_rows: None,
                direction: spec.direction,
            };
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
                .unwrap_or_else(|| rnnsweep_model::config::ModelConfig::default().validation_split);
            1.0 / (1.0 - split)
        };
        // The members train at once on the spec's slots (`best --retrain` without `--device`),
        // each slot taking the next member when it is free.
        let slots = crate::devices::DevicePool::new(&spec.resources)
            .map(|p| p.capacity())
            .unwrap_or(1)
            .max(1);
        let chosen = selection::choose(
            &completed,
            ensemble,
            spec.final_selection,
            spec.final_combine,
        );
        Self {
            members: chosen
                .members()
                .iter()
                .filter_map(|&i| member_seconds(completed[i]))
                .collect(),
            best: completed
                .first()
                .and_then(|t| Some((t.value?, member_seconds(t)?))),
            ensemble,
            slots,
            rows_factor,
            student_rows: spec.final_distill.as_ref().map(|_| student_rows),
            direction: spec.direction,
        }
    }

    /// The reserve with the trials still running counted: any of them may complete before the
    /// search stops and join the members, and one already past the best completed trial may
    /// become the student's configuration. Priced at their time so far, they keep the reserve
    /// from jumping past the hour when a slow trial completes (a word+char network finishing
    /// as the best raised it from about 13 to 28 minutes at minute 46 of an hour).
    pub(crate) fn with_running(&self, running: &[RunningTrial]) -> Duration {
        if self.ensemble == 0 {
            return Duration::ZERO;
        }
        let mut load = vec![0.0f64; self.slots];
        let extra = running.iter().map(|r| r.seconds);
        for s in self.members.iter().copied().chain(extra) {
            if let Some(least) = load.iter_mut().min_by(|a, b| a.total_cmp(b)) {
                *least += s;
            }
        }
        let members_seconds = load.iter().copied().fold(0.0, f64::max);
        // A distilled final model trains the best configuration once more, as its student.
        let student = self.student_rows.map_or(0.0, |rows| {
            let best_value = self.best.map(|(v, _)| v);
            let may_lead = |r: &&RunningTrial| match (r.best_value, best_value) {
                (Some(v), Some(b)) => self.direction.cmp(v, b).is_le(),
                (Some(_), None) => true,
                (None, _) => false,
            };
            let slowest = running
                .iter()
                .filter(may_lead)
                .map(|r| r.seconds)
                .chain(self.best.map(|(_, s)| s))
                .fold(0.0, f64::max);
            slowest * rows
        });
        Duration::from_secs_f64(((members_seconds + student) * self.rows_factor).max(0.0))
    }
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

    /// The final model's estimated training time from the completed trials alone; zero for a spec
    /// without a `final` section or a study without a completed trial. `student_rows` is
    /// [`student_rows_factor`] (measured once per sweep: it reads the files).
    fn final_model_estimate(spec: &Spec, trials: &[TrialRecord], student_rows: f64) -> Duration {
        FinalPlan::new(spec, trials, student_rows).with_running(&[])
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

    /// A trial still running may complete before the search stops: it may join the members,
    /// and once its values beat the best completed trial's, become the student's configuration.
    #[test]
    fn the_reserve_prices_the_trials_still_running_at_their_time_so_far() {
        let base = "name: s\nstorage: s.db\ndata: {train: t.csv}\nmethod: random\nmetric: {name: val_loss}\n\
                    training: {validation_split: 0.2}\nparameters:\n  learning_rate: {values: [0.1, 0.2]}\n\
                    final: {ensemble: 2, distill: true}\n";
        let trials = [trial(0, 0.30, 100.0, 10, 4), trial(2, 0.20, 60.0, 6, 6)];
        let plan = FinalPlan::new(&spec(base), &trials, 1.0);
        let running = |seconds: f64, best_value: Option<f64>| RunningTrial {
            seconds,
            best_value,
        };
        // Completed trials alone: members 60 + 40, the student 60, on 1.25× the rows.
        assert_eq!(plan.with_running(&[]), Duration::from_secs(200));
        // 80 s so far, its best val_loss 0.25: a member perhaps, not the best.
        assert_eq!(
            plan.with_running(&[running(80.0, Some(0.25))]),
            Duration::from_secs(300)
        );
        // 120 s so far and already past the best (0.15 < 0.20): a member, and the student's
        // configuration: (60 + 40 + 120 + 120) × 1.25.
        assert_eq!(
            plan.with_running(&[running(120.0, Some(0.15))]),
            Duration::from_secs(425)
        );
        // No epoch reported yet: a member only. Two of them: (60 + 40 + 30 + 20 + 60) × 1.25.
        assert_eq!(
            plan.with_running(&[running(30.0, None), running(20.0, None)]),
            Duration::from_secs_f64(262.5)
        );
        // Without a `final` section, nothing, whatever runs.
        let none = FinalPlan::new(
            &spec(&base.replace("final: {ensemble: 2, distill: true}\n", "")),
            &trials,
            1.0,
        );
        assert_eq!(
            none.with_running(&[running(500.0, Some(0.1))]),
            Duration::ZERO
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
