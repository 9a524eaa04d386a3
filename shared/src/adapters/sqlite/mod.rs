//! SQLite adapters for `labelq serve`: [`SqliteJobStore`], [`SqliteQueue`] and
//! [`SqliteDefaultCallbacks`], each in its own
//! database file so that job writes and queue writes don't wait on each other's commits, and
//! [`Holder`], the registration by which processes sharing a data directory know who holds what.
//!
//! Both use WAL mode and choose durability per write. Writes that a promise rests on are committed
//! with `synchronous = FULL` (on disk when the call returns): a new job and its message, before the
//! API answers 202, and a job's final state, before its message is acknowledged. Writes whose
//! loss only causes an idempotent redelivery (a claim, a release, a receive, an acknowledgement)
//! use `NORMAL`: no fsync of their own, made durable by the next FULL commit or checkpoint. That
//! cuts a job's fsyncs in the worker from four to one. All SQLite work runs on the blocking pool,
//! never on the async threads.

mod default_callbacks;
mod holder;
mod jobs;
mod queue;

pub use default_callbacks::SqliteDefaultCallbacks;
pub use holder::{Departed, Holder};
pub use jobs::SqliteJobStore;
pub use queue::{QueueCounts, SqliteQueue};

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::ports::BackendError;

/// Whether a write must be on disk when it returns (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Full,
    Relaxed,
}

/// One SQLite database: a writer connection and a reader connection, each behind a mutex.
/// WAL lets the reader run while the writer commits.
#[derive(Debug, Clone)]
struct Db {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens the database, creating `schema` (idempotent statements) and adding each of
    /// `columns` (table, column, declaration) that a file written by an older version lacks, then
    /// running `indexes`, which may use those columns.
    fn open(path: &Path, schema: &str, columns: &[(&str, &str, &str)], indexes: &str) -> rusqlite::Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open_with_flags(path, flags)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            Ok(conn)
        };
        let writer = open()?;
        writer.execute_batch(schema)?;
        for (table, column, declaration) in columns {
            add_column_if_missing(&writer, table, column, declaration)?;
        }
        writer.execute_batch(indexes)?;
        let reader = open()?;
        Ok(Self { writer: Arc::new(Mutex::new(writer)), reader: Arc::new(Mutex::new(reader)) })
    }

    async fn write<T, F>(&self, operation: &'static str, durability: Durability, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let level = match durability {
            Durability::Full => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        run(self.writer.clone(), operation, move |conn| {
            conn.pragma_update(None, "synchronous", level)?;
            f(conn)
        })
        .await
    }

    async fn read<T, F>(&self, operation: &'static str, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        run(self.reader.clone(), operation, f).await
    }
}

fn add_column_if_missing(conn: &Connection, table: &str, column: &str, declaration: &str) -> rusqlite::Result<()> {
    let present = conn
        .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists(rusqlite::params![table, column])?;
    if !present {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {declaration}"))?;
    }
    Ok(())
}

async fn run<T, F>(conn: Arc<Mutex<Connection>>, operation: &'static str, f: F) -> Result<T, BackendError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
{
    let joined = tokio::task::spawn_blocking(move || {
        // A panic while holding the lock poisons it; the connection itself is still consistent
        // (SQLite rolls back an unfinished transaction), so keep using it.
        let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    })
    .await;
    match joined {
        Ok(result) => result.map_err(|e| classify(operation, e)),
        Err(join) => Err(BackendError::transient(operation, join)),
    }
}

/// Busy, locked, full-disk and I/O errors may clear up; anything else (a constraint we did not
/// expect, a corrupt file) will not.
fn classify(operation: &'static str, e: rusqlite::Error) -> BackendError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull | ErrorCode::SystemIoFailure)
    );
    if transient { BackendError::transient(operation, e) } else { BackendError::permanent(operation, e) }
}

/// Milliseconds since the Unix epoch, the time column type of both databases.
fn millis(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
