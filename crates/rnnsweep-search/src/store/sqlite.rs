//! The SQLite dialect: a study file with exactly the schema Optuna 5.0 writes
//! (`schema/sqlite.sql`), in WAL mode so several drivers on one machine share it; writes are
//! `BEGIN IMMEDIATE` transactions, so claims never interleave.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension};

use super::sql::{Arg, Cell, Conn, Row, SqlStore};
use super::{Result, StoreError};

const OPTUNA_SCHEMA: &str = include_str!("schema/sqlite.sql");

/// rnnsweep's own tables, one entry per schema version; applied in order, recorded in
/// `rnnsweep_meta`.
const MIGRATIONS: &[&str] = &[
    include_str!("schema/sqlite-rnnsweep-1.sql"),
    include_str!("schema/sqlite-rnnsweep-2.sql"),
];

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SqliteConn {
    conn: Connection,
    path: PathBuf,
}

/// An SQLite study file.
pub type SqliteStore = SqlStore<SqliteConn>;

impl SqlStore<SqliteConn> {
    /// Opens (creating if needed) a study file. A file that is not an Optuna/rnnsweep database
    /// is refused and left untouched.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self::new(SqliteConn::open(path)?))
    }
}

fn sql_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

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

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Int(v) => ToSqlOutput::from(*v),
            Arg::Real(Some(v)) => ToSqlOutput::from(*v),
            Arg::Text(Some(v)) => ToSqlOutput::from(v.as_str()),
            Arg::Real(None) | Arg::Text(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

impl SqliteConn {
    fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Invalid {
                path: parent.display().to_string(),
                message: format!("cannot create the folder: {e}"),
            })?;
        }
        let shown = path.display().to_string();
        let sql = sql_error(path);
        if path.exists() {
            // Emptiness and the header come from one read: another driver starting on the same
            // new file may write its first page between a read and a second look at the size.
            let mut header = Vec::with_capacity(16);
            let read = std::fs::File::open(path).and_then(|f| {
                std::io::Read::read_to_end(&mut std::io::Read::take(f, 16), &mut header)
            });
            let empty = matches!(read, Ok(0));
            if !empty && (read.is_err() || header.as_slice() != b"SQLite format 3\0") {
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
        let mut c = Self {
            conn,
            path: path.to_path_buf(),
        };
        c.migrate()?;
        Ok(c)
    }

    fn migrate(&mut self) -> Result<()> {
        let err = sql_error(&self.path);
        let invalid = |message: String| StoreError::Invalid {
            path: self.path.display().to_string(),
            message,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
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
                return Err(invalid(
                    "an SQLite database, but not an Optuna study file (refusing to touch it)"
                        .into(),
                ));
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
                return Err(invalid(format!(
                    "Optuna schema version {version:?}; rnnsweep reads version 12 (Optuna 5.0)"
                )));
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
            return Err(invalid(format!(
                "written by a newer rnnsweep (schema {applied}, this one knows {})",
                MIGRATIONS.len()
            )));
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
}

fn to_cell(v: ValueRef<'_>) -> Cell {
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Real(f) => Cell::Real(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            Cell::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

impl Conn for SqliteConn {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn begin(&mut self, write: bool) -> Result<()> {
        // IMMEDIATE takes the write lock up front (waiting in the busy handler), so two
        // drivers never both read the queue and then both try to write.
        let sql = if write { "BEGIN IMMEDIATE" } else { "BEGIN" };
        self.conn.execute_batch(sql).map_err(sql_error(&self.path))
    }

    fn commit(&mut self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(sql_error(&self.path))
    }

    fn rollback(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    fn exec(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(sql_error(&self.path))?;
        stmt.execute(rusqlite::params_from_iter(args.iter()))
            .map(|n| n as u64)
            .map_err(sql_error(&self.path))
    }

    fn query(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        let err = sql_error(&self.path);
        let mut stmt = self.conn.prepare_cached(sql).map_err(err)?;
        let columns = stmt.column_count();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                (0..columns)
                    .map(|i| r.get_ref(i).map(to_cell))
                    .collect::<rusqlite::Result<Row>>()
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<Row>>>().map_err(err)
    }

    fn now(&self) -> &'static str {
        // Optuna's text form with microseconds (SQLite's clock has milliseconds).
        "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"
    }

    fn seconds_ago(&self, n: usize) -> String {
        format!("(strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || ?{n} || ' seconds') || '000')")
    }

    fn datetime_out(&self, column: &str) -> String {
        column.to_string()
    }

    fn datetime_in(&self, n: usize) -> String {
        format!("?{n}")
    }

    fn lock_study(&self) -> Option<&'static str> {
        None
    }

    fn for_update(&self) -> &'static str {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
