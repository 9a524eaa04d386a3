//! In-memory ports, each with a switch that makes it fail transiently. [`MemoryJobs`] passes
//! the job store contract ([`crate::contract`]) like the SQLite and DynamoDB stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use labelq_shared::domain::{
    CallbackUrl, ConnectionId, DefaultCallback, IdempotencyKey, Job, JobId, LiveConnection, ObjectKey, OwnerId,
};
use labelq_shared::ports::{
    BackendError, Created, DefaultCallbacks, Delivery, Envelope, Followed, ImageStore, JobQueue, JobStore,
    ListPosition, ListQuery, LiveConnections, LiveSender, MessagePublisher, Page, SendError, StoredImage, UpdateError,
};
use time::OffsetDateTime;

fn unavailable(operation: &'static str) -> BackendError {
    BackendError::transient(operation, "injected outage")
}

/// A lock that a panicking test thread cannot make unusable for the rest of the test.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
pub struct MemoryImages {
    pub images: Mutex<HashMap<String, Bytes>>,
    /// While set, every put fails transiently.
    pub fail_puts: AtomicBool,
}

impl MemoryImages {
    pub fn len(&self) -> usize {
        lock(&self.images).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ImageStore for MemoryImages {
    async fn put(&self, key: &ObjectKey, image: &StoredImage) -> Result<(), BackendError> {
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(unavailable("put image"));
        }
        lock(&self.images).insert(key.to_string(), image.bytes.clone());
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, BackendError> {
        Ok(lock(&self.images).get(key.as_str()).cloned())
    }

    async fn get_at_most(&self, key: &ObjectKey, max: u64) -> Result<Option<Bytes>, BackendError> {
        let cap = usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX);
        Ok(lock(&self.images).get(key.as_str()).map(|bytes| bytes.slice(..bytes.len().min(cap))))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        lock(&self.images).remove(key.as_str());
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct MemoryJobs {
    pub jobs: Mutex<HashMap<JobId, Job>>,
    /// While set, every call fails transiently.
    pub down: AtomicBool,
}

impl MemoryJobs {
    pub fn snapshot(&self, id: &JobId) -> Option<Job> {
        lock(&self.jobs).get(id).cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.jobs).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) { Err(unavailable("job store")) } else { Ok(()) }
    }
}

fn key_owner<'a>(jobs: &'a HashMap<JobId, Job>, owner: &OwnerId, key: &IdempotencyKey) -> Option<&'a Job> {
    jobs.values().find(|j| &j.owner == owner && j.idempotency_key.as_ref() == Some(key))
}

#[async_trait]
impl JobStore for MemoryJobs {
    async fn create(&self, job: &Job) -> Result<Created, BackendError> {
        self.check()?;
        let mut jobs = lock(&self.jobs);
        if let Some(key) = &job.idempotency_key
            && let Some(existing) = key_owner(&jobs, &job.owner, key)
        {
            return Ok(Created::KeyTaken(Box::new(existing.clone())));
        }
        jobs.insert(job.id, job.clone());
        Ok(Created::Created)
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, BackendError> {
        self.check()?;
        Ok(self.snapshot(id))
    }

    async fn find_by_idempotency_key(
        &self,
        owner: &OwnerId,
        key: &IdempotencyKey,
    ) -> Result<Option<Job>, BackendError> {
        self.check()?;
        Ok(key_owner(&lock(&self.jobs), owner, key).cloned())
    }

    async fn update(&self, job: &Job) -> Result<(), UpdateError> {
        self.check()?;
        let mut jobs = lock(&self.jobs);
        match jobs.get(&job.id) {
            Some(stored) if stored.version + 1 == job.version => {
                jobs.insert(job.id, job.clone());
                Ok(())
            }
            _ => Err(UpdateError::Conflict),
        }
    }

    async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<Page, BackendError> {
        self.check()?;
        let label = query.label.as_ref().map(|l| l.to_lowercase());
        let after = query.after.as_ref().map(|p| (p.created_at, p.id));
        let mut jobs: Vec<Job> = lock(&self.jobs)
            .values()
            .filter(|j| &j.owner == owner)
            .filter(|j| query.status.is_none_or(|s| j.status() == s))
            .filter(|j| label.as_ref().is_none_or(|l| j.label_names().contains(l)))
            .filter(|j| after.is_none_or(|a| (j.created_at, j.id) < a))
            .cloned()
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse((j.created_at, j.id)));
        let more = jobs.len() > query.limit;
        jobs.truncate(query.limit);
        let next = if more { jobs.last().map(ListPosition::of) } else { None };
        Ok(Page { jobs, next })
    }

    async fn delete(&self, owner: &OwnerId, id: &JobId) -> Result<Option<Job>, BackendError> {
        self.check()?;
        let mut jobs = lock(&self.jobs);
        match jobs.get(id) {
            Some(j) if &j.owner == owner => Ok(jobs.remove(id)),
            _ => Ok(None),
        }
    }
}

#[derive(Debug, Default)]
pub struct MemoryPublisher {
    pub published: Mutex<Vec<Envelope>>,
    /// While set, every publish fails transiently.
    pub fail: AtomicBool,
}

impl MemoryPublisher {
    pub fn published(&self) -> Vec<Envelope> {
        lock(&self.published).clone()
    }
}

#[async_trait]
impl MessagePublisher for MemoryPublisher {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BackendError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(unavailable("publish"));
        }
        lock(&self.published).push(envelope.clone());
        Ok(())
    }
}

/// A queue that only records what the consumer asked of it.
#[derive(Debug, Default)]
pub struct RecordingQueue {
    pub retried: Mutex<Vec<(String, Duration)>>,
    pub dead_lettered: Mutex<Vec<String>>,
    pub acked: Mutex<Vec<String>>,
}

#[async_trait]
impl JobQueue for RecordingQueue {
    async fn receive(&self, _: usize, _: Duration, _: Duration) -> Result<Vec<Delivery>, BackendError> {
        Ok(Vec::new())
    }

    async fn ack(&self, d: &Delivery) -> Result<(), BackendError> {
        lock(&self.acked).push(d.message_id.clone());
        Ok(())
    }

    async fn retry(&self, d: &Delivery, delay: Duration) -> Result<(), BackendError> {
        lock(&self.retried).push((d.message_id.clone(), delay));
        Ok(())
    }

    async fn dead_letter(&self, d: &Delivery) -> Result<(), BackendError> {
        lock(&self.dead_lettered).push(d.message_id.clone());
        Ok(())
    }
}

/// Owners' default callbacks in a map.
#[derive(Debug, Default)]
pub struct MemoryDefaultCallbacks {
    pub callbacks: Mutex<HashMap<OwnerId, DefaultCallback>>,
}

#[async_trait]
impl DefaultCallbacks for MemoryDefaultCallbacks {
    async fn get(&self, owner: &OwnerId) -> Result<Option<DefaultCallback>, BackendError> {
        Ok(lock(&self.callbacks).get(owner).cloned())
    }

    async fn put(&self, owner: &OwnerId, callback: &DefaultCallback) -> Result<(), BackendError> {
        lock(&self.callbacks).insert(owner.clone(), callback.clone());
        Ok(())
    }

    async fn delete(&self, owner: &OwnerId) -> Result<bool, BackendError> {
        Ok(lock(&self.callbacks).remove(owner).is_some())
    }

    async fn disable(&self, owner: &OwnerId, url: &CallbackUrl, at: OffsetDateTime) -> Result<bool, BackendError> {
        let mut callbacks = lock(&self.callbacks);
        match callbacks.get_mut(owner) {
            Some(current) if current.url == *url && current.is_active() => {
                current.disabled_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Live connections in a map; passes the same contract as the DynamoDB store.
#[derive(Debug, Default)]
pub struct MemoryLiveConnections {
    pub connections: Mutex<HashMap<ConnectionId, LiveConnection>>,
}

#[async_trait]
impl LiveConnections for MemoryLiveConnections {
    async fn open(&self, connection: &LiveConnection) -> Result<(), BackendError> {
        lock(&self.connections).insert(connection.id.clone(), connection.clone());
        Ok(())
    }

    async fn get(&self, id: &ConnectionId) -> Result<Option<LiveConnection>, BackendError> {
        Ok(lock(&self.connections).get(id).cloned())
    }

    async fn follow(&self, id: &ConnectionId, job: Option<&JobId>, limit: usize) -> Result<Followed, BackendError> {
        let mut connections = lock(&self.connections);
        let Some(connection) = connections.get_mut(id) else { return Ok(Followed::NoConnection) };
        let following = &mut connection.following;
        let already = match job {
            Some(job) => following.jobs.contains(job),
            None => following.all,
        };
        if !already && following.len() >= limit {
            return Ok(Followed::Full);
        }
        match job {
            Some(job) => {
                following.jobs.insert(*job);
            }
            None => following.all = true,
        }
        Ok(Followed::Following)
    }

    async fn unfollow(&self, id: &ConnectionId, job: Option<&JobId>) -> Result<(), BackendError> {
        if let Some(connection) = lock(&self.connections).get_mut(id) {
            match job {
                Some(job) => {
                    connection.following.jobs.remove(job);
                }
                None => connection.following = Default::default(),
            }
        }
        Ok(())
    }

    async fn close(&self, id: &ConnectionId) -> Result<(), BackendError> {
        lock(&self.connections).remove(id);
        Ok(())
    }

    async fn following(&self, owner: &OwnerId, job: &JobId) -> Result<Vec<LiveConnection>, BackendError> {
        let connections = lock(&self.connections);
        Ok(connections.values().filter(|c| c.owner == *owner && c.following.includes(job)).cloned().collect())
    }
}

/// Records what was sent to each connection; connections named in `gone` answer Gone, and while
/// `fail` is set every send fails transiently.
#[derive(Debug, Default)]
pub struct RecordingLiveSender {
    pub sent: Mutex<Vec<(ConnectionId, String)>>,
    pub gone: Mutex<Vec<ConnectionId>>,
    pub fail: AtomicBool,
}

impl RecordingLiveSender {
    /// The messages sent to `id`, in order.
    pub fn to(&self, id: &ConnectionId) -> Vec<String> {
        lock(&self.sent).iter().filter(|(to, _)| to == id).map(|(_, text)| text.clone()).collect()
    }
}

#[async_trait]
impl LiveSender for RecordingLiveSender {
    async fn send(&self, id: &ConnectionId, text: &str) -> Result<(), SendError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(SendError::Backend(unavailable("post to connection")));
        }
        if lock(&self.gone).contains(id) {
            return Err(SendError::Gone);
        }
        lock(&self.sent).push((id.clone(), text.to_owned()));
        Ok(())
    }
}
