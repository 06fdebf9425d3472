//! Study storage. [`Store`] names the operations the driver needs (Optuna's storage seams).
//! One implementation serves both homes, as Optuna's one RDB storage does: [`sql`] holds every
//! algorithm once over a small dialect seam ([`sql::Conn`]), and [`sqlite`] and [`postgres`]
//! are the two dialects, each keeping exactly the schema Optuna 5.0 writes there
//! (`schema/*.sql`), so `optuna.load_study` and optuna-dashboard open the study as it is.
//! [`recovery`] is the policy for trials whose driver died and for re-queued trials.
//! rnnsweep's own data lives in attributes and in tables prefixed `rnnsweep_`.

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod recovery;
pub mod sql;
pub mod sqlite;

#[cfg(feature = "postgres")]
use postgres::PgStore;
use sqlite::SqliteStore;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rnnsweep_model::metrics::Direction;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    /// The server's own words in `message` (its error, detail and hint), the driver's error
    /// kept as the source.
    #[cfg(feature = "postgres")]
    #[error("{path}: {message}")]
    Postgres {
        path: String,
        message: String,
        #[source]
        source: ::postgres::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TrialState {
    Running,
    Complete,
    Pruned,
    Fail,
    Waiting,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Running => "RUNNING",
            TrialState::Complete => "COMPLETE",
            TrialState::Pruned => "PRUNED",
            TrialState::Fail => "FAIL",
            TrialState::Waiting => "WAITING",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RUNNING" => TrialState::Running,
            "COMPLETE" => TrialState::Complete,
            "PRUNED" => TrialState::Pruned,
            "FAIL" => TrialState::Fail,
            "WAITING" => TrialState::Waiting,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(self, TrialState::Complete | TrialState::Pruned)
    }
}

/// One stored parameter: Optuna's float and distribution JSON, plus the user's value.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredParam {
    pub internal: f64,
    pub distribution_json: String,
}

/// A parameter's user value from Optuna's stored float and distribution JSON (whatever wrote
/// it: rnnsweep or Optuna). The one decoder of stored parameters.
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

impl StoredParam {
    /// The user's value.
    pub fn value(&self) -> Value {
        decode_param(self.internal, &self.distribution_json)
    }
}

/// Every parameter name the trials have, sorted, each once (columns for tables and plots).
pub fn param_names<'a>(trials: impl IntoIterator<Item = &'a TrialRecord>) -> Vec<String> {
    let mut names: Vec<String> = trials
        .into_iter()
        .flat_map(|t| t.params.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Stored parameters as the user wrote them, `{name: value}`: the one decoder every reader of
/// a trial's parameters (leaderboard, plots, confirm, retrain, requeue) goes through.
pub fn user_values(params: &BTreeMap<String, StoredParam>) -> BTreeMap<String, Value> {
    params.iter().map(|(k, p)| (k.clone(), p.value())).collect()
}

#[derive(Debug, Clone)]
pub struct TrialRecord {
    pub trial_id: i64,
    pub number: i64,
    pub state: TrialState,
    pub params: BTreeMap<String, StoredParam>,
    pub value: Option<f64>,
    /// (step, value) in step order.
    pub intermediate: Vec<(i64, Option<f64>)>,
    pub user_attrs: BTreeMap<String, Value>,
    pub system_attrs: BTreeMap<String, Value>,
    pub datetime_start: Option<String>,
    pub datetime_complete: Option<String>,
}

impl TrialRecord {
    /// The trial's parameters as the user wrote them ([`user_values`]).
    pub fn param_values(&self) -> BTreeMap<String, Value> {
        user_values(&self.params)
    }

    /// Whether the spec's `enqueue` queued this trial.
    pub fn from_spec_enqueue(&self) -> bool {
        self.system_attrs.contains_key(keys::SPEC_ENQUEUE)
    }

    /// The trial a confirmation run repeats, if it is one.
    pub fn repeat_of(&self) -> Option<i64> {
        self.system_attrs
            .get(keys::CONFIRM_OF)
            .and_then(Value::as_i64)
    }
}

#[derive(Debug, Clone)]
pub struct StudySummary {
    pub study_id: i64,
    pub name: String,
    pub direction: Direction,
    pub counts: BTreeMap<String, usize>,
    pub best: Option<f64>,
}

/// Proposes a new trial's stored parameters from the trials so far and its number
/// (`None`: nothing left to propose).
pub type ParamSource<'a> =
    dyn FnMut(&[TrialRecord], i64) -> Option<BTreeMap<String, StoredParam>> + 'a;

/// The storage operations the sweep driver uses.
pub trait Store {
    /// Opens or creates the study; a new study records its direction and attributes.
    fn open_study(
        &mut self,
        name: &str,
        direction: Direction,
        user_attrs: &BTreeMap<String, Value>,
        system_attrs: &BTreeMap<String, Value>,
    ) -> Result<i64>;
    fn study_id(&self, name: &str) -> Result<Option<i64>>;
    fn studies(&self) -> Result<Vec<StudySummary>>;
    /// One study's counts by state and best value, without loading its trials.
    fn summary(&self, study_id: i64) -> Result<StudySummary>;
    fn study_user_attrs(&self, study_id: i64) -> Result<BTreeMap<String, Value>>;
    fn study_system_attrs(&self, study_id: i64) -> Result<BTreeMap<String, Value>>;
    fn set_study_system_attr(&mut self, study_id: i64, key: &str, value: &Value) -> Result<()>;
    fn set_study_user_attr(&mut self, study_id: i64, key: &str, value: &Value) -> Result<()>;
    fn trials(&self, study_id: i64) -> Result<Vec<TrialRecord>>;
    /// Marks RUNNING trials whose heartbeat is older than `grace` as FAIL and re-queues their
    /// parameters as WAITING trials, unless a trial has already been re-queued this way
    /// `max_retries` times: then it stays FAIL with its retry history.
    fn recover_stale(
        &mut self,
        study_id: i64,
        grace: Duration,
        max_retries: usize,
    ) -> Result<Vec<Recovered>>;
    /// In one exclusive transaction: if fewer than `run_cap` trials are finished or running,
    /// takes the oldest WAITING trial, or creates one from `sample` (given the trials so far and
    /// the new trial's number; `None` means the space is exhausted). The trial is RUNNING with
    /// a heartbeat when this returns.
    fn claim(
        &mut self,
        study_id: i64,
        run_cap: usize,
        history: bool,
        sample: &mut ParamSource,
    ) -> Result<Claim>;
    fn heartbeat(&mut self, trial_id: i64) -> Result<()>;
    /// Replaces a trial's stored parameters (Optuna's `set_trial_param`, for a claimed trial
    /// whose values came from `fixed_params`).
    fn set_trial_params(
        &mut self,
        trial_id: i64,
        params: &BTreeMap<String, StoredParam>,
    ) -> Result<()>;
    /// Adds a WAITING trial with these system attributes (Optuna's `enqueue_trial`: the
    /// values go in `fixed_params`); returns its number.
    fn enqueue(&mut self, study_id: i64, system_attrs: &BTreeMap<String, Value>) -> Result<i64>;
    /// Fails a RUNNING trial (e.g. interrupted) and queues its parameters again, with `extra`
    /// system attributes on the new trial; returns the new trial's number.
    fn fail_and_requeue(
        &mut self,
        study_id: i64,
        trial_id: i64,
        reason: &str,
        extra: &BTreeMap<String, Value>,
    ) -> Result<i64>;
    fn report_epoch(
        &mut self,
        trial_id: i64,
        step: i64,
        objective: Option<f64>,
        metrics: &Value,
    ) -> Result<()>;
    fn set_trial_user_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<()>;
    fn set_trial_system_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<()>;
    /// Ends a RUNNING trial in one transaction: its final attributes, its value and its
    /// state (a finished trial can never be updated again).
    fn finish(
        &mut self,
        trial_id: i64,
        state: TrialState,
        value: Option<f64>,
        user_attrs: &BTreeMap<String, Value>,
        system_attrs: &BTreeMap<String, Value>,
    ) -> Result<()>;
    /// What pruners compare: every trial that reported `step`, with only that value (number,
    /// state and id as stored).
    fn values_at(&self, study_id: i64, step: i64) -> Result<Vec<TrialRecord>>;
    /// Per-epoch metrics recorded by `report_epoch`.
    fn epochs(&self, trial_id: i64) -> Result<Vec<(i64, Value)>>;
    /// Writes a trial exactly as another store holds it (state, times, parameters, values,
    /// attributes, per-epoch history): the building block of `copy-study`.
    fn import_trial(
        &mut self,
        study_id: i64,
        trial: &TrialRecord,
        epochs: &[(i64, Value)],
    ) -> Result<()>;
}

/// A stale trial found by [`Store::recover_stale`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub failed: i64,
    /// The new trial's number; `None` when the retries were used up.
    pub queued: Option<i64>,
}

/// Attribute keys. Those without the `rnnsweep:` prefix are Optuna's own.
pub mod keys {
    /// Optuna's `enqueue_trial`: `{name: value}` of a WAITING trial.
    pub const FIXED_PARAMS: &str = "fixed_params";
    /// Optuna's `RetryFailedTrialCallback`: the first attempt's number.
    pub const FAILED_TRIAL: &str = "failed_trial";
    /// Optuna's `RetryFailedTrialCallback`: every earlier attempt's number.
    pub const RETRY_HISTORY: &str = "retry_history";
    pub const FAIL_REASON: &str = "fail_reason";
    /// The trial number whose checkpoint folder a re-run continues from.
    pub const RESUME_FROM: &str = "rnnsweep:resume_from";
    /// On a failed trial: the number of the trial that re-runs it.
    pub const REQUEUED_AS: &str = "rnnsweep:requeued_as";
    /// How often a trial's driver died under it (counted against `max_retries`).
    pub const CRASH_RETRIES: &str = "rnnsweep:crash_retries";
    /// A study's identity: trial folders are keyed by it, so a new study never adopts the
    /// files of an old one with the same name.
    pub const STUDY_UUID: &str = "rnnsweep:study_uuid";
    pub const TRIAL_DIR: &str = "rnnsweep:trial_dir";
    pub const SPACE: &str = "rnnsweep:space";
    pub const AVOID_DEVICE: &str = "rnnsweep:avoid_device";
    pub const OOM_RETRY: &str = "rnnsweep:oom_retry";
    /// On a trial that re-runs one killed from outside (SIGKILL rnnsweep did not send).
    pub const KILL_RETRY: &str = "rnnsweep:kill_retry";
    /// On a `confirm` run: the number of the trial whose configuration it repeats.
    pub const CONFIRM_OF: &str = "rnnsweep:confirm_of";
    /// On a `confirm` run: the model seed it trains with instead of the configuration's.
    pub const SEED: &str = "rnnsweep:seed";
    /// On a trial taken from another study by `run --warm-start`: `{storage, study, number}`.
    pub const WARM_START_OF: &str = "rnnsweep:warm_start_of";
    /// On a study: every `storage#study` it was warm-started from (each is taken once).
    pub const WARM_STARTED_FROM: &str = "rnnsweep:warm_started_from";
    /// On a trial the spec's `enqueue` queued: the entry as the spec gives it (each entry is
    /// queued once per study; such a trial is never pruned).
    pub const SPEC_ENQUEUE: &str = "rnnsweep:spec_enqueue";

    // Study user attributes (shown by optuna-dashboard).
    /// The spec's text.
    pub const SPEC: &str = "spec";
    /// Where the spec was read from (relative paths in it are relative to its folder).
    pub const SPEC_FILE: &str = "spec_file";
    /// The objective's metric name.
    pub const METRIC: &str = "metric";

    // Trial user attributes (besides every final metric by its name).
    pub const DEVICE: &str = "device";
    pub const DURATION_S: &str = "duration_s";
    /// Epochs run.
    pub const EPOCHS: &str = "epochs";
    /// What stopped a pruned trial other than the pruner: `max_duration` (its rest was the
    /// final model's).
    pub const STOPPED_BY: &str = "stopped_by";
    /// The epoch whose weights were kept (and whose metrics the trial reports).
    pub const BEST_EPOCH: &str = "best_epoch";
    pub const STOP_REASON: &str = "stop_reason";
}

#[derive(Debug, Clone)]
pub enum Claim {
    Trial(TrialRecord),
    /// `run_cap` finished or running trials exist.
    CapReached,
    /// The sampler has nothing left to propose.
    Exhausted,
}

/// Where a study lives: an SQLite file or a PostgreSQL database. Parsed from the forms
/// Optuna users write: a plain path, SQLAlchemy's `sqlite:///relative.db` and
/// `sqlite:////absolute.db`, or `postgresql://user@host:port/db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StorageLocation {
    pub fn parse(location: &str) -> std::result::Result<Self, String> {
        if location.starts_with("postgresql://") || location.starts_with("postgres://") {
            return Ok(Self::Postgres(location.to_string()));
        }
        if let Some(path) = location.strip_prefix("sqlite:///") {
            // SQLAlchemy: three slashes then a relative path; a fourth makes it absolute.
            if path.is_empty() {
                return Err(format!("{location}: the URL names no file"));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if location.starts_with("sqlite:") {
            return Err(format!(
                "{location}: write SQLite URLs as sqlite:///relative.db or sqlite:////absolute.db"
            ));
        }
        if location.contains("://") {
            return Err(format!(
                "{location}: not a study location (an SQLite file, sqlite:///file.db or postgresql://…)"
            ));
        }
        if location.is_empty() {
            return Err("an empty study location".into());
        }
        Ok(Self::Sqlite(PathBuf::from(location)))
    }

    /// The location as [`StorageLocation::parse`] reads it back (a child process's argument).
    pub fn to_arg(&self) -> String {
        match self {
            // SQLAlchemy's form, so a file name with `://` in it stays a file.
            Self::Sqlite(p) => format!("sqlite:///{}", p.display()),
            Self::Postgres(url) => url.clone(),
        }
    }

    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Opens the store, creating the SQLite file (or the PostgreSQL schema) if needed.
    pub fn open(&self) -> Result<Box<dyn Store>> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => Ok(Box::new(PgStore::connect(url)?)),
            #[cfg(not(feature = "postgres"))]
            Self::Postgres(url) => Err(StoreError::Invalid {
                path: shown(url),
                message:
                    "this rnnsweep was built without PostgreSQL support (the `postgres` feature)"
                        .into(),
            }),
            Self::Sqlite(path) => Ok(Box::new(SqliteStore::open(path)?)),
        }
    }

    /// Opens a store that must exist already: an SQLite file is never created.
    pub fn open_existing(&self) -> Result<Box<dyn Store>> {
        if let Self::Sqlite(path) = self {
            if !path.is_file() {
                return Err(StoreError::Invalid {
                    path: path.display().to_string(),
                    message: "no such study file".into(),
                });
            }
        }
        self.open()
    }

    /// Where trial folders go: next to an SQLite study, in `results/` for a database.
    pub fn results_dir(&self) -> PathBuf {
        match self {
            Self::Sqlite(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
            Self::Postgres(_) => PathBuf::from("results"),
        }
    }
}

/// A database URL without its password, for messages.
pub fn shown(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl std::fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(url) => f.write_str(&shown(url)),
        }
    }
}

impl std::str::FromStr for StorageLocation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::parse(s)
    }
}

/// The best of a study's objective values.
pub(crate) fn best_of(values: impl Iterator<Item = f64>, direction: Direction) -> Option<f64> {
    values.reduce(|a, b| direction.best(a, b))
}

/// The wall clock as Optuna writes datetimes (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC).
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

pub(crate) fn value_type(v: f64) -> (&'static str, Option<f64>) {
    if v.is_nan() {
        ("NAN", None)
    } else if v == f64::INFINITY {
        ("INF_POS", None)
    } else if v == f64::NEG_INFINITY {
        ("INF_NEG", None)
    } else {
        ("FINITE", Some(v))
    }
}

pub(crate) fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Minimize => "MINIMIZE",
        Direction::Maximize => "MAXIMIZE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_locations_take_sqlalchemy_urls_and_plain_paths() {
        let sqlite = |p: &str| StorageLocation::Sqlite(PathBuf::from(p));
        assert_eq!(StorageLocation::parse("a.db").unwrap(), sqlite("a.db"));
        assert_eq!(
            StorageLocation::parse("sqlite:///results/a.db").unwrap(),
            sqlite("results/a.db")
        );
        assert_eq!(
            StorageLocation::parse("sqlite:////tmp/a.db").unwrap(),
            sqlite("/tmp/a.db")
        );
        assert_eq!(
            StorageLocation::parse("postgresql://u@h:5/db").unwrap(),
            StorageLocation::Postgres("postgresql://u@h:5/db".into())
        );
        for bad in ["sqlite://a.db", "sqlite:///", "mysql://h/db", ""] {
            assert!(StorageLocation::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            StorageLocation::parse("postgresql://u:secret@h/db")
                .unwrap()
                .to_string(),
            "postgresql://u:***@h/db"
        );
    }

    #[test]
    fn timestamps_are_optuna_formatted() {
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456)),
            "2023-11-14 22:13:20.123456"
        );
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00.000000"
        );
    }
}

/// Trials as tests across the crate build them.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// `units`, an `IntDistribution` over [16, 64], at `value`.
    pub(crate) fn units(value: f64) -> StoredParam {
        StoredParam {
            internal: value,
            distribution_json:
                r#"{"name":"IntDistribution","attributes":{"log":false,"step":1,"low":16,"high":64}}"#
                    .into(),
        }
    }

    /// A trial whose one parameter is `units`.
    pub(crate) fn trial(
        number: i64,
        state: TrialState,
        value: Option<f64>,
        units_value: f64,
    ) -> TrialRecord {
        TrialRecord {
            trial_id: number,
            number,
            state,
            params: BTreeMap::from([("units".to_string(), units(units_value))]),
            value,
            intermediate: vec![],
            user_attrs: BTreeMap::new(),
            system_attrs: BTreeMap::new(),
            datetime_start: None,
            datetime_complete: None,
        }
    }
}
