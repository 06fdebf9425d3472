//! The spec's `final` section: how `best` builds the model it hands over.

use std::path::PathBuf;

use rnnsweep_model::train::distill::DistillSettings;

/// `final: {distill: …}`: one student network trained on the ensemble's probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalDistill {
    pub settings: DistillSettings,
    /// Rows without labels the student also learns from (the spec's `unlabelled`, relative to
    /// the spec's folder).
    pub unlabelled: Option<PathBuf>,
}

/// How an ensemble's members are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectionRule {
    /// Greedy ensemble selection on the trials' validation predictions
    /// (`selection::select`).
    #[default]
    Greedy,
    /// The K best configurations by rank (by the mean over seeds once `confirm` ran).
    Top,
}
