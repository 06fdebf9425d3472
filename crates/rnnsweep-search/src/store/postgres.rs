//! The PostgreSQL dialect: a study shared by drivers on many machines, in the schema Optuna
//! 5.0 creates there (`schema/postgres.sql`), so `optuna.load_study(storage="postgresql://…")`
//! and optuna-dashboard open it as it is.
//!
//! Safety across machines: every claim locks the study's row (`SELECT … FOR UPDATE`), so trial
//! numbers, the run cap and the queue are decided by one driver at a time; heartbeats and
//! staleness use the database's clock, never a driver's, so clock skew between machines cannot
//! make a live trial look dead. The schema is created under an advisory lock, so drivers
//! starting together do not race.

use std::collections::HashMap;
use std::error::Error;

use postgres::types::private::BytesMut;
use postgres::types::{FromSql, IsNull, Kind, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::sql::{Arg, Cell, Conn, Row, SqlStore};
use super::{shown, Result, StoreError};

const SCHEMA: &str = include_str!("schema/postgres.sql");
const EXTRAS: &str = include_str!("schema/postgres-rnnsweep.sql");
/// Any fixed number: serialises schema creation between drivers.
const MIGRATION_LOCK: i64 = 0x5257_5357_4545_5001;

pub struct PgConn {
    client: Client,
    url: String,
    /// Prepared statements by their `?N` text: preparing tells the parameter types, which the
    /// values are converted to (the client refuses an i64 for an INTEGER column).
    statements: HashMap<String, Statement>,
}

/// A PostgreSQL study.
pub type PgStore = SqlStore<PgConn>;

impl SqlStore<PgConn> {
    /// Connects and creates the schema if the database has none.
    pub fn connect(url: &str) -> Result<Self> {
        let client = Client::connect(url, NoTls).map_err(|e| StoreError::Postgres {
            path: shown(url),
            message: format!("cannot connect: {e}"),
            source: e,
        })?;
        let mut conn = PgConn {
            client,
            url: url.to_string(),
            statements: HashMap::new(),
        };
        conn.migrate()?;
        Ok(Self::new(conn))
    }
}

/// The server's own words (the client's `Display` says only "db error").
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// `?3` → `$3`: the SQL layer writes SQLite's placeholders.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// Text for Optuna's enum columns (`trialstate`, `studydirection`, …), whose wire form is
/// their label.
#[derive(Debug)]
struct EnumText(Option<String>);

impl ToSql for EnumText {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn Error + Sync + Send>> {
        match &self.0 {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Enum(_))
    }

    postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for EnumText {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(EnumText(Some(String::from_utf8_lossy(raw).into_owned())))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Enum(_))
    }
}

type Bound = Box<dyn ToSql + Sync>;

fn bind(arg: &Arg, ty: &Type) -> std::result::Result<Bound, String> {
    let enum_type = matches!(ty.kind(), Kind::Enum(_));
    Ok(match (arg, ty) {
        (Arg::Int(v), &Type::INT2) => Box::new(*v as i16),
        (Arg::Int(v), &Type::INT4) => {
            Box::new(i32::try_from(*v).map_err(|_| format!("{v} does not fit an INTEGER column"))?)
        }
        (Arg::Int(v), &Type::INT8) => Box::new(*v),
        (Arg::Int(v), &Type::FLOAT8) => Box::new(*v as f64),
        (Arg::Real(v), &Type::FLOAT8) => Box::new(*v),
        (Arg::Real(v), &Type::FLOAT4) => Box::new(v.map(|x| x as f32)),
        (Arg::Text(v), _) if enum_type => Box::new(EnumText(v.clone())),
        (Arg::Text(v), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
            Box::new(v.clone())
        }
        (arg, ty) => return Err(format!("cannot bind {arg:?} to a {ty} parameter")),
    })
}

fn cell(row: &postgres::Row, i: usize) -> std::result::Result<Cell, postgres::Error> {
    let ty = row.columns()[i].type_();
    Ok(match *ty {
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Cell::Null, |v| Cell::Int(i64::from(v))),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Cell::Null, |v| Cell::Int(i64::from(v))),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Cell::Null, Cell::Int),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map_or(Cell::Null, |v| Cell::Real(f64::from(v))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(Cell::Null, Cell::Real),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Cell::Null, |v| Cell::Int(i64::from(v))),
        _ if matches!(ty.kind(), Kind::Enum(_)) => row
            .try_get::<_, Option<EnumText>>(i)?
            .and_then(|e| e.0)
            .map_or(Cell::Null, Cell::Text),
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Cell::Null, Cell::Text),
    })
}

/// A driver error as the store reports it: the server's words, the driver's error as source.
fn from_pg(url: &str, e: postgres::Error) -> StoreError {
    StoreError::Postgres {
        path: shown(url),
        message: pg_message(&e),
        source: e,
    }
}

impl PgConn {
    fn err(&self, e: postgres::Error) -> StoreError {
        from_pg(&self.url, e)
    }

    fn migrate(&mut self) -> Result<()> {
        let url = self.url.clone();
        let mut tx = self.client.transaction().map_err(|e| from_pg(&url, e))?;
        let shown_url = shown(&url);
        let err = |e: postgres::Error| from_pg(&url, e);
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
                    path: shown_url.clone(),
                    message: format!(
                        "Optuna schema version {version:?}; rnnsweep reads version 12 (Optuna 5.0)"
                    ),
                });
            }
        }
        tx.batch_execute(EXTRAS).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn prepared(&mut self, sql: &str, args: &[Arg]) -> Result<(Statement, Vec<Bound>)> {
        let stmt = match self.statements.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .client
                    .prepare(&dollar_placeholders(sql))
                    .map_err(|e| self.err(e))?;
                self.statements.insert(sql.to_string(), s.clone());
                s
            }
        };
        let bound = args
            .iter()
            .zip(stmt.params())
            .map(|(a, ty)| bind(a, ty))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|message| StoreError::Invalid {
                path: shown(&self.url),
                message: format!("{message} in `{sql}`"),
            })?;
        Ok((stmt, bound))
    }
}

fn refs(bound: &[Bound]) -> Vec<&(dyn ToSql + Sync)> {
    bound.iter().map(|b| b.as_ref()).collect()
}

impl Conn for PgConn {
    fn location(&self) -> String {
        shown(&self.url)
    }

    fn begin(&mut self, _write: bool) -> Result<()> {
        self.client.batch_execute("BEGIN").map_err(|e| self.err(e))
    }

    fn commit(&mut self) -> Result<()> {
        self.client.batch_execute("COMMIT").map_err(|e| self.err(e))
    }

    fn rollback(&mut self) {
        let _ = self.client.batch_execute("ROLLBACK");
    }

    fn exec(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        let (stmt, bound) = self.prepared(sql, args)?;
        self.client
            .execute(&stmt, &refs(&bound))
            .map_err(|e| self.err(e))
    }

    fn query(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        let (stmt, bound) = self.prepared(sql, args)?;
        let rows = self
            .client
            .query(&stmt, &refs(&bound))
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| cell(r, i))
                    .collect::<std::result::Result<Row, _>>()
            })
            .collect::<std::result::Result<Vec<Row>, _>>()
            .map_err(|e| self.err(e))
    }

    fn now(&self) -> &'static str {
        // The database clock in the naive UTC form the columns hold.
        "(now() AT TIME ZONE 'UTC')"
    }

    fn seconds_ago(&self, n: usize) -> String {
        format!("((now() AT TIME ZONE 'UTC') - make_interval(secs => ?{n}))")
    }

    fn datetime_out(&self, column: &str) -> String {
        format!("to_char({column}, 'YYYY-MM-DD HH24:MI:SS.US')")
    }

    fn datetime_in(&self, n: usize) -> String {
        format!("CAST(CAST(?{n} AS TEXT) AS TIMESTAMP)")
    }

    fn lock_study(&self) -> Option<&'static str> {
        Some("SELECT study_id FROM studies WHERE study_id = ?1 FOR UPDATE")
    }

    fn for_update(&self) -> &'static str {
        " FOR UPDATE"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_passwords() {
        assert_eq!(
            dollar_placeholders("a = ?1 AND (?2 < 0 OR b = ?12)"),
            "a = $1 AND ($2 < 0 OR b = $12)"
        );
        assert_eq!(
            shown("postgresql://u:secret@h:5/db"),
            "postgresql://u:***@h:5/db"
        );
        assert_eq!(shown("postgresql://u@h/db"), "postgresql://u@h/db");
    }
}
