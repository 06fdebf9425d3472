//! What `best --retrain` builds: the final-model policy. The command line's choices come
//! first, then the spec's `final` section, then the defaults (one model; greedy selection;
//! mean probability). One member is the best trial; more are chosen by the selection rule.
//! After training, [`save`] writes one model folder or one ensemble folder, with histories.

use std::path::{Path, PathBuf};

use rnnsweep_model::artifact::{Combine, Ensemble, Predictor, TrainedModel};
use rnnsweep_model::train::distill::DistillSettings;
use rnnsweep_model::train::history::write_history;

use crate::results::ensemble::ensemble_of;
use crate::results::error::StudyError;
use crate::results::retrain::Retrained;
use crate::results::study::Study;
use crate::selection::Selection;
use crate::spec::final_model::{FinalDistill, SelectionRule};
use crate::store::TrialRecord;

/// What the user asked for; `None` takes the spec's `final` value, then the default.
#[derive(Debug, Clone, Default)]
pub struct FinalModelRequest {
    pub ensemble: Option<usize>,
    pub selection: Option<SelectionRule>,
    pub combine: Option<Combine>,
    /// Distil the ensemble into one student (`Some(true)`), or not even when the spec asks
    /// (`Some(false)`).
    pub distill: Option<bool>,
    /// The distillation's unlabelled rows, instead of the spec's.
    pub unlabelled: Option<PathBuf>,
    pub alpha: Option<f64>,
    pub temperature: Option<f64>,
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
    /// Hand over one student taught by the members instead of the members themselves.
    pub distill: Option<FinalDistill>,
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
        let distill = resolve_distill(
            &request,
            stored.as_ref().and_then(|s| s.final_distill.clone()),
        )?;
        if asked == 1 {
            return Ok(FinalModelPlan {
                asked,
                combine,
                selection: None,
                chosen: vec![self.best_trial()?],
                distill,
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
            distill,
        })
    }
}

/// The command line's distillation choices over the spec's.
fn resolve_distill(
    request: &FinalModelRequest,
    from_spec: Option<FinalDistill>,
) -> Result<Option<FinalDistill>, StudyError> {
    let wanted = request.distill.unwrap_or(from_spec.is_some());
    let overrides =
        request.unlabelled.is_some() || request.alpha.is_some() || request.temperature.is_some();
    if !wanted {
        if overrides {
            return Err(StudyError::Invalid {
                at: "--unlabelled/--distill-alpha/--distill-temperature".into(),
                message:
                    "these set up a distillation: add --distill (or `final: {distill}` in the spec)"
                        .into(),
            });
        }
        return Ok(None);
    }
    let mut d = from_spec.unwrap_or(FinalDistill {
        settings: DistillSettings::default(),
        unlabelled: None,
    });
    if let Some(path) = &request.unlabelled {
        d.unlabelled = Some(path.clone());
    }
    // Found missing before the ensemble trains, not after.
    if let Some(path) = &d.unlabelled {
        if let Err(e) = std::fs::metadata(path) {
            return Err(StudyError::Invalid {
                at: path.display().to_string(),
                message: format!("cannot read the unlabelled file: {e}"),
            });
        }
    }
    if let Some(a) = request.alpha {
        d.settings.alpha = a;
    }
    if let Some(t) = request.temperature {
        d.settings.temperature = t;
    }
    if let Err(rnnsweep_model::error::ModelError::Config { at, message }) =
        d.settings.validate("--distill-")
    {
        return Err(StudyError::Invalid { at, message });
    }
    Ok(Some(d))
}

/// What [`save`] wrote.
pub enum Saved {
    Model(Box<TrainedModel>),
    Ensemble(Ensemble),
}

impl Saved {
    /// The saved model, to predict with (a distillation's teacher).
    pub fn into_predictor(self) -> Predictor {
        match self {
            Saved::Model(m) => Predictor::Single(m),
            Saved::Ensemble(e) => Predictor::Ensemble(e),
        }
    }
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
