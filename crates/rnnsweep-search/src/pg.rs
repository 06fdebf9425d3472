//! A study in PostgreSQL, shared by drivers on many machines, in the schema Optuna 5.0 creates
//! there (`optuna_postgres_schema.sql`), so `optuna.load_study(storage="postgresql://…")` and
//! optuna-dashboard open it as it is.
//!
//! Safety across machines: every claim locks the study's row (`SELECT … FOR UPDATE`), so trial
//! numbers, the run cap and the queue are decided by one driver at a time; heartbeats and
//! staleness use the database's clock, never a driver's, so clock skew between machines cannot
//! make a live trial look dead. The schema is created under an advisory lock, so drivers
//! starting together do not race.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use postgres::{Client, NoTls, Transaction};
use rnnsweep_model::metrics::Direction;
use serde_json::Value;

use crate::store::{
    direction_str, given_up_history, keys, requeue_attrs, stale_action, summarize, value_type,
    Claim, ParamSource, Recovered, Result, StaleAction, Store, StoreError, StoredParam,
    StudySummary, TrialRecord, TrialState,
};

const SCHEMA: &str = include_str!("optuna_postgres_schema.sql");
const EXTRAS: &str = "
CREATE TABLE IF NOT EXISTS rnnsweep_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rnnsweep_epochs (
    trial_id INTEGER NOT NULL REFERENCES trials (trial_id),
    epoch INTEGER NOT NULL,
    metrics_json TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);
INSERT INTO rnnsweep_meta (key, value) VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING;
";
/// Any fixed number: serialises schema creation between drivers.
const MIGRATION_LOCK: i64 = 0x5257_5357_4545_5001;
/// The database clock in the naive UTC form the columns hold.
const NOW: &str = "(now() AT TIME ZONE 'UTC')";
const TS: &str = "'YYYY-MM-DD HH24:MI:SS.US'";

pub struct PgStore {
    /// `Store`'s reads take `&self`; the client needs `&mut` for every query.
    client: RefCell<Client>,
    url: String,
}

pub(crate) fn shown(url: &str) -> String {
    // Never print a password.
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

/// The server's own words (the client's `Display` says only "db error").
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

fn parse_state(s: &str) -> TrialState {
    match s {
        "RUNNING" => TrialState::Running,
        "COMPLETE" => TrialState::Complete,
        "PRUNED" => TrialState::Pruned,
        "WAITING" => TrialState::Waiting,
        _ => TrialState::Fail,
    }
}

impl PgStore {
    /// Connects and creates the schema if the database has none.
    pub fn connect(url: &str) -> Result<Self> {
        let client = Client::connect(url, NoTls).map_err(|e| StoreError::Invalid {
            path: shown(url),
            message: format!("cannot connect: {e}"),
        })?;
        let mut store = Self {
            client: RefCell::new(client),
            url: url.to_string(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(postgres::Error) -> StoreError + Copy + '_ {
        move |e| StoreError::Invalid {
            path: shown(&self.url),
            message: pg_message(&e),
        }
    }

    /// Runs `f` in a read transaction.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut Transaction) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(self.err())?;
        let out = f(&mut tx).map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(out)
    }

    fn migrate(&mut self) -> Result<()> {
        let err = self.err();
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(err)?;
        let exists: bool = tx
            .query_one("SELECT to_regclass('public.studies') IS NOT NULL", &[])
            .map_err(err)?
            .get(0);
        if !exists {
            tx.batch_execute(SCHEMA).map_err(err)?;
        } else {
            let version: Option<i32> = tx
                .query_opt(
                    "SELECT schema_version FROM version_info WHERE version_info_id = 1",
                    &[],
                )
                .map_err(err)?
                .and_then(|r| r.get(0));
            if version != Some(12) {
                return Err(StoreError::Invalid {
                    path: shown(&self.url),
                    message: format!(
                        "Optuna schema version {version:?}; rnnsweep reads version 12 (Optuna 5.0)"
                    ),
                });
            }
        }
        tx.batch_execute(EXTRAS).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn load(
        tx: &mut Transaction,
        study_id: i64,
        only: Option<i64>,
    ) -> std::result::Result<Vec<TrialRecord>, postgres::Error> {
        let (sid, only) = (study_id as i32, only.map_or(-1, |v| v as i32));
        let mut trials = Vec::new();
        let mut index = std::collections::HashMap::new();
        for r in tx.query(
            &format!("SELECT trial_id, number, state::text, to_char(datetime_start, {TS}), to_char(datetime_complete, {TS}) FROM trials WHERE study_id = $1 AND ($2 < 0 OR trial_id = $2) ORDER BY number"),
            &[&sid, &only],
        )? {
            let id: i32 = r.get(0);
            index.insert(id, trials.len());
            trials.push(TrialRecord {
                trial_id: i64::from(id),
                number: i64::from(r.get::<_, Option<i32>>(1).unwrap_or(0)),
                state: parse_state(r.get(2)),
                params: BTreeMap::new(),
                value: None,
                intermediate: Vec::new(),
                user_attrs: BTreeMap::new(),
                system_attrs: BTreeMap::new(),
                datetime_start: r.get(3),
                datetime_complete: r.get(4),
            });
        }
        let by_study = "trial_id IN (SELECT trial_id FROM trials WHERE study_id = $1 AND ($2 < 0 OR trial_id = $2))";
        for r in tx.query(&format!("SELECT trial_id, param_name, param_value, distribution_json FROM trial_params WHERE {by_study}"), &[&sid, &only])? {
            if let Some(&i) = index.get(&r.get::<_, i32>(0)) {
                let name: Option<String> = r.get(1);
                trials[i].params.insert(
                    name.unwrap_or_default(),
                    StoredParam {
                        internal: r.get::<_, Option<f64>>(2).unwrap_or(0.0),
                        distribution_json: r.get::<_, Option<String>>(3).unwrap_or_default(),
                    },
                );
            }
        }
        for r in tx.query(&format!("SELECT trial_id, value, value_type::text FROM trial_values WHERE objective = 0 AND {by_study}"), &[&sid, &only])? {
            if let Some(&i) = index.get(&r.get::<_, i32>(0)) {
                trials[i].value = match r.get::<_, &str>(2) {
                    "INF_POS" => Some(f64::INFINITY),
                    "INF_NEG" => Some(f64::NEG_INFINITY),
                    _ => r.get(1),
                };
            }
        }
        for r in tx.query(
            &format!("SELECT trial_id, step, intermediate_value FROM trial_intermediate_values WHERE {by_study} ORDER BY step"),
            &[&sid, &only],
        )? {
            if let Some(&i) = index.get(&r.get::<_, i32>(0)) {
                trials[i].intermediate.push((i64::from(r.get::<_, i32>(1)), r.get(2)));
            }
        }
        for (table, user) in [
            ("trial_user_attributes", true),
            ("trial_system_attributes", false),
        ] {
            for r in tx.query(
                &format!("SELECT trial_id, key, value_json FROM {table} WHERE {by_study}"),
                &[&sid, &only],
            )? {
                if let Some(&i) = index.get(&r.get::<_, Option<i32>>(0).unwrap_or(-1)) {
                    let k: Option<String> = r.get(1);
                    let v: Option<String> = r.get(2);
                    let v = v.unwrap_or_default();
                    let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
                    let map = if user {
                        &mut trials[i].user_attrs
                    } else {
                        &mut trials[i].system_attrs
                    };
                    map.insert(k.unwrap_or_default(), value);
                }
            }
        }
        Ok(trials)
    }

    fn set_attr(
        &mut self,
        table: &str,
        id_column: &str,
        id: i64,
        key: &str,
        value: &Value,
    ) -> Result<()> {
        let sql = format!(
            "INSERT INTO {table} ({id_column}, key, value_json) VALUES ($1, $2, $3) ON CONFLICT ({id_column}, key) DO UPDATE SET value_json = excluded.value_json"
        );
        let url = shown(&self.url);
        self.client
            .borrow_mut()
            .execute(&sql, &[&(id as i32), &key, &value.to_string()])
            .map_err(|e| StoreError::Invalid {
                path: url,
                message: pg_message(&e),
            })?;
        Ok(())
    }

    fn attrs(&self, table: &str, id_column: &str, id: i64) -> Result<BTreeMap<String, Value>> {
        let url = shown(&self.url);
        let rows = self
            .client
            .borrow_mut()
            .query(
                &format!("SELECT key, value_json FROM {table} WHERE {id_column} = $1"),
                &[&(id as i32)],
            )
            .map_err(|e| StoreError::Invalid {
                path: url,
                message: pg_message(&e),
            })?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let v: String = r.get::<_, Option<String>>(1).unwrap_or_default();
                (
                    r.get::<_, Option<String>>(0).unwrap_or_default(),
                    serde_json::from_str(&v).unwrap_or(Value::String(v)),
                )
            })
            .collect())
    }

    fn insert_params(
        tx: &mut Transaction,
        trial_id: i32,
        params: &BTreeMap<String, StoredParam>,
    ) -> std::result::Result<(), postgres::Error> {
        for (name, p) in params {
            tx.execute(
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES ($1, $2, $3, $4)",
                &[&trial_id, name, &p.internal, &p.distribution_json],
            )?;
        }
        Ok(())
    }

    fn heartbeat_in(
        tx: &mut Transaction,
        trial_id: i32,
    ) -> std::result::Result<(), postgres::Error> {
        tx.execute(
            &format!("INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES ($1, {NOW}) ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat"),
            &[&trial_id],
        )?;
        Ok(())
    }

    /// Fails a RUNNING trial with `reason` and queues its parameters again as WAITING trial
    /// `number` carrying `attrs`.
    fn requeue(
        tx: &mut Transaction,
        study_id: i32,
        t: &TrialRecord,
        number: i32,
        reason: &str,
        attrs: &BTreeMap<String, Value>,
    ) -> std::result::Result<(), postgres::Error> {
        let id = t.trial_id as i32;
        Self::fail_trial(tx, id, reason)?;
        Self::put_attr(
            tx,
            "trial_system_attributes",
            id,
            keys::REQUEUED_AS,
            &Value::from(number),
        )?;
        let new_id: i32 = tx.query_one("INSERT INTO trials (number, study_id, state) VALUES ($1, $2, 'WAITING') RETURNING trial_id", &[&number, &study_id])?.get(0);
        for (k, v) in attrs {
            Self::put_attr(tx, "trial_system_attributes", new_id, k, v)?;
        }
        Ok(())
    }

    fn fail_trial(
        tx: &mut Transaction,
        trial_id: i32,
        reason: &str,
    ) -> std::result::Result<(), postgres::Error> {
        tx.execute(
            &format!(
                "UPDATE trials SET state = 'FAIL', datetime_complete = {NOW} WHERE trial_id = $1"
            ),
            &[&trial_id],
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
        tx: &mut Transaction,
        table: &str,
        trial_id: i32,
        key: &str,
        value: &Value,
    ) -> std::result::Result<(), postgres::Error> {
        tx.execute(
            &format!("INSERT INTO {table} (trial_id, key, value_json) VALUES ($1, $2, $3) ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json"),
            &[&trial_id, &key, &value.to_string()],
        )?;
        Ok(())
    }
}

impl Store for PgStore {
    fn open_study(
        &mut self,
        name: &str,
        direction: Direction,
        user_attrs: &BTreeMap<String, Value>,
        system_attrs: &BTreeMap<String, Value>,
    ) -> Result<i64> {
        let err = self.err();
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(MIGRATION_LOCK + 1)])
            .map_err(err)?;
        if let Some(r) = tx.query_opt("SELECT s.study_id, d.direction::text FROM studies s JOIN study_directions d ON d.study_id = s.study_id AND d.objective = 0 WHERE s.study_name = $1", &[&name]).map_err(err)? {
            let (id, stored): (i32, String) = (r.get(0), r.get(1));
            if stored != direction_str(direction) {
                return Err(StoreError::Invalid {
                    path: shown(&self.url),
                    message: format!("study `{name}` was created to {stored} its objective; the spec asks to {}", direction_str(direction)),
                });
            }
            tx.commit().map_err(err)?;
            return Ok(i64::from(id));
        }
        let id: i32 = tx
            .query_one(
                "INSERT INTO studies (study_name) VALUES ($1) RETURNING study_id",
                &[&name],
            )
            .map_err(err)?
            .get(0);
        tx.execute("INSERT INTO study_directions (direction, study_id, objective) VALUES ($1::text::studydirection, $2, 0)", &[&direction_str(direction), &id]).map_err(err)?;
        for (table, attrs) in [
            ("study_user_attributes", user_attrs),
            ("study_system_attributes", system_attrs),
        ] {
            for (k, v) in attrs {
                tx.execute(
                    &format!("INSERT INTO {table} (study_id, key, value_json) VALUES ($1, $2, $3)"),
                    &[&id, k, &v.to_string()],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(i64::from(id))
    }

    fn study_id(&self, name: &str) -> Result<Option<i64>> {
        self.read(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT study_id FROM studies WHERE study_name = $1",
                    &[&name],
                )?
                .map(|r| i64::from(r.get::<_, i32>(0))))
        })
    }

    fn studies(&self) -> Result<Vec<StudySummary>> {
        let rows: Vec<(i32, String, String)> = self.read(|tx| {
            Ok(tx
                .query("SELECT s.study_id, s.study_name, d.direction::text FROM studies s JOIN study_directions d ON d.study_id = s.study_id AND d.objective = 0 ORDER BY s.study_id", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })?;
        rows.into_iter()
            .map(|(id, name, dir)| {
                summarize(i64::from(id), name, &dir, self.trials(i64::from(id))?)
            })
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
        self.read(|tx| Self::load(tx, study_id, None))
    }

    fn recover_stale(
        &mut self,
        study_id: i64,
        grace: Duration,
        max_retries: usize,
    ) -> Result<Vec<Recovered>> {
        let err = self.err();
        let sid = study_id as i32;
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        lock_study(&mut tx, sid).map_err(err)?;
        let stale: Vec<i32> = tx
            .query(
                &format!(
                    "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id
                     WHERE t.study_id = $1 AND t.state = 'RUNNING'
                       AND COALESCE(h.heartbeat, t.datetime_start, '-infinity') < {NOW} - make_interval(secs => $2)
                     ORDER BY t.number"
                ),
                &[&sid, &grace.as_secs_f64()],
            )
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let all = Self::load(&mut tx, study_id, None).map_err(err)?;
        let mut next = all.iter().map(|t| t.number + 1).max().unwrap_or(0);
        let mut out = Vec::new();
        for id in stale {
            let Some(t) = all.iter().find(|t| t.trial_id == i64::from(id)) else {
                continue;
            };
            match stale_action(t, grace, max_retries, next) {
                StaleAction::Requeue(reason) => {
                    let attrs = requeue_attrs(t, true, &BTreeMap::new());
                    Self::requeue(&mut tx, sid, t, next as i32, &reason, &attrs).map_err(err)?;
                    out.push(Recovered {
                        failed: t.number,
                        queued: Some(next),
                    });
                    next += 1;
                }
                StaleAction::GiveUp(reason) => {
                    Self::fail_trial(&mut tx, id, &reason).map_err(err)?;
                    Self::put_attr(
                        &mut tx,
                        "trial_user_attributes",
                        id,
                        keys::RETRY_HISTORY,
                        &given_up_history(t),
                    )
                    .map_err(err)?;
                    out.push(Recovered {
                        failed: t.number,
                        queued: None,
                    });
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    fn claim(
        &mut self,
        study_id: i64,
        run_cap: usize,
        history: bool,
        sample: &mut ParamSource,
    ) -> Result<Claim> {
        let err = self.err();
        let sid = study_id as i32;
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        // One claim per study at a time, across every machine.
        lock_study(&mut tx, sid).map_err(err)?;
        let r = tx
            .query_one(
                "SELECT COALESCE(SUM(CASE WHEN state IN ('COMPLETE', 'PRUNED', 'RUNNING') THEN 1 ELSE 0 END), 0)::bigint, COALESCE(MAX(number) + 1, 0)::bigint FROM trials WHERE study_id = $1",
                &[&sid],
            )
            .map_err(err)?;
        let (busy, next): (i64, i64) = (r.get(0), r.get(1));
        if busy as usize >= run_cap {
            return Ok(Claim::CapReached);
        }
        let waiting: Option<i32> = tx
            .query_opt("SELECT trial_id FROM trials WHERE study_id = $1 AND state = 'WAITING' ORDER BY number LIMIT 1 FOR UPDATE SKIP LOCKED", &[&sid])
            .map_err(err)?
            .map(|r| r.get(0));
        // A queued trial's values are checked against the space by the caller, which owns it.
        let trial_id = if let Some(id) = waiting {
            tx.execute(&format!("UPDATE trials SET state = 'RUNNING', datetime_start = {NOW} WHERE trial_id = $1"), &[&id]).map_err(err)?;
            id
        } else {
            let all = if history {
                Self::load(&mut tx, study_id, None).map_err(err)?
            } else {
                Vec::new()
            };
            let Some(params) = sample(&all, next) else {
                return Ok(Claim::Exhausted);
            };
            let id: i32 = tx
                .query_one(&format!("INSERT INTO trials (number, study_id, state, datetime_start) VALUES ($1, $2, 'RUNNING', {NOW}) RETURNING trial_id"), &[&(next as i32), &sid])
                .map_err(err)?
                .get(0);
            Self::insert_params(&mut tx, id, &params).map_err(err)?;
            id
        };
        Self::heartbeat_in(&mut tx, trial_id).map_err(err)?;
        let record = Self::load(&mut tx, study_id, Some(i64::from(trial_id)))
            .map_err(err)?
            .pop()
            .ok_or_else(|| StoreError::Invalid {
                path: shown(&self.url),
                message: "claimed trial vanished".into(),
            })?;
        tx.commit().map_err(err)?;
        Ok(Claim::Trial(record))
    }

    fn heartbeat(&mut self, trial_id: i64) -> Result<()> {
        let err = self.err();
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        Self::heartbeat_in(&mut tx, trial_id as i32).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn fail_and_requeue(
        &mut self,
        study_id: i64,
        trial_id: i64,
        reason: &str,
        extra: &BTreeMap<String, Value>,
    ) -> Result<i64> {
        let err = self.err();
        let sid = study_id as i32;
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        lock_study(&mut tx, sid).map_err(err)?;
        let all = Self::load(&mut tx, study_id, None).map_err(err)?;
        let t = all
            .iter()
            .find(|t| t.trial_id == trial_id && t.state == TrialState::Running)
            .ok_or_else(|| StoreError::Invalid {
                path: shown(&self.url),
                message: format!("trial {trial_id} is not running"),
            })?;
        let number = all.iter().map(|t| t.number + 1).max().unwrap_or(0);
        Self::requeue(
            &mut tx,
            sid,
            t,
            number as i32,
            &format!("{reason}; re-queued as trial {number}"),
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
        let err = self.err();
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        tx.execute(
            "DELETE FROM trial_params WHERE trial_id = $1",
            &[&(trial_id as i32)],
        )
        .map_err(err)?;
        Self::insert_params(&mut tx, trial_id as i32, params).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn enqueue(&mut self, study_id: i64, system_attrs: &BTreeMap<String, Value>) -> Result<i64> {
        let err = self.err();
        let sid = study_id as i32;
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        lock_study(&mut tx, sid).map_err(err)?;
        let number: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = $1",
                &[&sid],
            )
            .map_err(err)?
            .get(0);
        let id: i32 = tx
            .query_one(
                "INSERT INTO trials (number, study_id, state) VALUES ($1, $2, 'WAITING') RETURNING trial_id",
                &[&number, &sid],
            )
            .map_err(err)?
            .get(0);
        for (k, v) in system_attrs {
            Self::put_attr(&mut tx, "trial_system_attributes", id, k, v).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(i64::from(number))
    }

    fn report_epoch(
        &mut self,
        trial_id: i64,
        step: i64,
        objective: Option<f64>,
        metrics: &Value,
    ) -> Result<()> {
        let err = self.err();
        let (id, step) = (trial_id as i32, step as i32);
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        if let Some(v) = objective {
            let (kind, value) = value_type(v);
            tx.execute(
                "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES ($1, $2, $3, $4::text::trialintermediatevaluetype)
                 ON CONFLICT (trial_id, step) DO UPDATE SET intermediate_value = excluded.intermediate_value, intermediate_value_type = excluded.intermediate_value_type",
                &[&id, &step, &value, &kind],
            )
            .map_err(err)?;
        }
        tx.execute(
            "INSERT INTO rnnsweep_epochs (trial_id, epoch, metrics_json) VALUES ($1, $2, $3) ON CONFLICT (trial_id, epoch) DO UPDATE SET metrics_json = excluded.metrics_json",
            &[&id, &step, &metrics.to_string()],
        )
        .map_err(err)?;
        Self::heartbeat_in(&mut tx, id).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn set_trial_user_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<()> {
        self.set_attr("trial_user_attributes", "trial_id", trial_id, key, value)
    }

    fn set_trial_system_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<()> {
        self.set_attr("trial_system_attributes", "trial_id", trial_id, key, value)
    }

    fn finish(&mut self, trial_id: i64, state: TrialState, value: Option<f64>) -> Result<()> {
        let err = self.err();
        let id = trial_id as i32;
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        let current: String = tx
            .query_one(
                "SELECT state::text FROM trials WHERE trial_id = $1 FOR UPDATE",
                &[&id],
            )
            .map_err(err)?
            .get(0);
        if current != "RUNNING" {
            return Err(StoreError::Invalid {
                path: shown(&self.url),
                message: format!(
                    "trial {trial_id} is {current}; a finished trial cannot be updated"
                ),
            });
        }
        if let Some(v) = value {
            let (kind, v) = value_type(v);
            tx.execute(
                "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES ($1, 0, $2, $3::text::trialvaluetype)
                 ON CONFLICT (trial_id, objective) DO UPDATE SET value = excluded.value, value_type = excluded.value_type",
                &[&id, &v, &kind],
            )
            .map_err(err)?;
        }
        tx.execute(&format!("UPDATE trials SET state = $2::text::trialstate, datetime_complete = {NOW} WHERE trial_id = $1"), &[&id, &state.as_str()]).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn import_trial(
        &mut self,
        study_id: i64,
        trial: &TrialRecord,
        epochs: &[(i64, Value)],
    ) -> Result<()> {
        let err = self.err();
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        let id: i32 = tx
            .query_one(
                "INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) VALUES ($1, $2, $3::text::trialstate, $4::text::timestamp, $5::text::timestamp) RETURNING trial_id",
                &[&(trial.number as i32), &(study_id as i32), &trial.state.as_str(), &trial.datetime_start, &trial.datetime_complete],
            )
            .map_err(err)?
            .get(0);
        Self::insert_params(&mut tx, id, &trial.params).map_err(err)?;
        if let Some(v) = trial.value {
            let (kind, v) = value_type(v);
            tx.execute("INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES ($1, 0, $2, $3::text::trialvaluetype)", &[&id, &v, &kind]).map_err(err)?;
        }
        for (step, v) in &trial.intermediate {
            let (kind, v) = v.map_or(("NAN", None), value_type);
            tx.execute(
                "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES ($1, $2, $3, $4::text::trialintermediatevaluetype)",
                &[&id, &(*step as i32), &v, &kind],
            )
            .map_err(err)?;
        }
        for (table, attrs) in [
            ("trial_user_attributes", &trial.user_attrs),
            ("trial_system_attributes", &trial.system_attrs),
        ] {
            for (k, v) in attrs {
                tx.execute(
                    &format!("INSERT INTO {table} (trial_id, key, value_json) VALUES ($1, $2, $3)"),
                    &[&id, k, &v.to_string()],
                )
                .map_err(err)?;
            }
        }
        for (e, m) in epochs {
            tx.execute(
                "INSERT INTO rnnsweep_epochs (trial_id, epoch, metrics_json) VALUES ($1, $2, $3)",
                &[&id, &(*e as i32), &m.to_string()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn epochs(&self, trial_id: i64) -> Result<Vec<(i64, Value)>> {
        self.read(|tx| {
            Ok(tx
                .query("SELECT epoch, metrics_json FROM rnnsweep_epochs WHERE trial_id = $1 ORDER BY epoch", &[&(trial_id as i32)])?
                .iter()
                .map(|r| (i64::from(r.get::<_, i32>(0)), serde_json::from_str(r.get::<_, &str>(1)).unwrap_or(Value::Null)))
                .collect())
        })
    }
}

/// Serialises claims and re-queues of one study across every machine: the study's row stays
/// locked until the transaction ends.
fn lock_study(tx: &mut Transaction, study_id: i32) -> std::result::Result<(), postgres::Error> {
    tx.execute(
        "SELECT study_id FROM studies WHERE study_id = $1 FOR UPDATE",
        &[&study_id],
    )
    .map(drop)
}
