//! Direct uploads: a client declares an image, gets a job that waits for its bytes
//! (AWAITING_UPLOAD) and a signed target to send them to, and uploads them there itself, so the
//! image never passes through the API (S3 takes up to 15 MiB; API Gateway passes 6 MB).
//!
//! Nothing is written before the declaration is checked and the target signed. Then the job is
//! recorded and its message published, as for a posted image, so the worker hears of the job
//! whatever becomes of the upload: a delivery that finds the bytes labels them (after checking
//! they are what was declared); one that finds none before the target expires comes back after
//! it; one that finds none after that fails the job with `upload_expired`. The bytes' arrival
//! (a bucket notification; `labelq serve`'s own upload route) announces the job again, so an
//! upload is labelled as soon as it is stored.

use std::time::Duration;

use tracing::{info, instrument};

use super::{SubmitError, SubmitService};
use crate::domain::{
    CallbackUrl, ContentType, CorrelationId, DeclaredUpload, IdempotencyKey, ImageMeta, Job, JobId, JobStatus, NewJob,
    ObjectKey, OwnerId, UploadTarget,
};
use crate::ports::{Created, Envelope, UploadTargets};

/// What a client declares it will upload.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub owner: OwnerId,
    pub content_type: ContentType,
    /// Exact length in bytes.
    pub length: u64,
    /// Hex SHA-256 of the bytes, if the client gives one (S3 then checks it).
    pub sha256: Option<String>,
    /// How long the target stays valid.
    pub window: Duration,
    pub idempotency_key: Option<IdempotencyKey>,
    pub correlation_id: CorrelationId,
    pub callback: Option<CallbackUrl>,
}

/// A job waiting for its upload, and where to send the bytes.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub job: Job,
    pub target: UploadTarget,
    /// True when this answers a retry with the same idempotency key.
    pub replayed: bool,
}

impl SubmitService {
    /// Records a job that waits for the declared upload and issues its target.
    #[instrument(skip_all, fields(owner = %req.owner, correlation_id = %req.correlation_id, job_id))]
    pub async fn reserve_upload(&self, req: UploadRequest) -> Result<Reservation, SubmitError> {
        let targets = self.targets.as_ref().ok_or(SubmitError::NoUploads)?;
        let now = self.now();
        let declared = DeclaredUpload::new(req.content_type, req.length, req.sha256.as_deref(), req.window, now)?;
        self.check_callback(req.callback.as_ref())?;

        if let Some(key) = &req.idempotency_key
            && let Some(existing) = self.jobs().find_by_idempotency_key(&req.owner, key).await?
        {
            return self.replay_upload(existing, &declared, &**targets).await;
        }
        let callback = self.callback_for_new_job(&req.owner, req.callback.as_ref()).await?;
        let id = JobId::new();
        tracing::Span::current().record("job_id", tracing::field::display(&id));
        let object_key = ObjectKey::for_upload(&id);
        // Signed before anything is written: a target that cannot be issued leaves nothing behind.
        let target = targets.target(&object_key, &declared).await?;
        let new = NewJob {
            id,
            owner: req.owner.clone(),
            image: ImageMeta {
                object_key,
                content_type: declared.content_type,
                size: declared.length,
                width: 0,
                height: 0,
                sha256: String::new(),
            },
            idempotency_key: req.idempotency_key.clone(),
            correlation_id: req.correlation_id.clone(),
            callback,
            source: None,
            now,
            ttl: self.config.ttl,
        };
        let job = Job::awaiting_upload(new, declared.clone());
        match self.jobs().create(&job).await? {
            Created::Created => {}
            // A concurrent request with the same key won the race.
            Created::KeyTaken(existing) => return self.replay_upload(*existing, &declared, &**targets).await,
        }
        if let Err(e) = self.publisher().publish(&Envelope::for_job(&job)).await {
            self.roll_back(&job).await;
            return Err(e.into());
        }
        info!(length = declared.length, content_type = %declared.content_type, expires_at = %target.expires_at, "upload reserved");
        Ok(Reservation { job, target, replayed: false })
    }

    /// Answers a retry with the job the key names and a target for its upload (expiring when the
    /// first did), or refuses a declaration of other bytes.
    async fn replay_upload(
        &self,
        existing: Job,
        declared: &DeclaredUpload,
        targets: &dyn UploadTargets,
    ) -> Result<Reservation, SubmitError> {
        let Some(first) = existing.upload.clone().filter(|first| first.same_bytes(declared)) else {
            return Err(SubmitError::KeyReused);
        };
        // The first attempt may have stopped between recording the job and publishing its message.
        if existing.status() == JobStatus::AwaitingUpload {
            self.publisher().publish(&Envelope::for_job(&existing)).await?;
        }
        let target = targets.target(&existing.image.object_key, &first).await?;
        Ok(Reservation { job: existing, target, replayed: true })
    }
}
