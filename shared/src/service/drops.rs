//! [`DropIntake`]: an image dropped where labelq watches becomes a job, or a written refusal.
//!
//! The one way in for both kinds of drop: a file of `labelq serve --watch`'s directory and an
//! object created under the bucket's drop prefix on AWS. The watcher (the directory scan; the S3
//! notification the worker receives) says which version of which key appeared; the intake reads
//! it, checks it as `POST /v1/images` would, and submits it under an idempotency key of the key and
//! its version, so the same drop seen twice makes one job. What cannot become a job gets its
//! refusal written where its result would be, since a fire-and-forget submitter reads nothing
//! else. The refusal is the problem the API would have answered.

use std::sync::Arc;

use tracing::{debug, info, warn};

use super::{SubmitError, SubmitRequest, SubmitService, Upload};
use crate::domain::{
    ContentType, CorrelationId, DropKey, DropOwner, ImageRejection, Job, JobId, JobSource, drop_idempotency_key,
};
use crate::http::problem::ApiError;
use crate::http::views::{drop_refusal, drop_result};
use crate::ports::{BackendError, DropResults, DroppedObjects};

/// One version of a dropped object, as its watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub key: DropKey,
    /// What tells this version from another under the same key (a file's size and modification
    /// time; an S3 version id or ETag).
    pub version: String,
    /// Bytes, as the watcher saw it.
    pub size: u64,
    /// The content's ETag, where the store has one (S3): only that content is read.
    pub etag: Option<String>,
}

/// What became of a drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Its job, new or (`replayed`) the one an earlier sighting made.
    Job { id: JobId, replayed: bool },
    /// It cannot be a job; its refusal is written.
    Refused,
    /// It is no longer there.
    Gone,
    /// It is not the version the watcher saw (its size differs): a later sighting takes it.
    Changed,
}

#[derive(Debug, Clone)]
pub struct DropIntake {
    submit: Arc<SubmitService>,
    objects: Arc<dyn DroppedObjects>,
    results: Arc<dyn DropResults>,
    owner: DropOwner,
}

impl DropIntake {
    /// `submit`'s limits decide what is refused: give it the drops' size limit
    /// ([`MAX_DROP_BYTES`](crate::domain::MAX_DROP_BYTES)).
    pub fn new(
        submit: Arc<SubmitService>,
        objects: Arc<dyn DroppedObjects>,
        results: Arc<dyn DropResults>,
        owner: DropOwner,
    ) -> Self {
        Self { submit, objects, results, owner }
    }

    /// Takes one drop. An error is transient (a store, the queue): take it again later.
    pub async fn take(&self, dropped: &Dropped) -> Result<Taken, BackendError> {
        let key = &dropped.key;
        let source = JobSource::drop(key.clone(), dropped.version.clone());
        let owner = match self.owner.owner_of(key) {
            Ok(owner) => owner,
            Err(e) => {
                let detail = format!("{e}: drops are taken only under an owner's directory");
                return self.refuse(&source, ApiError::bad_request("drop-without-owner", detail)).await;
            }
        };
        if dropped.size == 0 {
            return self.refuse(&source, ImageRejection::Empty.into()).await;
        }
        let max = self.submit.limits().max_bytes;
        if dropped.size > max as u64 {
            let size = usize::try_from(dropped.size).unwrap_or(usize::MAX);
            return self.refuse(&source, ImageRejection::TooLarge { size, max }.into()).await;
        }
        let Some(bytes) = self.objects.get(key, dropped.size, dropped.etag.as_deref()).await? else {
            debug!(%key, "the drop is gone (or overwritten) before it was read");
            return Ok(Taken::Gone);
        };
        if bytes.len() as u64 != dropped.size {
            debug!(%key, seen = dropped.size, read = bytes.len(), "the drop changed since it was seen");
            return Ok(Taken::Changed);
        }
        let Some(declared) = ContentType::sniff(&bytes) else {
            return self.refuse(&source, ImageRejection::NotAnImage.into()).await;
        };
        let request = SubmitRequest {
            owner,
            upload: Upload { bytes, declared },
            idempotency_key: Some(drop_idempotency_key(key, &dropped.version)),
            correlation_id: CorrelationId::new(),
            callback: None,
            source: Some(source.clone()),
        };
        match self.submit.submit(request).await {
            Ok(submission) => {
                let (job, replayed) = (submission.job, submission.replayed);
                info!(%key, job_id = %job.id, replayed, "drop taken");
                // Seen again with its job already final: the worker wrote the result then, or
                // could not (its message ran out of attempts). Writing it again costs little.
                if replayed && job.status().is_finished() {
                    write_result(&*self.results, key, &job).await?;
                }
                Ok(Taken::Job { id: job.id, replayed })
            }
            Err(SubmitError::Backend(e)) => Err(e),
            Err(refused) => self.refuse(&source, refused.into()).await,
        }
    }

    async fn refuse(&self, source: &JobSource, error: ApiError) -> Result<Taken, BackendError> {
        let JobSource::Drop { key, .. } = source;
        info!(%key, refused = %error, "drop refused");
        let json = drop_refusal(source, &error.problem())
            .map_err(|e| BackendError::permanent("encode a drop's refusal", e))?;
        if let Err(e) = self.results.write(key, &json).await {
            warn!(%key, error = %e, "cannot write a drop's refusal");
            return Err(e);
        }
        Ok(Taken::Refused)
    }
}

/// Writes the result of `job`, final, beside the drop under `key`: what the worker does when a
/// drop's job finishes, and the intake when it sees a finished drop again.
pub(crate) async fn write_result(results: &dyn DropResults, key: &DropKey, job: &Job) -> Result<(), BackendError> {
    let json = drop_result(job).map_err(|e| BackendError::permanent("encode a drop's result", e))?;
    results.write(key, &json).await
}
