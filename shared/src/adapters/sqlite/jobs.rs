//! [`SqliteJobStore`]: jobs in a SQLite file.
//!
//! A job row keeps the columns that queries filter and sort on, plus the whole record as JSON.
//! Label names (and their parents') go to a side table so `label=` filters with an index.
//! Transitions are compare-and-swap on `version`; the idempotency key is a unique index, so the
//! key and its job are one insert. A claim records the [`Holder`](super::Holder) of the process
//! that wrote it, so that a restart can give back the claims of a process that died.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use time::OffsetDateTime;

use super::{Db, Durability, millis};
use crate::domain::{IdempotencyKey, Job, JobId, JobStatus, OwnerId};
use crate::ports::{BackendError, Created, JobStore, ListPosition, ListQuery, Page, UpdateError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    owner           TEXT NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    record          TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires_at);
CREATE TABLE IF NOT EXISTS job_labels (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name   TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_labels_name ON job_labels (name);
";

/// Added after the first release; files written before get them on open.
const COLUMNS: &[(&str, &str, &str)] = &[("jobs", "holder", "TEXT")];
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS jobs_held ON jobs (holder) WHERE holder IS NOT NULL;";

#[derive(Debug, Clone)]
pub struct SqliteJobStore {
    db: Db,
    /// Recorded on the claims this store writes.
    holder: Option<String>,
}

impl SqliteJobStore {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        Ok(Self { db: Db::open(path, SCHEMA, COLUMNS, INDEXES)?, holder: None })
    }

    /// The same store, recording `holder` on the claims it writes.
    pub fn held_by(self, holder: &str) -> Self {
        Self { holder: Some(holder.to_owned()), ..self }
    }

    /// Gives back (PROCESSING -> PENDING) every claim `holder` still holds: that process is gone,
    /// and its jobs should not wait out their leases. Returns how many were given back.
    pub async fn release_held_by(&self, holder: &str, now: OffsetDateTime) -> Result<usize, BackendError> {
        let holder = holder.to_owned();
        self.db
            .write("release a departed holder's claims", Durability::Full, move |conn| {
                let tx = conn.transaction()?;
                let held = {
                    let mut stmt = tx.prepare("SELECT record FROM jobs WHERE holder = ?1")?;
                    stmt.query_map([&holder], |row| row.get::<_, String>(0))?
                        .map(|r| r.and_then(|json| decode(&json)))
                        .collect::<rusqlite::Result<Vec<_>>>()?
                };
                let mut released = 0;
                for job in held {
                    let next = job.release(now).ok();
                    let changed = match &next {
                        Some(next) => tx.execute(
                            "UPDATE jobs SET status = ?1, version = ?2, record = ?3, holder = NULL
                             WHERE id = ?4 AND version = ?5",
                            params![
                                next.status().as_str(),
                                version(next.version),
                                encode(next)?,
                                next.id.to_string(),
                                version(job.version)
                            ],
                        )?,
                        // Not a claim any more (finished): only the stale mark goes.
                        None => tx.execute("UPDATE jobs SET holder = NULL WHERE id = ?1", [job.id.to_string()])?,
                    };
                    if next.is_some() {
                        released += changed;
                    }
                }
                tx.commit()?;
                Ok(released)
            })
            .await
    }

    /// Deletes up to `limit` jobs that expired at or before `now` and returns them, so their
    /// images can be removed too. DynamoDB's TTL does this on AWS.
    pub async fn delete_expired(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<Job>, BackendError> {
        let now = millis(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .write("delete expired jobs", Durability::Relaxed, move |conn| {
                let tx = conn.transaction()?;
                let jobs = {
                    let mut stmt = tx.prepare(
                        "DELETE FROM jobs WHERE id IN
                            (SELECT id FROM jobs WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)
                         RETURNING record",
                    )?;
                    stmt.query_map(params![now, limit], |row| row.get::<_, String>(0))?
                        .map(|r| r.and_then(|json| decode(&json)))
                        .collect::<rusqlite::Result<Vec<_>>>()?
                };
                tx.commit()?;
                Ok(jobs)
            })
            .await
    }
}

fn version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn encode(job: &Job) -> rusqlite::Result<String> {
    serde_json::to_string(job).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn decode(json: &str) -> rusqlite::Result<Job> {
    serde_json::from_str(json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn replace_labels(tx: &Transaction<'_>, job: &Job) -> rusqlite::Result<()> {
    let id = job.id.to_string();
    tx.execute("DELETE FROM job_labels WHERE job_id = ?1", [&id])?;
    let mut insert = tx.prepare_cached("INSERT INTO job_labels (job_id, name) VALUES (?1, ?2)")?;
    for name in job.label_names() {
        insert.execute(params![id, name])?;
    }
    Ok(())
}

fn get_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<Job>> {
    conn.prepare_cached("SELECT record FROM jobs WHERE id = ?1")?
        .query_row([id], |row| row.get::<_, String>(0))
        .optional()?
        .map(|json| decode(&json))
        .transpose()
}

fn get_by_key(conn: &Connection, owner: &str, key: &str) -> rusqlite::Result<Option<Job>> {
    conn.prepare_cached("SELECT record FROM jobs WHERE owner = ?1 AND idempotency_key = ?2")?
        .query_row([owner, key], |row| row.get::<_, String>(0))
        .optional()?
        .map(|json| decode(&json))
        .transpose()
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn create(&self, job: &Job) -> Result<Created, BackendError> {
        let job = job.clone();
        self.db
            .write("create job", Durability::Full, move |conn| {
                let tx = conn.transaction()?;
                let inserted = tx.execute(
                    "INSERT INTO jobs (id, owner, idempotency_key, status, created_at, expires_at, version, record)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
                    params![
                        job.id.to_string(),
                        job.owner.as_str(),
                        job.idempotency_key.as_ref().map(IdempotencyKey::as_str),
                        job.status().as_str(),
                        millis(job.created_at),
                        millis(job.expires_at),
                        version(job.version),
                        encode(&job)?,
                    ],
                )?;
                if inserted == 0 {
                    let key = job.idempotency_key.as_ref().map(IdempotencyKey::as_str).unwrap_or_default();
                    let existing =
                        get_by_key(&tx, job.owner.as_str(), key)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                    return Ok(Created::KeyTaken(Box::new(existing)));
                }
                replace_labels(&tx, &job)?;
                tx.commit()?;
                Ok(Created::Created)
            })
            .await
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, BackendError> {
        let id = id.to_string();
        self.db.read("get job", move |conn| get_by_id(conn, &id)).await
    }

    async fn find_by_idempotency_key(
        &self,
        owner: &OwnerId,
        key: &IdempotencyKey,
    ) -> Result<Option<Job>, BackendError> {
        let (owner, key) = (owner.as_str().to_owned(), key.as_str().to_owned());
        self.db.read("find job by idempotency key", move |conn| get_by_key(conn, &owner, &key)).await
    }

    async fn update(&self, job: &Job) -> Result<(), UpdateError> {
        // A final state is written durably before the worker acknowledges its message; a claim
        // or a release may be lost in a crash, which only costs a redelivery.
        let durability = if job.status().is_finished() { Durability::Full } else { Durability::Relaxed };
        let holder = if job.status() == JobStatus::Processing { self.holder.clone() } else { None };
        let job = job.clone();
        let updated = self
            .db
            .write("update job", durability, move |conn| {
                let tx = conn.transaction()?;
                let changed = tx.execute(
                    "UPDATE jobs SET status = ?1, version = ?2, record = ?3, holder = ?4 WHERE id = ?5 AND version = ?6",
                    params![
                        job.status().as_str(),
                        version(job.version),
                        encode(&job)?,
                        holder,
                        job.id.to_string(),
                        version(job.version.saturating_sub(1))
                    ],
                )?;
                if changed == 1 {
                    replace_labels(&tx, &job)?;
                    tx.commit()?;
                }
                Ok(changed == 1)
            })
            .await?;
        if updated { Ok(()) } else { Err(UpdateError::Conflict) }
    }

    async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<Page, BackendError> {
        let owner = owner.as_str().to_owned();
        let query = query.clone();
        self.db
            .read("list jobs", move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT record FROM jobs
                     WHERE owner = ?1
                       AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR EXISTS
                            (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id AND l.name = ?3))
                       AND (?4 IS NULL OR created_at < ?4 OR (created_at = ?4 AND id < ?5))
                     ORDER BY created_at DESC, id DESC
                     LIMIT ?6",
                )?;
                let after = query.after.as_ref();
                let rows = stmt.query_map(
                    params![
                        owner,
                        query.status.map(|s| s.as_str()),
                        query.label.as_ref().map(|l| l.to_lowercase()),
                        after.map(|p| millis(p.created_at)),
                        after.map(|p| p.id.to_string()),
                        i64::try_from(query.limit + 1).unwrap_or(i64::MAX),
                    ],
                    |row| row.get::<_, String>(0),
                )?;
                let mut jobs = rows.map(|r| r.and_then(|json| decode(&json))).collect::<rusqlite::Result<Vec<_>>>()?;
                let more = jobs.len() > query.limit;
                jobs.truncate(query.limit);
                let next = if more { jobs.last().map(ListPosition::of) } else { None };
                Ok(Page { jobs, next })
            })
            .await
    }

    async fn delete(&self, owner: &OwnerId, id: &JobId) -> Result<Option<Job>, BackendError> {
        let (owner, id) = (owner.as_str().to_owned(), id.to_string());
        self.db
            .write("delete job", Durability::Full, move |conn| {
                conn.prepare_cached("DELETE FROM jobs WHERE id = ?1 AND owner = ?2 RETURNING record")?
                    .query_row([id, owner], |row| row.get::<_, String>(0))
                    .optional()?
                    .map(|json| decode(&json))
                    .transpose()
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::job::tests::pending_job;
    use crate::domain::{Clock, Findings, SystemClock};

    #[tokio::test]
    async fn a_departed_holders_claims_are_given_back_and_no_one_elses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        let gone = SqliteJobStore::open(&path).unwrap().held_by("gone");
        let alive = SqliteJobStore::open(&path).unwrap().held_by("alive");
        let now = SystemClock.now();
        let lease = Duration::from_secs(60);
        let mut claims = Vec::new();
        for store in [&gone, &gone, &alive] {
            let job = pending_job(now);
            store.create(&job).await.unwrap();
            let claimed = job.claim(now, lease).unwrap();
            store.update(&claimed).await.unwrap();
            claims.push(claimed);
        }
        // One of the departed holder's jobs finished before it went: nothing to give back.
        let done = claims[1].succeed(Findings::default(), now).unwrap();
        gone.update(&done).await.unwrap();

        let reopened = SqliteJobStore::open(&path).unwrap();
        assert_eq!(reopened.release_held_by("gone", now).await.unwrap(), 1);

        let released = reopened.get(&claims[0].id).await.unwrap().unwrap();
        assert_eq!((released.status(), released.version), (JobStatus::Pending, claims[0].version + 1));
        assert_eq!(reopened.get(&claims[1].id).await.unwrap(), Some(done));
        assert_eq!(reopened.get(&claims[2].id).await.unwrap().as_ref(), Some(&claims[2]), "a live holder's claim");
        assert_eq!(reopened.release_held_by("gone", now).await.unwrap(), 0, "given back once");
    }
}
