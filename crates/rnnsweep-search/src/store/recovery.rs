//! What happens to a trial whose driver died, and what a re-queued trial carries: the policy
//! above the SQL (Optuna keeps it above its storage too: `fail_stale_trials`,
//! `RetryFailedTrialCallback`). The stores apply it inside their own transactions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{keys, StoredParam, TrialRecord};

/// The trial's parameters as Optuna's `enqueue_trial` stores them: `{name: user value}`.
pub fn fixed_params_attr(params: &BTreeMap<String, StoredParam>) -> Value {
    Value::Object(super::user_values(params).into_iter().collect())
}

fn crash_retries(t: &TrialRecord) -> usize {
    t.system_attrs
        .get(keys::CRASH_RETRIES)
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize
}

/// Every earlier attempt's number, this one included.
pub(crate) fn retry_history(t: &TrialRecord) -> Vec<Value> {
    let mut history = t
        .system_attrs
        .get(keys::RETRY_HISTORY)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    history.push(Value::from(t.number));
    history
}

/// The values a re-run of `t` must run with. A queued trial whose driver died between its claim
/// and the check of its values has no params yet: its queued values are still the ones to run,
/// not an empty set that would fail the re-run.
fn values_to_rerun(t: &TrialRecord) -> Value {
    match t.system_attrs.get(keys::FIXED_PARAMS) {
        Some(queued) if t.params.is_empty() => queued.clone(),
        _ => fixed_params_attr(&t.params),
    }
}

/// What any re-run of `t` carries, under Optuna's `RetryFailedTrialCallback` keys: its values
/// in Optuna's enqueue form, the first trial of its line and its retry history (`retry` asks
/// for these alone).
pub fn retry_attrs(t: &TrialRecord) -> BTreeMap<String, Value> {
    let first = t
        .system_attrs
        .get(keys::FAILED_TRIAL)
        .cloned()
        .unwrap_or(Value::from(t.number));
    BTreeMap::from([
        (keys::FIXED_PARAMS.to_string(), values_to_rerun(t)),
        (keys::FAILED_TRIAL.to_string(), first),
        (
            keys::RETRY_HISTORY.to_string(),
            Value::Array(retry_history(t)),
        ),
    ])
}

/// What the WAITING trial that re-runs a dead or crashed `t` carries: [`retry_attrs`], where
/// its checkpoint lives and how many crashes its line has had.
pub(crate) fn requeue_attrs(
    t: &TrialRecord,
    crashed: bool,
    extra: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let origin = t
        .system_attrs
        .get(keys::RESUME_FROM)
        .cloned()
        .unwrap_or(Value::from(t.number));
    let mut attrs = retry_attrs(t);
    attrs.insert(keys::RESUME_FROM.to_string(), origin);
    attrs.insert(
        keys::CRASH_RETRIES.to_string(),
        Value::from(crash_retries(t) + usize::from(crashed)),
    );
    attrs.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    attrs
}

/// The stale-trial policy: re-queue (with the reason) or give up (with the reason).
pub(crate) enum StaleAction {
    Requeue(String),
    GiveUp(String),
}

pub(crate) fn stale_action(
    t: &TrialRecord,
    grace: Duration,
    max_retries: usize,
    next_number: i64,
) -> StaleAction {
    let why = format!(
        "heartbeat stopped: the driver or worker died (no heartbeat for {} s)",
        grace.as_secs()
    );
    let retries = crash_retries(t);
    if retries >= max_retries {
        StaleAction::GiveUp(format!(
            "{why}; not re-queued: its driver died {} times (max_retries {max_retries})",
            retries + 1
        ))
    } else {
        StaleAction::Requeue(format!("{why}; re-queued as trial {next_number}"))
    }
}

/// The user attribute a trial that is given up keeps: every attempt's number.
pub(crate) fn given_up_history(t: &TrialRecord) -> Value {
    Value::Array(retry_history(t))
}

/// Round 1 stored re-queued values as `{internal: {…}, distributions: {…}}` under
/// `fixed_params`; such a trial still runs with exactly those values.
pub fn legacy_fixed_params(v: &Value) -> Option<BTreeMap<String, StoredParam>> {
    let map = v.as_object()?;
    if map.len() != 2 {
        return None;
    }
    let internal = map.get("internal")?.as_object()?;
    let dists = map.get("distributions")?.as_object()?;
    internal
        .iter()
        .map(|(k, x)| {
            Some((
                k.clone(),
                StoredParam {
                    internal: x.as_f64()?,
                    distribution_json: dists.get(k)?.as_str()?.to_string(),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TrialState;
    use serde_json::json;

    /// Trial 7, the second re-run of trial 3 (after 5), crashed once before.
    fn rerun() -> TrialRecord {
        TrialRecord {
            trial_id: 70,
            number: 7,
            state: TrialState::Fail,
            params: BTreeMap::from([(
                "optimizer".to_string(),
                StoredParam {
                    internal: 1.0,
                    distribution_json: r#"{"name":"CategoricalDistribution","attributes":{"choices":["adam","rmsprop"]}}"#.into(),
                },
            )]),
            value: None,
            intermediate: vec![],
            user_attrs: BTreeMap::new(),
            system_attrs: BTreeMap::from([
                (keys::FAILED_TRIAL.to_string(), json!(3)),
                (keys::RETRY_HISTORY.to_string(), json!([3, 5])),
                (keys::RESUME_FROM.to_string(), json!(3)),
                (keys::CRASH_RETRIES.to_string(), json!(1)),
            ]),
            datetime_start: None,
            datetime_complete: None,
        }
    }

    #[test]
    fn a_retry_carries_the_values_the_first_trial_and_every_attempt() {
        assert_eq!(
            retry_attrs(&rerun()),
            BTreeMap::from([
                (
                    keys::FIXED_PARAMS.to_string(),
                    json!({"optimizer": "rmsprop"})
                ),
                (keys::FAILED_TRIAL.to_string(), json!(3)),
                (keys::RETRY_HISTORY.to_string(), json!([3, 5, 7])),
            ])
        );
        let mut first = rerun();
        first.system_attrs.clear();
        let attrs = retry_attrs(&first);
        assert_eq!(
            (&attrs[keys::FAILED_TRIAL], &attrs[keys::RETRY_HISTORY]),
            (&json!(7), &json!([7]))
        );
    }

    #[test]
    fn a_requeued_trial_killed_before_its_values_were_checked_keeps_its_queued_values() {
        let mut claimed = rerun();
        claimed.params.clear();
        claimed.system_attrs.insert(
            keys::FIXED_PARAMS.to_string(),
            json!({"optimizer": "rmsprop"}),
        );
        let attrs = requeue_attrs(&claimed, true, &BTreeMap::new());
        assert_eq!(attrs[keys::FIXED_PARAMS], json!({"optimizer": "rmsprop"}));
        assert_eq!(attrs[keys::RETRY_HISTORY], json!([3, 5, 7]));
        // Once the values are stored they are what runs again, whatever was queued.
        let mut resolved = rerun();
        resolved
            .system_attrs
            .insert(keys::FIXED_PARAMS.to_string(), json!({"optimizer": "adam"}));
        assert_eq!(
            retry_attrs(&resolved)[keys::FIXED_PARAMS],
            json!({"optimizer": "rmsprop"})
        );
    }

    #[test]
    fn a_requeue_keeps_the_checkpoint_line_and_counts_crashes_only() {
        let extra = BTreeMap::from([(keys::AVOID_DEVICE.to_string(), json!("cuda:1"))]);
        let crashed = requeue_attrs(&rerun(), true, &extra);
        assert_eq!(crashed[keys::RESUME_FROM], json!(3));
        assert_eq!(crashed[keys::CRASH_RETRIES], json!(2));
        assert_eq!(crashed[keys::AVOID_DEVICE], json!("cuda:1"));
        assert_eq!(crashed[keys::RETRY_HISTORY], json!([3, 5, 7]));
        let interrupted = requeue_attrs(&rerun(), false, &BTreeMap::new());
        assert_eq!(interrupted[keys::CRASH_RETRIES], json!(1));
        let mut fresh = rerun();
        fresh.system_attrs.clear();
        assert_eq!(
            requeue_attrs(&fresh, true, &BTreeMap::new())[keys::RESUME_FROM],
            json!(7)
        );
    }

    #[test]
    fn a_dead_driver_is_given_up_after_max_retries() {
        let t = rerun();
        let grace = Duration::from_secs(30);
        assert!(matches!(
            stale_action(&t, grace, 2, 8),
            StaleAction::Requeue(why) if why.ends_with("re-queued as trial 8")
                && why.contains("no heartbeat for 30 s")
        ));
        assert!(matches!(
            stale_action(&t, grace, 1, 8),
            StaleAction::GiveUp(why) if why.ends_with("its driver died 2 times (max_retries 1)")
        ));
        assert_eq!(given_up_history(&t), json!([3, 5, 7]));
    }

    #[test]
    fn round_one_fixed_params_still_decode() {
        let old = json!({
            "internal": {"units": 32.0},
            "distributions": {"units": r#"{"name":"IntDistribution","attributes":{"log":false,"step":1,"low":16,"high":64}}"#},
        });
        let params = legacy_fixed_params(&old).unwrap();
        assert_eq!(fixed_params_attr(&params), json!({"units": 32}));
        assert!(legacy_fixed_params(&json!({"units": 32})).is_none());
    }
}
