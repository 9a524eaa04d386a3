//! The worker's records on AWS, where the job topic carries both labelq's own messages and the
//! bucket's S3 event notifications: objects created under the drop prefix, and the bytes of
//! direct uploads arriving under `uploads/`. One queue and one worker take all of them.
//! [`WorkerRecords`] sorts them: labelq's messages go to the [`WorkerService`]; an upload's
//! creation too, as its job's message (the job goes on at once instead of when its own message
//! comes back); each dropped object to the [`DropIntake`], which submits it as a job (whose
//! message comes back through the topic like any other). S3's test event is acknowledged.
//!
//! A notification names its bucket: one for another bucket, or for a key that is neither an
//! upload nor a drop (the bucket's notification filters should make both impossible), is
//! acknowledged and logged, never taken.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::{Instrument, debug, info, info_span, warn};

use super::sqs_batch::RecordHandler;
use crate::adapters::aws::{CreatedObject, S3DroppedObjects, S3Notification, parse_s3_notification};
use crate::domain::ObjectKey;
use crate::ports::Delivery;
use crate::service::{ClaimSlot, Disposition, DropIntake, Dropped, WorkerService};

/// Where drops are taken from, and how.
#[derive(Debug, Clone)]
pub struct BucketDrops {
    pub intake: DropIntake,
    pub objects: S3DroppedObjects,
}

/// The worker function's record handler: the worker (with the uploads to its bucket), and the
/// bucket's drops where configured.
#[derive(Debug, Clone)]
pub struct WorkerRecords {
    worker: Arc<WorkerService>,
    /// The bucket whose notifications are taken.
    bucket: String,
    drops: Option<BucketDrops>,
}

impl WorkerRecords {
    pub fn new(worker: Arc<WorkerService>, bucket: impl Into<String>, drops: Option<BucketDrops>) -> Self {
        Self { worker, bucket: bucket.into(), drops }
    }

    async fn take_all(&self, objects: Vec<CreatedObject>, delivery: &Delivery, slot: &ClaimSlot) -> Disposition {
        for object in objects {
            let disposition = self.take_one(object, delivery, slot).await;
            if disposition != Disposition::Ack {
                // The whole notification comes back; the objects already taken answer their jobs.
                return disposition;
            }
        }
        Disposition::Ack
    }

    async fn take_one(&self, object: CreatedObject, delivery: &Delivery, slot: &ClaimSlot) -> Disposition {
        if object.bucket != self.bucket {
            warn!(bucket = %object.bucket, key = %object.key, "an S3 notification from another bucket; not taken");
            return Disposition::Ack;
        }
        if object.key.starts_with(ObjectKey::UPLOAD_PREFIX) {
            return match ObjectKey::parse(&object.key).ok().and_then(|key| key.upload_job()) {
                Some(job_id) => self.worker.handle_upload(job_id, delivery, slot).await,
                None => {
                    warn!(key = %object.key, "an S3 notification for a key that is no job's upload; not taken");
                    Disposition::Ack
                }
            };
        }
        let Some(drops) = &self.drops else {
            // Kept for a worker that takes them (a redrive from the dead-letter queue), not lost.
            warn!(key = %object.key, "an S3 notification of a drop, but this worker takes no drops; dead-lettering it");
            return Disposition::DeadLetter;
        };
        let span = info_span!("drop", key = %object.key, version = %object.version);
        self.take_drop(drops, object, delivery).instrument(span).await
    }

    async fn take_drop(&self, drops: &BucketDrops, object: CreatedObject, delivery: &Delivery) -> Disposition {
        let Some(key) = drops.objects.drop_key(&object.key) else {
            warn!("an S3 notification for a key that is not a drop; not taken");
            return Disposition::Ack;
        };
        let dropped = Dropped { key, version: object.version, size: object.size, etag: object.etag };
        match drops.intake.take(&dropped).await {
            Ok(taken) => {
                debug!(?taken, "drop handled");
                Disposition::Ack
            }
            Err(e) => {
                let config = self.worker.config();
                if !e.retryable || delivery.receive_count >= config.max_receives.get() {
                    warn!(error = %e, cause = ?e, "a drop could not be taken; dead-lettering it");
                    Disposition::DeadLetter
                } else {
                    warn!(error = %e, cause = ?e, "a drop could not be taken now; retrying");
                    Disposition::Retry(config.backoff.delay(delivery.receive_count))
                }
            }
        }
    }
}

#[async_trait]
impl RecordHandler for WorkerRecords {
    async fn handle(&self, delivery: &Delivery, slot: &ClaimSlot) -> Disposition {
        match parse_s3_notification(&delivery.body) {
            None => self.worker.handle_holding(delivery, slot).await,
            Some(Ok(S3Notification::Test)) => {
                info!("the bucket's test notification; nothing to do");
                Disposition::Ack
            }
            Some(Ok(S3Notification::Created(objects))) => self.take_all(objects, delivery, slot).await,
            Some(Err(e)) => {
                warn!(error = %e, message_id = %delivery.message_id, "an unreadable S3 notification; dead-lettering it");
                Disposition::DeadLetter
            }
        }
    }

    async fn release(&self, slot: &ClaimSlot) {
        WorkerService::release(&self.worker, slot).await
    }
}
