//! The spec's `final` section: how `best` builds the model it hands over.

/// How an ensemble's members are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectionRule {
    /// Greedy ensemble selection on the trials' validation predictions
    /// (`results::ensemble::select`).
    #[default]
    Greedy,
    /// The K best configurations by rank (by the mean over seeds once `confirm` ran).
    Top,
}
