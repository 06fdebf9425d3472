//! Training a chosen configuration again as a final model, and what comes back: the model,
//! its history and its scores on the calibration rows (which ensembles and thresholds use).

use std::path::Path;

use rnnsweep_model::artifact::TrainedModel;
use rnnsweep_model::train::checkpoint::resumable_epochs;
use rnnsweep_model::train::distill::SoftTargets;
use rnnsweep_model::train::history::EpochReport;
use rnnsweep_model::train::predict::predict_padded;
use rnnsweep_model::train::{fit, Control, FitOptions};

use crate::results::error::StudyError;
use crate::store::TrialRecord;

/// How `best --retrain` trains the final model.
#[derive(Debug, Clone, Default)]
pub struct RetrainOptions {
    /// Epochs (default: the best trial's kept epoch on every row, or its configured epochs
    /// with `keep_validation`).
    pub epochs: Option<usize>,
    /// Keep the validation split and early stopping, as the report did.
    pub keep_validation: bool,
    pub device: String,
}

/// The best trial's configuration with its data, ready to train.
pub struct RetrainPlan {
    pub trial: TrialRecord,
    pub config: rnnsweep_model::config::ModelConfig,
    pub data: rnnsweep_model::dataset::Prepared,
    pub(crate) device: rnnsweep_model::device::Device,
    /// What a checkpoint of this retraining is keyed by besides the configuration: the data
    /// files and whether validation rows were kept (the rows trained on differ).
    pub(crate) task: serde_json::Value,
    /// A distilled student's teacher probabilities ([`Study::distill`]).
    ///
    /// [`Study::distill`]: crate::results::study::Study::distill
    pub(crate) distill: Option<SoftTargets>,
}

impl RetrainPlan {
    pub fn train_rows(&self) -> usize {
        self.data.train.labels.len()
    }

    pub fn validation_rows(&self) -> usize {
        self.data.validation.labels.len()
    }

    /// Rows without labels a distilled student also learns from.
    pub fn unlabelled_rows(&self) -> usize {
        self.distill.as_ref().map_or(0, |d| d.unlabelled.rows)
    }

    /// Rows held out to choose the threshold (0 for a fixed one).
    pub fn calibration_rows(&self) -> usize {
        self.data.calibration.labels.len()
    }

    /// Epochs a checkpoint in `dir` holds for this very retraining (0 when none would be
    /// resumed).
    pub fn resumable_epochs(&self, dir: &Path) -> Result<usize, StudyError> {
        Ok(resumable_epochs(dir, &self.config, Some(&self.task))?)
    }

    /// Trains the final model; `on_epoch` sees every epoch. With `checkpoint_dir`, each epoch
    /// is checkpointed there and a checkpoint of this same retraining is resumed (its epochs
    /// are handed to `on_epoch` first), so a killed retraining continues where it stopped and
    /// ends as an uninterrupted one would.
    pub fn train(
        mut self,
        checkpoint_dir: Option<&Path>,
        on_epoch: impl FnMut(&EpochReport) -> Control,
    ) -> Result<Retrained, StudyError> {
        let options = FitOptions {
            checkpoint_dir: checkpoint_dir.map(Path::to_path_buf),
            replay_history: true,
            task: Some(self.task.clone()),
            distill: self.distill.take(),
        };
        let outcome = fit(&self.config, &self.data, &self.device, &options, on_epoch)?;
        // Scored by `fit` when it chose the threshold; a fixed one scores them here.
        let probabilities = if outcome.calibration_probabilities.is_empty() {
            predict_padded(
                &outcome.net,
                &self.data.calibration.ids,
                self.config.batch_size,
            )?
        } else {
            outcome.calibration_probabilities
        };
        let calibration = Calibration {
            rows: self.data.calibration.source_rows.clone(),
            labels: if self.data.multi_label {
                self.data.calibration.targets.clone()
            } else {
                self.data.calibration.labels.clone()
            },
            probabilities,
        };
        Ok(Retrained {
            model: TrainedModel::from_training(
                self.config,
                self.data,
                outcome.net,
                outcome.threshold,
            )
            .with_offsets(outcome.offsets)
            .with_label_thresholds(outcome.label_thresholds),
            history: outcome.history,
            calibration,
        })
    }
}

/// A final model with its training history and its scores on the calibration rows.
pub struct Retrained {
    pub model: TrainedModel,
    pub history: Vec<EpochReport>,
    pub calibration: Calibration,
}

/// What a member's process leaves beside the model folder for its parent.
#[derive(serde::Serialize, serde::Deserialize)]
struct MemberFile {
    history: Vec<EpochReport>,
    calibration: Calibration,
}

const MEMBER_MODEL: &str = "model";
const MEMBER_FILE: &str = "member.json";

impl Retrained {
    /// Writes the member into `dir` (its model folder and `member.json`) for the process that
    /// started it ([`crate::results::members`]); `member.json` is written last, under a
    /// temporary name first, so a killed writer never leaves a member that looks finished.
    pub fn save_member(&self, dir: &Path) -> Result<(), StudyError> {
        self.model.save(&dir.join(MEMBER_MODEL))?;
        let text = serde_json::to_vec(&MemberFile {
            history: self.history.clone(),
            calibration: self.calibration.clone(),
        })
        .map_err(|e| member_error(dir, e.to_string()))?;
        let path = dir.join(MEMBER_FILE);
        let partial = dir.join(format!("{MEMBER_FILE}.partial"));
        std::fs::write(&partial, text).map_err(|e| member_error(&partial, e.to_string()))?;
        std::fs::rename(&partial, &path).map_err(|e| member_error(&path, e.to_string()))
    }

    /// A member [`Retrained::save_member`] wrote, loaded onto `device`.
    pub fn load_member(
        dir: &Path,
        device: &rnnsweep_model::device::Device,
    ) -> Result<Self, StudyError> {
        let path = dir.join(MEMBER_FILE);
        let text = std::fs::read(&path).map_err(|e| member_error(&path, e.to_string()))?;
        let file: MemberFile =
            serde_json::from_slice(&text).map_err(|e| member_error(&path, e.to_string()))?;
        Ok(Self {
            model: TrainedModel::load(&dir.join(MEMBER_MODEL), device)?,
            history: file.history,
            calibration: file.calibration,
        })
    }
}

fn member_error(path: &Path, message: String) -> StudyError {
    StudyError::Invalid {
        at: path.display().to_string(),
        message,
    }
}

/// Held-out training-file rows (by row number) with a model's probabilities for them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    pub rows: Vec<usize>,
    pub labels: Vec<u8>,
    pub probabilities: Vec<f32>,
}
