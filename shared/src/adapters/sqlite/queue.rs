//! [`SqliteQueue`]: a durable at-least-once queue in a SQLite file, with SQS's semantics so the
//! worker behaves the same locally and on AWS:
//!
//! - a received message is hidden for a visibility timeout, then reappears unless acknowledged;
//! - every receive increments the message's receive count;
//! - a message that has been received `max_receives` times and comes up again is moved to the
//!   dead-letter table instead of being delivered (SQS's redrive policy);
//! - a receive hands out a fresh receipt, and only the latest receipt can acknowledge, so a worker
//!   that lost its message to a timeout cannot delete the redelivered copy.
//!
//! A publish is committed with `synchronous = FULL`: when it returns, the message survives a crash.
//! Receives, acknowledgements and visibility changes use `NORMAL` (see the module docs of
//! [`super`]): losing one in a power cut only causes an idempotent redelivery. A crash
//! mid-processing leaves the message to reappear after its visibility timeout, or at once when the
//! next process to open the file finds its [`Holder`](super::Holder) gone.
//!
//! Time comes from the injected [`Clock`]. A publish wakes one waiting receiver in the same
//! process (one message, one receiver: waking them all would have each but one look for nothing
//! in a transaction of its own); otherwise receivers look again at the next visibility deadline,
//! and at least every `poll_interval` in case another process shares the file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Db, Durability, millis};
use crate::config::MaxReceives;
use crate::domain::{Clock, CorrelationId};
use crate::ports::{BackendError, Delivery, Envelope, JobQueue, MessagePublisher};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    TEXT NOT NULL UNIQUE,
    body          TEXT NOT NULL,
    attributes    TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (visible_at, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    message_id       TEXT PRIMARY KEY,
    body             TEXT NOT NULL,
    attributes       TEXT NOT NULL,
    sent_at          INTEGER NOT NULL,
    receive_count    INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL
);
";

/// Added after the first release; files written before get them on open.
const COLUMNS: &[(&str, &str, &str)] = &[("messages", "holder", "TEXT")];
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS messages_held ON messages (holder) WHERE holder IS NOT NULL;";

/// How often a waiting receiver looks again for messages another process may have published.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Message attributes, as SNS/SQS carry them beside the body.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Attributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_type: Option<String>,
}

/// How many messages are where; for `labelq serve`'s status line and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    pub visible: u64,
    pub in_flight: u64,
    pub dead: u64,
}

#[derive(Debug, Clone)]
pub struct SqliteQueue {
    db: Db,
    max_receives: u32,
    clock: Arc<dyn Clock>,
    published: Arc<Notify>,
    poll_interval: Duration,
    /// Recorded on the messages this queue hands out.
    holder: Option<String>,
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue; a message goes to the dead-letter table when it comes
    /// up for its `max_receives + 1`-th delivery.
    pub fn open(path: &Path, max_receives: MaxReceives, clock: Arc<dyn Clock>) -> rusqlite::Result<Self> {
        Ok(Self {
            db: Db::open(path, SCHEMA, COLUMNS, INDEXES)?,
            max_receives: max_receives.get(),
            clock,
            published: Arc::new(Notify::new()),
            poll_interval: POLL_INTERVAL,
            holder: None,
        })
    }

    /// The same queue, recording `holder` on the messages it hands out.
    pub fn held_by(self, holder: &str) -> Self {
        Self { holder: Some(holder.to_owned()), ..self }
    }

    /// The same queue, looking for other processes' messages every `interval` while it waits.
    pub fn polling_every(self, interval: Duration) -> Self {
        Self { poll_interval: interval, ..self }
    }

    fn now(&self) -> i64 {
        millis(self.clock.now())
    }

    /// Makes every message `holder` still has in flight visible at once: that process is gone.
    /// Returns how many.
    pub async fn release_held_by(&self, holder: &str) -> Result<usize, BackendError> {
        let (holder, now) = (holder.to_owned(), self.now());
        let released = self
            .db
            .write("release a departed holder's messages", Durability::Full, move |conn| {
                conn.execute(
                    "UPDATE messages SET visible_at = MIN(visible_at, ?2), holder = NULL WHERE holder = ?1",
                    params![holder, now],
                )
            })
            .await?;
        if released > 0 {
            self.published.notify_waiters();
        }
        Ok(released)
    }

    pub async fn counts(&self) -> Result<QueueCounts, BackendError> {
        let now = self.now();
        self.db
            .read("count messages", move |conn| {
                let (visible, in_flight) = conn.query_row(
                    "SELECT COALESCE(SUM(visible_at <= ?1), 0), COALESCE(SUM(visible_at > ?1), 0) FROM messages",
                    [now],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                )?;
                let dead = conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |row| row.get::<_, i64>(0))?;
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                Ok(QueueCounts { visible: count(visible), in_flight: count(in_flight), dead: count(dead) })
            })
            .await
    }

    /// The bodies in the dead-letter table, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<String>, BackendError> {
        self.db
            .read("list dead letters", |conn| {
                conn.prepare("SELECT body FROM dead_letters ORDER BY dead_lettered_at, message_id")?
                    .query_map([], |row| row.get::<_, String>(0))?
                    .collect()
            })
            .await
    }

    /// Sends a raw body, as SNS would deliver any publisher's message. `publish` is the typed path.
    pub async fn send_raw(&self, body: String, correlation_id: Option<&CorrelationId>) -> Result<(), BackendError> {
        self.send(
            body,
            Attributes { correlation_id: correlation_id.map(|c| c.as_str().to_owned()), message_type: None },
        )
        .await
    }

    async fn send(&self, body: String, attributes: Attributes) -> Result<(), BackendError> {
        let attributes = serde_json::to_string(&attributes).map_err(|e| BackendError::permanent("send message", e))?;
        let message_id = Uuid::new_v4().to_string();
        let now = self.now();
        self.db
            .write("send message", Durability::Full, move |conn| {
                conn.execute(
                    "INSERT INTO messages (message_id, body, attributes, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![message_id, body, attributes, now],
                )
            })
            .await?;
        // A receiver notified but gone before it looked passes the wake-up on (tokio's `Notify`);
        // with none waiting, the next to wait looks at once.
        self.published.notify_one();
        Ok(())
    }

    /// One non-blocking receive: dead-letters what has exhausted its receives, then leases up to
    /// `max` visible messages. Writes (and fsyncs) only when there is something to change.
    async fn try_receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<(Vec<Delivery>, Option<i64>), BackendError> {
        let now = self.now();
        let visible_until = now.saturating_add(duration_millis(visibility));
        let max_receives = self.max_receives;
        let holder = self.holder.clone();
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        self.db
            .write("receive messages", Durability::Relaxed, move |conn| {
                let tx = conn.transaction()?;
                let dead = tx.execute(
                    "INSERT INTO dead_letters (message_id, body, attributes, sent_at, receive_count, dead_lettered_at)
                     SELECT message_id, body, attributes, sent_at, receive_count, ?1 FROM messages
                     WHERE visible_at <= ?1 AND receive_count >= ?2",
                    params![now, max_receives],
                )?;
                if dead > 0 {
                    tx.execute("DELETE FROM messages WHERE visible_at <= ?1 AND receive_count >= ?2", params![now, max_receives])?;
                    tracing::warn!(count = dead, "messages moved to the dead-letter table");
                }
                let picked = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT seq, message_id, body, attributes, receive_count FROM messages
                         WHERE visible_at <= ?1 ORDER BY visible_at, seq LIMIT ?2",
                    )?;
                    stmt.query_map(params![now, limit], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, u32>(4)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?
                };
                let mut deliveries = Vec::with_capacity(picked.len());
                for (seq, message_id, body, attributes, receive_count) in picked {
                    let receipt = Uuid::new_v4().to_string();
                    tx.execute(
                        "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?1, receipt = ?2, holder = ?3
                         WHERE seq = ?4",
                        params![visible_until, receipt, holder, seq],
                    )?;
                    let attributes: Attributes = serde_json::from_str(&attributes).unwrap_or_default();
                    deliveries.push(Delivery {
                        message_id,
                        receipt,
                        body,
                        correlation_id: attributes.correlation_id.and_then(|c| CorrelationId::parse(&c).ok()),
                        receive_count: receive_count.saturating_add(1),
                    });
                }
                let next_visible = if deliveries.is_empty() {
                    tx.query_row("SELECT MIN(visible_at) FROM messages", [], |row| row.get::<_, Option<i64>>(0))
                        .optional()?
                        .flatten()
                } else {
                    None
                };
                if dead > 0 || !deliveries.is_empty() {
                    tx.commit()?;
                }
                Ok((deliveries, next_visible))
            })
            .await
    }

    /// Runs an update keyed by the delivery's receipt. No row changed means the message was
    /// redelivered to someone else after our visibility ran out: their receipt is the live one now,
    /// and, as with SQS, that is not an error for us.
    async fn settle<F>(&self, operation: &'static str, delivery: &Delivery, f: F) -> Result<(), BackendError>
    where
        F: FnOnce(&mut rusqlite::Connection, &str, &str) -> rusqlite::Result<usize> + Send + 'static,
    {
        let (message_id, receipt) = (delivery.message_id.clone(), delivery.receipt.clone());
        let changed = self.db.write(operation, Durability::Relaxed, move |conn| f(conn, &message_id, &receipt)).await?;
        if changed == 0 {
            tracing::debug!(message_id = %delivery.message_id, operation, "stale receipt");
        }
        Ok(())
    }
}

#[async_trait]
impl MessagePublisher for SqliteQueue {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BackendError> {
        let attributes = Attributes {
            correlation_id: Some(envelope.correlation_id.as_str().to_owned()),
            message_type: Some(envelope.message.kind().to_owned()),
        };
        self.send(envelope.message.to_json(), attributes).await
    }
}

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Delivery>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for the wake-up before looking, so a publish in between is not missed.
            let published = self.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();

            let (deliveries, next_visible) = self.try_receive(max, visibility).await?;
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until_visible = next_visible
                .map(|at| Duration::from_millis(u64::try_from(at.saturating_sub(self.now())).unwrap_or(0)))
                .unwrap_or(Duration::MAX);
            // Also look again now and then: another process may share the file.
            let wake = now + until_visible.min(deadline - now).min(self.poll_interval);
            tokio::select! {
                () = &mut published => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError> {
        self.settle("delete message", delivery, |conn, id, receipt| {
            conn.execute("DELETE FROM messages WHERE message_id = ?1 AND receipt = ?2", [id, receipt])
        })
        .await
    }

    async fn retry(&self, delivery: &Delivery, delay: Duration) -> Result<(), BackendError> {
        let at = self.now().saturating_add(duration_millis(delay));
        // Waiting out a backoff, the message is nobody's until its next receive.
        self.settle("change message visibility", delivery, move |conn, id, receipt| {
            conn.execute(
                "UPDATE messages SET visible_at = ?3, holder = NULL WHERE message_id = ?1 AND receipt = ?2",
                params![id, receipt, at],
            )
        })
        .await?;
        if delay.is_zero() {
            self.published.notify_one();
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery) -> Result<(), BackendError> {
        let now = self.now();
        self.settle("dead-letter message", delivery, move |conn, message_id, receipt| {
            let tx = conn.transaction()?;
            let moved = tx.execute(
                "INSERT INTO dead_letters (message_id, body, attributes, sent_at, receive_count, dead_lettered_at)
                     SELECT message_id, body, attributes, sent_at, receive_count, ?3 FROM messages
                     WHERE message_id = ?1 AND receipt = ?2",
                params![message_id, receipt, now],
            )?;
            tx.execute("DELETE FROM messages WHERE message_id = ?1 AND receipt = ?2", params![message_id, receipt])?;
            tx.commit()?;
            Ok(moved)
        })
        .await
    }
}
