//! Ranking by more than luck: the best configurations trained again with fresh seeds (as
//! trials of the same study, tagged with the trial they repeat), and a ranking by the mean
//! over each configuration's runs.

use std::collections::BTreeMap;

use rnnsweep_model::metrics::Direction;
use serde_json::Value;

use crate::store::{TrialRecord, TrialState};

/// One configuration's runs: the original trial and its finished repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmed {
    /// The original trial's number (its parameters are the configuration).
    pub trial: i64,
    /// Objective values, the original's first.
    pub values: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for a single value.
    pub sd: f64,
    pub params: BTreeMap<String, Value>,
}

/// Configurations with at least one finished repeat, best mean first.
pub fn confirmed_ranking(trials: &[TrialRecord], direction: Direction) -> Vec<Confirmed> {
    let value = |t: &TrialRecord| {
        (t.state == TrialState::Complete)
            .then_some(t.value)
            .flatten()
            .filter(|v| v.is_finite())
    };
    let mut repeats: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for t in trials {
        if let (Some(of), Some(v)) = (t.repeat_of(), value(t)) {
            repeats.entry(of).or_default().push(v);
        }
    }
    let mut out: Vec<Confirmed> = trials
        .iter()
        .filter_map(|t| {
            let original = value(t)?;
            let more = repeats.get(&t.number)?;
            let values: Vec<f64> = std::iter::once(original)
                .chain(more.iter().copied())
                .collect();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let sd = if values.len() > 1 {
                (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
            } else {
                0.0
            };
            Some(Confirmed {
                trial: t.number,
                values,
                mean,
                sd,
                params: t.param_values(),
            })
        })
        .collect();
    // Ties go to the earlier configuration, as everywhere a study is ranked.
    out.sort_by(|a, b| direction.cmp(a.mean, b.mean).then(a.trial.cmp(&b.trial)));
    out
}

/// What `confirm` must queue: for each of the `top` best original trials, the repeats it
/// still lacks (repeats already queued, running or finished count), each with its seed.
pub fn repeats_to_queue(
    trials: &[TrialRecord],
    direction: Direction,
    top: usize,
    repeats: usize,
    base_seed: u64,
) -> Vec<(i64, Vec<u64>)> {
    let mut originals: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.repeat_of().is_none() && t.state == TrialState::Complete)
        .filter(|t| t.value.is_some_and(f64::is_finite))
        .collect();
    originals.sort_by(|a, b| {
        let (x, y) = (a.value.unwrap_or(f64::NAN), b.value.unwrap_or(f64::NAN));
        direction.cmp(x, y).then(a.number.cmp(&b.number))
    });
    originals
        .into_iter()
        .take(top)
        .filter_map(|t| {
            let have = trials
                .iter()
                .filter(|r| r.repeat_of() == Some(t.number) && r.state != TrialState::Fail)
                .count();
            // Seeds depend on the trial and the repeat's index only, so asking for more
            // repeats later adds new seeds and never reuses one.
            let seeds: Vec<u64> = (have..repeats)
                .map(|k| rnnsweep_model::seed::mix(base_seed, t.number as u64, k as u64 + 1))
                .collect();
            (!seeds.is_empty()).then_some((t.number, seeds))
        })
        .collect()
}

/// `mean ± sd (n)` for tables.
pub fn describe(c: &Confirmed) -> String {
    format!(
        "{} ± {} (n={})",
        crate::display::sig4(c.mean),
        crate::display::sig4(c.sd),
        c.values.len()
    )
}

/// The confirmed ranking as a terminal table: rank, trial, mean ± sd (n), every run's value
/// and the parameters that differ between the configurations shown.
pub fn render_confirmed(rows: &[Confirmed], metric: &str) -> String {
    use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
    let varying: Vec<&String> = rows
        .first()
        .map(|r| r.params.keys().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|k| {
            rows.iter()
                .any(|r| r.params.get(*k) != rows[0].params.get(*k))
        })
        .collect();
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = vec![
        "rank".to_string(),
        "trial".to_string(),
        format!("{metric} mean ± sd (n)"),
        "runs".to_string(),
    ];
    header.extend(varying.iter().map(|k| k.to_string()));
    table.set_header(header);
    for (i, r) in rows.iter().enumerate() {
        let mut cells = vec![
            (i + 1).to_string(),
            r.trial.to_string(),
            describe(r),
            r.values
                .iter()
                .map(|v| crate::display::sig4(*v))
                .collect::<Vec<_>>()
                .join(" "),
        ];
        cells.extend(varying.iter().map(|k| {
            match r.params.get(*k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n
                    .as_f64()
                    .filter(|_| !n.is_i64())
                    .map_or(n.to_string(), crate::display::sig4),
                Some(v) => v.to_string(),
                None => "-".into(),
            }
        }));
        table.add_row(cells);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{fixtures, keys};

    fn trial(number: i64, state: TrialState, value: Option<f64>, of: Option<i64>) -> TrialRecord {
        let mut t = fixtures::trial(
            number,
            state,
            value,
            (16 * (1 + of.unwrap_or(number) % 3)) as f64,
        );
        t.trial_id = number + 100;
        if let Some(of) = of {
            t.system_attrs
                .insert(keys::CONFIRM_OF.into(), Value::from(of));
        }
        t
    }

    #[test]
    fn the_ranking_is_by_mean_over_repeats_with_the_sample_sd() {
        use TrialState::*;
        let trials = vec![
            trial(0, Complete, Some(0.90), None), // lucky: repeats 0.70, 0.74
            trial(1, Complete, Some(0.85), None), // steady: repeats 0.84, 0.86
            trial(2, Complete, Some(0.50), None), // never confirmed
            trial(3, Complete, Some(0.70), Some(0)),
            trial(4, Complete, Some(0.74), Some(0)),
            trial(5, Complete, Some(0.84), Some(1)),
            trial(6, Fail, None, Some(1)),
            trial(7, Complete, Some(0.86), Some(1)),
        ];
        let ranked = confirmed_ranking(&trials, Direction::Maximize);
        assert_eq!(
            ranked.iter().map(|c| c.trial).collect::<Vec<_>>(),
            vec![1, 0]
        );
        assert_eq!(ranked[0].values, vec![0.85, 0.84, 0.86]);
        assert!((ranked[0].mean - 0.85).abs() < 1e-12);
        assert!((ranked[0].sd - 0.01).abs() < 1e-12, "{}", ranked[0].sd);
        // 0.90, 0.70, 0.74: mean 0.78, sd = sqrt((0.0144 + 0.0064 + 0.0016) / 2) = 0.10583.
        assert!((ranked[1].mean - 0.78).abs() < 1e-12);
        assert!((ranked[1].sd - 0.0112f64.sqrt()).abs() < 1e-12);
        assert_eq!(describe(&ranked[0]), "0.85 ± 0.01 (n=3)");
        // Minimising flips the order.
        let low = confirmed_ranking(&trials, Direction::Minimize);
        assert_eq!(low[0].trial, 0);
    }

    #[test]
    fn only_missing_repeats_of_the_top_originals_are_queued_with_new_seeds() {
        use TrialState::*;
        let trials = vec![
            trial(0, Complete, Some(0.9), None),
            trial(1, Complete, Some(0.8), None),
            trial(2, Complete, Some(0.7), None),
            trial(3, Complete, Some(0.99), Some(2)), // a repeat is never an original
            trial(4, Waiting, None, Some(0)),
            trial(5, Fail, None, Some(0)), // failed repeats do not count
        ];
        let plan = repeats_to_queue(&trials, Direction::Maximize, 2, 3, 6464);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].0, 0);
        assert_eq!(plan[0].1.len(), 2, "one repeat is already queued");
        assert_eq!(plan[1].0, 1);
        assert_eq!(plan[1].1.len(), 3);
        // Repeat k of trial n always gets the same seed; different repeats differ.
        assert_eq!(plan[0].1[0], rnnsweep_model::seed::mix(6464, 0, 2));
        assert_ne!(plan[1].1[0], plan[1].1[1]);
        assert!(repeats_to_queue(&trials, Direction::Maximize, 1, 1, 6464).is_empty());
    }
}
