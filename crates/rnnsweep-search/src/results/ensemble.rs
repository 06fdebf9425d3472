//! An ensemble from its trained members: their probabilities combined, and the combined
//! model's threshold. Which trials become members is [`crate::selection`]'s question.

use rnnsweep_model::artifact::{Combine, Ensemble, StoredThreshold};

use crate::results::error::StudyError;
use crate::results::retrain::Retrained;

/// Combines the members' probabilities and chooses the threshold on them with the first
/// (best) member's rule. The members must have held out the same calibration rows.
pub fn ensemble_of(members: Vec<Retrained>, combine: Combine) -> Result<Ensemble, StudyError> {
    let Some(first) = members.first() else {
        return Err(StudyError::Invalid {
            at: "--ensemble".into(),
            message: "an ensemble needs at least one member".into(),
        });
    };
    if members
        .iter()
        .any(|m| m.model.task.classes != first.model.task.classes)
    {
        return Err(StudyError::Invalid {
            at: "--ensemble".into(),
            message: "the members were trained for different classes".into(),
        });
    }
    let rule = first.model.config.threshold;
    let rows = first.calibration.rows.clone();
    let labels = first.calibration.labels.clone();
    for (k, m) in members.iter().enumerate() {
        if m.calibration.rows != rows {
            return Err(StudyError::Invalid {
                at: "--ensemble".into(),
                message: format!(
                    "member {} held out other calibration rows than member 1 (their seed or \
                     calibration_split differ), so no rows are unseen by every member",
                    k + 1
                ),
            });
        }
    }
    let columns: Vec<&[f32]> = members
        .iter()
        .map(|m| m.calibration.probabilities.as_slice())
        .collect();
    let outputs = first.model.task.outputs();
    let multi_label = first.model.task.multi_label;
    let combined = combine.combine_outputs(&columns, first.model.task.normalised_width());
    let threshold = if multi_label {
        StoredThreshold {
            value: rule.value,
            mode: rule.mode,
            calibration_rows: rows.len(),
            offsets: Vec::new(),
            label_thresholds: if rows.is_empty() {
                vec![rule.value; outputs]
            } else {
                rnnsweep_model::threshold::per_label_thresholds(&rule, &combined, &labels, outputs)
            },
        }
    } else if outputs > 1 {
        // K classes: the argmax of the combined probabilities, with offsets chosen on them.
        StoredThreshold {
            value: rule.value,
            mode: rule.mode,
            calibration_rows: rows.len(),
            offsets: if rows.is_empty() {
                Vec::new()
            } else {
                rule.choose_offsets(&combined, &labels, outputs)
            },
            label_thresholds: Vec::new(),
        }
    } else {
        StoredThreshold {
            value: rule.choose(&combined, &labels),
            mode: rule.mode,
            calibration_rows: rows.len(),
            offsets: Vec::new(),
            label_thresholds: Vec::new(),
        }
    };
    Ok(Ensemble {
        members: members.into_iter().map(|m| m.model).collect(),
        threshold,
        combine,
    })
}
