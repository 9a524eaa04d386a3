//! [`SqliteDefaultCallbacks`]: owners' default callbacks in a SQLite file, one row per owner.
//! Disabling is one conditional `UPDATE` (the same URL, still active), so a 410 for a URL the
//! owner has since replaced leaves the new one alone.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use super::{Db, Durability, millis};
use crate::domain::{CallbackUrl, DefaultCallback, OwnerId};
use crate::ports::{BackendError, DefaultCallbacks};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS default_callbacks (
    owner       TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    disabled_at INTEGER
) WITHOUT ROWID;
";

#[derive(Debug, Clone)]
pub struct SqliteDefaultCallbacks {
    db: Db,
}

impl SqliteDefaultCallbacks {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        Ok(Self { db: Db::open(path, SCHEMA, &[], "")? })
    }
}

fn from_millis(ms: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, Box::new(e)))
}

#[async_trait]
impl DefaultCallbacks for SqliteDefaultCallbacks {
    async fn get(&self, owner: &OwnerId) -> Result<Option<DefaultCallback>, BackendError> {
        let owner = owner.as_str().to_owned();
        self.db
            .read("read a default callback", move |conn| {
                let row = conn
                    .query_row(
                        "SELECT url, updated_at, disabled_at FROM default_callbacks WHERE owner = ?1",
                        [&owner],
                        |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, Option<i64>>(2)?)),
                    )
                    .optional()?;
                let Some((url, updated_at, disabled_at)) = row else { return Ok(None) };
                let url = CallbackUrl::parse(&url).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
                })?;
                Ok(Some(DefaultCallback {
                    url,
                    updated_at: from_millis(updated_at)?,
                    disabled_at: disabled_at.map(from_millis).transpose()?,
                }))
            })
            .await
    }

    async fn put(&self, owner: &OwnerId, callback: &DefaultCallback) -> Result<(), BackendError> {
        let (owner, url) = (owner.as_str().to_owned(), callback.url.as_str().to_owned());
        let (updated_at, disabled_at) = (millis(callback.updated_at), callback.disabled_at.map(millis));
        self.db
            .write("set a default callback", Durability::Full, move |conn| {
                conn.execute(
                    "INSERT INTO default_callbacks (owner, url, updated_at, disabled_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (owner) DO UPDATE SET url = ?2, updated_at = ?3, disabled_at = ?4",
                    params![owner, url, updated_at, disabled_at],
                )?;
                Ok(())
            })
            .await
    }

    async fn delete(&self, owner: &OwnerId) -> Result<bool, BackendError> {
        let owner = owner.as_str().to_owned();
        self.db
            .write("remove a default callback", Durability::Full, move |conn| {
                Ok(conn.execute("DELETE FROM default_callbacks WHERE owner = ?1", [&owner])? > 0)
            })
            .await
    }

    async fn disable(&self, owner: &OwnerId, url: &CallbackUrl, at: OffsetDateTime) -> Result<bool, BackendError> {
        let (owner, url, at) = (owner.as_str().to_owned(), url.as_str().to_owned(), millis(at));
        self.db
            .write("disable a default callback", Durability::Full, move |conn| {
                let changed = conn.execute(
                    "UPDATE default_callbacks SET disabled_at = ?3
                     WHERE owner = ?1 AND url = ?2 AND disabled_at IS NULL",
                    params![owner, url, at],
                )?;
                Ok(changed > 0)
            })
            .await
    }
}
