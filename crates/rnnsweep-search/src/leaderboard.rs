//! Ranking a study's trials and rendering them as a table, CSV or JSON.

use std::collections::BTreeMap;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use rnnsweep_model::metrics::{direction_of, Direction};
use serde_json::{json, Value};

use crate::store::{TrialRecord, TrialState};

/// The metric columns every leaderboard shows (trial user attributes).
pub const METRIC_COLUMNS: [(&str, &str); 6] = [
    ("val_accuracy", "acc"),
    ("val_precision", "precision"),
    ("val_recall", "recall"),
    ("val_f1", "f1"),
    ("val_specificity", "specificity"),
    ("val_roc_auc", "roc_auc"),
];

/// A parameter's user value from Optuna's stored float and distribution JSON.
pub fn decode_param(internal: f64, distribution_json: &str) -> Value {
    let d: Value = serde_json::from_str(distribution_json).unwrap_or(Value::Null);
    match d["name"].as_str() {
        Some("CategoricalDistribution") => d["attributes"]["choices"]
            .get(internal as usize)
            .cloned()
            .unwrap_or(Value::Null),
        Some("IntDistribution") => json!(internal as i64),
        _ => json!(internal),
    }
}

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
                metrics: METRIC_COLUMNS
                    .iter()
                    .map(|(k, _)| (k.to_string(), attr(k)))
                    .collect(),
                params: t
                    .params
                    .iter()
                    .map(|(k, p)| (k.clone(), decode_param(p.internal, &p.distribution_json)))
                    .collect(),
                epochs: t
                    .user_attrs
                    .get("epochs")
                    .and_then(Value::as_i64)
                    .or_else(|| {
                        (!t.intermediate.is_empty()).then_some(t.intermediate.len() as i64)
                    }),
                duration_s: attr("duration_s"),
                device: t
                    .user_attrs
                    .get("device")
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
        (Some(x), Some(y)) => {
            let o = x.total_cmp(&y);
            let o = if dir == Direction::Maximize {
                o.reverse()
            } else {
                o
            };
            o.then(a.number.cmp(&b.number))
        }
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

fn fmt_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && (f.abs() < 1e-3 || f.abs() >= 1e5) && f != 0.0 => {
                format!("{f:.3e}")
            }
            Some(f) if n.is_f64() => format!("{}", (f * 1e6).round() / 1e6),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn param_names(rows: &[Row]) -> Vec<String> {
    let mut names: Vec<String> = rows.iter().flat_map(|r| r.params.keys().cloned()).collect();
    names.sort();
    names.dedup();
    names
}

pub fn render_table(rows: &[Row], objective_label: &str) -> String {
    let params = param_names(rows);
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    let mut header: Vec<String> = vec![
        "rank".into(),
        "trial".into(),
        "state".into(),
        objective_label.to_string(),
    ];
    header.extend(METRIC_COLUMNS.iter().map(|(_, short)| short.to_string()));
    header.extend(params.iter().cloned());
    header.extend(["epochs", "time", "device"].map(String::from));
    table.set_header(header);
    for r in rows {
        let mut cells: Vec<Cell> = vec![
            Cell::new(r.rank.map_or("-".to_string(), |x| x.to_string()))
                .set_alignment(CellAlignment::Right),
            Cell::new(r.number).set_alignment(CellAlignment::Right),
            Cell::new(r.state.as_str()),
            Cell::new(fmt(r.score)).set_alignment(CellAlignment::Right),
        ];
        cells.extend(
            METRIC_COLUMNS
                .iter()
                .map(|(k, _)| Cell::new(fmt(r.metrics[*k])).set_alignment(CellAlignment::Right)),
        );
        cells.extend(
            params
                .iter()
                .map(|p| Cell::new(r.params.get(p).map_or("-".to_string(), fmt_value))),
        );
        cells.push(
            Cell::new(r.epochs.map_or("-".into(), |e| e.to_string()))
                .set_alignment(CellAlignment::Right),
        );
        cells.push(
            Cell::new(r.duration_s.map_or("-".into(), |s| format!("{s:.1}s")))
                .set_alignment(CellAlignment::Right),
        );
        cells.push(Cell::new(r.device.clone().unwrap_or_else(|| "-".into())));
        table.add_row(cells);
    }
    table.to_string()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn render_csv(rows: &[Row], objective_label: &str) -> String {
    let params = param_names(rows);
    let mut header: Vec<String> = vec![
        "rank".into(),
        "trial".into(),
        "state".into(),
        objective_label.to_string(),
    ];
    header.extend(METRIC_COLUMNS.iter().map(|(k, _)| k.to_string()));
    header.extend(params.iter().cloned());
    header.extend(["epochs", "duration_s", "device"].map(String::from));
    let mut out = header
        .iter()
        .map(|h| csv_field(h))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for r in rows {
        let mut f: Vec<String> = vec![
            r.rank.map_or(String::new(), |x| x.to_string()),
            r.number.to_string(),
            r.state.as_str().into(),
            r.score.map_or(String::new(), |v| v.to_string()),
        ];
        f.extend(
            METRIC_COLUMNS
                .iter()
                .map(|(k, _)| r.metrics[*k].map_or(String::new(), |v| v.to_string())),
        );
        f.extend(params.iter().map(|p| {
            r.params.get(p).map_or(String::new(), |v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        }));
        f.push(r.epochs.map_or(String::new(), |e| e.to_string()));
        f.push(r.duration_s.map_or(String::new(), |s| format!("{s:.3}")));
        f.push(r.device.clone().unwrap_or_default());
        out += &(f.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(",") + "\n");
    }
    out
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
        assert_eq!(lines[0], "rank,trial,state,val_f1,val_accuracy,val_precision,val_recall,val_f1,val_specificity,val_roc_auc,optimizer,epochs,duration_s,device");
        assert_eq!(lines[1], "1,1,COMPLETE,0.7,,,,0.7,,,sgd,3,,cpu");
        assert_eq!(lines.len(), 3);
    }
}
