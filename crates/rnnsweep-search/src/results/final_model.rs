//! What `best --retrain` builds: the final-model policy. The command line's choices come
//! first, then the spec's `final` section, then the defaults (one model; greedy selection;
//! mean probability). One member is the best trial; more are chosen by the selection rule.
//! After training, [`save`] writes one model folder or one ensemble folder, with histories.

use std::path::Path;

use rnnsweep_model::artifact::{Combine, Ensemble, TrainedModel};
use rnnsweep_model::train::history::write_history;

use crate::results::ensemble::{ensemble_of, Selection};
use crate::results::error::StudyError;
use crate::results::retrain::Retrained;
use crate::results::study::Study;
use crate::spec::final_model::SelectionRule;
use crate::store::TrialRecord;

/// What the user asked for; `None` takes the spec's `final` value, then the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct FinalModelRequest {
    pub ensemble: Option<usize>,
    pub selection: Option<SelectionRule>,
    pub combine: Option<Combine>,
}

/// The trials to train again and how their models will be combined.
pub struct FinalModelPlan {
    /// Members asked for (selection may choose fewer).
    pub asked: usize,
    pub combine: Combine,
    /// For an ensemble: the candidates and what the selection chose among them.
    pub selection: Option<(Vec<TrialRecord>, Selection)>,
    /// The trials to retrain, in member order.
    pub chosen: Vec<TrialRecord>,
}

impl Study {
    /// Resolves the request against the stored spec and chooses the members.
    pub fn final_model_plan(
        &self,
        request: FinalModelRequest,
    ) -> Result<FinalModelPlan, StudyError> {
        let stored = self.stored_spec().ok();
        let asked = request
            .ensemble
            .or(stored.as_ref().and_then(|s| s.final_ensemble))
            .unwrap_or(1);
        if asked == 0 {
            return Err(StudyError::Invalid {
                at: "--ensemble".into(),
                message: "an ensemble needs at least one member".into(),
            });
        }
        let rule = request
            .selection
            .or(stored.as_ref().map(|s| s.final_selection))
            .unwrap_or_default();
        let combine = request
            .combine
            .or(stored.as_ref().map(|s| s.final_combine))
            .unwrap_or_default();
        if asked == 1 {
            return Ok(FinalModelPlan {
                asked,
                combine,
                selection: None,
                chosen: vec![self.best_trial()?],
            });
        }
        let (candidates, selection) = self.choose_ensemble(asked, rule, combine)?;
        let chosen = selection
            .members()
            .iter()
            .map(|&i| candidates[i].clone())
            .collect();
        Ok(FinalModelPlan {
            asked,
            combine,
            selection: Some((candidates, selection)),
            chosen,
        })
    }
}

/// What [`save`] wrote.
pub enum Saved {
    Model(Box<TrainedModel>),
    Ensemble(Ensemble),
}

/// Writes the retrained members to `out`: one model folder with `history.csv`, or one
/// ensemble folder with each member's history in `member-K/history.csv`.
pub fn save(
    mut retrained: Vec<Retrained>,
    combine: Combine,
    out: &Path,
) -> Result<Saved, StudyError> {
    if retrained.len() == 1 {
        let one = retrained.remove(0);
        one.model.save(out)?;
        write_history(&out.join("history.csv"), &one.history)?;
        return Ok(Saved::Model(Box::new(one.model)));
    }
    let histories: Vec<_> = retrained.iter().map(|r| r.history.clone()).collect();
    let ensemble = ensemble_of(retrained, combine)?;
    ensemble.save(out)?;
    for (k, h) in histories.iter().enumerate() {
        write_history(
            &out.join(format!("member-{}", k + 1)).join("history.csv"),
            h,
        )?;
    }
    Ok(Saved::Ensemble(ensemble))
}
