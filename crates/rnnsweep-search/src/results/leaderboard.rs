//! Ranking a study's trials and rendering them as a table, CSV or JSON.

use std::collections::BTreeMap;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use rnnsweep_model::metrics::{direction_of, Direction, Metric};
use serde_json::{json, Value};

use crate::display::short_value;
use crate::run::outcome::group_reasons;
use crate::store::{keys, TrialRecord, TrialState};

/// The metrics a leaderboard carries (trial user attributes): the validation ones.
fn leaderboard_metrics() -> impl Iterator<Item = Metric> {
    Metric::ALL
        .into_iter()
        .filter(|m| m.is_validation() && *m != Metric::ValLoss)
}

/// The metrics a terminal table shows by default, besides the objective (the first three
/// that are not the objective).
const DEFAULT_TABLE_METRICS: [Metric; 5] = [
    Metric::ValF1,
    Metric::ValPrAuc,
    Metric::ValRocAuc,
    Metric::ValPrecision,
    Metric::ValRecall,
];

#[derive(Debug, Clone)]
pub struct Row {
    pub rank: Option<usize>,
    pub number: i64,
    pub state: TrialState,
    /// The value ranked by (objective or the chosen metric).
    pub score: Option<f64>,
    pub objective: Option<f64>,
    pub metrics: BTreeMap<String, Option<f64>>,
    pub params: BTreeMap<String, Value>,
    pub epochs: Option<i64>,
    pub duration_s: Option<f64>,
    pub device: Option<String>,
}

/// Ranks trials by `metric` (the study objective when `None` or equal to it).
pub fn rank(
    trials: &[TrialRecord],
    objective: &str,
    direction: Direction,
    metric: Option<&str>,
) -> Vec<Row> {
    let by = metric.unwrap_or(objective);
    let dir = if by == objective {
        direction
    } else {
        direction_of(by).unwrap_or(Direction::Maximize)
    };
    let mut rows: Vec<Row> = trials
        .iter()
        .map(|t| {
            let attr = |k: &str| t.user_attrs.get(k).and_then(Value::as_f64);
            let score = if by == objective && t.state == TrialState::Complete {
                t.value
            } else if t.state == TrialState::Complete {
                attr(by)
            } else {
                None
            };
            Row {
                rank: None,
                number: t.number,
                state: t.state,
                score: score.filter(|v| !v.is_nan()),
                objective: t.value,
                metrics: leaderboard_metrics()
                    .map(|m| (m.name().to_string(), attr(m.name())))
                    .collect(),
                params: t.param_values(),
                epochs: t
                    .user_attrs
                    .get(keys::EPOCHS)
                    .and_then(Value::as_i64)
                    .or_else(|| {
                        (!t.intermediate.is_empty()).then_some(t.intermediate.len() as i64)
                    }),
                duration_s: attr(keys::DURATION_S),
                device: t
                    .user_attrs
                    .get(keys::DEVICE)
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }
        })
        .collect();
    let state_order = |s: TrialState| match s {
        TrialState::Complete => 0,
        TrialState::Pruned => 1,
        TrialState::Running => 2,
        TrialState::Waiting => 3,
        TrialState::Fail => 4,
    };
    rows.sort_by(|a, b| match (a.score, b.score) {
        (Some(x), Some(y)) => dir.cmp(x, y).then(a.number.cmp(&b.number)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => state_order(a.state)
            .cmp(&state_order(b.state))
            .then(a.number.cmp(&b.number)),
    });
    for (i, r) in rows.iter_mut().enumerate() {
        if r.score.is_some() {
            r.rank = Some(i + 1);
        }
    }
    rows
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"))
}

fn param_names(rows: &[Row]) -> Vec<String> {
    let mut names: Vec<String> = rows.iter().flat_map(|r| r.params.keys().cloned()).collect();
    names.sort();
    names.dedup();
    names
}

/// The metric columns besides the ranked one, so no column appears twice.
fn other_metrics(objective_label: &str) -> impl Iterator<Item = Metric> + '_ {
    leaderboard_metrics().filter(move |m| m.name() != objective_label)
}

/// Metrics that studies from before K-class tasks never recorded: a file gets their columns
/// only when some trial has them, so an old study's CSV reads as it always did.
const ADDED_WITH_CLASSES: [Metric; 3] = [
    Metric::ValMacroF1,
    Metric::ValWeightedF1,
    Metric::ValLogLoss,
];

/// [`other_metrics`] less the columns no row has a value for among [`ADDED_WITH_CLASSES`].
fn file_metrics<'a>(
    rows: &'a [Row],
    objective_label: &'a str,
) -> impl Iterator<Item = Metric> + 'a {
    other_metrics(objective_label).filter(move |m| {
        !ADDED_WITH_CLASSES.contains(m)
            || rows
                .iter()
                .any(|r| r.metrics.get(m.name()).is_some_and(Option::is_some))
    })
}

/// One column of the terminal table.
#[derive(Debug, Clone, PartialEq)]
enum Column {
    Rank,
    Trial,
    State,
    Score,
    Metric(Metric),
    Param(String),
    Epochs,
    Time,
    Device,
}

impl Column {
    fn header(&self, objective_label: &str) -> String {
        match self {
            Column::Rank => "rank".into(),
            Column::Trial => "trial".into(),
            Column::State => "state".into(),
            Column::Score => objective_label.into(),
            Column::Metric(m) => m.short().into(),
            Column::Param(p) => p.clone(),
            Column::Epochs => "epochs".into(),
            Column::Time => "time".into(),
            Column::Device => "device".into(),
        }
    }

    fn cell(&self, r: &Row) -> Cell {
        let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
        match self {
            Column::Rank => right(r.rank.map_or("-".to_string(), |x| x.to_string())),
            Column::Trial => right(r.number.to_string()),
            Column::State => Cell::new(r.state.as_str()),
            Column::Score => right(fmt(r.score)),
            Column::Metric(m) => right(fmt(r.metrics.get(m.name()).copied().flatten())),
            Column::Param(p) => Cell::new(r.params.get(p).map_or("-".to_string(), short_value)),
            Column::Epochs => right(r.epochs.map_or("-".into(), |e| e.to_string())),
            Column::Time => right(r.duration_s.map_or("-".into(), |s| format!("{s:.1}s"))),
            Column::Device => Cell::new(r.device.clone().unwrap_or_else(|| "-".into())),
        }
    }
}

/// The names `--columns` accepts for these rows.
pub fn column_names(rows: &[Row], objective_label: &str) -> Vec<String> {
    let mut names: Vec<String> = ["rank", "trial", "state", objective_label]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(file_metrics(rows, objective_label).map(|m| m.name().to_string()));
    names.extend(param_names(rows));
    names.extend(["epochs", "time", "device"].map(String::from));
    names
}

fn default_columns(rows: &[Row], objective_label: &str) -> Vec<Column> {
    let mut cols = vec![Column::Rank, Column::Trial, Column::State, Column::Score];
    cols.extend(
        DEFAULT_TABLE_METRICS
            .into_iter()
            .filter(|m| m.name() != objective_label)
            .take(3)
            .map(Column::Metric),
    );
    // Only the parameters that differ between trials say anything about the ranking.
    for p in param_names(rows) {
        let mut values = rows.iter().filter_map(|r| r.params.get(&p));
        let first = values.next();
        if values.any(|v| Some(v) != first) {
            cols.push(Column::Param(p));
        }
    }
    cols.extend([Column::Epochs, Column::Time]);
    let devices: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.device).collect();
    if devices.len() > 1 {
        cols.push(Column::Device);
    }
    cols
}

fn chosen_columns(
    rows: &[Row],
    objective_label: &str,
    names: &[String],
) -> Result<Vec<Column>, String> {
    let params = param_names(rows);
    names
        .iter()
        .map(|n| {
            Ok(match n.as_str() {
                "rank" => Column::Rank,
                "trial" => Column::Trial,
                "state" => Column::State,
                "epochs" => Column::Epochs,
                "time" | "duration_s" => Column::Time,
                "device" => Column::Device,
                x if x == objective_label => Column::Score,
                x => {
                    if let Some(m) = leaderboard_metrics().find(|m| m.name() == x || m.short() == x)
                    {
                        Column::Metric(m)
                    } else if params.iter().any(|p| p == x) {
                        Column::Param(x.to_string())
                    } else {
                        return Err(format!(
                            "--columns: no column `{x}` (one of: {})",
                            column_names(rows, objective_label).join(", ")
                        ));
                    }
                }
            })
        })
        .collect()
}

/// The leaderboard for a terminal: the parameters that vary, the objective and three more
/// metrics by default (or `columns`), wrapped to `width` characters, or to the terminal's
/// width when stdout is one (comfy-table's dynamic arrangement).
pub fn render_table(
    rows: &[Row],
    objective_label: &str,
    columns: Option<&[String]>,
    width: Option<u16>,
) -> Result<String, String> {
    let cols = match columns {
        Some(names) if !names.is_empty() => chosen_columns(rows, objective_label, names)?,
        _ => default_columns(rows, objective_label),
    };
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    match width {
        Some(w) => {
            table
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(w);
        }
        None => {
            table.set_content_arrangement(ContentArrangement::Dynamic);
        }
    }
    table.set_header(cols.iter().map(|c| c.header(objective_label)));
    for r in rows {
        table.add_row(cols.iter().map(|c| c.cell(r)));
    }
    Ok(table.to_string())
}

/// The reasons a study's FAIL trials give, each with the trials that gave it (reasons that
/// differ only in the trial they name count as one), most frequent first.
pub fn failure_reasons(trials: &[TrialRecord]) -> Vec<(String, Vec<i64>)> {
    group_reasons(
        trials
            .iter()
            .filter(|t| t.state == TrialState::Fail)
            .map(|t| {
                let reason = t
                    .system_attrs
                    .get(keys::FAIL_REASON)
                    .and_then(Value::as_str);
                (reason.unwrap_or("no reason recorded"), t.number)
            }),
    )
}

/// For a study with no finished trial to rank: why its trials failed, `N × reason` (with the
/// trials' numbers), instead of a table of dashes. `None` when some trial has a value.
pub fn failure_summary(trials: &[TrialRecord]) -> Option<String> {
    if trials.iter().any(|t| t.value.is_some())
        || !trials.iter().any(|t| t.state == TrialState::Fail)
    {
        return None;
    }
    let mut out = String::from("no trial finished with a value; the failures:\n");
    for (reason, numbers) in failure_reasons(trials) {
        let which: Vec<String> = numbers.iter().map(i64::to_string).collect();
        let which = if which.len() > 8 {
            format!(
                "{} … {}",
                which[..4].join(", "),
                which[which.len() - 2..].join(", ")
            )
        } else {
            which.join(", ")
        };
        out.push_str(&format!(
            "  {} × {reason}  (trial{} {which})\n",
            numbers.len(),
            if numbers.len() == 1 { "" } else { "s" }
        ));
    }
    Some(out)
}

/// Every column, full precision, through the CSV writer (quotes, `\r`, commas).
pub fn render_csv(rows: &[Row], objective_label: &str) -> String {
    let params = param_names(rows);
    let mut header: Vec<String> = vec![
        "rank".into(),
        "trial".into(),
        "state".into(),
        objective_label.to_string(),
    ];
    let metrics: Vec<Metric> = file_metrics(rows, objective_label).collect();
    header.extend(metrics.iter().map(|m| m.name().to_string()));
    header.extend(params.iter().cloned());
    header.extend(["epochs", "duration_s", "device"].map(String::from));
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_record(&header);
    for r in rows {
        let mut f: Vec<String> = vec![
            r.rank.map_or(String::new(), |x| x.to_string()),
            r.number.to_string(),
            r.state.as_str().into(),
            r.score.map_or(String::new(), |v| v.to_string()),
        ];
        f.extend(metrics.iter().map(|m| {
            r.metrics
                .get(m.name())
                .copied()
                .flatten()
                .map_or(String::new(), |v| v.to_string())
        }));
        f.extend(params.iter().map(|p| {
            r.params.get(p).map_or(String::new(), |v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        }));
        f.push(r.epochs.map_or(String::new(), |e| e.to_string()));
        f.push(r.duration_s.map_or(String::new(), |s| format!("{s:.3}")));
        f.push(r.device.clone().unwrap_or_default());
        let _ = w.write_record(&f);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

pub fn render_json(rows: &[Row], objective_label: &str) -> String {
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "rank": r.rank,
                "trial": r.number,
                "state": r.state.as_str(),
                objective_label: r.score,
                "metrics": r.metrics,
                "params": r.params,
                "epochs": r.epochs,
                "duration_s": r.duration_s,
                "device": r.device,
            })
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredParam;

    fn trial(number: i64, state: TrialState, value: Option<f64>, f1: f64) -> TrialRecord {
        TrialRecord {
            trial_id: number + 1,
            number,
            state,
            params: BTreeMap::from([(
                "optimizer".to_string(),
                StoredParam {
                    internal: (number % 2) as f64,
                    distribution_json: r#"{"name":"CategoricalDistribution","attributes":{"choices":["adam","sgd"]}}"#.into(),
                },
            )]),
            value,
            intermediate: vec![],
            user_attrs: BTreeMap::from([("val_f1".to_string(), json!(f1)), ("device".to_string(), json!("cpu")), ("epochs".to_string(), json!(3))]),
            system_attrs: BTreeMap::new(),
            datetime_start: None,
            datetime_complete: None,
        }
    }

    #[test]
    fn a_study_whose_trials_all_failed_lists_each_reason_once_with_its_count() {
        let failed = |number: i64, reason: &str| {
            let mut t = trial(number, TrialState::Fail, None, 0.0);
            t.system_attrs
                .insert(keys::FAIL_REASON.into(), json!(reason));
            t
        };
        let trials = vec![
            failed(0, "boom at /r/trial-0/x"),
            failed(1, "timed out after 2s (trial_timeout)"),
            failed(2, "boom at /r/trial-2/x"),
            failed(3, "boom at /r/trial-3/x"),
        ];
        assert_eq!(
            failure_summary(&trials).unwrap(),
            "no trial finished with a value; the failures:\n  \
             3 × boom at /r/trial-0/x  (trials 0, 2, 3)\n  \
             1 × timed out after 2s (trial_timeout)  (trial 1)\n"
        );
        let mut some_value = trials.clone();
        some_value.push(trial(4, TrialState::Complete, Some(0.5), 0.5));
        assert_eq!(failure_summary(&some_value), None);
        assert_eq!(failure_summary(&[]), None);
    }

    #[test]
    fn ranks_by_objective_direction_then_by_another_metric() {
        let trials = vec![
            trial(0, TrialState::Complete, Some(0.30), 0.7),
            trial(1, TrialState::Fail, None, 0.0),
            trial(2, TrialState::Complete, Some(0.20), 0.6),
            trial(3, TrialState::Complete, Some(0.25), 0.9),
        ];
        let rows = rank(&trials, "val_loss", Direction::Minimize, None);
        assert_eq!(
            rows.iter().map(|r| r.number).collect::<Vec<_>>(),
            vec![2, 3, 0, 1]
        );
        assert_eq!(rows[3].rank, None);
        let by_f1 = rank(&trials, "val_loss", Direction::Minimize, Some("val_f1"));
        assert_eq!(
            by_f1.iter().map(|r| r.number).collect::<Vec<_>>(),
            vec![3, 0, 2, 1]
        );
        assert_eq!(by_f1[0].params["optimizer"], "sgd");
    }

    #[test]
    fn csv_has_one_row_per_trial_with_params() {
        let trials = vec![
            trial(0, TrialState::Complete, Some(0.5), 0.5),
            trial(1, TrialState::Complete, Some(0.7), 0.7),
        ];
        let csv = render_csv(
            &rank(&trials, "val_f1", Direction::Maximize, None),
            "val_f1",
        );
        let lines: Vec<&str> = csv.lines().collect();
        // The objective once: pandas.read_csv must see unique column names.
        assert_eq!(lines[0], "rank,trial,state,val_f1,val_accuracy,val_precision,val_recall,val_specificity,val_roc_auc,val_pr_auc,val_f1_at_0.5,optimizer,epochs,duration_s,device");
        assert_eq!(lines[1], "1,1,COMPLETE,0.7,,,,,,,,sgd,3,,cpu");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn csv_quotes_commas_quotes_and_carriage_returns() {
        let mut t = trial(0, TrialState::Complete, Some(0.5), 0.5);
        t.user_attrs.insert("device".into(), json!("cpu,\"x\"\r"));
        let csv = render_csv(&rank(&[t], "val_f1", Direction::Maximize, None), "val_f1");
        assert!(csv.ends_with(",\"cpu,\"\"x\"\"\r\"\n"), "{csv:?}");
    }

    #[test]
    fn the_table_shows_what_varies_and_fits_the_width() {
        let trials: Vec<TrialRecord> = (0..4)
            .map(|n| trial(n, TrialState::Complete, Some(0.5 + n as f64 / 10.0), 0.5))
            .collect();
        let rows = rank(&trials, "val_f1", Direction::Maximize, None);
        let text = render_table(&rows, "val_f1", None, None).unwrap();
        let header = text.lines().nth(1).unwrap();
        let words: Vec<&str> = header
            .split('┆')
            .map(|c| c.trim_matches(|ch: char| ch == '│' || ch.is_whitespace()))
            .collect();
        // The objective once, three other metrics, the varying parameter; device is the same
        // everywhere, so it is left out.
        assert_eq!(
            words,
            vec![
                "rank",
                "trial",
                "state",
                "val_f1",
                "pr_auc",
                "roc_auc",
                "precision",
                "optimizer",
                "epochs",
                "time"
            ]
        );
        let narrow = render_table(&rows, "val_f1", None, Some(60)).unwrap();
        assert!(narrow.lines().all(|l| l.chars().count() <= 60), "{narrow}");
        let chosen = render_table(
            &rows,
            "val_f1",
            Some(&["trial".into(), "optimizer".into()]),
            None,
        )
        .unwrap();
        assert_eq!(chosen.lines().nth(1).unwrap().split('┆').count(), 2);
        let e = render_table(&rows, "val_f1", Some(&["lr".into()]), None).unwrap_err();
        assert!(
            e.starts_with(
                "--columns: no column `lr` (one of: rank, trial, state, val_f1, val_accuracy"
            ),
            "{e}"
        );
    }
}
