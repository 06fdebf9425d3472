//! A study as rows for other tools: one JSON object or CSV row per trial (or per epoch), with
//! its state, objective, final metrics, parameters and why it failed.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::results::plots::TrialData;
use crate::store::{keys, param_names};

/// One JSON object per trial: state, objective, every final metric, every parameter, epochs,
/// duration, device (and `history` when `with_epochs`).
pub fn export_rows(trials: &[TrialData], metric: &str, with_epochs: bool) -> Vec<Value> {
    trials
        .iter()
        .map(|t| {
            let r = &t.record;
            let params: BTreeMap<String, Value> = r.param_values();
            let mut row = json!({
                "trial": r.number,
                "state": r.state.as_str(),
                "objective": r.value,
                "metric": metric,
                "params": params,
                "user_attrs": r.user_attrs,
                "datetime_start": r.datetime_start,
                "datetime_complete": r.datetime_complete,
            });
            if let Some(reason) = r.system_attrs.get(keys::FAIL_REASON) {
                row[keys::FAIL_REASON] = reason.clone();
            }
            if with_epochs {
                row["history"] = Value::Array(
                    t.epochs
                        .iter()
                        .map(|(e, m)| json!({"epoch": e, "metrics": m}))
                        .collect(),
                );
            }
            row
        })
        .collect()
}

fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A CSV writer into memory with `\n` line ends (it quotes commas, quotes, `\r` and `\n`).
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new())
}

/// The export as CSV: one row per trial, or one row per trial and epoch with `with_epochs`.
pub fn export_csv(trials: &[TrialData], metric: &str, with_epochs: bool) -> String {
    let params = param_names(trials.iter().map(|t| &t.record));
    let skip = ["confusion"];
    let mut attrs: Vec<String> = trials
        .iter()
        .flat_map(|t| t.record.user_attrs.keys().cloned())
        // The objective has its own column.
        .filter(|k| !skip.contains(&k.as_str()) && k != metric)
        .collect();
    attrs.sort();
    attrs.dedup();
    let mut epoch_keys: Vec<String> = trials
        .iter()
        .flat_map(|t| {
            t.epochs.iter().flat_map(|(_, m)| {
                m.as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            })
        })
        .filter(|k| !skip.contains(&k.as_str()))
        .collect();
    epoch_keys.sort();
    epoch_keys.dedup();
    let mut header = vec!["trial".to_string(), "state".into(), metric.to_string()];
    header.extend(params.iter().map(|p| format!("param_{p}")));
    if with_epochs {
        header.push("epoch".into());
        header.extend(epoch_keys.iter().cloned());
    } else {
        header.extend(attrs.iter().cloned());
        header.push(keys::FAIL_REASON.into());
    }
    let mut out = csv_writer();
    let _ = out.write_record(&header);
    for t in trials {
        let r = &t.record;
        let mut base = vec![json!(r.number), json!(r.state.as_str()), json!(r.value)];
        base.extend(
            params
                .iter()
                .map(|p| r.params.get(p).map_or(Value::Null, |sp| sp.value())),
        );
        if with_epochs {
            for (e, m) in &t.epochs {
                let mut row = base.clone();
                row.push(json!(e));
                row.extend(
                    epoch_keys
                        .iter()
                        .map(|k| m.get(k).cloned().unwrap_or(Value::Null)),
                );
                let _ = out.write_record(row.iter().map(csv_field));
            }
        } else {
            let mut row = base;
            row.extend(
                attrs
                    .iter()
                    .map(|k| r.user_attrs.get(k).cloned().unwrap_or(Value::Null)),
            );
            row.push(
                r.system_attrs
                    .get(keys::FAIL_REASON)
                    .cloned()
                    .unwrap_or(Value::Null),
            );
            let _ = out.write_record(row.iter().map(csv_field));
        }
    }
    String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{fixtures, TrialState};

    fn trial(number: i64, state: TrialState, value: Option<f64>, units: f64) -> TrialData {
        TrialData {
            record: fixtures::trial(number, state, value, units),
            epochs: vec![],
        }
    }

    fn two_trials() -> Vec<TrialData> {
        let mut done = trial(0, TrialState::Complete, Some(0.5), 32.0);
        done.record.user_attrs =
            BTreeMap::from([("val_f1".into(), json!(0.5)), ("epochs".into(), json!(3))]);
        done.epochs = vec![
            (1, json!({"val_f1": 0.25, "confusion": [[1, 0], [0, 1]]})),
            (2, json!({"val_f1": 0.5})),
        ];
        let mut failed = trial(1, TrialState::Fail, None, 16.0);
        failed.record.system_attrs =
            BTreeMap::from([(keys::FAIL_REASON.into(), json!("out of memory, at batch 3"))]);
        vec![done, failed]
    }

    #[test]
    fn csv_has_the_objective_parameters_attributes_and_why_a_trial_failed() {
        assert_eq!(
            export_csv(&two_trials(), "val_f1", false),
            "trial,state,val_f1,param_units,epochs,fail_reason\n\
             0,COMPLETE,0.5,32,3,\n\
             1,FAIL,,16,,\"out of memory, at batch 3\"\n"
        );
    }

    #[test]
    fn epoch_csv_has_a_row_per_epoch_without_the_confusion_matrix() {
        assert_eq!(
            export_csv(&two_trials(), "val_f1", true),
            "trial,state,val_f1,param_units,epoch,val_f1\n\
             0,COMPLETE,0.5,32,1,0.25\n\
             0,COMPLETE,0.5,32,2,0.5\n"
        );
    }

    #[test]
    fn json_rows_carry_user_values_and_the_failure() {
        let rows = export_rows(&two_trials(), "val_f1", true);
        assert_eq!(rows[0]["params"], json!({"units": 32}));
        assert_eq!(
            rows[0]["history"][1],
            json!({"epoch": 2, "metrics": {"val_f1": 0.5}})
        );
        assert_eq!(rows[1]["fail_reason"], json!("out of memory, at batch 3"));
        assert_eq!(rows[1]["objective"], Value::Null);
        assert!(rows[0].get("fail_reason").is_none());
    }
}
