//! The distilled final model: one student configuration trained again on the rows a final
//! model trains on, learning from the teacher's (the final ensemble's) probabilities as well
//! as from the labels, and from an optional file of rows without labels (Hinton et al., 2015;
//! Tang et al., 2019 distil BERT into a BiLSTM this way). Its threshold is chosen on the same
//! calibration rows as the ensemble's, which neither the teacher nor the student trained on.

use rnnsweep_model::artifact::Predictor;
use rnnsweep_model::data::{load_csv_with, Labels, Table};
use rnnsweep_model::encoder::pad_sequences;
use rnnsweep_model::train::checkpoint::task_fingerprint;
use rnnsweep_model::train::distill::SoftTargets;

use crate::results::error::StudyError;
use crate::results::retrain::{RetrainOptions, RetrainPlan};
use crate::results::study::Study;
use crate::spec::final_model::FinalDistill;
use crate::store::TrialRecord;

impl Study {
    /// `student` set up to train again as a final model (see [`Study::retrain`]) with the
    /// teacher's probabilities for each of its training rows and for the unlabelled file's
    /// rows. `teacher_members` names the teacher's trials for the checkpoint's key: a
    /// checkpoint of a student taught by another teacher is never resumed.
    pub fn distill(
        &self,
        student: TrialRecord,
        options: &RetrainOptions,
        teacher: &Predictor,
        teacher_members: &[i64],
        distill: &FinalDistill,
    ) -> Result<RetrainPlan, StudyError> {
        let mut plan = self.retrain(student, options)?;
        let spec = self.stored_spec()?;
        let (table, validation) = spec.tables()?;
        let outputs = plan.data.outputs();
        let on_table = teacher.predict(&table)?;
        // A final model without a validation split trains on the validation file's rows too,
        // after the training file's (`prepare_all`); with it, on training-file rows only.
        let on_validation = match (&validation, options.keep_validation) {
            (Some(v), false) => teacher.predict(v)?,
            _ => Vec::new(),
        };
        let train = &plan.data.train;
        let from_training_file = train.ids.rows - on_validation.len() / outputs.max(1);
        let mut probabilities = Vec::with_capacity(train.ids.rows * outputs);
        for (i, &r) in train.source_rows.iter().enumerate() {
            let source = if i < from_training_file {
                &on_table
            } else {
                &on_validation
            };
            let row =
                source
                    .get(r * outputs..(r + 1) * outputs)
                    .ok_or_else(|| StudyError::Invalid {
                        at: "--distill".into(),
                        message: format!(
                            "the teacher gave no probabilities for training row {r} \
                         (were the data files changed since the search?)"
                        ),
                    })?;
            probabilities.extend_from_slice(row);
        }
        let (unlabelled, unlabelled_probabilities, unlabelled_key) = match &distill.unlabelled {
            None => (
                pad_sequences(
                    &[],
                    train.ids.len,
                    plan.config.padding,
                    plan.config.truncating,
                ),
                Vec::new(),
                serde_json::Value::Null,
            ),
            Some(path) => {
                let extra = self.unlabelled_rows(path, &table)?;
                let texts = extra.texts();
                let padded = plan.data.encoder.encode(&texts);
                (padded, teacher.predict(&extra)?, task_fingerprint(path))
            }
        };
        if let Some(task) = plan.task.as_object_mut() {
            task.insert(
                "distill".into(),
                serde_json::json!({
                    "teacher": teacher_members,
                    "alpha": distill.settings.alpha,
                    "temperature": distill.settings.temperature,
                    "unlabelled": unlabelled_key,
                }),
            );
        }
        plan.distill = Some(SoftTargets {
            settings: distill.settings,
            train: probabilities,
            unlabelled,
            unlabelled_probabilities,
        });
        Ok(plan)
    }

    /// The unlabelled file, read with the training file's columns (its label column may be
    /// missing or empty).
    fn unlabelled_rows(
        &self,
        path: &std::path::Path,
        training: &Table,
    ) -> Result<Table, StudyError> {
        let rule = rnnsweep_model::data::LabelRule::same_as(training);
        let table = load_csv_with(path, &training.columns, Labels::Optional, &rule)?;
        if table.rows.is_empty() {
            return Err(StudyError::Invalid {
                at: path.display().to_string(),
                message: "the unlabelled file has no rows".into(),
            });
        }
        Ok(table)
    }
}
