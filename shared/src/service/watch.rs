//! Watching jobs change, for live push (Server-Sent Events and WebSocket on `labelq serve`):
//! one job with [`WatchService::follow`], or all of an owner's with [`WatchService::follow_owner`].
//!
//! Every transition is a write to the job store, so the one place to see changes is the store:
//! [`WatchedJobStore`] wraps any [`JobStore`] and, after each successful write, announces the
//! written job on [`JobChanges`], an in-process broadcast. Announcing never waits for a
//! subscriber: the broadcast keeps the last [`JobChanges::CAPACITY`] changes, and a subscriber
//! that falls further behind is told it lagged and re-reads what it follows from the store. So a
//! slow or vanished subscriber costs the worker nothing.
//!
//! The store stays the truth. A notice is a hint to look: a [`JobFeed`] also re-reads its job
//! every `recheck`, so a change written by another process (another `labelq serve` on the same
//! data directory, a worker Lambda) reaches its subscribers too, later. A feed yields each newer
//! version of its job at most once, in order, and ends after the first finished one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Interval, MissedTickBehavior};
use tracing::{debug, warn};

use super::{QueryError, QueryService};
use crate::domain::{IdempotencyKey, Job, JobId, OwnerId};
use crate::ports::{BackendError, Created, JobStore, ListQuery, Page, UpdateError};

/// One change written to the job store.
#[derive(Debug, Clone)]
pub enum Change {
    /// The job as written (created, or moved to a new version).
    Written(Arc<Job>),
    /// The owner deleted the job.
    Deleted { owner: OwnerId, id: JobId },
}

/// The in-process broadcast of job changes.
#[derive(Debug, Clone)]
pub struct JobChanges {
    sender: broadcast::Sender<Change>,
}

impl Default for JobChanges {
    fn default() -> Self {
        Self::new()
    }
}

impl JobChanges {
    /// Changes kept for subscribers that are behind; one further behind has lagged.
    pub const CAPACITY: usize = 1024;

    pub fn new() -> Self {
        Self { sender: broadcast::channel(Self::CAPACITY).0 }
    }

    /// Announces a change, made only if someone listens; never waits.
    pub fn announce(&self, change: impl FnOnce() -> Change) {
        if self.sender.receiver_count() > 0 {
            // Everyone may unsubscribe in between: nobody listening is not an error.
            let _ = self.sender.send(change());
        }
    }

    /// Every change announced from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

/// A job store that announces what it wrote.
#[derive(Debug, Clone)]
pub struct WatchedJobStore {
    inner: Arc<dyn JobStore>,
    changes: JobChanges,
}

impl WatchedJobStore {
    pub fn new(inner: Arc<dyn JobStore>, changes: JobChanges) -> Self {
        Self { inner, changes }
    }
}

#[async_trait]
impl JobStore for WatchedJobStore {
    async fn create(&self, job: &Job) -> Result<Created, BackendError> {
        let created = self.inner.create(job).await?;
        if matches!(created, Created::Created) {
            self.changes.announce(|| Change::Written(Arc::new(job.clone())));
        }
        Ok(created)
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, BackendError> {
        self.inner.get(id).await
    }

    async fn find_by_idempotency_key(
        &self,
        owner: &OwnerId,
        key: &IdempotencyKey,
    ) -> Result<Option<Job>, BackendError> {
        self.inner.find_by_idempotency_key(owner, key).await
    }

    async fn update(&self, job: &Job) -> Result<(), UpdateError> {
        self.inner.update(job).await?;
        self.changes.announce(|| Change::Written(Arc::new(job.clone())));
        Ok(())
    }

    async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<Page, BackendError> {
        self.inner.list(owner, query).await
    }

    async fn delete(&self, owner: &OwnerId, id: &JobId) -> Result<Option<Job>, BackendError> {
        let deleted = self.inner.delete(owner, id).await?;
        if deleted.is_some() {
            self.changes.announce(|| Change::Deleted { owner: owner.clone(), id: *id });
        }
        Ok(deleted)
    }
}

/// How feeds follow jobs.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// How often a feed re-reads its job from the store, whatever it was told.
    pub recheck: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self { recheck: Duration::from_secs(5) }
    }
}

/// Following an owner's jobs as they change.
#[derive(Debug, Clone)]
pub struct WatchService {
    query: Arc<QueryService>,
    changes: JobChanges,
    config: WatchConfig,
}

impl WatchService {
    pub fn new(query: Arc<QueryService>, changes: JobChanges, config: WatchConfig) -> Self {
        Self { query, changes, config }
    }

    /// Follows one of the owner's jobs: first its current state, unless the subscriber has
    /// already seen that version (`seen`, the last version it got), then each newer version,
    /// until one is finished. Another owner's job, or none, is [`QueryError::NotFound`].
    pub async fn follow(&self, owner: &OwnerId, id: &JobId, seen: Option<u64>) -> Result<JobFeed, QueryError> {
        // Subscribed before reading, so no change falls between the read and the subscription.
        let changes = self.changes.subscribe();
        let job = self.query.get(owner, id).await?;
        let mut recheck = tokio::time::interval(self.config.recheck);
        recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
        recheck.reset();
        let mut feed = JobFeed {
            query: self.query.clone(),
            owner: owner.clone(),
            id: *id,
            changes,
            recheck,
            seen,
            next: None,
            over: false,
        };
        feed.next = feed.offer(job);
        Ok(feed)
    }

    /// Follows every job of the owner from now on: each announced change, as it comes. Unlike a
    /// [`JobFeed`] it cannot re-read what it missed (there is no one job to read), so a feed that
    /// fell behind says so, with [`OwnerChange::Lagged`], and its subscriber lists the jobs again;
    /// and it sees only changes written through this process's store.
    pub fn follow_owner(&self, owner: &OwnerId) -> OwnerFeed {
        OwnerFeed { owner: owner.clone(), changes: self.changes.subscribe() }
    }
}

/// A change to one of an owner's jobs; see [`WatchService::follow_owner`].
#[derive(Debug, Clone)]
pub enum OwnerChange {
    Written(Arc<Job>),
    Deleted(JobId),
    /// This many changes (to anyone's jobs) went by unseen.
    Lagged(u64),
}

/// All of one owner's changes as they come.
#[derive(Debug)]
pub struct OwnerFeed {
    owner: OwnerId,
    changes: broadcast::Receiver<Change>,
}

impl OwnerFeed {
    /// The next change to one of the owner's jobs; `None` once the server is stopping.
    pub async fn next(&mut self) -> Option<OwnerChange> {
        loop {
            match self.changes.recv().await {
                Ok(Change::Written(job)) if job.owner == self.owner => return Some(OwnerChange::Written(job)),
                Ok(Change::Deleted { owner, id }) if owner == self.owner => return Some(OwnerChange::Deleted(id)),
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => return Some(OwnerChange::Lagged(missed)),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// One job's versions as they come; see [`WatchService::follow`].
#[derive(Debug)]
pub struct JobFeed {
    query: Arc<QueryService>,
    owner: OwnerId,
    id: JobId,
    changes: broadcast::Receiver<Change>,
    recheck: Interval,
    /// The last version yielded (or that the subscriber said it had).
    seen: Option<u64>,
    /// A version waiting to be yielded.
    next: Option<Job>,
    /// Nothing more will come: the job finished, was deleted or expired.
    over: bool,
}

impl JobFeed {
    /// Whether the feed has nothing more to give: the subscriber has seen the final version, or
    /// the job is gone.
    pub fn is_over(&self) -> bool {
        self.over && self.next.is_none()
    }

    /// The next version of the job; `None` once the feed is over.
    pub async fn next(&mut self) -> Option<Job> {
        loop {
            if let Some(job) = self.next.take() {
                return Some(job);
            }
            if self.over {
                return None;
            }
            let reread = tokio::select! {
                change = self.changes.recv() => match change {
                    Ok(Change::Written(job)) if job.id == self.id => {
                        self.next = self.offer(Job::clone(&job));
                        false
                    }
                    Ok(Change::Deleted { id, .. }) if id == self.id => {
                        self.over = true;
                        false
                    }
                    Ok(_) => false,
                    Err(RecvError::Lagged(missed)) => {
                        debug!(job_id = %self.id, missed, "job feed lagged; reading the job");
                        true
                    }
                    // The server is stopping.
                    Err(RecvError::Closed) => {
                        self.over = true;
                        false
                    }
                },
                _ = self.recheck.tick() => true,
            };
            if reread {
                self.reread().await;
            }
        }
    }

    async fn reread(&mut self) {
        match self.query.get(&self.owner, &self.id).await {
            Ok(job) => self.next = self.offer(job),
            Err(QueryError::NotFound) => self.over = true,
            // The next recheck tries again.
            Err(QueryError::Backend(e)) => warn!(error = %e, cause = ?e, job_id = %self.id, "job feed could not read"),
        }
    }

    /// The version to yield, if it is newer than what the subscriber has; a finished one is the last.
    fn offer(&mut self, job: Job) -> Option<Job> {
        if self.over || self.seen.is_some_and(|seen| job.version <= seen) {
            if job.status().is_finished() {
                self.over = true;
            }
            return None;
        }
        self.seen = Some(job.version);
        self.over = job.status().is_finished();
        Some(job)
    }
}
