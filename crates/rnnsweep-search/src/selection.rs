//! Which trials make an ensemble.
//!
//! Members are chosen by greedy ensemble selection (Caruana et al., 2004, as auto-sklearn
//! does): start from the best configuration, then repeatedly add the candidate whose
//! validation probabilities, averaged with the members', give the highest average precision,
//! until K members or until every addition would lower it (then the ensemble is smaller).
//! Two good models that make the same mistakes add little; a weaker one that errs elsewhere
//! adds more. It needs every candidate's `val_predictions.csv` on the same validation rows;
//! without them the best K by rank are taken. `best --retrain` chooses its members here, and
//! the dispatcher asks the same question while the search runs, to keep the final model's
//! time out of `max_duration`.

use rnnsweep_model::artifact::Combine;
use rnnsweep_model::metrics::{average_precision, classify_multiclass};

use crate::predictions::{self, Predictions};
use crate::spec::final_model::SelectionRule;
use crate::store::TrialRecord;

/// How the members were chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Greedy on validation predictions: member indices in the order added, with the
    /// ensemble's validation average precision after each; `stopped_early` when adding any
    /// other candidate would have lowered it.
    Greedy {
        members: Vec<usize>,
        path: Vec<f64>,
        stopped_early: bool,
    },
    /// The first K candidates (why greedy selection was not possible).
    Ranked { members: Vec<usize>, why: String },
}

impl Selection {
    pub fn members(&self) -> &[usize] {
        match self {
            Selection::Greedy { members, .. } | Selection::Ranked { members, .. } => members,
        }
    }
}

/// How many of a study's best trials selection chooses among.
pub const CANDIDATES: usize = 50;

/// Chooses `k` members by `rule` among `ranked` (best first: at most [`CANDIDATES`] are read
/// for greedy selection), reading each trial's validation predictions from its folder. The one
/// rule behind `best --retrain`'s members and the dispatcher's estimate of them.
pub fn choose(
    ranked: &[&TrialRecord],
    k: usize,
    rule: SelectionRule,
    combine: Combine,
) -> Selection {
    if rule == SelectionRule::Top {
        return Selection::Ranked {
            members: (0..k.min(ranked.len())).collect(),
            why: "selection: top".into(),
        };
    }
    let candidates = &ranked[..ranked.len().min(CANDIDATES)];
    select(
        &predictions::of_trials(candidates.iter().copied()),
        k,
        combine,
    )
}

/// Chooses `k` of the candidates (best first; `None` where a candidate has no predictions),
/// scoring each ensemble as `combine` will make its probabilities.
pub fn select(candidates: &[Option<Predictions>], k: usize, combine: Combine) -> Selection {
    let k = k.min(candidates.len());
    if let Some(Some(first)) = candidates.first() {
        if !first.classes.is_empty() {
            return select_classes(candidates, k, combine, first);
        }
    }
    let ranked = |why: String| Selection::Ranked {
        members: (0..k).collect(),
        why,
    };
    let Some(Some(first)) = candidates.first() else {
        return ranked("the best trial left no validation predictions".into());
    };
    for (i, c) in candidates.iter().enumerate() {
        match c {
            None => {
                return ranked(format!(
                    "candidate {} left no validation predictions",
                    i + 1
                ))
            }
            Some(p) if p.ids.is_empty() || p.ids != first.ids || p.labels != first.labels => {
                return ranked(format!(
                    "candidate {} was validated on other rows (another seed or validation split)",
                    i + 1
                ))
            }
            Some(_) => {}
        }
    }
    // Each candidate's terms of the combination; an ensemble's score is the AP of their sum
    // (the combined probability is an increasing function of it, and AP depends on order only).
    let terms: Vec<Vec<f32>> = candidates
        .iter()
        .flatten()
        .map(|p| p.probabilities.iter().map(|&q| combine.term(q)).collect())
        .collect();
    let labels = &first.labels;
    greedy(terms.len(), k, |members| {
        let mut sum = terms[members[0]].clone();
        for &m in &members[1..] {
            for (t, p) in sum.iter_mut().zip(&terms[m]) {
                *t += p;
            }
        }
        average_precision(&sum, labels)
    })
}

/// Greedy ensemble selection over `n` candidates (best first) by `score` of a member list:
/// start from the best, add the candidate that scores highest with the members (ties to the
/// better ranked), stop at `k` or when every addition scores lower.
fn greedy(n: usize, k: usize, score: impl Fn(&[usize]) -> f64) -> Selection {
    let mut members = vec![0];
    let mut path = vec![score(&members)];
    let mut stopped_early = false;
    while members.len() < k {
        let Some((best, value)) = (0..n)
            .filter(|j| !members.contains(j))
            .map(|j| {
                let mut with = members.clone();
                with.push(j);
                (j, score(&with))
            })
            .fold(None, |acc: Option<(usize, f64)>, (j, v)| match acc {
                Some((_, b)) if b >= v => acc,
                _ => Some((j, v)),
            })
        else {
            break;
        };
        if path.last().is_some_and(|&now| value < now) {
            stopped_early = true;
            break;
        }
        members.push(best);
        path.push(value);
    }
    Selection::Greedy {
        members,
        path,
        stopped_early,
    }
}

/// [`select`] for K classes: an ensemble's score is the macro average precision (one class
/// against the rest, averaged) of its combined probabilities; for K labels the mean over the
/// labels' average precisions.
fn select_classes(
    candidates: &[Option<Predictions>],
    k: usize,
    combine: Combine,
    first: &Predictions,
) -> Selection {
    let outputs = first.classes.len();
    if let Some(i) = candidates.iter().position(|c| {
        c.as_ref().is_none_or(|p| {
            p.ids != first.ids || p.labels != first.labels || p.classes != first.classes
        })
    }) {
        return Selection::Ranked {
            members: (0..k).collect(),
            why: format!(
                "candidate {} left no validation predictions on the same rows and classes",
                i + 1
            ),
        };
    }
    let probs: Vec<&[f32]> = candidates
        .iter()
        .flatten()
        .map(|p| p.probabilities.as_slice())
        .collect();
    let score = |members: &[usize]| {
        let chosen: Vec<&[f32]> = members.iter().map(|&m| probs[m]).collect();
        if first.multi_label {
            // Labels combine one by one; the score is the mean column average precision.
            let combined = combine.combine(&chosen);
            let names = &first.classes;
            let at_half = vec![0.5; names.len()];
            return rnnsweep_model::metrics::classify_multilabel(
                &combined,
                &first.labels,
                names,
                &at_half,
            )
            .pr_auc;
        }
        let combined = combine.combine_outputs(&chosen, outputs);
        classify_multiclass(&combined, &first.labels, &first.classes, None).pr_auc
    };
    greedy(probs.len(), k, score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predictions(p: &[f32]) -> Option<Predictions> {
        Some(Predictions {
            ids: (0..p.len()).map(|i| i.to_string()).collect(),
            probabilities: p.to_vec(),
            labels: vec![1, 1, 0, 0, 1, 0],
            classes: Vec::new(),
            multi_label: false,
        })
    }

    #[test]
    fn greedy_selection_prefers_a_model_that_errs_elsewhere_over_a_copy_of_the_best() {
        // Labels 1 1 0 0 1 0. The best (AP 0.833) ranks row 4, a positive, last; its twin makes
        // the same mistake; the third is worse alone (AP 0.639) but sure about row 4, and
        // averaged with the best gets 0.917.
        let best = [0.9, 0.8, 0.3, 0.7, 0.2, 0.6];
        let twin = [0.88, 0.79, 0.31, 0.69, 0.21, 0.59];
        let other = [0.4, 0.6, 0.9, 0.2, 0.8, 0.1];
        let candidates = vec![predictions(&best), predictions(&twin), predictions(&other)];
        let ap = |p: &[f32]| average_precision(p, &[1, 1, 0, 0, 1, 0]);
        assert!(ap(&twin) > ap(&other), "the twin ranks second alone");
        let Selection::Greedy {
            members,
            path,
            stopped_early,
        } = select(&candidates, 2, Combine::Probability)
        else {
            panic!("all candidates have predictions on the same rows")
        };
        assert_eq!(members, vec![0, 2]);
        let mean: Vec<f32> = best
            .iter()
            .zip(&other)
            .map(|(a, b)| (a + b) / 2.0)
            .collect();
        assert_eq!(path, vec![ap(&best), ap(&mean)]);
        assert!(path[1] > path[0] && !stopped_early);
        // Asked for 3: the twin would lower the AP of best + other, so the ensemble stops at 2.
        let three = select(&candidates, 3, Combine::Probability);
        assert_eq!(three.members(), &[0, 2]);
        assert!(matches!(
            three,
            Selection::Greedy {
                stopped_early: true,
                ..
            }
        ));
    }

    #[test]
    fn with_log_odds_the_ensembles_are_scored_as_they_will_predict() {
        let best = [0.9, 0.8, 0.3, 0.7, 0.2, 0.6];
        let twin = [0.88, 0.79, 0.31, 0.69, 0.21, 0.59];
        let other = [0.4, 0.6, 0.9, 0.2, 0.8, 0.1];
        let candidates = vec![predictions(&best), predictions(&twin), predictions(&other)];
        let ap = |p: &[f32]| average_precision(p, &[1, 1, 0, 0, 1, 0]);
        let Selection::Greedy {
            members,
            path,
            stopped_early,
        } = select(&candidates, 3, Combine::Logit)
        else {
            panic!("all candidates have predictions on the same rows")
        };
        assert_eq!(members, vec![0, 2]);
        let pair = Combine::Logit.combine(&[&best, &other]);
        assert_eq!(path, vec![ap(&best), ap(&pair)]);
        // With the twin: 0.867 in log-odds (0.833 as mean probability), below the pair's 0.917.
        let all = Combine::Logit.combine(&[&best, &other, &twin]);
        assert!((ap(&all) - 0.8667).abs() < 1e-3 && ap(&all) < path[1]);
        assert!(stopped_early);
    }

    #[test]
    fn three_class_selection_scores_the_combined_probabilities_by_macro_ap() {
        // Labels 0 1 2 0 1 2. The best is right about every row but the last two (it swaps
        // classes 1 and 2 there); its twin makes the same mistakes; the third is weaker alone
        // but right about those two rows.
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let labels = vec![0, 1, 2, 0, 2, 1];
        let rows = |p: [[f32; 3]; 6]| {
            Some(Predictions {
                ids: (0..6).map(|i| i.to_string()).collect(),
                probabilities: p.concat(),
                labels: labels.clone(),
                classes: names.clone(),
                multi_label: false,
            })
        };
        let best = [
            [0.8, 0.1, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.1, 0.8],
            [0.7, 0.2, 0.1],
            [0.1, 0.6, 0.3],
            [0.1, 0.3, 0.6],
        ];
        let twin = best.map(|r| r.map(|p| p * 0.98 + 0.02 / 3.0));
        let other = [
            [0.4, 0.3, 0.3],
            [0.3, 0.4, 0.3],
            [0.3, 0.3, 0.4],
            [0.3, 0.4, 0.3],
            [0.1, 0.1, 0.8],
            [0.1, 0.8, 0.1],
        ];
        let candidates = vec![rows(best), rows(twin), rows(other)];
        let macro_ap = |members: &[&[f32]]| {
            let combined = Combine::Logit.combine_outputs(members, 3);
            classify_multiclass(&combined, &labels, &names, None).pr_auc
        };
        let (b, t, o) = (best.concat(), twin.concat(), other.concat());
        assert!(
            macro_ap(&[&t]) > macro_ap(&[&o]),
            "the twin ranks second alone"
        );
        let Selection::Greedy { members, path, .. } = select(&candidates, 2, Combine::Logit) else {
            panic!("all candidates have predictions on the same rows")
        };
        assert_eq!(members, vec![0, 2]);
        assert_eq!(path, vec![macro_ap(&[&b]), macro_ap(&[&b, &o])]);
        assert!(path[1] > path[0]);
    }

    #[test]
    fn without_shared_predictions_the_best_k_are_taken() {
        let mut moved = predictions(&[0.1; 6]).unwrap();
        moved.ids[0] = "x".into();
        let s = select(
            &[predictions(&[0.2; 6]), Some(moved), predictions(&[0.3; 6])],
            2,
            Combine::Probability,
        );
        assert_eq!(s.members(), &[0, 1]);
        assert!(
            matches!(&s, Selection::Ranked { why, .. } if why.contains("candidate 2 was validated on other rows"))
        );
        let s = select(&[predictions(&[0.2; 6]), None], 5, Combine::Probability);
        assert_eq!(s.members(), &[0, 1], "at most as many as there are");
    }
}
