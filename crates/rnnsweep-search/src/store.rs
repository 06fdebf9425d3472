//! Study storage. [`Store`] names the operations the driver needs (Optuna's storage seams);
//! [`SqliteStore`] keeps them in exactly the schema Optuna 5.0 writes (schema_version 12,
//! alembic `v3.2.0.a`), so `optuna.load_study` and optuna-dashboard open the file as it is.
//! rnnsweep's own data lives in attributes and in tables prefixed `rnnsweep_`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rnnsweep_model::metrics::Direction;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
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

    fn parse(s: &str) -> Option<Self> {
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
    /// Ends a trial (a finished trial can never be updated again).
    fn finish(&mut self, trial_id: i64, state: TrialState, value: Option<f64>) -> Result<()>;
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
}

/// The trial's parameters as Optuna's `enqueue_trial` stores them: `{name: user value}`.
pub fn fixed_params_attr(params: &BTreeMap<String, StoredParam>) -> Value {
    Value::Object(
        params
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    crate::space::decode_stored(p.internal, &p.distribution_json),
                )
            })
            .collect(),
    )
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

/// What the WAITING trial that re-runs `t` carries: its values in Optuna's enqueue form,
/// where its checkpoint lives, and its retry history under Optuna's callback keys.
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
    let first = t
        .system_attrs
        .get(keys::FAILED_TRIAL)
        .cloned()
        .unwrap_or(Value::from(t.number));
    let mut attrs = BTreeMap::from([
        (keys::FIXED_PARAMS.to_string(), fixed_params_attr(&t.params)),
        (keys::RESUME_FROM.to_string(), origin),
        (keys::FAILED_TRIAL.to_string(), first),
        (
            keys::RETRY_HISTORY.to_string(),
            Value::Array(retry_history(t)),
        ),
        (
            keys::CRASH_RETRIES.to_string(),
            Value::from(crash_retries(t) + usize::from(crashed)),
        ),
    ]);
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

#[derive(Debug, Clone)]
pub enum Claim {
    Trial(TrialRecord),
    /// `run_cap` finished or running trials exist.
    CapReached,
    /// The sampler has nothing left to propose.
    Exhausted,
}

/// Optuna's SQLite DDL (reference/optuna-sqlite-schema.sql).
const OPTUNA_SCHEMA: &str = r#"
CREATE TABLE studies (
	study_id INTEGER NOT NULL, 
	study_name VARCHAR(512) NOT NULL, 
	PRIMARY KEY (study_id)
);
CREATE UNIQUE INDEX ix_studies_study_name ON studies (study_name);
CREATE TABLE version_info (
	version_info_id INTEGER NOT NULL, 
	schema_version INTEGER, 
	library_version VARCHAR(256), 
	PRIMARY KEY (version_info_id), 
	CHECK (version_info_id=1)
);
CREATE TABLE study_directions (
	study_direction_id INTEGER NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	study_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	PRIMARY KEY (study_direction_id), 
	UNIQUE (study_id, objective), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_user_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_system_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE trials (
	trial_id INTEGER NOT NULL, 
	number INTEGER, 
	study_id INTEGER, 
	state VARCHAR(8) NOT NULL, 
	datetime_start DATETIME, 
	datetime_complete DATETIME, 
	PRIMARY KEY (trial_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE INDEX ix_trials_study_id ON trials (study_id);
CREATE TABLE trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_user_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_system_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_params (
	param_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	param_name VARCHAR(512), 
	param_value FLOAT, 
	distribution_json TEXT, 
	PRIMARY KEY (param_id), 
	UNIQUE (trial_id, param_name), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_values (
	trial_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	value FLOAT, 
	value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_value_id), 
	UNIQUE (trial_id, objective), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	intermediate_value FLOAT, 
	intermediate_value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_intermediate_value_id), 
	UNIQUE (trial_id, step), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	heartbeat DATETIME NOT NULL, 
	PRIMARY KEY (trial_heartbeat_id), 
	UNIQUE (trial_id), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO version_info VALUES(1,12,'5.0.0');
INSERT INTO alembic_version VALUES('v3.2.0.a');
"#;

/// rnnsweep's own tables, one entry per schema version; applied in order, recorded in
/// `rnnsweep_meta`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE rnnsweep_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE rnnsweep_epochs (
    trial_id INTEGER NOT NULL REFERENCES trials (trial_id),
    epoch INTEGER NOT NULL,
    metrics_json TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);
"#];

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
            Self::Postgres(url) => Ok(Box::new(crate::pg::PgStore::connect(url)?)),
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

impl std::fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(url) => f.write_str(&crate::pg::shown(url)),
        }
    }
}

impl std::str::FromStr for StorageLocation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::parse(s)
    }
}

/// A study's counts by state and best value, from its trials.
pub(crate) fn summarize(
    study_id: i64,
    name: String,
    direction: &str,
    trials: Vec<TrialRecord>,
) -> Result<StudySummary> {
    let direction = if direction == "MINIMIZE" {
        Direction::Minimize
    } else {
        Direction::Maximize
    };
    let mut counts = BTreeMap::new();
    for t in &trials {
        *counts.entry(t.state.as_str().to_string()).or_insert(0) += 1;
    }
    let best = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| t.value)
        .reduce(|a, b| match direction {
            Direction::Minimize => a.min(b),
            Direction::Maximize => a.max(b),
        });
    Ok(StudySummary {
        study_id,
        name,
        direction,
        counts,
        best,
    })
}

/// Maps SQLite errors to a [`StoreError`] naming the file.
fn sql_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
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

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Switches the file to WAL. Several drivers opening a new study file at once race to make
/// that switch, and SQLite reports the loser's `SQLITE_BUSY` at once instead of waiting in the
/// busy handler, so the switch is retried here for as long as the busy timeout.
fn set_wal_mode(conn: &Connection) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) a study file. A file that is not an Optuna/rnnsweep database
    /// is refused and left untouched.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Invalid {
                path: parent.display().to_string(),
                message: format!("cannot create the folder: {e}"),
            })?;
        }
        let shown = path.display().to_string();
        let sql = |source| StoreError::Sqlite {
            path: shown.clone(),
            source,
        };
        if path.exists() {
            let mut header = [0u8; 16];
            let ok = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
                .is_ok();
            let empty = std::fs::metadata(path)
                .map(|m| m.len() == 0)
                .unwrap_or(false);
            if !empty && (!ok || &header != b"SQLite format 3\0") {
                return Err(StoreError::Invalid {
                    path: shown,
                    message: "not an SQLite database (refusing to touch it)".into(),
                });
            }
        }
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        set_wal_mode(&conn).map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn invalid(&self, message: String) -> StoreError {
        StoreError::Invalid {
            path: self.path.display().to_string(),
            message,
        }
    }

    fn migrate(&mut self) -> Result<()> {
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let has = |tx: &rusqlite::Transaction, table: &str| -> rusqlite::Result<bool> {
            tx.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?1",
                [table],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        };
        if !has(&tx, "studies").map_err(err)? {
            let other: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(err)?;
            if other > 0 {
                return Err(StoreError::Invalid {
                    path: self.path.display().to_string(),
                    message:
                        "an SQLite database, but not an Optuna study file (refusing to touch it)"
                            .into(),
                });
            }
            tx.execute_batch(OPTUNA_SCHEMA).map_err(err)?;
        } else {
            let version: Option<i64> = tx
                .query_row(
                    "SELECT schema_version FROM version_info WHERE version_info_id = 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?
                .flatten();
            if version != Some(12) {
                return Err(StoreError::Invalid {
                    path: self.path.display().to_string(),
                    message: format!(
                        "Optuna schema version {version:?}; rnnsweep reads version 12 (Optuna 5.0)"
                    ),
                });
            }
        }
        let applied: usize = if has(&tx, "rnnsweep_meta").map_err(err)? {
            tx.query_row(
                "SELECT value FROM rnnsweep_meta WHERE key='schema_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(err)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
        } else {
            0
        };
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Invalid {
                path: self.path.display().to_string(),
                message: format!(
                    "written by a newer rnnsweep (schema {applied}, this one knows {})",
                    MIGRATIONS.len()
                ),
            });
        }
        for m in &MIGRATIONS[applied..] {
            tx.execute_batch(m).map_err(err)?;
        }
        if applied < MIGRATIONS.len() {
            tx.execute(
                "INSERT OR REPLACE INTO rnnsweep_meta (key, value) VALUES ('schema_version', ?1)",
                [MIGRATIONS.len().to_string()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn attrs(&self, table: &str, id_column: &str, id: i64) -> Result<BTreeMap<String, Value>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT key, value_json FROM {table} WHERE {id_column} = ?1"
            ))
            .map_err(self.err())?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.err())?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (k, v) = row.map_err(self.err())?;
            out.insert(k, serde_json::from_str(&v).unwrap_or(Value::String(v)));
        }
        Ok(out)
    }

    fn set_attr(
        &mut self,
        table: &str,
        id_column: &str,
        id: i64,
        key: &str,
        value: &Value,
    ) -> Result<()> {
        self.conn
            .execute(
                &format!("INSERT INTO {table} ({id_column}, key, value_json) VALUES (?1, ?2, ?3) ON CONFLICT ({id_column}, key) DO UPDATE SET value_json = excluded.value_json"),
                params![id, key, value.to_string()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn load_trials(conn: &Connection, study_id: i64) -> rusqlite::Result<Vec<TrialRecord>> {
        Self::load_trials_matching(conn, study_id, None)
    }

    /// The study's trials, or only the one whose trial id is `only`.
    fn load_trials_matching(
        conn: &Connection,
        study_id: i64,
        only: Option<i64>,
    ) -> rusqlite::Result<Vec<TrialRecord>> {
        let only = only.unwrap_or(-1);
        let mut trials: Vec<TrialRecord> = Vec::new();
        let mut stmt = conn.prepare_cached(
            "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials WHERE study_id = ?1 AND (?2 < 0 OR trial_id = ?2) ORDER BY number",
        )?;
        let rows = stmt.query_map(params![study_id, only], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut index = std::collections::HashMap::new();
        for row in rows {
            let (trial_id, number, state, start, complete) = row?;
            index.insert(trial_id, trials.len());
            trials.push(TrialRecord {
                trial_id,
                number,
                state: TrialState::parse(&state).unwrap_or(TrialState::Fail),
                params: BTreeMap::new(),
                value: None,
                intermediate: Vec::new(),
                user_attrs: BTreeMap::new(),
                system_attrs: BTreeMap::new(),
                datetime_start: start,
                datetime_complete: complete,
            });
        }
        let by_study = "trial_id IN (SELECT trial_id FROM trials WHERE study_id = ?1 AND (?2 < 0 OR trial_id = ?2))";
        let mut stmt = conn.prepare_cached(&format!("SELECT trial_id, param_name, param_value, distribution_json FROM trial_params WHERE {by_study}"))?;
        for row in stmt.query_map(params![study_id, only], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })? {
            let (id, name, internal, distribution_json) = row?;
            if let Some(&i) = index.get(&id) {
                trials[i].params.insert(
                    name,
                    StoredParam {
                        internal,
                        distribution_json,
                    },
                );
            }
        }
        let mut stmt = conn.prepare_cached(&format!("SELECT trial_id, value, value_type FROM trial_values WHERE objective = 0 AND {by_study}"))?;
        for row in stmt.query_map(params![study_id, only], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<f64>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })? {
            let (id, v, t) = row?;
            if let Some(&i) = index.get(&id) {
                trials[i].value = match t.as_str() {
                    "INF_POS" => Some(f64::INFINITY),
                    "INF_NEG" => Some(f64::NEG_INFINITY),
                    _ => v,
                };
            }
        }
        let mut stmt = conn.prepare_cached(&format!("SELECT trial_id, step, intermediate_value FROM trial_intermediate_values WHERE {by_study} ORDER BY step"))?;
        for row in stmt.query_map(params![study_id, only], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<f64>>(2)?,
            ))
        })? {
            let (id, step, v) = row?;
            if let Some(&i) = index.get(&id) {
                trials[i].intermediate.push((step, v));
            }
        }
        for (table, user) in [
            ("trial_user_attributes", true),
            ("trial_system_attributes", false),
        ] {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT trial_id, key, value_json FROM {table} WHERE {by_study}"
            ))?;
            for row in stmt.query_map(params![study_id, only], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })? {
                let (id, k, v) = row?;
                if let Some(&i) = index.get(&id) {
                    let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
                    let map = if user {
                        &mut trials[i].user_attrs
                    } else {
                        &mut trials[i].system_attrs
                    };
                    map.insert(k, value);
                }
            }
        }
        Ok(trials)
    }

    fn insert_params(
        tx: &Connection,
        trial_id: i64,
        params: &BTreeMap<String, StoredParam>,
    ) -> rusqlite::Result<()> {
        for (name, p) in params {
            tx.execute(
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES (?1, ?2, ?3, ?4)",
                params![trial_id, name, p.internal, p.distribution_json],
            )?;
        }
        Ok(())
    }

    /// Fails a RUNNING trial with `reason` and queues its parameters again as WAITING trial
    /// `number`, remembering where its checkpoint lives; returns the new trial's id.
    fn requeue(
        tx: &Connection,
        study_id: i64,
        t: &TrialRecord,
        number: i64,
        reason: &str,
        now: &str,
        attrs: &BTreeMap<String, Value>,
    ) -> rusqlite::Result<i64> {
        Self::fail_trial(tx, t.trial_id, reason, now)?;
        Self::put_attr(
            tx,
            "trial_system_attributes",
            t.trial_id,
            keys::REQUEUED_AS,
            &Value::from(number),
        )?;
        tx.execute(
            "INSERT INTO trials (number, study_id, state) VALUES (?1, ?2, 'WAITING')",
            params![number, study_id],
        )?;
        let new_id = tx.last_insert_rowid();
        for (k, v) in attrs {
            Self::put_attr(tx, "trial_system_attributes", new_id, k, v)?;
        }
        Ok(new_id)
    }

    fn fail_trial(tx: &Connection, trial_id: i64, reason: &str, now: &str) -> rusqlite::Result<()> {
        tx.execute(
            "UPDATE trials SET state = 'FAIL', datetime_complete = ?2 WHERE trial_id = ?1",
            params![trial_id, now],
        )?;
        Self::put_attr(
            tx,
            "trial_system_attributes",
            trial_id,
            keys::FAIL_REASON,
            &Value::from(reason),
        )
    }

    fn put_attr(
        tx: &Connection,
        table: &str,
        trial_id: i64,
        key: &str,
        value: &Value,
    ) -> rusqlite::Result<()> {
        tx.execute(
            &format!("INSERT INTO {table} (trial_id, key, value_json) VALUES (?1, ?2, ?3) ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json"),
            params![trial_id, key, value.to_string()],
        )?;
        Ok(())
    }

    fn upsert_heartbeat(conn: &Connection, trial_id: i64, now: &str) -> rusqlite::Result<()> {
        conn.execute(
            "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?1, ?2) ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat",
            params![trial_id, now],
        )?;
        Ok(())
    }
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

impl Store for SqliteStore {
    fn open_study(
        &mut self,
        name: &str,
        direction: Direction,
        user_attrs: &BTreeMap<String, Value>,
        system_attrs: &BTreeMap<String, Value>,
    ) -> Result<i64> {
        if let Some(id) = self.study_id(name)? {
            let stored: String = self
                .conn
                .query_row(
                    "SELECT direction FROM study_directions WHERE study_id = ?1 AND objective = 0",
                    [id],
                    |r| r.get(0),
                )
                .map_err(self.err())?;
            if stored != direction_str(direction) {
                return Err(self.invalid(format!(
                    "study `{name}` was created to {stored} its objective; the spec asks to {}",
                    direction_str(direction)
                )));
            }
            return Ok(id);
        }
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "INSERT OR IGNORE INTO studies (study_name) VALUES (?1)",
            [name],
        )
        .map_err(err)?;
        let id: i64 = tx
            .query_row(
                "SELECT study_id FROM studies WHERE study_name = ?1",
                [name],
                |r| r.get(0),
            )
            .map_err(err)?;
        tx.execute(
            "INSERT OR IGNORE INTO study_directions (direction, study_id, objective) VALUES (?1, ?2, 0)",
            params![direction_str(direction), id],
        )
        .map_err(err)?;
        for (table, attrs) in [
            ("study_user_attributes", user_attrs),
            ("study_system_attributes", system_attrs),
        ] {
            for (k, v) in attrs {
                tx.execute(
                    &format!("INSERT OR IGNORE INTO {table} (study_id, key, value_json) VALUES (?1, ?2, ?3)"),
                    params![id, k, v.to_string()],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(id)
    }

    fn study_id(&self, name: &str) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT study_id FROM studies WHERE study_name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    fn studies(&self) -> Result<Vec<StudySummary>> {
        let mut stmt = self
            .conn
            .prepare("SELECT s.study_id, s.study_name, d.direction FROM studies s JOIN study_directions d ON d.study_id = s.study_id AND d.objective = 0 ORDER BY s.study_id")
            .map_err(self.err())?;
        let rows: Vec<(i64, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err())?;
        rows.into_iter()
            .map(|(study_id, name, dir)| summarize(study_id, name, &dir, self.trials(study_id)?))
            .collect()
    }

    fn study_user_attrs(&self, study_id: i64) -> Result<BTreeMap<String, Value>> {
        self.attrs("study_user_attributes", "study_id", study_id)
    }

    fn study_system_attrs(&self, study_id: i64) -> Result<BTreeMap<String, Value>> {
        self.attrs("study_system_attributes", "study_id", study_id)
    }

    fn set_study_system_attr(&mut self, study_id: i64, key: &str, value: &Value) -> Result<()> {
        self.set_attr("study_system_attributes", "study_id", study_id, key, value)
    }

    fn set_study_user_attr(&mut self, study_id: i64, key: &str, value: &Value) -> Result<()> {
        self.set_attr("study_user_attributes", "study_id", study_id, key, value)
    }

    fn trials(&self, study_id: i64) -> Result<Vec<TrialRecord>> {
        Self::load_trials(&self.conn, study_id).map_err(self.err())
    }

    fn recover_stale(
        &mut self,
        study_id: i64,
        grace: Duration,
        max_retries: usize,
    ) -> Result<Vec<Recovered>> {
        let err = sql_error(&self.path);
        let now = SystemTime::now();
        let cutoff = timestamp(now.checked_sub(grace).unwrap_or(UNIX_EPOCH));
        let now = timestamp(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let stale: Vec<i64> = {
            let mut stmt = tx
                .prepare(
                    "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id
                     WHERE t.study_id = ?1 AND t.state = 'RUNNING' AND COALESCE(h.heartbeat, t.datetime_start, '') < ?2
                     ORDER BY t.number",
                )
                .map_err(err)?;
            let ids = stmt
                .query_map(params![study_id, cutoff], |r| r.get(0))
                .map_err(err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(err)?;
            ids
        };
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let all = Self::load_trials(&tx, study_id).map_err(err)?;
        let mut next_number = all.iter().map(|t| t.number + 1).max().unwrap_or(0);
        let mut requeued = Vec::new();
        for id in stale {
            let Some(t) = all.iter().find(|t| t.trial_id == id) else {
                continue;
            };
            match stale_action(t, grace, max_retries, next_number) {
                StaleAction::Requeue(reason) => {
                    let attrs = requeue_attrs(t, true, &BTreeMap::new());
                    Self::requeue(&tx, study_id, t, next_number, &reason, &now, &attrs)
                        .map_err(err)?;
                    requeued.push(Recovered {
                        failed: t.number,
                        queued: Some(next_number),
                    });
                    next_number += 1;
                }
                StaleAction::GiveUp(reason) => {
                    Self::fail_trial(&tx, t.trial_id, &reason, &now).map_err(err)?;
                    Self::put_attr(
                        &tx,
                        "trial_user_attributes",
                        t.trial_id,
                        keys::RETRY_HISTORY,
                        &given_up_history(t),
                    )
                    .map_err(err)?;
                    requeued.push(Recovered {
                        failed: t.number,
                        queued: None,
                    });
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(requeued)
    }

    fn claim(
        &mut self,
        study_id: i64,
        run_cap: usize,
        history: bool,
        sample: &mut ParamSource,
    ) -> Result<Claim> {
        let err = sql_error(&self.path);
        let now = timestamp(SystemTime::now());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        // Counting and finding the queue in SQL keeps a claim cheap in a study of 10,000 trials.
        let (busy, next_number): (i64, i64) = tx
            .query_row(
                "SELECT COALESCE(SUM(state IN ('COMPLETE', 'PRUNED', 'RUNNING')), 0), COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = ?1",
                [study_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err)?;
        if busy as usize >= run_cap {
            return Ok(Claim::CapReached);
        }
        let waiting: Option<i64> = tx
            .query_row(
                "SELECT trial_id FROM trials WHERE study_id = ?1 AND state = 'WAITING' ORDER BY number LIMIT 1",
                [study_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        // A queued trial's values are checked against the space by the caller, which owns it.
        let trial_id = if let Some(id) = waiting {
            tx.execute(
                "UPDATE trials SET state = 'RUNNING', datetime_start = ?2 WHERE trial_id = ?1",
                params![id, now],
            )
            .map_err(err)?;
            id
        } else {
            let all = if history {
                Self::load_trials(&tx, study_id).map_err(err)?
            } else {
                Vec::new()
            };
            let Some(params) = sample(&all, next_number) else {
                return Ok(Claim::Exhausted);
            };
            tx.execute(
                "INSERT INTO trials (number, study_id, state, datetime_start) VALUES (?1, ?2, 'RUNNING', ?3)",
                params![next_number, study_id, now],
            )
            .map_err(err)?;
            let id = tx.last_insert_rowid();
            Self::insert_params(&tx, id, &params).map_err(err)?;
            id
        };
        Self::upsert_heartbeat(&tx, trial_id, &now).map_err(err)?;
        let record = Self::load_trials_matching(&tx, study_id, Some(trial_id))
            .map_err(err)?
            .pop()
            .ok_or_else(|| StoreError::Invalid {
                path: self.path.display().to_string(),
                message: "claimed trial vanished".into(),
            })?;
        tx.commit().map_err(err)?;
        Ok(Claim::Trial(record))
    }

    fn fail_and_requeue(
        &mut self,
        study_id: i64,
        trial_id: i64,
        reason: &str,
        extra: &BTreeMap<String, Value>,
    ) -> Result<i64> {
        let err = sql_error(&self.path);
        let now = timestamp(SystemTime::now());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let all = Self::load_trials(&tx, study_id).map_err(err)?;
        let t = all
            .iter()
            .find(|t| t.trial_id == trial_id && t.state == TrialState::Running)
            .ok_or_else(|| StoreError::Invalid {
                path: self.path.display().to_string(),
                message: format!("trial {trial_id} is not running"),
            })?;
        let number = all.iter().map(|t| t.number + 1).max().unwrap_or(0);
        Self::requeue(
            &tx,
            study_id,
            t,
            number,
            &format!("{reason}; re-queued as trial {number}"),
            &now,
            &requeue_attrs(t, false, extra),
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(number)
    }

    fn set_trial_params(
        &mut self,
        trial_id: i64,
        params: &BTreeMap<String, StoredParam>,
    ) -> Result<()> {
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute("DELETE FROM trial_params WHERE trial_id = ?1", [trial_id])
            .map_err(err)?;
        Self::insert_params(&tx, trial_id, params).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn enqueue(&mut self, study_id: i64, system_attrs: &BTreeMap<String, Value>) -> Result<i64> {
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let number: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = ?1",
                [study_id],
                |r| r.get(0),
            )
            .map_err(err)?;
        tx.execute(
            "INSERT INTO trials (number, study_id, state) VALUES (?1, ?2, 'WAITING')",
            params![number, study_id],
        )
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        for (k, v) in system_attrs {
            Self::put_attr(&tx, "trial_system_attributes", id, k, v).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(number)
    }

    fn heartbeat(&mut self, trial_id: i64) -> Result<()> {
        Self::upsert_heartbeat(&self.conn, trial_id, &timestamp(SystemTime::now()))
            .map_err(self.err())
    }

    fn report_epoch(
        &mut self,
        trial_id: i64,
        step: i64,
        objective: Option<f64>,
        metrics: &Value,
    ) -> Result<()> {
        let err = sql_error(&self.path);
        let tx = self.conn.transaction().map_err(err)?;
        if let Some(v) = objective {
            let (kind, value) = value_type(v);
            tx.execute(
                "INSERT OR REPLACE INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES (?1, ?2, ?3, ?4)",
                params![trial_id, step, value, kind],
            )
            .map_err(err)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO rnnsweep_epochs (trial_id, epoch, metrics_json) VALUES (?1, ?2, ?3)",
            params![trial_id, step, metrics.to_string()],
        )
        .map_err(err)?;
        Self::upsert_heartbeat(&tx, trial_id, &timestamp(SystemTime::now())).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn set_trial_user_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<()> {
        self.set_attr("trial_user_attributes", "trial_id", trial_id, key, value)
    }

    fn set_trial_system_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<()> {
        self.set_attr("trial_system_attributes", "trial_id", trial_id, key, value)
    }

    fn finish(&mut self, trial_id: i64, state: TrialState, value: Option<f64>) -> Result<()> {
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let current: String = tx
            .query_row(
                "SELECT state FROM trials WHERE trial_id = ?1",
                [trial_id],
                |r| r.get(0),
            )
            .map_err(err)?;
        if current != "RUNNING" {
            return Err(StoreError::Invalid {
                path: self.path.display().to_string(),
                message: format!(
                    "trial {trial_id} is {current}; a finished trial cannot be updated"
                ),
            });
        }
        if let Some(v) = value {
            let (kind, v) = value_type(v);
            tx.execute(
                "INSERT OR REPLACE INTO trial_values (trial_id, objective, value, value_type) VALUES (?1, 0, ?2, ?3)",
                params![trial_id, v, kind],
            )
            .map_err(err)?;
        }
        tx.execute(
            "UPDATE trials SET state = ?2, datetime_complete = ?3 WHERE trial_id = ?1",
            params![trial_id, state.as_str(), timestamp(SystemTime::now())],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    fn import_trial(
        &mut self,
        study_id: i64,
        trial: &TrialRecord,
        epochs: &[(i64, Value)],
    ) -> Result<()> {
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![trial.number, study_id, trial.state.as_str(), trial.datetime_start, trial.datetime_complete],
        )
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        Self::insert_params(&tx, id, &trial.params).map_err(err)?;
        if let Some(v) = trial.value {
            let (kind, v) = value_type(v);
            tx.execute("INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?1, 0, ?2, ?3)", params![id, v, kind]).map_err(err)?;
        }
        for (step, v) in &trial.intermediate {
            let (kind, v) = v.map_or(("NAN", None), value_type);
            tx.execute(
                "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES (?1, ?2, ?3, ?4)",
                params![id, step, v, kind],
            )
            .map_err(err)?;
        }
        for (table, attrs) in [
            ("trial_user_attributes", &trial.user_attrs),
            ("trial_system_attributes", &trial.system_attrs),
        ] {
            for (k, v) in attrs {
                tx.execute(
                    &format!("INSERT INTO {table} (trial_id, key, value_json) VALUES (?1, ?2, ?3)"),
                    params![id, k, v.to_string()],
                )
                .map_err(err)?;
            }
        }
        for (e, m) in epochs {
            tx.execute(
                "INSERT INTO rnnsweep_epochs (trial_id, epoch, metrics_json) VALUES (?1, ?2, ?3)",
                params![id, e, m.to_string()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn epochs(&self, trial_id: i64) -> Result<Vec<(i64, Value)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT epoch, metrics_json FROM rnnsweep_epochs WHERE trial_id = ?1 ORDER BY epoch")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([trial_id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (e, m) = row.map_err(self.err())?;
            out.push((e, serde_json::from_str(&m).unwrap_or(Value::Null)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (dir, s)
    }

    fn one_param(v: f64) -> BTreeMap<String, StoredParam> {
        BTreeMap::from([(
            "lr".to_string(),
            StoredParam {
                internal: v,
                distribution_json: r#"{"name":"FloatDistribution","attributes":{"step":null,"low":0.0,"high":1.0,"log":false}}"#.into(),
            },
        )])
    }

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

    #[test]
    fn trials_round_trip_through_the_optuna_tables() {
        let (_d, mut s) = store();
        let attrs = BTreeMap::from([("spec".to_string(), Value::from("name: x"))]);
        let study = s
            .open_study("x", Direction::Maximize, &attrs, &BTreeMap::new())
            .unwrap();
        assert_eq!(
            s.open_study("x", Direction::Maximize, &BTreeMap::new(), &BTreeMap::new())
                .unwrap(),
            study
        );
        let e = s
            .open_study("x", Direction::Minimize, &BTreeMap::new(), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("created to MAXIMIZE"), "{e}");
        let Claim::Trial(t) = s
            .claim(study, 5, true, &mut |_, n| {
                Some(one_param(0.1 * n as f64 + 0.5))
            })
            .unwrap()
        else {
            panic!()
        };
        assert_eq!((t.number, t.state), (0, TrialState::Running));
        s.report_epoch(
            t.trial_id,
            1,
            Some(0.5),
            &serde_json::json!({"val_f1": 0.5}),
        )
        .unwrap();
        s.report_epoch(
            t.trial_id,
            2,
            Some(f64::NAN),
            &serde_json::json!({"val_f1": null}),
        )
        .unwrap();
        s.set_trial_user_attr(t.trial_id, "device", &Value::from("cpu"))
            .unwrap();
        s.finish(t.trial_id, TrialState::Complete, Some(0.75))
            .unwrap();
        let e = s
            .finish(t.trial_id, TrialState::Fail, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be updated"), "{e}");
        let back = &s.trials(study).unwrap()[0];
        assert_eq!(back.state, TrialState::Complete);
        assert_eq!(back.value, Some(0.75));
        assert_eq!(back.params["lr"].internal, 0.5);
        assert_eq!(back.intermediate, vec![(1, Some(0.5)), (2, None)]);
        assert_eq!(back.user_attrs["device"], "cpu");
        assert_eq!(s.epochs(t.trial_id).unwrap()[0].1["val_f1"], 0.5);
        assert_eq!(s.study_user_attrs(study).unwrap()["spec"], "name: x");
        let summary = &s.studies().unwrap()[0];
        assert_eq!(
            (
                summary.name.as_str(),
                summary.best,
                summary.counts["COMPLETE"]
            ),
            ("x", Some(0.75), 1)
        );
    }

    #[test]
    fn claims_stop_at_run_cap_and_stale_trials_are_requeued() {
        let (_d, mut s) = store();
        let study = s
            .open_study("x", Direction::Minimize, &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let mut sampler = |_: &[TrialRecord], n: i64| Some(one_param(n as f64 / 10.0));
        let Claim::Trial(a) = s.claim(study, 2, true, &mut sampler).unwrap() else {
            panic!()
        };
        let Claim::Trial(_) = s.claim(study, 2, true, &mut sampler).unwrap() else {
            panic!()
        };
        assert!(matches!(
            s.claim(study, 2, true, &mut sampler).unwrap(),
            Claim::CapReached
        ));
        // Both heartbeats are fresh: nothing is stale yet.
        assert!(s
            .recover_stale(study, Duration::from_secs(60), 2)
            .unwrap()
            .is_empty());
        s.finish(a.trial_id, TrialState::Complete, Some(1.0))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let requeued = s
            .recover_stale(study, Duration::from_millis(10), 2)
            .unwrap();
        assert_eq!(
            requeued,
            vec![Recovered {
                failed: 1,
                queued: Some(2)
            }]
        );
        let trials = s.trials(study).unwrap();
        assert_eq!(trials[1].state, TrialState::Fail);
        assert!(trials[1].system_attrs["fail_reason"]
            .as_str()
            .unwrap()
            .starts_with("heartbeat stopped"));
        assert_eq!(trials[2].state, TrialState::Waiting);
        // The waiting trial is claimed before anything new is sampled, with the same params.
        let Claim::Trial(c) = s
            .claim(study, 2, true, &mut |_, _| {
                panic!("must reuse the queued trial")
            })
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(c.number, 2);
        // Optuna's enqueue form: the user's values by name; the caller turns them into params.
        assert_eq!(
            c.system_attrs["fixed_params"],
            serde_json::json!({"lr": 0.1})
        );
        assert!(c.params.is_empty());
        assert_eq!(c.system_attrs["rnnsweep:resume_from"], 1);
        assert_eq!(c.system_attrs["failed_trial"], 1);
        assert_eq!(c.system_attrs["retry_history"], serde_json::json!([1]));
    }

    #[test]
    fn a_trial_whose_driver_keeps_dying_stops_after_max_retries() {
        let (_d, mut s) = store();
        let study = s
            .open_study("x", Direction::Minimize, &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let Claim::Trial(first) = s
            .claim(study, 10, true, &mut |_, _| Some(one_param(0.5)))
            .unwrap()
        else {
            panic!()
        };
        let mut attempts = vec![first.number];
        // Each attempt dies (no heartbeat); two retries are allowed, the third death is final.
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let r = s
                .recover_stale(study, Duration::from_millis(10), 2)
                .unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].failed, *attempts.last().unwrap());
            let Some(next) = r[0].queued else { break };
            let Claim::Trial(t) = s
                .claim(study, 10, true, &mut |_, _| {
                    panic!("the queued trial comes first")
                })
                .unwrap()
            else {
                panic!()
            };
            assert_eq!(t.number, next);
            s.set_trial_params(t.trial_id, &one_param(0.5)).unwrap();
            attempts.push(next);
        }
        assert_eq!(attempts, vec![0, 1, 2], "the first run and two retries");
        let trials = s.trials(study).unwrap();
        assert_eq!(trials.len(), 3);
        assert!(trials.iter().all(|t| t.state == TrialState::Fail));
        let last = &trials[2];
        assert!(
            last.system_attrs["fail_reason"]
                .as_str()
                .unwrap()
                .ends_with("not re-queued: its driver died 3 times (max_retries 2)"),
            "{:?}",
            last.system_attrs
        );
        assert_eq!(
            last.user_attrs["retry_history"],
            serde_json::json!([0, 1, 2])
        );
        assert_eq!(trials[0].system_attrs["rnnsweep:requeued_as"], 1);
    }

    #[test]
    fn enqueued_trials_take_the_next_number_and_keep_their_attributes() {
        let (_d, mut s) = store();
        let study = s
            .open_study("x", Direction::Minimize, &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let attrs = BTreeMap::from([("fixed_params".to_string(), serde_json::json!({"lr": 0.3}))]);
        assert_eq!(s.enqueue(study, &attrs).unwrap(), 0);
        assert_eq!(s.enqueue(study, &attrs).unwrap(), 1);
        let trials = s.trials(study).unwrap();
        assert!(trials.iter().all(|t| t.state == TrialState::Waiting));
        assert_eq!(trials[1].system_attrs["fixed_params"]["lr"], 0.3);
    }

    #[test]
    fn foreign_files_are_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.db");
        std::fs::write(&p, "just text, not a database").unwrap();
        let e = SqliteStore::open(&p).err().unwrap().to_string();
        assert!(
            e.ends_with("not an SQLite database (refusing to touch it)"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "just text, not a database"
        );
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER);")
            .unwrap();
        let e = SqliteStore::open(&other).err().unwrap().to_string();
        assert!(e.contains("not an Optuna study file"), "{e}");
    }
}
