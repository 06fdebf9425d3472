//! Every storage algorithm once, over the small seam in which SQLite and PostgreSQL differ
//! ([`Conn`]: placeholders and value binding, the database clock, timestamps as text, the
//! study lock). SQL is written with `?1`-style placeholders and portable syntax (`ON
//! CONFLICT`, `RETURNING`), which both databases speak.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use rnnsweep_model::metrics::Direction;
use serde_json::Value;

use super::recovery::{given_up_history, requeue_attrs, stale_action, StaleAction};
use super::{
    best_of, direction_str, keys, value_type, Claim, ParamSource, Recovered, Result, Store,
    StoreError, StoredParam, StudySummary, TrialRecord, TrialState,
};

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Int(i64),
    Real(Option<f64>),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Real(Some(v))
    }
}

impl From<Option<f64>> for Arg {
    fn from(v: Option<f64>) -> Self {
        Arg::Real(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Cell {
    pub fn int(&self) -> Option<i64> {
        match self {
            Cell::Int(v) => Some(*v),
            Cell::Real(v) => Some(*v as i64),
            _ => None,
        }
    }

    pub fn real(&self) -> Option<f64> {
        match self {
            Cell::Real(v) => Some(*v),
            Cell::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<String> {
        match self {
            Cell::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

pub type Row = Vec<Cell>;

/// What a dialect provides: a connection that runs SQL with `?N` placeholders, transactions,
/// and the few fragments in which the two databases differ.
pub trait Conn {
    /// Where the store lives, for messages (a password is never shown).
    fn location(&self) -> String;
    /// Starts a transaction; `write` ones are exclusive where the database needs it.
    fn begin(&mut self, write: bool) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    fn rollback(&mut self);
    fn exec(&mut self, sql: &str, args: &[Arg]) -> Result<u64>;
    fn query(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>>;
    /// The database clock as Optuna's naive UTC datetime.
    fn now(&self) -> &'static str;
    /// The datetime `?n` seconds (a real) before now.
    fn seconds_ago(&self, n: usize) -> String;
    /// A datetime column as Optuna's text (`YYYY-MM-DD HH:MM:SS.ffffff`).
    fn datetime_out(&self, column: &str) -> String;
    /// Placeholder `?n` (text) as a datetime.
    fn datetime_in(&self, n: usize) -> String;
    /// A statement that locks the study `?1` until the transaction ends, so drivers on other
    /// machines claim one at a time; `None` where a write transaction already excludes them.
    fn lock_study(&self) -> Option<&'static str>;
    /// What locks a row read for update (`FOR UPDATE`), where the database has it.
    fn for_update(&self) -> &'static str;
}

/// A [`Store`] over any [`Conn`]: the one implementation of every storage algorithm.
pub struct SqlStore<C: Conn> {
    /// `Store`'s reads take `&self`; a connection needs `&mut` to run anything.
    conn: RefCell<C>,
}

fn one(rows: Vec<Row>) -> Option<Row> {
    rows.into_iter().next()
}

fn cell(row: &Row, i: usize) -> &Cell {
    row.get(i).unwrap_or(&Cell::Null)
}

impl<C: Conn> SqlStore<C> {
    pub(crate) fn new(conn: C) -> Self {
        Self {
            conn: RefCell::new(conn),
        }
    }

    fn invalid(&self, message: String) -> StoreError {
        StoreError::Invalid {
            path: self.conn.borrow().location(),
            message,
        }
    }

    fn run<T>(&self, write: bool, f: impl FnOnce(&mut C) -> Result<T>) -> Result<T> {
        let mut c = self.conn.borrow_mut();
        c.begin(write)?;
        match f(&mut c) {
            Ok(v) => {
                c.commit()?;
                Ok(v)
            }
            Err(e) => {
                c.rollback();
                Err(e)
            }
        }
    }

    fn read<T>(&self, f: impl FnOnce(&mut C) -> Result<T>) -> Result<T> {
        self.run(false, f)
    }

    fn write<T>(&self, f: impl FnOnce(&mut C) -> Result<T>) -> Result<T> {
        self.run(true, f)
    }
}

fn lock(c: &mut impl Conn, study_id: i64) -> Result<()> {
    if let Some(sql) = c.lock_study() {
        c.query(sql, &[study_id.into()])?;
    }
    Ok(())
}

fn attrs(
    c: &mut impl Conn,
    table: &str,
    id_column: &str,
    id: i64,
) -> Result<BTreeMap<String, Value>> {
    let rows = c.query(
        &format!("SELECT key, value_json FROM {table} WHERE {id_column} = ?1"),
        &[id.into()],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let v = cell(r, 1).text().unwrap_or_default();
            (
                cell(r, 0).text().unwrap_or_default(),
                serde_json::from_str(&v).unwrap_or(Value::String(v)),
            )
        })
        .collect())
}

fn put_attr(
    c: &mut impl Conn,
    table: &str,
    id_column: &str,
    id: i64,
    key: &str,
    value: &Value,
) -> Result<()> {
    c.exec(
        &format!("INSERT INTO {table} ({id_column}, key, value_json) VALUES (?1, ?2, ?3) ON CONFLICT ({id_column}, key) DO UPDATE SET value_json = excluded.value_json"),
        &[id.into(), key.into(), value.to_string().into()],
    )?;
    Ok(())
}

fn put_trial_attrs(
    c: &mut impl Conn,
    table: &str,
    trial_id: i64,
    attrs: &BTreeMap<String, Value>,
) -> Result<()> {
    for (k, v) in attrs {
        put_attr(c, table, "trial_id", trial_id, k, v)?;
    }
    Ok(())
}

/// The study's trials, or only the one whose id is `only` (looked up by key, so reading one
/// trial costs the same in a study of any size).
fn load<C: Conn>(c: &mut C, study_id: i64, only: Option<i64>) -> Result<Vec<TrialRecord>> {
    let (args, which, detail_args, by_trial): (Vec<Arg>, &str, Vec<Arg>, &str) = match only {
        Some(id) => (
            vec![study_id.into(), id.into()],
            "study_id = ?1 AND trial_id = ?2",
            vec![id.into()],
            "trial_id = ?1",
        ),
        None => (
            vec![study_id.into()],
            "study_id = ?1",
            vec![study_id.into()],
            "trial_id IN (SELECT trial_id FROM trials WHERE study_id = ?1)",
        ),
    };
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let sql = format!(
        "SELECT trial_id, number, state, {}, {} FROM trials WHERE {which} ORDER BY number",
        c.datetime_out("datetime_start"),
        c.datetime_out("datetime_complete")
    );
    for r in c.query(&sql, &args)? {
        let trial_id = cell(&r, 0).int().unwrap_or(-1);
        index.insert(trial_id, trials.len());
        trials.push(TrialRecord {
            trial_id,
            number: cell(&r, 1).int().unwrap_or(0),
            state: cell(&r, 2)
                .text()
                .and_then(|s| TrialState::parse(&s))
                .unwrap_or(TrialState::Fail),
            params: BTreeMap::new(),
            value: None,
            intermediate: Vec::new(),
            user_attrs: BTreeMap::new(),
            system_attrs: BTreeMap::new(),
            datetime_start: cell(&r, 3).text(),
            datetime_complete: cell(&r, 4).text(),
        });
    }
    let by_study = by_trial;
    // Each detail table's rows, paired with the index of the trial they belong to.
    let rows_of = |c: &mut C, sql: String| -> Result<Vec<(usize, Row)>> {
        Ok(c.query(&sql, &detail_args)?
            .into_iter()
            .filter_map(|r| index.get(&cell(&r, 0).int().unwrap_or(-1)).map(|&i| (i, r)))
            .collect())
    };
    let params = rows_of(c, format!("SELECT trial_id, param_name, param_value, distribution_json FROM trial_params WHERE {by_study}"))?;
    let values = rows_of(c, format!("SELECT trial_id, value, value_type FROM trial_values WHERE objective = 0 AND {by_study}"))?;
    let steps = rows_of(c, format!("SELECT trial_id, step, intermediate_value FROM trial_intermediate_values WHERE {by_study} ORDER BY step"))?;
    let user = rows_of(
        c,
        format!("SELECT trial_id, key, value_json FROM trial_user_attributes WHERE {by_study}"),
    )?;
    let system = rows_of(
        c,
        format!("SELECT trial_id, key, value_json FROM trial_system_attributes WHERE {by_study}"),
    )?;
    for (i, r) in params {
        trials[i].params.insert(
            cell(&r, 1).text().unwrap_or_default(),
            StoredParam {
                internal: cell(&r, 2).real().unwrap_or(0.0),
                distribution_json: cell(&r, 3).text().unwrap_or_default(),
            },
        );
    }
    for (i, r) in values {
        trials[i].value = match cell(&r, 2).text().as_deref() {
            Some("INF_POS") => Some(f64::INFINITY),
            Some("INF_NEG") => Some(f64::NEG_INFINITY),
            _ => cell(&r, 1).real(),
        };
    }
    for (i, r) in steps {
        trials[i]
            .intermediate
            .push((cell(&r, 1).int().unwrap_or(0), cell(&r, 2).real()));
    }
    for (rows, is_user) in [(user, true), (system, false)] {
        for (i, r) in rows {
            let v = cell(&r, 2).text().unwrap_or_default();
            let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
            let map = if is_user {
                &mut trials[i].user_attrs
            } else {
                &mut trials[i].system_attrs
            };
            map.insert(cell(&r, 1).text().unwrap_or_default(), value);
        }
    }
    Ok(trials)
}

fn load_one(c: &mut impl Conn, study_id: i64, trial_id: i64) -> Result<Option<TrialRecord>> {
    Ok(load(c, study_id, Some(trial_id))?.pop())
}

fn next_number(c: &mut impl Conn, study_id: i64) -> Result<i64> {
    Ok(one(c.query(
        "SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = ?1",
        &[study_id.into()],
    )?)
    .and_then(|r| cell(&r, 0).int())
    .unwrap_or(0))
}

fn insert_params(
    c: &mut impl Conn,
    trial_id: i64,
    params: &BTreeMap<String, StoredParam>,
) -> Result<()> {
    for (name, p) in params {
        c.exec(
            "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES (?1, ?2, ?3, ?4)",
            &[trial_id.into(), name.as_str().into(), p.internal.into(), p.distribution_json.as_str().into()],
        )?;
    }
    Ok(())
}

fn insert_trial(
    c: &mut impl Conn,
    study_id: i64,
    number: i64,
    state: TrialState,
    started: bool,
) -> Result<i64> {
    let start = if started { c.now() } else { "NULL" };
    let sql = format!(
        "INSERT INTO trials (number, study_id, state, datetime_start) VALUES (?1, ?2, ?3, {start}) RETURNING trial_id"
    );
    one(c.query(
        &sql,
        &[number.into(), study_id.into(), state.as_str().into()],
    )?)
    .and_then(|r| cell(&r, 0).int())
    .ok_or_else(|| StoreError::Invalid {
        path: c.location(),
        message: "an inserted trial returned no id".into(),
    })
}

fn heartbeat(c: &mut impl Conn, trial_id: i64) -> Result<()> {
    let sql = format!(
        "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?1, {}) ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat",
        c.now()
    );
    c.exec(&sql, &[trial_id.into()])?;
    Ok(())
}

fn fail_trial(c: &mut impl Conn, trial_id: i64, reason: &str) -> Result<()> {
    let sql = format!(
        "UPDATE trials SET state = 'FAIL', datetime_complete = {} WHERE trial_id = ?1",
        c.now()
    );
    c.exec(&sql, &[trial_id.into()])?;
    put_attr(
        c,
        "trial_system_attributes",
        "trial_id",
        trial_id,
        keys::FAIL_REASON,
        &Value::from(reason),
    )
}

/// Fails RUNNING trial `t` with `reason` and queues its values again as WAITING trial `number`
/// carrying `attrs`.
fn requeue(
    c: &mut impl Conn,
    study_id: i64,
    t: &TrialRecord,
    number: i64,
    reason: &str,
    attrs: &BTreeMap<String, Value>,
) -> Result<()> {
    fail_trial(c, t.trial_id, reason)?;
    put_attr(
        c,
        "trial_system_attributes",
        "trial_id",
        t.trial_id,
        keys::REQUEUED_AS,
        &Value::from(number),
    )?;
    let new_id = insert_trial(c, study_id, number, TrialState::Waiting, false)?;
    put_trial_attrs(c, "trial_system_attributes", new_id, attrs)
}

fn insert_value(c: &mut impl Conn, trial_id: i64, v: f64) -> Result<()> {
    let (kind, v) = value_type(v);
    c.exec(
        "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?1, 0, ?2, ?3) ON CONFLICT (trial_id, objective) DO UPDATE SET value = excluded.value, value_type = excluded.value_type",
        &[trial_id.into(), v.into(), kind.into()],
    )?;
    Ok(())
}

fn insert_intermediate(c: &mut impl Conn, trial_id: i64, step: i64, v: Option<f64>) -> Result<()> {
    let (kind, v) = v.map_or(("NAN", None), value_type);
    c.exec(
        "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (trial_id, step) DO UPDATE SET intermediate_value = excluded.intermediate_value, intermediate_value_type = excluded.intermediate_value_type",
        &[trial_id.into(), step.into(), v.into(), kind.into()],
    )?;
    Ok(())
}

fn insert_epoch(c: &mut impl Conn, trial_id: i64, epoch: i64, metrics: &Value) -> Result<()> {
    c.exec(
        "INSERT INTO rnnsweep_epochs (trial_id, epoch, metrics_json) VALUES (?1, ?2, ?3) ON CONFLICT (trial_id, epoch) DO UPDATE SET metrics_json = excluded.metrics_json",
        &[trial_id.into(), epoch.into(), metrics.to_string().into()],
    )?;
    Ok(())
}

/// Counts by state and the best value, read with three small queries.
fn summary(c: &mut impl Conn, study_id: i64) -> Result<StudySummary> {
    let head = one(c.query(
        "SELECT s.study_name, d.direction FROM studies s JOIN study_directions d ON d.study_id = s.study_id AND d.objective = 0 WHERE s.study_id = ?1",
        &[study_id.into()],
    )?)
    .ok_or_else(|| StoreError::Invalid {
        path: c.location(),
        message: format!("no study with id {study_id}"),
    })?;
    let direction = if cell(&head, 1).text().as_deref() == Some("MINIMIZE") {
        Direction::Minimize
    } else {
        Direction::Maximize
    };
    let counts = c
        .query(
            "SELECT state, COUNT(*) FROM trials WHERE study_id = ?1 GROUP BY state",
            &[study_id.into()],
        )?
        .iter()
        .map(|r| {
            (
                cell(r, 0).text().unwrap_or_default(),
                cell(r, 1).int().unwrap_or(0) as usize,
            )
        })
        .collect();
    let values = c.query(
        "SELECT v.value, v.value_type FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id WHERE t.study_id = ?1 AND t.state = 'COMPLETE' AND v.objective = 0",
        &[study_id.into()],
    )?;
    let best = best_of(
        values
            .iter()
            .filter_map(|r| match cell(r, 1).text().as_deref() {
                Some("INF_POS") => Some(f64::INFINITY),
                Some("INF_NEG") => Some(f64::NEG_INFINITY),
                _ => cell(r, 0).real(),
            }),
        direction,
    );
    Ok(StudySummary {
        study_id,
        name: cell(&head, 0).text().unwrap_or_default(),
        direction,
        counts,
        best,
    })
}

fn study_id_of(c: &mut impl Conn, name: &str) -> Result<Option<i64>> {
    Ok(one(c.query(
        "SELECT study_id FROM studies WHERE study_name = ?1",
        &[name.into()],
    )?)
    .and_then(|r| cell(&r, 0).int()))
}

impl<C: Conn> Store for SqlStore<C> {
    fn open_study(
        &mut self,
        name: &str,
        direction: Direction,
        user_attrs: &BTreeMap<String, Value>,
        system_attrs: &BTreeMap<String, Value>,
    ) -> Result<i64> {
        let (id, stored) = self.write(|c| {
            // Drivers starting together may both get here: the first insert wins, the second
            // does nothing and reads the study the first made.
            c.exec("INSERT INTO studies (study_name) VALUES (?1) ON CONFLICT DO NOTHING", &[name.into()])?;
            let id = study_id_of(c, name)?.ok_or_else(|| StoreError::Invalid {
                path: c.location(),
                message: format!("study `{name}` vanished while being created"),
            })?;
            let created = c.exec(
                "INSERT INTO study_directions (direction, study_id, objective) VALUES (?1, ?2, 0) ON CONFLICT DO NOTHING",
                &[direction_str(direction).into(), id.into()],
            )? > 0;
            if created {
                for (table, attrs) in [("study_user_attributes", user_attrs), ("study_system_attributes", system_attrs)] {
                    for (k, v) in attrs {
                        c.exec(
                            &format!("INSERT INTO {table} (study_id, key, value_json) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"),
                            &[id.into(), k.as_str().into(), v.to_string().into()],
                        )?;
                    }
                }
            }
            let stored = one(c.query(
                "SELECT direction FROM study_directions WHERE study_id = ?1 AND objective = 0",
                &[id.into()],
            )?)
            .and_then(|r| cell(&r, 0).text())
            .unwrap_or_default();
            Ok((id, stored))
        })?;
        if stored != direction_str(direction) {
            return Err(self.invalid(format!(
                "study `{name}` was created to {stored} its objective; the spec asks to {}",
                direction_str(direction)
            )));
        }
        Ok(id)
    }

    fn study_id(&self, name: &str) -> Result<Option<i64>> {
        self.read(|c| study_id_of(c, name))
    }

    fn studies(&self) -> Result<Vec<StudySummary>> {
        self.read(|c| {
            let ids: Vec<i64> = c
                .query("SELECT study_id FROM studies ORDER BY study_id", &[])?
                .iter()
                .filter_map(|r| cell(r, 0).int())
                .collect();
            ids.into_iter().map(|id| summary(c, id)).collect()
        })
    }

    fn summary(&self, study_id: i64) -> Result<StudySummary> {
        self.read(|c| summary(c, study_id))
    }

    fn study_user_attrs(&self, study_id: i64) -> Result<BTreeMap<String, Value>> {
        self.read(|c| attrs(c, "study_user_attributes", "study_id", study_id))
    }

    fn study_system_attrs(&self, study_id: i64) -> Result<BTreeMap<String, Value>> {
        self.read(|c| attrs(c, "study_system_attributes", "study_id", study_id))
    }

    fn set_study_system_attr(&mut self, study_id: i64, key: &str, value: &Value) -> Result<()> {
        self.write(|c| {
            put_attr(
                c,
                "study_system_attributes",
                "study_id",
                study_id,
                key,
                value,
            )
        })
    }

    fn set_study_user_attr(&mut self, study_id: i64, key: &str, value: &Value) -> Result<()> {
        self.write(|c| put_attr(c, "study_user_attributes", "study_id", study_id, key, value))
    }

    fn trials(&self, study_id: i64) -> Result<Vec<TrialRecord>> {
        self.read(|c| load(c, study_id, None))
    }

    fn recover_stale(
        &mut self,
        study_id: i64,
        grace: Duration,
        max_retries: usize,
    ) -> Result<Vec<Recovered>> {
        self.write(|c| {
            lock(c, study_id)?;
            let sql = format!(
                "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id
                 WHERE t.study_id = ?1 AND t.state = 'RUNNING'
                   AND (COALESCE(h.heartbeat, t.datetime_start) IS NULL OR COALESCE(h.heartbeat, t.datetime_start) < {})
                 ORDER BY t.number",
                c.seconds_ago(2)
            );
            let stale: Vec<i64> = c
                .query(&sql, &[study_id.into(), grace.as_secs_f64().into()])?
                .iter()
                .filter_map(|r| cell(r, 0).int())
                .collect();
            let mut out = Vec::new();
            if stale.is_empty() {
                return Ok(out);
            }
            let mut next = next_number(c, study_id)?;
            for id in stale {
                let Some(t) = load_one(c, study_id, id)? else {
                    continue;
                };
                match stale_action(&t, grace, max_retries, next) {
                    StaleAction::Requeue(reason) => {
                        let attrs = requeue_attrs(&t, true, &BTreeMap::new());
                        requeue(c, study_id, &t, next, &reason, &attrs)?;
                        out.push(Recovered { failed: t.number, queued: Some(next) });
                        next += 1;
                    }
                    StaleAction::GiveUp(reason) => {
                        fail_trial(c, t.trial_id, &reason)?;
                        put_attr(c, "trial_user_attributes", "trial_id", t.trial_id, keys::RETRY_HISTORY, &given_up_history(&t))?;
                        out.push(Recovered { failed: t.number, queued: None });
                    }
                }
            }
            Ok(out)
        })
    }

    fn claim(
        &mut self,
        study_id: i64,
        run_cap: usize,
        history: bool,
        sample: &mut ParamSource,
    ) -> Result<Claim> {
        self.write(|c| {
            // One claim per study at a time, across every driver.
            lock(c, study_id)?;
            // Counting and finding the queue in SQL keeps a claim cheap in a study of 10,000
            // trials.
            let busy = one(c.query(
                "SELECT COUNT(*) FROM trials WHERE study_id = ?1 AND state IN ('COMPLETE', 'PRUNED', 'RUNNING')",
                &[study_id.into()],
            )?)
            .and_then(|r| cell(&r, 0).int())
            .unwrap_or(0);
            let next = next_number(c, study_id)?;
            if busy as usize >= run_cap {
                return Ok(Claim::CapReached);
            }
            let waiting = one(c.query(
                "SELECT trial_id FROM trials WHERE study_id = ?1 AND state = 'WAITING' ORDER BY number LIMIT 1",
                &[study_id.into()],
            )?)
            .and_then(|r| cell(&r, 0).int());
            // A queued trial's values are checked against the space by the caller, which owns it.
            let trial_id = match waiting {
                Some(id) => {
                    let sql = format!("UPDATE trials SET state = 'RUNNING', datetime_start = {} WHERE trial_id = ?1", c.now());
                    c.exec(&sql, &[id.into()])?;
                    id
                }
                None => {
                    let all = if history { load(c, study_id, None)? } else { Vec::new() };
                    let Some(params) = sample(&all, next) else {
                        return Ok(Claim::Exhausted);
                    };
                    let id = insert_trial(c, study_id, next, TrialState::Running, true)?;
                    insert_params(c, id, &params)?;
                    id
                }
            };
            heartbeat(c, trial_id)?;
            let record = load_one(c, study_id, trial_id)?.ok_or_else(|| StoreError::Invalid {
                path: c.location(),
                message: "claimed trial vanished".into(),
            })?;
            Ok(Claim::Trial(record))
        })
    }

    fn heartbeat(&mut self, trial_id: i64) -> Result<()> {
        self.write(|c| heartbeat(c, trial_id))
    }

    fn set_trial_params(
        &mut self,
        trial_id: i64,
        params: &BTreeMap<String, StoredParam>,
    ) -> Result<()> {
        self.write(|c| {
            c.exec(
                "DELETE FROM trial_params WHERE trial_id = ?1",
                &[trial_id.into()],
            )?;
            insert_params(c, trial_id, params)
        })
    }

    fn enqueue(&mut self, study_id: i64, system_attrs: &BTreeMap<String, Value>) -> Result<i64> {
        self.write(|c| {
            lock(c, study_id)?;
            let number = next_number(c, study_id)?;
            let id = insert_trial(c, study_id, number, TrialState::Waiting, false)?;
            put_trial_attrs(c, "trial_system_attributes", id, system_attrs)?;
            Ok(number)
        })
    }

    fn fail_and_requeue(
        &mut self,
        study_id: i64,
        trial_id: i64,
        reason: &str,
        extra: &BTreeMap<String, Value>,
    ) -> Result<i64> {
        self.write(|c| {
            lock(c, study_id)?;
            let t = load_one(c, study_id, trial_id)?
                .filter(|t| t.state == TrialState::Running)
                .ok_or_else(|| StoreError::Invalid {
                    path: c.location(),
                    message: format!("trial {trial_id} is not running"),
                })?;
            let number = next_number(c, study_id)?;
            let reason = format!("{reason}; re-queued as trial {number}");
            requeue(
                c,
                study_id,
                &t,
                number,
                &reason,
                &requeue_attrs(&t, false, extra),
            )?;
            Ok(number)
        })
    }

    fn report_epoch(
        &mut self,
        trial_id: i64,
        step: i64,
        objective: Option<f64>,
        metrics: &Value,
    ) -> Result<()> {
        self.write(|c| {
            if let Some(v) = objective {
                insert_intermediate(c, trial_id, step, Some(v))?;
            }
            insert_epoch(c, trial_id, step, metrics)?;
            heartbeat(c, trial_id)
        })
    }

    fn set_trial_user_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<()> {
        self.write(|c| put_attr(c, "trial_user_attributes", "trial_id", trial_id, key, value))
    }

    fn set_trial_system_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<()> {
        self.write(|c| {
            put_attr(
                c,
                "trial_system_attributes",
                "trial_id",
                trial_id,
                key,
                value,
            )
        })
    }

    fn finish(
        &mut self,
        trial_id: i64,
        state: TrialState,
        value: Option<f64>,
        user_attrs: &BTreeMap<String, Value>,
        system_attrs: &BTreeMap<String, Value>,
    ) -> Result<()> {
        self.write(|c| {
            let sql = format!(
                "SELECT state FROM trials WHERE trial_id = ?1{}",
                c.for_update()
            );
            let current = one(c.query(&sql, &[trial_id.into()])?)
                .and_then(|r| cell(&r, 0).text())
                .unwrap_or_else(|| "missing".into());
            if current != "RUNNING" {
                return Err(StoreError::Invalid {
                    path: c.location(),
                    message: format!(
                        "trial {trial_id} is {current}; a finished trial cannot be updated"
                    ),
                });
            }
            put_trial_attrs(c, "trial_user_attributes", trial_id, user_attrs)?;
            put_trial_attrs(c, "trial_system_attributes", trial_id, system_attrs)?;
            if let Some(v) = value {
                insert_value(c, trial_id, v)?;
            }
            let sql = format!(
                "UPDATE trials SET state = ?2, datetime_complete = {} WHERE trial_id = ?1",
                c.now()
            );
            c.exec(&sql, &[trial_id.into(), state.as_str().into()])?;
            Ok(())
        })
    }

    fn values_at(&self, study_id: i64, step: i64) -> Result<Vec<TrialRecord>> {
        self.read(|c| {
            let rows = c.query(
                "SELECT t.trial_id, t.number, t.state, v.intermediate_value FROM trials t JOIN trial_intermediate_values v ON v.trial_id = t.trial_id AND v.step = ?2 WHERE t.study_id = ?1 ORDER BY t.number",
                &[study_id.into(), step.into()],
            )?;
            Ok(rows
                .iter()
                .map(|r| TrialRecord {
                    trial_id: cell(r, 0).int().unwrap_or(-1),
                    number: cell(r, 1).int().unwrap_or(0),
                    state: cell(r, 2)
                        .text()
                        .and_then(|s| TrialState::parse(&s))
                        .unwrap_or(TrialState::Fail),
                    params: BTreeMap::new(),
                    value: None,
                    intermediate: vec![(step, cell(r, 3).real())],
                    user_attrs: BTreeMap::new(),
                    system_attrs: BTreeMap::new(),
                    datetime_start: None,
                    datetime_complete: None,
                })
                .collect())
        })
    }

    fn epochs(&self, trial_id: i64) -> Result<Vec<(i64, Value)>> {
        self.read(|c| {
            Ok(c
                .query("SELECT epoch, metrics_json FROM rnnsweep_epochs WHERE trial_id = ?1 ORDER BY epoch", &[trial_id.into()])?
                .iter()
                .map(|r| {
                    let m = cell(r, 1).text().unwrap_or_default();
                    (cell(r, 0).int().unwrap_or(0), serde_json::from_str(&m).unwrap_or(Value::Null))
                })
                .collect())
        })
    }

    fn import_trial(
        &mut self,
        study_id: i64,
        trial: &TrialRecord,
        epochs: &[(i64, Value)],
    ) -> Result<()> {
        self.write(|c| {
            let sql = format!(
                "INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) VALUES (?1, ?2, ?3, {}, {}) RETURNING trial_id",
                c.datetime_in(4),
                c.datetime_in(5)
            );
            let id = one(c.query(
                &sql,
                &[
                    trial.number.into(),
                    study_id.into(),
                    trial.state.as_str().into(),
                    trial.datetime_start.clone().into(),
                    trial.datetime_complete.clone().into(),
                ],
            )?)
            .and_then(|r| cell(&r, 0).int())
            .ok_or_else(|| StoreError::Invalid {
                path: c.location(),
                message: "an imported trial returned no id".into(),
            })?;
            insert_params(c, id, &trial.params)?;
            if let Some(v) = trial.value {
                insert_value(c, id, v)?;
            }
            for (step, v) in &trial.intermediate {
                insert_intermediate(c, id, *step, *v)?;
            }
            put_trial_attrs(c, "trial_user_attributes", id, &trial.user_attrs)?;
            put_trial_attrs(c, "trial_system_attributes", id, &trial.system_attrs)?;
            for (e, m) in epochs {
                insert_epoch(c, id, *e, m)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    //! The storage algorithms, checked on SQLite and, when `RNNSWEEP_TEST_POSTGRES` names a
    //! server (`.ci/run` starts a throwaway one), on PostgreSQL too.
    use std::collections::BTreeMap;
    use std::time::Duration;

    use rnnsweep_model::metrics::Direction;
    use serde_json::Value;

    use crate::store::{
        Claim, Recovered, SqliteStore, Store, StoredParam, TrialRecord, TrialState,
    };

    pub(crate) struct Backend {
        pub store: Box<dyn Store>,
        _dir: Option<tempfile::TempDir>,
    }

    /// A fresh SQLite file, and a fresh PostgreSQL database when a test server is there.
    pub(crate) fn backends(tag: &str) -> Vec<Backend> {
        let dir = tempfile::tempdir().unwrap();
        #[allow(unused_mut)]
        let mut out = vec![Backend {
            store: Box::new(SqliteStore::open(&dir.path().join("s.db")).unwrap()),
            _dir: Some(dir),
        }];
        #[cfg(feature = "postgres")]
        assert!(
            std::env::var_os("RNNSWEEP_TEST_POSTGRES").is_some()
                || (std::env::var_os("CI").is_none()
                    && std::env::var_os("RNNSWEEP_REQUIRE_POSTGRES").is_none()),
            "PostgreSQL was expected (CI or RNNSWEEP_REQUIRE_POSTGRES) but RNNSWEEP_TEST_POSTGRES is not set (scripts/start-postgres.sh)"
        );
        #[cfg(feature = "postgres")]
        if let Ok(url) = std::env::var("RNNSWEEP_TEST_POSTGRES") {
            let name = format!("unit_{}_{}", tag.to_lowercase(), std::process::id());
            let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            let (base, _) = url.rsplit_once('/').unwrap();
            out.push(Backend {
                store: Box::new(
                    crate::store::postgres::PgStore::connect(&format!("{base}/{name}")).unwrap(),
                ),
                _dir: None,
            });
        }
        out
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

    fn trials_round_trip_through_the_optuna_tables(s: &mut dyn Store) {
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
        s.finish(
            t.trial_id,
            TrialState::Complete,
            Some(0.75),
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        let e = s
            .finish(
                t.trial_id,
                TrialState::Fail,
                None,
                &BTreeMap::new(),
                &BTreeMap::new(),
            )
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

    fn claims_stop_at_run_cap_and_stale_trials_are_requeued(s: &mut dyn Store) {
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
        s.finish(
            a.trial_id,
            TrialState::Complete,
            Some(1.0),
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
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

    fn a_trial_whose_driver_keeps_dying_stops_after_max_retries(s: &mut dyn Store) {
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

    fn enqueued_trials_take_the_next_number_and_keep_their_attributes(s: &mut dyn Store) {
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

    fn finishing_writes_state_value_and_attributes_together(s: &mut dyn Store) {
        let study = s
            .open_study("x", Direction::Minimize, &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let mut ids = Vec::new();
        for n in 0..3 {
            let Claim::Trial(t) = s
                .claim(study, 5, false, &mut |_, _| Some(one_param(0.5)))
                .unwrap()
            else {
                panic!()
            };
            s.report_epoch(t.trial_id, 1, Some(n as f64), &serde_json::json!({}))
                .unwrap();
            if n < 2 {
                s.report_epoch(t.trial_id, 2, Some(10.0 + n as f64), &serde_json::json!({}))
                    .unwrap();
            }
            ids.push(t.trial_id);
        }
        let user = BTreeMap::from([("epochs".to_string(), serde_json::json!(2))]);
        let system = BTreeMap::from([("fail_reason".to_string(), Value::from("x"))]);
        s.finish(ids[1], TrialState::Fail, None, &user, &system)
            .unwrap();
        let back = s.trials(study).unwrap();
        assert_eq!(back[1].state, TrialState::Fail);
        assert_eq!(back[1].user_attrs["epochs"], 2);
        assert_eq!(back[1].system_attrs["fail_reason"], "x");
        // What a pruner reads at step 2: the two trials that got there, with that value only.
        let at2 = s.values_at(study, 2).unwrap();
        assert_eq!(
            at2.iter()
                .map(|t| (t.number, t.state, t.intermediate.clone()))
                .collect::<Vec<_>>(),
            vec![
                (0, TrialState::Running, vec![(2, Some(10.0))]),
                (1, TrialState::Fail, vec![(2, Some(11.0))]),
            ]
        );
        assert_eq!(s.values_at(study, 1).unwrap().len(), 3);
    }

    #[test]
    fn finishing_writes_state_value_and_attributes_together_on_every_backend() {
        for mut b in backends("finishing") {
            finishing_writes_state_value_and_attributes_together(&mut *b.store);
        }
    }

    #[test]
    fn trials_round_trip_through_the_optuna_tables_on_every_backend() {
        for mut b in backends("trials_round_trip_th") {
            trials_round_trip_through_the_optuna_tables(&mut *b.store);
        }
    }

    #[test]
    fn claims_stop_at_run_cap_and_stale_trials_are_requeued_on_every_backend() {
        for mut b in backends("claims_stop_at_run_c") {
            claims_stop_at_run_cap_and_stale_trials_are_requeued(&mut *b.store);
        }
    }

    #[test]
    fn a_trial_whose_driver_keeps_dying_stops_after_max_retries_on_every_backend() {
        for mut b in backends("a_trial_whose_driver") {
            a_trial_whose_driver_keeps_dying_stops_after_max_retries(&mut *b.store);
        }
    }

    #[test]
    fn enqueued_trials_take_the_next_number_and_keep_their_attributes_on_every_backend() {
        for mut b in backends("enqueued_trials_take") {
            enqueued_trials_take_the_next_number_and_keep_their_attributes(&mut *b.store);
        }
    }
}
