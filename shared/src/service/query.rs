//! Reading and deleting an owner's jobs. Every read is scoped to the owner: another owner's job
//! and a missing job look the same (404), so ids cannot be probed.

use std::sync::Arc;

use tracing::{info, instrument, warn};

use super::Stores;
use crate::domain::{Clock, Job, JobId, OwnerId};
use crate::ports::{BackendError, ImageStore, JobStore, ListQuery, Page};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no such image")]
    NotFound,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

#[derive(Debug, Clone)]
pub struct QueryService {
    images: Arc<dyn ImageStore>,
    jobs: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
}

impl QueryService {
    pub fn new(stores: Stores, clock: Arc<dyn Clock>) -> Self {
        Self { images: stores.images, jobs: stores.jobs, clock }
    }

    #[instrument(skip(self), fields(owner = %owner, job_id = %id))]
    pub async fn get(&self, owner: &OwnerId, id: &JobId) -> Result<Job, QueryError> {
        let now = self.clock.now();
        match self.jobs.get(id).await? {
            // Expired jobs are hidden even before the store gets round to deleting them
            // (DynamoDB's TTL deletes lazily, within days).
            Some(job) if job.owner == *owner && !job.is_expired(now) => Ok(job),
            _ => Err(QueryError::NotFound),
        }
    }

    #[instrument(skip(self), fields(owner = %owner))]
    pub async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<Page, QueryError> {
        let now = self.clock.now();
        let mut page = self.jobs.list(owner, query).await?;
        page.jobs.retain(|job| !job.is_expired(now));
        Ok(page)
    }

    /// Deletes the record first, then the image: a failure in between leaves an orphaned image,
    /// which expiry removes, never a record pointing at nothing.
    #[instrument(skip(self), fields(owner = %owner, job_id = %id))]
    pub async fn delete(&self, owner: &OwnerId, id: &JobId) -> Result<(), QueryError> {
        let now = self.clock.now();
        let job = self.jobs.delete(owner, id).await?.ok_or(QueryError::NotFound)?;
        if let Err(e) = self.images.delete(&job.image.object_key).await {
            warn!(error = %e, cause = ?e, "job deleted but its image was not; expiry will remove it");
        }
        if job.is_expired(now) {
            // It was already invisible to GET; deleting it early changes nothing the owner can see.
            return Err(QueryError::NotFound);
        }
        info!("image deleted");
        Ok(())
    }
}
