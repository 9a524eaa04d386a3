//! Ports: the small async traits the services are written against. Each has an embedded adapter
//! (directory, SQLite, ONNX) and an AWS adapter (S3, DynamoDB, SNS/SQS, Rekognition).
//!
//! Every error a port returns says whether retrying can help. The worker turns that into "retry
//! with backoff" or "fail the job with a reason"; the API into 503 or 500. Adapters decide it per
//! backend error deliberately (throttling and timeouts are transient; a missing bucket is not).

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;

use crate::domain::{
    CallbackUrl, ConnectionId, ContentType, CorrelationId, DeclaredUpload, DefaultCallback, DetectOptions, DropKey,
    FailureCode, Findings, IdempotencyKey, ImageSubmitted, Job, JobId, JobStatus, LiveConnection, Message, ObjectKey,
    OwnerId, UploadTarget,
};

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A failure of a backend (a store, a queue, a detector's service).
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed")]
pub struct BackendError {
    pub operation: &'static str,
    /// Whether the same call may succeed later (throttling, timeouts, 5xx, a busy database).
    pub retryable: bool,
    #[source]
    pub source: BoxError,
}

impl BackendError {
    pub fn transient(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self { operation, retryable: true, source: source.into() }
    }

    pub fn permanent(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self { operation, retryable: false, source: source.into() }
    }
}

/// An image as stored: the bytes, and what the API learnt about them.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub bytes: Bytes,
    pub content_type: ContentType,
    pub owner: OwnerId,
    pub sha256: String,
}

/// Where submitted images live (a directory; S3).
#[async_trait]
pub trait ImageStore: Send + Sync + fmt::Debug {
    /// Stores the image durably: when this returns, the bytes survive a crash.
    async fn put(&self, key: &ObjectKey, image: &StoredImage) -> Result<(), BackendError>;
    /// The bytes, or `None` if there is no such image.
    async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, BackendError>;
    /// The first `max` + 1 bytes at most, or `None` if there is no such image: more than `max`
    /// says the image is larger than the caller takes, without reading the rest (an object put
    /// under an upload key by someone else may be of any size).
    async fn get_at_most(&self, key: &ObjectKey, max: u64) -> Result<Option<Bytes>, BackendError>;
    /// Removes the image; removing a missing image is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError>;
}

/// The outcome of creating a job.
#[derive(Debug)]
pub enum Created {
    Created,
    /// The owner already used this idempotency key; here is that job.
    KeyTaken(Box<Job>),
}

/// A compare-and-swap that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The stored job is not the version the update was computed from (or is gone).
    #[error("the job changed or disappeared since it was read")]
    Conflict,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What to list: the owner's jobs, newest first, optionally filtered.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub status: Option<JobStatus>,
    /// Matches a label name case-insensitively (parents included, as they are labels too).
    pub label: Option<String>,
    pub limit: usize,
    /// Resume strictly after this position.
    pub after: Option<ListPosition>,
}

/// A position in an owner's newest-first listing: the last item of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPosition {
    pub created_at: OffsetDateTime,
    pub id: JobId,
}

impl ListPosition {
    pub fn of(job: &Job) -> Self {
        Self { created_at: job.created_at, id: job.id }
    }
}

#[derive(Debug)]
pub struct Page {
    pub jobs: Vec<Job>,
    /// Where the next page starts, if there may be one.
    pub next: Option<ListPosition>,
}

/// Where the results of dropped images are written, beside the drops (a results directory; a
/// results prefix of the bucket), for submitters who never call the API.
#[async_trait]
pub trait DropResults: Send + Sync + fmt::Debug {
    /// Writes `json` as the result of the drop under `key`, whole, replacing an earlier one.
    async fn write(&self, key: &DropKey, json: &[u8]) -> Result<(), BackendError>;
}

/// Where dropped images are read from (the drop directory; the bucket's drop prefix).
#[async_trait]
pub trait DroppedObjects: Send + Sync + fmt::Debug {
    /// The bytes of the drop under `key`, or `None` if there is none, or (where the store can tell,
    /// as S3 can with `If-Match`) it is no longer the content whose ETag is `etag`. At most `max` +
    /// 1 bytes are read: more than `max` says it is larger than the caller takes.
    async fn get(&self, key: &DropKey, max: u64, etag: Option<&str>) -> Result<Option<Bytes>, BackendError>;
}

/// Issues signed upload targets: where a client sends the bytes of a direct upload (a presigned
/// S3 PUT; a PUT to `labelq serve`, signed with its key). The target binds the declared length,
/// type and digest, and expires with the declaration.
#[async_trait]
pub trait UploadTargets: Send + Sync + fmt::Debug {
    async fn target(&self, key: &ObjectKey, upload: &DeclaredUpload) -> Result<UploadTarget, BackendError>;
}

/// Where jobs are recorded (SQLite; DynamoDB).
#[async_trait]
pub trait JobStore: Send + Sync + fmt::Debug {
    /// Creates the job if its id is new and, when it has one, its idempotency key is unused by
    /// its owner. Atomic: the key is never taken without the job.
    async fn create(&self, job: &Job) -> Result<Created, BackendError>;
    /// The job with this id, whoever owns it. Services scope reads by owner.
    async fn get(&self, id: &JobId) -> Result<Option<Job>, BackendError>;
    /// The job the owner created with this idempotency key.
    async fn find_by_idempotency_key(&self, owner: &OwnerId, key: &IdempotencyKey)
    -> Result<Option<Job>, BackendError>;
    /// Writes `job` only if the stored job has `job.version - 1`: the conditional transition.
    async fn update(&self, job: &Job) -> Result<(), UpdateError>;
    async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<Page, BackendError>;
    /// Deletes the owner's job (and frees its idempotency key); returns it, or `None` if the owner
    /// has no such job.
    async fn delete(&self, owner: &OwnerId, id: &JobId) -> Result<Option<Job>, BackendError>;
}

/// Where owners' default callbacks are kept (SQLite; DynamoDB).
#[async_trait]
pub trait DefaultCallbacks: Send + Sync + fmt::Debug {
    async fn get(&self, owner: &OwnerId) -> Result<Option<DefaultCallback>, BackendError>;
    /// Sets the owner's default callback, replacing any (a disabled one included).
    async fn put(&self, owner: &OwnerId, callback: &DefaultCallback) -> Result<(), BackendError>;
    /// Removes it; whether there was one.
    async fn delete(&self, owner: &OwnerId) -> Result<bool, BackendError>;
    /// Disables the owner's default callback if it is still an active `url` (the owner may have
    /// changed it since the job that found it gone was submitted); whether it did.
    async fn disable(&self, owner: &OwnerId, url: &CallbackUrl, at: OffsetDateTime) -> Result<bool, BackendError>;
}

/// Where the gateway-held live connections are recorded, with what each follows (DynamoDB).
/// Records of connections that closed without a word expire on their own.
#[async_trait]
pub trait LiveConnections: Send + Sync + fmt::Debug {
    /// Records a new connection (or replaces the record of a reused id).
    async fn open(&self, connection: &LiveConnection) -> Result<(), BackendError>;
    async fn get(&self, id: &ConnectionId) -> Result<Option<LiveConnection>, BackendError>;
    /// Adds `job` (or, with `None`, all the owner's jobs) to what the connection follows, unless
    /// that would make more than `limit` subscriptions ([`Following::len`]); decided in one write,
    /// so messages handled at once cannot pass the limit together.
    ///
    /// [`Following::len`]: crate::domain::Following::len
    async fn follow(&self, id: &ConnectionId, job: Option<&JobId>, limit: usize) -> Result<Followed, BackendError>;
    /// Takes `job` (or, with `None`, every subscription) from what the connection follows.
    async fn unfollow(&self, id: &ConnectionId, job: Option<&JobId>) -> Result<(), BackendError>;
    /// Forgets the connection; forgetting one already gone is not an error.
    async fn close(&self, id: &ConnectionId) -> Result<(), BackendError>;
    /// The owner's open connections that follow `job`, or all of the owner's jobs.
    async fn following(&self, owner: &OwnerId, job: &JobId) -> Result<Vec<LiveConnection>, BackendError>;
}

/// What [`LiveConnections::follow`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// Followed now (or already).
    Following,
    /// The connection holds as many subscriptions as it may.
    Full,
    /// No such connection (closed, or never recorded).
    NoConnection,
}

/// Why a message did not reach a live connection.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection is closed: forget it.
    #[error("the connection is gone")]
    Gone,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Sends text messages down gateway-held connections (API Gateway's management API).
#[async_trait]
pub trait LiveSender: Send + Sync + fmt::Debug {
    async fn send(&self, id: &ConnectionId, text: &str) -> Result<(), SendError>;
}

/// Why a bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not good: the caller's fault (401).
    #[error("{0}")]
    Invalid(&'static str),
    /// It could not be checked (the issuer's keys are out of reach): ours (500).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Checks a bearer token and names its owner, where no gateway has checked it already (a
/// WebSocket API's `$connect`).
#[async_trait]
pub trait TokenVerifier: Send + Sync + fmt::Debug {
    async fn verify(&self, token: &str) -> Result<OwnerId, TokenError>;
}

/// A message with its transport attributes: its kind (`message.kind()`) and the correlation id
/// of the request that caused it travel beside the body, as SNS/SQS message attributes.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub message: Message,
    pub correlation_id: CorrelationId,
}

impl Envelope {
    pub fn new(message: impl Into<Message>, correlation_id: CorrelationId) -> Self {
        Self { message: message.into(), correlation_id }
    }

    /// The "image submitted" message for a recorded job.
    pub fn for_job(job: &Job) -> Self {
        Self::new(ImageSubmitted::for_job(job), job.correlation_id.clone())
    }
}

/// Where messages are published (the SQLite queue; SNS), whatever their kind.
#[async_trait]
pub trait MessagePublisher: Send + Sync + fmt::Debug {
    /// Publishes durably: when this returns, the message will be delivered at least once.
    async fn publish(&self, envelope: &Envelope) -> Result<(), BackendError>;
}

/// A message received from a queue.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    /// Names this receipt of the message; acknowledging needs it.
    pub receipt: String,
    pub body: String,
    pub correlation_id: Option<CorrelationId>,
    /// 1 on the first delivery.
    pub receive_count: u32,
}

/// The consuming side of the queue, for the worker pool of `labelq serve` (the SQLite queue; SQS
/// polled the way Lambda's event source mapping does). On Lambda, the event source mapping is the
/// consumer and only the worker's disposition is used.
#[async_trait]
pub trait JobQueue: Send + Sync + fmt::Debug {
    /// Up to `max` messages, each hidden from other consumers for `visibility`; waits up to `wait`
    /// for the first one.
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Delivery>, BackendError>;
    /// Done with the message: delete it.
    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError>;
    /// Not done: make the message visible again after `delay`.
    async fn retry(&self, delivery: &Delivery, delay: Duration) -> Result<(), BackendError>;
    /// Give up: move the message to the dead-letter queue. Queues that dead-letter by receive count
    /// (SQS redrive) make it visible at once so the next receive moves it.
    async fn dead_letter(&self, delivery: &Delivery) -> Result<(), BackendError>;
}

/// The image a detector is given: its bytes, or where it is stored for detectors that read it
/// themselves (Rekognition reads S3 directly; fetching the bytes first would be wasted work).
#[derive(Debug, Clone)]
pub enum ImageInput {
    Bytes { bytes: Bytes, content_type: ContentType },
    Stored { key: ObjectKey, content_type: ContentType },
}

/// Which [`ImageInput`] a detector wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Bytes,
    Stored,
}

/// Why detection failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The image itself is the problem; retrying cannot help. The job fails with this reason.
    #[error("{message}")]
    Permanent {
        code: FailureCode,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The detector or its service failed; a later attempt may succeed.
    #[error("label detection failed transiently")]
    Transient(#[source] BoxError),
}

impl DetectError {
    pub fn permanent(code: FailureCode, message: impl Into<String>) -> Self {
        Self::Permanent { code, message: message.into(), source: None }
    }
}

/// Turns an image into labels, and where its features ask for them the image's text and
/// properties (the built-in ONNX models; Rekognition).
#[async_trait]
pub trait LabelDetector: Send + Sync + fmt::Debug {
    fn input_kind(&self) -> InputKind;
    async fn detect(&self, image: ImageInput, options: &DetectOptions) -> Result<Findings, DetectError>;
}

/// One signed call to a callback receiver.
#[derive(Debug, Clone)]
pub struct CallbackRequest {
    pub url: CallbackUrl,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` and the content type.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// The receiver's answer: its status, and how long it asked to be left alone (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackAnswer {
    pub status: u16,
    pub retry_after: Option<Duration>,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Not made: the target's address is not one labelq may call. Retrying cannot help.
    #[error("refused: {0}")]
    Refused(String),
    /// Made, without an answer: a timeout, a refused connection, a TLS failure.
    #[error("no answer: {0}")]
    NoAnswer(String),
}

/// Calls callback receivers (an HTTP client that guards where it connects). Follows no redirects
/// and reads at most a few KB of an answer.
#[async_trait]
pub trait CallbackSender: Send + Sync + fmt::Debug {
    async fn send(&self, request: &CallbackRequest) -> Result<CallbackAnswer, CallError>;
}
