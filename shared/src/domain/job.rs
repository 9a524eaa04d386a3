//! The job record and its state machine.
//!
//! ```text
//! AWAITING_UPLOAD ──arrived──▶ PENDING ──claim──▶ PROCESSING ──succeed──▶ SUCCEEDED
//!                                 ▲                 │  │
//!                                 └────release──────┘  └──fail──▶ FAILED
//! ```
//! A job starts PENDING when its image came with it, AWAITING_UPLOAD when the client uploads the
//! image itself ([`super::upload`]). Every unfinished state may fail: a message that can never be
//! processed, an upload that never came or is not what was declared.
//!
//! Transitions are methods that can refuse; each returns the next version of the record and never
//! mutates in place. Stores persist a transition with a compare-and-swap on `version`, so two
//! workers racing on one job (SQS delivers at least once) cannot both win.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::callback::{Callback, CallbackUrl};
use super::drop::JobSource;
use super::findings::Findings;
use super::ids::{CorrelationId, IdempotencyKey, JobId, ObjectKey, OwnerId};
use super::image::{ContentType, ImageInfo};
use super::label::Label;
use super::message::{JobFinished, Outcome};
use super::upload::DeclaredUpload;

/// The externally visible status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Created by `POST /v1/uploads`: waits for its image to be uploaded to its target.
    AwaitingUpload,
    Pending,
    Processing,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub const ALL: [Self; 5] = [Self::AwaitingUpload, Self::Pending, Self::Processing, Self::Succeeded, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingUpload => "AWAITING_UPLOAD",
            Self::Pending => "PENDING",
            Self::Processing => "PROCESSING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    /// Parses a status exactly as the API writes it (`PENDING`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job failed, as a stable machine-readable code. Clients branch on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The bytes could not be decoded as an image (corrupt, truncated).
    ImageUndecodable,
    /// Decodable in principle, but a format or variant the detector does not take.
    UnsupportedImage,
    /// The image is larger than the detector accepts (pixels or bytes).
    ImageTooLarge,
    /// The stored image is gone (deleted or expired) before it was labelled.
    ImageMissing,
    /// The queue message could not be understood.
    InvalidMessage,
    /// Every attempt failed with a transient error.
    RetriesExhausted,
    /// A bug: the worker failed in a way it did not anticipate.
    Internal,
    /// The image was not uploaded before its upload target expired.
    UploadExpired,
    /// The uploaded object is not what was declared (length, type or SHA-256).
    UploadMismatch,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImageUndecodable => "image_undecodable",
            Self::UnsupportedImage => "unsupported_image",
            Self::ImageTooLarge => "image_too_large",
            Self::ImageMissing => "image_missing",
            Self::InvalidMessage => "invalid_message",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Internal => "internal",
            Self::UploadExpired => "upload_expired",
            Self::UploadMismatch => "upload_mismatch",
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason kept on a FAILED job and shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The status with the data that only exists in that status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    AwaitingUpload,
    Pending,
    /// Claimed by a worker until `lease_expires_at`; after that another delivery may re-claim it
    /// (the worker that held it crashed or timed out).
    Processing {
        #[serde(with = "crate::domain::timestamp")]
        lease_expires_at: OffsetDateTime,
    },
    /// What the detector found (the labels, and the text and properties where asked for).
    Succeeded(Findings),
    Failed {
        failure: Failure,
    },
}

impl JobState {
    pub fn status(&self) -> JobStatus {
        match self {
            Self::AwaitingUpload => JobStatus::AwaitingUpload,
            Self::Pending => JobStatus::Pending,
            Self::Processing { .. } => JobStatus::Processing,
            Self::Succeeded { .. } => JobStatus::Succeeded,
            Self::Failed { .. } => JobStatus::Failed,
        }
    }
}

/// What the image looked like when it was accepted. While a job awaits its upload, the size and
/// type are the declared ones, and the dimensions (0) and digest (empty) are not known yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub object_key: ObjectKey,
    pub content_type: ContentType,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    /// Lower-case hex SHA-256 of the bytes: detects an idempotency-key reuse with another body.
    pub sha256: String,
}

/// One labelling job: one image, its owner, its state, and its history counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub owner: OwnerId,
    pub image: ImageMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    pub correlation_id: CorrelationId,
    /// Where to call when the job finishes, and how that call stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
    /// Where the image came from, when not from a request (a drop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<JobSource>,
    /// What the client declared it would upload, when the image came by direct upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<DeclaredUpload>,
    #[serde(flatten)]
    pub state: JobState,
    /// The queue message whose handling made the job final: only a redelivery of that message
    /// announces it again (its handler may have died between the write and the announcement),
    /// not every other message naming the job (a direct upload's has two). None before final,
    /// and for jobs made final before this was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_by: Option<String>,
    /// How many times a worker claimed the job.
    pub attempts: u32,
    /// Incremented by every transition; stores write a transition only if the stored version is
    /// the one it was computed from.
    pub version: u64,
    #[serde(with = "crate::domain::timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::domain::timestamp")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "crate::domain::timestamp")]
    pub expires_at: OffsetDateTime,
}

/// Everything needed to create a job; the rest starts at its initial value.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub owner: OwnerId,
    pub image: ImageMeta,
    pub idempotency_key: Option<IdempotencyKey>,
    pub correlation_id: CorrelationId,
    pub callback: Option<CallbackUrl>,
    pub source: Option<JobSource>,
    pub now: OffsetDateTime,
    pub ttl: Duration,
}

/// A transition the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The job already has its final status; a duplicate delivery of its message is a no-op.
    #[error("the job is already {0}")]
    Finished(JobStatus),
    /// Another worker holds the job until the lease expires.
    #[error("another worker holds the job until {0}")]
    Leased(OffsetDateTime),
    #[error("cannot go from {from} to {to}")]
    Invalid { from: JobStatus, to: JobStatus },
}

impl Job {
    pub fn new(new: NewJob) -> Self {
        Self {
            id: new.id,
            owner: new.owner,
            image: new.image,
            idempotency_key: new.idempotency_key,
            correlation_id: new.correlation_id,
            callback: new.callback.map(Callback::new),
            source: new.source,
            upload: None,
            state: JobState::Pending,
            finished_by: None,
            attempts: 0,
            version: 1,
            created_at: new.now,
            updated_at: new.now,
            expires_at: new.now + new.ttl,
        }
    }

    /// A job that waits for the upload `upload` declares; its image's key is where the bytes go.
    pub fn awaiting_upload(new: NewJob, upload: DeclaredUpload) -> Self {
        Self { upload: Some(upload), state: JobState::AwaitingUpload, ..Self::new(new) }
    }

    pub fn status(&self) -> JobStatus {
        self.state.status()
    }

    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at <= now
    }

    pub fn labels(&self) -> Option<&[Label]> {
        self.findings().map(|f| f.labels.as_slice())
    }

    /// Everything the detector found; `None` until the job succeeds.
    pub fn findings(&self) -> Option<&Findings> {
        match &self.state {
            JobState::Succeeded(findings) => Some(findings),
            _ => None,
        }
    }

    /// The names the job can be found by with `label=`: its labels' and their parents', lower-cased,
    /// sorted, each once. Empty until the job succeeds.
    pub fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .labels()
            .unwrap_or_default()
            .iter()
            .flat_map(|l| std::iter::once(&l.name).chain(l.parents.iter().map(|p| &p.name)))
            .map(|n| n.to_lowercase())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn failure(&self) -> Option<&Failure> {
        match &self.state {
            JobState::Failed { failure } => Some(failure),
            _ => None,
        }
    }

    fn next(&self, state: JobState, now: OffsetDateTime) -> Self {
        Self { state, version: self.version + 1, updated_at: now, ..self.clone() }
    }

    /// The target stored the upload's bytes at `now` (it is not yet checked: that is the worker's
    /// [`arrived`](Self::arrived)). A write of its own, so that it and a worker's
    /// `upload_expired` cannot both win: whichever is written second conflicts.
    pub fn upload_stored(&self, now: OffsetDateTime) -> Result<Self, Refused> {
        match (&self.state, &self.upload) {
            (JobState::AwaitingUpload, Some(upload)) => {
                let upload = DeclaredUpload { received_at: Some(now), ..upload.clone() };
                Ok(Self { upload: Some(upload), version: self.version + 1, ..self.clone() })
            }
            (other, _) => Err(refuse(other.status(), JobStatus::AwaitingUpload)),
        }
    }

    /// The uploaded bytes are there and are what was declared (`info`, their `sha256`): the job
    /// waits for a worker like a posted one.
    pub fn arrived(&self, info: ImageInfo, sha256: String, now: OffsetDateTime) -> Result<Self, Refused> {
        match &self.state {
            JobState::AwaitingUpload => {}
            other => return Err(refuse(other.status(), JobStatus::Pending)),
        }
        let mut next = self.next(JobState::Pending, now);
        next.image =
            ImageMeta { content_type: info.content_type, width: info.width, height: info.height, sha256, ..next.image };
        // Where no target recorded when the bytes were stored (S3 does not), it is when they were seen.
        if let Some(upload) = &mut next.upload {
            upload.received_at.get_or_insert(now);
        }
        Ok(next)
    }

    /// A worker takes the job for `lease`. Allowed from PENDING, and from PROCESSING once the
    /// previous holder's lease has run out (it crashed, or its message became visible again).
    pub fn claim(&self, now: OffsetDateTime, lease: Duration) -> Result<Self, Refused> {
        match &self.state {
            JobState::Pending => {}
            JobState::Processing { lease_expires_at } if *lease_expires_at <= now => {}
            JobState::Processing { lease_expires_at } => return Err(Refused::Leased(*lease_expires_at)),
            // Nothing to label until the upload arrived.
            JobState::AwaitingUpload => {
                return Err(Refused::Invalid { from: JobStatus::AwaitingUpload, to: JobStatus::Processing });
            }
            finished => return Err(Refused::Finished(finished.status())),
        }
        let mut next = self.next(JobState::Processing { lease_expires_at: now + lease }, now);
        next.attempts += 1;
        Ok(next)
    }

    /// Records what the detector found. Only the holder of a claim gets here.
    pub fn succeed(&self, findings: Findings, now: OffsetDateTime) -> Result<Self, Refused> {
        match &self.state {
            JobState::Processing { .. } => Ok(self.next(JobState::Succeeded(findings), now)),
            other => Err(refuse(other.status(), JobStatus::Succeeded)),
        }
    }

    /// Records a permanent failure. Allowed before a claim too: a message that can never be
    /// processed fails its job without one.
    pub fn fail(&self, failure: Failure, now: OffsetDateTime) -> Result<Self, Refused> {
        match &self.state {
            JobState::AwaitingUpload | JobState::Pending | JobState::Processing { .. } => {
                Ok(self.next(JobState::Failed { failure }, now))
            }
            other => Err(refuse(other.status(), JobStatus::Failed)),
        }
    }

    /// Records how the job ended: the one way to a final state, from a claim (or, for a
    /// failure, from PENDING too). Returns the next version with the event that announces it,
    /// which holds only once that version is written.
    pub fn finish(&self, outcome: Outcome, now: OffsetDateTime) -> Result<(Self, JobFinished), Refused> {
        let next = match &outcome {
            Outcome::Succeeded(findings) => self.succeed(findings.clone(), now)?,
            Outcome::Failed { error } => self.fail(error.clone(), now)?,
        };
        let event = JobFinished::with_outcome(&next, outcome);
        Ok((next, event))
    }

    /// Records how its callback's delivery stands. Not a transition of the job's own state: its
    /// status and `updated_at` (the time it finished) stay as they are.
    pub fn with_callback(&self, callback: Callback) -> Self {
        Self { callback: Some(callback), version: self.version + 1, ..self.clone() }
    }

    /// Whether a worker's lease on the job is still running at `now`.
    pub fn is_leased(&self, now: OffsetDateTime) -> bool {
        matches!(self.state, JobState::Processing { lease_expires_at } if lease_expires_at > now)
    }

    /// Gives a claimed job back (a transient error, or shutdown), so the next delivery can claim
    /// it at once instead of waiting for the lease to run out.
    pub fn release(&self, now: OffsetDateTime) -> Result<Self, Refused> {
        match &self.state {
            JobState::Processing { .. } => Ok(self.next(JobState::Pending, now)),
            other => Err(refuse(other.status(), JobStatus::Pending)),
        }
    }
}

fn refuse(from: JobStatus, to: JobStatus) -> Refused {
    if from.is_finished() { Refused::Finished(from) } else { Refused::Invalid { from, to } }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) fn pending_job(now: OffsetDateTime) -> Job {
        Job::new(new_job(now))
    }

    fn new_job(now: OffsetDateTime) -> NewJob {
        let id = JobId::new();
        NewJob {
            id,
            owner: OwnerId::parse("alice").unwrap(),
            image: ImageMeta {
                object_key: ObjectKey::for_image(&id),
                content_type: ContentType::Png,
                size: 1234,
                width: 100,
                height: 100,
                sha256: "00".repeat(32),
            },
            idempotency_key: None,
            correlation_id: CorrelationId::new(),
            callback: None,
            source: None,
            now,
            ttl: Duration::from_secs(24 * 3600),
        }
    }

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);
    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn a_job_goes_pending_processing_succeeded() {
        let job = pending_job(NOW);
        assert_eq!((job.status(), job.version, job.attempts), (JobStatus::Pending, 1, 0));
        let claimed = job.claim(NOW, LEASE).unwrap();
        assert_eq!((claimed.status(), claimed.version, claimed.attempts), (JobStatus::Processing, 2, 1));
        let done = claimed.succeed(Findings::default(), NOW).unwrap();
        assert_eq!((done.status(), done.version), (JobStatus::Succeeded, 3));
        assert_eq!(done.expires_at, NOW + Duration::from_secs(24 * 3600));
    }

    #[test]
    fn a_finished_job_refuses_every_transition() {
        let done = pending_job(NOW).claim(NOW, LEASE).unwrap().succeed(Findings::default(), NOW).unwrap();
        let finished = Refused::Finished(JobStatus::Succeeded);
        assert_eq!(done.claim(NOW, LEASE), Err(finished.clone()));
        assert_eq!(done.succeed(Findings::default(), NOW), Err(finished.clone()));
        assert_eq!(done.fail(Failure::new(FailureCode::Internal, "x"), NOW), Err(finished.clone()));
        assert_eq!(done.release(NOW), Err(finished));
    }

    #[test]
    fn a_held_lease_refuses_a_second_claim_until_it_expires() {
        let claimed = pending_job(NOW).claim(NOW, LEASE).unwrap();
        assert_eq!(claimed.claim(NOW, LEASE), Err(Refused::Leased(NOW + LEASE)));
        let later = NOW + LEASE;
        let reclaimed = claimed.claim(later, LEASE).unwrap();
        assert_eq!(reclaimed.attempts, 2);
    }

    #[test]
    fn only_a_claimed_job_can_succeed_or_be_released() {
        let job = pending_job(NOW);
        assert!(matches!(job.succeed(Findings::default(), NOW), Err(Refused::Invalid { .. })));
        assert!(matches!(job.release(NOW), Err(Refused::Invalid { .. })));
        let released = job.claim(NOW, LEASE).unwrap().release(NOW).unwrap();
        assert_eq!(released.status(), JobStatus::Pending);
        assert!(released.fail(Failure::new(FailureCode::InvalidMessage, "x"), NOW).is_ok());
    }

    #[test]
    fn an_upload_job_waits_then_goes_on_as_a_posted_one_or_fails() {
        let upload = DeclaredUpload::new(ContentType::Png, 1234, None, Duration::from_secs(60), NOW).unwrap();
        let waiting = Job::awaiting_upload(NewJob { ..new_job(NOW) }, upload);
        assert_eq!((waiting.status(), waiting.version), (JobStatus::AwaitingUpload, 1));
        assert!(matches!(waiting.claim(NOW, LEASE), Err(Refused::Invalid { .. })), "nothing to label yet");
        let info = ImageInfo { content_type: ContentType::Png, width: 640, height: 480 };
        let arrived = waiting.arrived(info, "ab".repeat(32), NOW).unwrap();
        assert_eq!((arrived.status(), arrived.image.width, arrived.image.height), (JobStatus::Pending, 640, 480));
        assert!(arrived.arrived(info, "ab".repeat(32), NOW).is_err(), "arrives once");
        assert!(arrived.claim(NOW, LEASE).is_ok());
        let expired = waiting.fail(Failure::new(FailureCode::UploadExpired, "x"), NOW).unwrap();
        assert_eq!(expired.status(), JobStatus::Failed);
        let json = serde_json::to_value(&waiting).unwrap();
        assert_eq!(json["status"], "AWAITING_UPLOAD");
        assert_eq!(serde_json::from_value::<Job>(json).unwrap(), waiting);
    }

    #[test]
    fn the_record_round_trips_through_json_with_its_state() {
        let job = pending_job(NOW).claim(NOW, LEASE).unwrap();
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["status"], "PROCESSING");
        let back: Job = serde_json::from_value(json).unwrap();
        assert_eq!(back, job);
    }
}
