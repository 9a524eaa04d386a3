//! In-memory test doubles for the ports, with switches to make them fail.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use labelq_shared::domain::{
    Clock, Confidence, DetectOptions, IdempotencyKey, Job, JobId, Label, ObjectKey, OwnerId, SystemClock,
    truncate_to_millis,
};
use labelq_shared::ports::{
    BackendError, Created, DetectError, Envelope, ImageInput, ImageStore, InputKind, JobPublisher, JobStore,
    LabelDetector, ListQuery, Page, StoredImage, UpdateError,
};
use time::OffsetDateTime;
use tokio::sync::Notify;

fn unavailable(operation: &'static str) -> BackendError {
    BackendError::transient(operation, "injected outage")
}

#[derive(Debug, Default)]
pub struct MemoryImages {
    pub images: Mutex<HashMap<String, Bytes>>,
    pub fail_puts: AtomicBool,
}

impl MemoryImages {
    pub fn len(&self) -> usize {
        self.images.lock().unwrap().len()
    }
}

#[async_trait]
impl ImageStore for MemoryImages {
    async fn put(&self, key: &ObjectKey, image: &StoredImage) -> Result<(), BackendError> {
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(unavailable("put image"));
        }
        self.images.lock().unwrap().insert(key.to_string(), image.bytes.clone());
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, BackendError> {
        Ok(self.images.lock().unwrap().get(key.as_str()).cloned())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.images.lock().unwrap().remove(key.as_str());
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
        self.jobs.lock().unwrap().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) { Err(unavailable("job store")) } else { Ok(()) }
    }
}

#[async_trait]
impl JobStore for MemoryJobs {
    async fn create(&self, job: &Job) -> Result<Created, BackendError> {
        self.check()?;
        let mut jobs = self.jobs.lock().unwrap();
        if let Some(key) = &job.idempotency_key
            && let Some(existing) =
                jobs.values().find(|j| j.owner == job.owner && j.idempotency_key.as_ref() == Some(key))
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
        let jobs = self.jobs.lock().unwrap();
        Ok(jobs.values().find(|j| &j.owner == owner && j.idempotency_key.as_ref() == Some(key)).cloned())
    }

    async fn update(&self, job: &Job) -> Result<(), UpdateError> {
        self.check()?;
        let mut jobs = self.jobs.lock().unwrap();
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
        let mut jobs: Vec<Job> = self.jobs.lock().unwrap().values().filter(|j| &j.owner == owner).cloned().collect();
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        jobs.truncate(query.limit);
        Ok(Page { jobs, next: None })
    }

    async fn delete(&self, owner: &OwnerId, id: &JobId) -> Result<Option<Job>, BackendError> {
        self.check()?;
        let mut jobs = self.jobs.lock().unwrap();
        match jobs.get(id) {
            Some(j) if &j.owner == owner => Ok(jobs.remove(id)),
            _ => Ok(None),
        }
    }
}

#[derive(Debug, Default)]
pub struct MemoryPublisher {
    pub published: Mutex<Vec<Envelope>>,
    pub fail: AtomicBool,
}

#[async_trait]
impl JobPublisher for MemoryPublisher {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BackendError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(unavailable("publish"));
        }
        self.published.lock().unwrap().push(envelope.clone());
        Ok(())
    }
}

/// What the scripted detector does on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Succeed,
    FailTransiently,
    Panic,
    /// Wait until `release` is notified, then succeed.
    Block,
}

#[derive(Debug)]
pub struct ScriptedDetector {
    pub behaviour: Mutex<Behaviour>,
    pub calls: AtomicUsize,
    pub entered: Notify,
    pub release: Notify,
}

impl ScriptedDetector {
    pub fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            behaviour: Mutex::new(behaviour),
            calls: AtomicUsize::new(0),
            entered: Notify::new(),
            release: Notify::new(),
        })
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

pub fn label(name: &str) -> Label {
    Label {
        name: name.into(),
        confidence: Confidence::new(90.0).unwrap(),
        parents: vec![],
        aliases: vec![],
        categories: vec![],
        instances: vec![],
    }
}

#[async_trait]
impl LabelDetector for ScriptedDetector {
    fn input_kind(&self) -> InputKind {
        InputKind::Bytes
    }

    async fn detect(&self, _: ImageInput, _: &DetectOptions) -> Result<Vec<Label>, DetectError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let behaviour = *self.behaviour.lock().unwrap();
        match behaviour {
            Behaviour::Succeed => Ok(vec![label("Thing")]),
            Behaviour::FailTransiently => Err(DetectError::Transient("injected".into())),
            Behaviour::Panic => panic!("detector bug"),
            Behaviour::Block => {
                self.entered.notify_one();
                self.release.notified().await;
                Ok(vec![label("Thing")])
            }
        }
    }
}

/// A clock that only moves when told.
#[derive(Debug)]
pub struct TestClock(Mutex<OffsetDateTime>);

impl Default for TestClock {
    fn default() -> Self {
        Self(Mutex::new(SystemClock.now()))
    }
}

impl TestClock {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        truncate_to_millis(*self.0.lock().unwrap())
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
impl labelq_shared::ports::JobQueue for RecordingQueue {
    async fn receive(
        &self,
        _: usize,
        _: Duration,
        _: Duration,
    ) -> Result<Vec<labelq_shared::ports::Delivery>, BackendError> {
        Ok(Vec::new())
    }

    async fn ack(&self, d: &labelq_shared::ports::Delivery) -> Result<(), BackendError> {
        self.acked.lock().unwrap().push(d.message_id.clone());
        Ok(())
    }

    async fn retry(&self, d: &labelq_shared::ports::Delivery, delay: Duration) -> Result<(), BackendError> {
        self.retried.lock().unwrap().push((d.message_id.clone(), delay));
        Ok(())
    }

    async fn dead_letter(&self, d: &labelq_shared::ports::Delivery) -> Result<(), BackendError> {
        self.dead_lettered.lock().unwrap().push(d.message_id.clone());
        Ok(())
    }
}

/// Succeeds, except transiently for images whose bytes are in `failing`.
#[derive(Debug, Default)]
pub struct SelectiveDetector {
    pub failing: Mutex<Vec<Bytes>>,
}

#[async_trait]
impl LabelDetector for SelectiveDetector {
    fn input_kind(&self) -> InputKind {
        InputKind::Bytes
    }

    async fn detect(&self, image: ImageInput, _: &DetectOptions) -> Result<Vec<Label>, DetectError> {
        if let ImageInput::Bytes { bytes, .. } = &image
            && self.failing.lock().unwrap().contains(bytes)
        {
            return Err(DetectError::Transient("injected for this image".into()));
        }
        Ok(vec![label("Thing")])
    }
}

/// A minimal PNG header of the given size: enough for the API's checks.
pub fn png_header(width: u32, height: u32) -> Bytes {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    v.extend_from_slice(&width.to_be_bytes());
    v.extend_from_slice(&height.to_be_bytes());
    v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    Bytes::from(v)
}
