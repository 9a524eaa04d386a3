//! Accepting an image: validate, store, record, announce, in that order.
//!
//! The order is what makes `202 Accepted` mean "durable": the image is stored before the job that
//! points at it, and the job is recorded before the message that names it. If announcing fails,
//! the job and image are rolled back and the client gets a retryable error; with the same
//! `Idempotency-Key` a retry is always safe.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tracing::{info, instrument, warn};

use super::{DefaultCallbackService, Stores};
use crate::domain::{
    CallbackUrl, Clock, ContentType, CorrelationId, DeclarationRefused, IdempotencyKey, ImageLimits, ImageMeta,
    ImageRejection, Job, JobId, JobSource, JobStatus, NewJob, ObjectKey, OwnerId,
};
use crate::ports::{
    BackendError, Created, Envelope, ImageStore, JobStore, MessagePublisher, StoredImage, UploadTargets,
};
use crate::webhooks::TargetPolicy;

#[derive(Debug, Clone)]
pub struct SubmitConfig {
    /// How long a job and its image are kept.
    pub ttl: Duration,
    pub limits: ImageLimits,
    /// Where completion callbacks may go; `None` where this deployment does not deliver them,
    /// and a request that asks for one is refused.
    pub callbacks: Option<TargetPolicy>,
}

impl Default for SubmitConfig {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(24 * 3600), limits: ImageLimits::default(), callbacks: None }
    }
}

/// An uploaded body with the type the client declared.
#[derive(Debug, Clone)]
pub struct Upload {
    pub bytes: Bytes,
    pub declared: ContentType,
}

#[derive(Debug, Clone)]
pub struct SubmitRequest {
    pub owner: OwnerId,
    pub upload: Upload,
    pub idempotency_key: Option<IdempotencyKey>,
    pub correlation_id: CorrelationId,
    /// Where to call when the job finishes.
    pub callback: Option<CallbackUrl>,
    /// Where the image came from, when not from a request (a drop).
    pub source: Option<JobSource>,
}

/// An accepted submission.
#[derive(Debug, Clone)]
pub struct Submission {
    pub job: Job,
    /// True when this answers a retry of an earlier submission with the same idempotency key.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Rejected(#[from] ImageRejection),
    #[error("the idempotency key was already used with a different image")]
    KeyReused,
    /// The callback URL names a target labelq will not call, or callbacks are not delivered here.
    #[error("{0}")]
    CallbackRefused(String),
    /// A direct upload's declaration is out of bounds.
    #[error(transparent)]
    Declaration(#[from] DeclarationRefused),
    /// This deployment issues no upload targets.
    #[error("this deployment does not take direct uploads")]
    NoUploads,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

#[derive(Debug, Clone)]
pub struct SubmitService {
    images: Arc<dyn ImageStore>,
    jobs: Arc<dyn JobStore>,
    publisher: Arc<dyn MessagePublisher>,
    clock: Arc<dyn Clock>,
    pub(super) config: SubmitConfig,
    defaults: Option<Arc<DefaultCallbackService>>,
    pub(super) targets: Option<Arc<dyn UploadTargets>>,
}

impl SubmitService {
    pub fn new(
        stores: Stores,
        publisher: Arc<dyn MessagePublisher>,
        clock: Arc<dyn Clock>,
        config: SubmitConfig,
    ) -> Self {
        Self { images: stores.images, jobs: stores.jobs, publisher, clock, config, defaults: None, targets: None }
    }

    /// Takes direct uploads too ([`reserve_upload`](Self::reserve_upload)), their bytes sent to
    /// the targets `targets` issues.
    pub fn with_upload_targets(mut self, targets: Arc<dyn UploadTargets>) -> Self {
        self.targets = Some(targets);
        self
    }

    /// Whether direct uploads are taken here.
    pub fn takes_uploads(&self) -> bool {
        self.targets.is_some()
    }

    /// Jobs submitted without a callback get their owner's default one, if it has one.
    pub fn with_default_callbacks(mut self, defaults: Arc<DefaultCallbackService>) -> Self {
        self.defaults = Some(defaults);
        self
    }

    pub fn limits(&self) -> &ImageLimits {
        &self.config.limits
    }

    #[instrument(skip_all, fields(owner = %req.owner, correlation_id = %req.correlation_id, job_id))]
    pub async fn submit(&self, req: SubmitRequest) -> Result<Submission, SubmitError> {
        let info = crate::domain::image::inspect(&req.upload.bytes, req.upload.declared, &self.config.limits)?;
        self.check_callback(req.callback.as_ref())?;
        let sha256 = sha256_hex(req.upload.bytes.clone()).await;

        if let Some(key) = &req.idempotency_key
            && let Some(existing) = self.jobs.find_by_idempotency_key(&req.owner, key).await?
        {
            return self.replay(existing, &sha256).await;
        }

        // Only for a new job: a replay answers the first submission, with its callback.
        let callback = self.callback_for_new_job(&req.owner, req.callback.as_ref()).await?;
        let id = JobId::new();
        tracing::Span::current().record("job_id", tracing::field::display(&id));
        let object_key = ObjectKey::for_image(&id);
        let stored = StoredImage {
            bytes: req.upload.bytes.clone(),
            content_type: info.content_type,
            owner: req.owner.clone(),
            sha256: sha256.clone(),
        };
        self.images.put(&object_key, &stored).await?;

        let job = Job::new(NewJob {
            id,
            owner: req.owner.clone(),
            image: ImageMeta {
                object_key: object_key.clone(),
                content_type: info.content_type,
                size: req.upload.bytes.len() as u64,
                width: info.width,
                height: info.height,
                sha256: sha256.clone(),
            },
            idempotency_key: req.idempotency_key.clone(),
            correlation_id: req.correlation_id.clone(),
            callback,
            source: req.source.clone(),
            now: self.clock.now(),
            ttl: self.config.ttl,
        });
        match self.jobs.create(&job).await {
            Ok(Created::Created) => {}
            Ok(Created::KeyTaken(existing)) => {
                // A concurrent request with the same key won the race; ours is redundant.
                self.discard_image(&object_key).await;
                return self.replay(*existing, &sha256).await;
            }
            Err(e) => {
                self.discard_image(&object_key).await;
                return Err(e.into());
            }
        }

        if let Err(e) = self.publisher.publish(&Envelope::for_job(&job)).await {
            self.roll_back(&job).await;
            return Err(e.into());
        }
        info!(size = job.image.size, content_type = %info.content_type, "image accepted");
        Ok(Submission { job, replayed: false })
    }

    /// Refuses a callback URL this deployment will not call.
    pub(super) fn check_callback(&self, url: Option<&CallbackUrl>) -> Result<(), SubmitError> {
        let Some(url) = url else { return Ok(()) };
        let policy = self.config.callbacks.ok_or_else(|| {
            SubmitError::CallbackRefused("this deployment does not deliver completion callbacks".into())
        })?;
        policy.check_url(url).map_err(|refusal| SubmitError::CallbackRefused(refusal.0))
    }

    /// The callback of a new job: the one asked for, else its owner's default, if any.
    pub(super) async fn callback_for_new_job(
        &self,
        owner: &OwnerId,
        asked: Option<&CallbackUrl>,
    ) -> Result<Option<CallbackUrl>, SubmitError> {
        Ok(match (asked, &self.defaults) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(defaults)) => defaults.for_new_job(owner).await?,
            (None, None) => None,
        })
    }

    pub(super) fn jobs(&self) -> &Arc<dyn JobStore> {
        &self.jobs
    }

    pub(super) fn publisher(&self) -> &Arc<dyn MessagePublisher> {
        &self.publisher
    }

    pub(super) fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Answers a retry with the job the key already names, or refuses a different body.
    async fn replay(&self, existing: Job, sha256: &str) -> Result<Submission, SubmitError> {
        if existing.image.sha256 != sha256 {
            return Err(SubmitError::KeyReused);
        }
        // The first attempt may have failed after recording the job but before its message was
        // out; publishing again is safe because the worker ignores duplicate deliveries.
        if existing.status() == JobStatus::Pending {
            self.publisher.publish(&Envelope::for_job(&existing)).await?;
        }
        Ok(Submission { job: existing, replayed: true })
    }

    /// Undoes a submission whose message could not be published, so no job waits forever for a
    /// message that will never come.
    pub(super) async fn roll_back(&self, job: &Job) {
        if let Err(e) = self.jobs.delete(&job.owner, &job.id).await {
            warn!(error = %e, cause = ?e, job_id = %job.id, "rollback could not delete the job; it stays PENDING");
        }
        self.discard_image(&job.image.object_key).await;
    }

    async fn discard_image(&self, key: &ObjectKey) {
        if let Err(e) = self.images.delete(key).await {
            warn!(error = %e, cause = ?e, %key, "could not delete an unused image; expiry will remove it");
        }
    }
}

/// SHA-256 off the async threads: a 5 MiB body takes milliseconds to hash.
async fn sha256_hex(bytes: Bytes) -> String {
    let hash = move || hex::encode(Sha256::digest(&bytes));
    match tokio::task::spawn_blocking(hash.clone()).await {
        Ok(hex) => hex,
        // The blocking pool is shutting down; hash here rather than fail the request.
        Err(_) => hash(),
    }
}
