//! Processing one queue message: claim the job, detect labels, finish the job.
//!
//! Written once and driven by two consumers: the worker pool of `labelq serve` (polling the SQLite
//! queue or SQS) and the worker Lambda (an SQS batch from the event source mapping). Both only turn
//! the returned [`Disposition`] into queue operations.
//!
//! Delivery is at least once, so everything here is idempotent:
//! - a duplicate of a message whose job is finished is acknowledged without work;
//! - the claim is a compare-and-swap, so of two concurrent deliveries only one runs the detector;
//!   the other comes back when the winner's lease would have run out, in case the winner died;
//! - a job whose worker crashed is re-claimed once its lease expires.
//!
//! # One way to finish
//! A job becomes SUCCEEDED or FAILED only through [`WorkerService::finish`]: a conditional write
//! from the version this worker read, whose [`Finish`] says whether the write won. The winner's
//! result carries the [`JobFinished`] event, everything a consumer of "job finished" needs. A
//! loser re-reads the job: if it is final, another write stands and the message is done; if it is
//! not (another worker claimed it after this one's lease ran out), the message is retried. A
//! message is never acknowledged while its job is unfinished.
//!
//! # Claims
//! The claim a handling holds lives in a [`ClaimSlot`] its consumer can see. A consumer that
//! abandons a handling (shutdown, a function's deadline) gives back exactly that claim with
//! [`WorkerService::release`]: a conditional write on the claim's own version, so it never undoes
//! a claim another worker took after this one's lease ran out.
//!
//! Failures are sorted, never lost: a permanent one (the image is bad or gone) fails the job with
//! a reason and acknowledges the message; a transient one gives the job back and retries the
//! message with exponential backoff; on the last delivery the job fails with `retries_exhausted`
//! and the message goes to the dead-letter queue. A panic is contained to its message.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rand::Rng;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::Stores;
use crate::config::MaxReceives;
use crate::domain::{
    Clock, DetectOptions, Failure, FailureCode, Findings, ImageLimits, ImageSubmitted, InvalidMessage, Job,
    JobFinished, JobId, JobSource, JobStatus, MAX_UPLOAD_BYTES, Message, Outcome, Refused,
};
use crate::ports::{
    BackendError, Delivery, DetectError, DropResults, Envelope, ImageInput, ImageStore, InputKind, JobStore,
    LabelDetector, MessagePublisher, UpdateError,
};

/// What the consumer should do with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done (or nothing to do): delete the message.
    Ack,
    /// Try again after this delay.
    Retry(Duration),
    /// Give up on the message: move it to the dead-letter queue.
    DeadLetter,
}

/// Exponential backoff with jitter between retries of one message.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before delivery `receive_count + 1`: between half and all of
    /// `base * 2^(receive_count - 1)`, capped at `max`. The jitter spreads a burst of failures.
    pub fn delay(&self, receive_count: u32) -> Duration {
        let exp = receive_count.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(1 << exp).min(self.max);
        let half = ceiling / 2;
        half + ceiling.saturating_sub(half).mul_f64(rand::rng().random::<f64>())
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The delivery on which a transient failure becomes final; equal to the queue's
    /// `maxReceiveCount`, after which the queue dead-letters the message anyway.
    pub max_receives: MaxReceives,
    /// How long a claim holds a job. Equal to the queue's visibility timeout, so a job and its
    /// message become available again together when a worker dies.
    pub lease: Duration,
    pub backoff: Backoff,
    pub detect: DetectOptions,
    /// How long after a direct upload's target expired its job still waits for the bytes before
    /// it fails with `upload_expired`: an upload that began just before the expiry may still be
    /// arriving (S3 checks the expiry when a request starts, not when it ends).
    pub upload_grace: Duration,
}

/// The default [`WorkerConfig::upload_grace`]: time for 15 MiB at about 1 Mbit/s.
pub const UPLOAD_GRACE: Duration = Duration::from_secs(120);

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_receives: MaxReceives::DEFAULT,
            lease: Duration::from_secs(60),
            backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) },
            detect: DetectOptions::default(),
            upload_grace: UPLOAD_GRACE,
        }
    }
}

/// How a finishing write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// This write made the job final.
    Won(JobFinished),
    /// The job was final already: another write stands.
    AlreadyFinal(JobStatus),
    /// The job is gone (deleted, or expired and removed).
    Gone,
    /// The job changed and is still unfinished: another worker holds it now.
    Unfinished,
}

/// What became of a job waiting for its upload.
enum Upload {
    /// The bytes are there and are what was declared: the job is PENDING now, and here are they.
    Arrived(Box<Job>, Bytes),
    /// Nothing to label (yet, or ever): the message's disposition.
    Settled(Disposition),
}

/// The claim one handling of a delivery holds, if any; shared with the consumer so that an
/// abandoned handling's claim can be given back ([`WorkerService::release`]).
#[derive(Debug, Clone, Default)]
pub struct ClaimSlot(Arc<Mutex<Option<Job>>>);

impl ClaimSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Job>> {
        // The slot only ever holds a whole job; a panic elsewhere cannot leave it half-written.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hold(&self, claim: Job) {
        *self.lock() = Some(claim);
    }

    fn take(&self) -> Option<Job> {
        self.lock().take()
    }

    /// Whether a claim is held (the handling claimed its job and has not settled it yet).
    pub fn is_held(&self) -> bool {
        self.lock().is_some()
    }
}

#[derive(Debug, Clone)]
pub struct WorkerService {
    images: Arc<dyn ImageStore>,
    jobs: Arc<dyn JobStore>,
    detector: Arc<dyn LabelDetector>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    completions: Option<(Arc<dyn MessagePublisher>, Announce)>,
    drop_results: Option<Arc<dyn DropResults>>,
}

/// Which finished jobs the worker announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Those whose completion callback waits for the event: for a publisher that is the
    /// callback queue itself (`labelq serve`).
    WithCallback,
    /// Every one: for a completion topic that other systems subscribe to, and the callback
    /// queue through a subscription filtered on the event's `callback` attribute (AWS).
    Every,
}

impl WorkerService {
    pub fn new(stores: Stores, detector: Arc<dyn LabelDetector>, clock: Arc<dyn Clock>, config: WorkerConfig) -> Self {
        Self {
            images: stores.images,
            jobs: stores.jobs,
            detector,
            clock,
            config,
            completions: None,
            drop_results: None,
        }
    }

    /// Announces the jobs that finish (`which` of them) on `publisher`, as [`JobFinished`]
    /// messages. At least once: a redelivery of the message that made a job final announces it
    /// again.
    pub fn with_completions(self, publisher: Arc<dyn MessagePublisher>, which: Announce) -> Self {
        Self { completions: Some((publisher, which)), ..self }
    }

    /// Writes the result of each finished job that was dropped in beside its drop, as
    /// [`views::drop_result`](crate::http::views::drop_result). At least once, like the
    /// announcements: a redelivery of the message that made the job final writes it again.
    pub fn with_drop_results(self, results: Arc<dyn DropResults>) -> Self {
        Self { drop_results: Some(results), ..self }
    }

    /// What follows a job's final write: its result beside its drop, if it was dropped in, and
    /// its "job finished" event, if it is one to announce. A failure is the message's: it is
    /// retried, and its next delivery does both again.
    async fn after_final(&self, job: &Job, event: JobFinished) -> Result<(), BackendError> {
        // Both, whatever becomes of the other: a result that cannot be written must not hold up
        // the callback, nor the other way round. The first failure retries the message.
        let written = self.write_drop_result(job).await;
        let published = match &self.completions {
            Some((publisher, which)) if *which == Announce::Every || event.callback => {
                publisher.publish(&Envelope::new(event, job.correlation_id.clone())).await
            }
            _ => Ok(()),
        };
        written.and(published)
    }

    /// Follows up a job found final, if `delivery` is of the message that made it final (or the
    /// job does not say which did): that message's handler may have died after the final write.
    /// Another message naming the job (a direct upload's other one, a duplicate) leaves it be.
    async fn announce_again(&self, job: &Job, delivery: &Delivery) -> Result<(), BackendError> {
        if job.finished_by.as_ref().is_some_and(|by| *by != delivery.message_id) {
            debug!("another message made the job final; its redelivery announces it if need be");
            return Ok(());
        }
        match JobFinished::of(job) {
            Some(event) => self.after_final(job, event).await,
            None => Ok(()),
        }
    }

    async fn write_drop_result(&self, job: &Job) -> Result<(), BackendError> {
        let (Some(results), Some(JobSource::Drop { key, .. })) = (&self.drop_results, &job.source) else {
            return Ok(());
        };
        super::drops::write_result(&**results, key, job).await
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Handles one delivery, in its own span. Never panics, whatever the message holds.
    pub async fn handle(&self, delivery: &Delivery) -> Disposition {
        self.handle_holding(delivery, &ClaimSlot::default()).await
    }

    /// [`handle`](Self::handle), keeping the claim in `slot` while it is held, for a consumer
    /// that may abandon the handling and then [`release`](Self::release) the claim.
    pub async fn handle_holding(&self, delivery: &Delivery, slot: &ClaimSlot) -> Disposition {
        let span = info_span!(
            "message",
            message_id = %delivery.message_id,
            receive_count = delivery.receive_count,
            correlation_id = delivery.correlation_id.as_ref().map(tracing::field::display),
            job_id = tracing::field::Empty,
        );
        self.handle_in_span(delivery, slot).instrument(span).await
    }

    async fn handle_in_span(&self, delivery: &Delivery, slot: &ClaimSlot) -> Disposition {
        let message = match Message::parse(&delivery.body) {
            Ok(Message::ImageSubmitted(message)) => message,
            Ok(other) => {
                warn!(kind = other.kind(), job_id = %other.job_id(), "not a message the worker consumes; dropping it");
                return Disposition::Ack;
            }
            Err(invalid) => return self.poison(invalid, delivery).await,
        };
        tracing::Span::current().record("job_id", tracing::field::display(&message.job_id));
        self.run(&message, delivery, slot).await
    }

    /// Handles the announcement that the bytes of a direct upload were stored (on AWS, S3's
    /// notification of the object's creation), as the job's own message would be handled: the
    /// job goes on at once rather than when its message comes back after the target's expiry.
    /// Nothing to do for a job that is gone; one found final is announced again if this
    /// message made it so (its earlier delivery may have died before announcing it).
    pub async fn handle_upload(&self, job_id: JobId, delivery: &Delivery, slot: &ClaimSlot) -> Disposition {
        let span =
            info_span!("upload", message_id = %delivery.message_id, receive_count = delivery.receive_count, %job_id);
        async {
            let job = match self.jobs.get(&job_id).await {
                Ok(Some(job)) => job,
                Ok(None) => {
                    debug!("an upload for a job that is gone; nothing to do");
                    return Disposition::Ack;
                }
                Err(e) => {
                    // The job's own message still comes back for it: this only hurries it on.
                    warn!(error = %e, cause = ?e, "could not read the uploaded job");
                    return match self.is_last_attempt(delivery) {
                        true => Disposition::DeadLetter,
                        false => Disposition::Retry(self.config.backoff.delay(delivery.receive_count)),
                    };
                }
            };
            self.run(&ImageSubmitted::for_job(&job), delivery, slot).await
        }
        .instrument(span)
        .await
    }

    /// Processes one job's message, turning a store's failure or a panic into a retry, or into
    /// the job's failure on the last delivery.
    async fn run(&self, message: &ImageSubmitted, delivery: &Delivery, slot: &ClaimSlot) -> Disposition {
        let outcome = AssertUnwindSafe(self.process(message, delivery, slot)).catch_unwind().await;
        match outcome {
            Ok(Ok(disposition)) => disposition,
            Ok(Err(e)) => {
                warn!(error = %e, cause = ?e, "processing failed transiently");
                let failure = Failure::new(FailureCode::RetriesExhausted, format!("gave up after retries: {e}"));
                self.retry_or_give_up(message.job_id, delivery, slot, failure).await
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(panic = %what, "processing panicked");
                let failure = Failure::new(FailureCode::Internal, "the worker failed unexpectedly");
                self.retry_or_give_up(message.job_id, delivery, slot, failure).await
            }
        }
    }

    async fn process(
        &self,
        message: &ImageSubmitted,
        delivery: &Delivery,
        slot: &ClaimSlot,
    ) -> Result<Disposition, BackendError> {
        let Some(job) = self.jobs.get(&message.job_id).await? else {
            info!("job no longer exists (deleted or expired); nothing to do");
            return Ok(Disposition::Ack);
        };
        if job.owner != message.owner || job.image.object_key != message.object_key {
            warn!("message does not match its job; ignoring it");
            return Ok(Disposition::Ack);
        }
        // An upload's bytes were read to check them: a detector that takes bytes (the built-in
        // models) takes them from there; one that reads the store itself (Rekognition) reads it.
        let (job, read) = if job.status() == JobStatus::AwaitingUpload {
            match self.take_upload(job, delivery).await? {
                Upload::Arrived(job, bytes) => (*job, Some(bytes)),
                Upload::Settled(disposition) => return Ok(disposition),
            }
        } else {
            (job, None)
        };
        let now = self.clock.now();
        let claimed = match job.claim(now, self.config.lease) {
            Ok(claimed) => claimed,
            Err(Refused::Finished(status)) => {
                debug!(%status, "duplicate delivery of a finished job");
                // The write that finished it may have been its worker's last act: announce again.
                self.announce_again(&job, delivery).await?;
                return Ok(Disposition::Ack);
            }
            Err(Refused::Leased(until)) => {
                // Another worker has it. Come back when its lease runs out, in case it died.
                let wait = (until - now).try_into().unwrap_or(Duration::ZERO);
                debug!(?wait, "job is held by another worker");
                return Ok(Disposition::Retry(wait));
            }
            Err(refused @ Refused::Invalid { .. }) => {
                warn!(%refused, "job cannot be claimed");
                return Ok(Disposition::Ack);
            }
        };
        match self.jobs.update(&claimed).await {
            Ok(()) => slot.hold(claimed.clone()),
            // Someone else changed the job between our read and our claim: re-evaluate shortly.
            Err(UpdateError::Conflict) => return Ok(Disposition::Retry(self.config.backoff.delay(1))),
            Err(UpdateError::Backend(e)) => return Err(e),
        }

        let retry = Disposition::Retry(self.config.backoff.delay(delivery.receive_count));
        let disposition = match self.detect(&claimed, read).await {
            Ok(findings) => {
                self.conclude(&claimed, Outcome::Succeeded(findings), delivery, (Disposition::Ack, retry)).await?
            }
            Err(DetectError::Permanent { code, message: reason, source }) => {
                debug!(%code, %reason, cause = ?source, "the image cannot be labelled");
                let error = Failure::new(code, reason);
                self.conclude(&claimed, Outcome::Failed { error }, delivery, (Disposition::Ack, retry)).await?
            }
            Err(DetectError::Transient(e)) if self.is_last_attempt(delivery) => {
                warn!(error = %e, cause = ?e, attempt = delivery.receive_count, "detection failed on the last attempt");
                let error = Failure::new(FailureCode::RetriesExhausted, format!("gave up after retries: {e}"));
                self.conclude(&claimed, Outcome::Failed { error }, delivery, (Disposition::DeadLetter, retry)).await?
            }
            Err(DetectError::Transient(e)) => {
                warn!(error = %e, cause = ?e, attempt = delivery.receive_count, "detection failed transiently");
                self.give_back(&claimed).await?;
                retry
            }
        };
        slot.take();
        Ok(disposition)
    }

    /// A job waiting for its direct upload: if the bytes are there and are what was declared,
    /// the job goes on (PENDING); if they are not what was declared, it fails; if they are not
    /// there, the message comes back once the target has expired (and the grace passed), and the
    /// job fails with `upload_expired` if they are not there then either.
    async fn take_upload(&self, job: Job, delivery: &Delivery) -> Result<Upload, BackendError> {
        let Some(upload) = job.upload.clone() else {
            warn!("a job awaits an upload it has no declaration of; failing it");
            let error = Failure::new(FailureCode::Internal, "the job has no upload declaration");
            return self.settle_upload(&job, error, delivery).await;
        };
        let deadline = upload.expires_at + self.config.upload_grace;
        // Whatever was put there, no more than an upload may be is read.
        let Some(bytes) = self.images.get_at_most(&job.image.object_key, MAX_UPLOAD_BYTES).await? else {
            let now = self.clock.now();
            if now < deadline {
                let wait: Duration = (deadline - now).try_into().unwrap_or(Duration::ZERO);
                debug!(?wait, "the upload has not arrived; looking again once its target has expired");
                return Ok(Upload::Settled(Disposition::Retry(wait.max(Duration::from_secs(1)))));
            }
            let at = crate::domain::timestamp::format(upload.expires_at);
            let error = Failure::new(
                FailureCode::UploadExpired,
                format!("the image was not uploaded before its upload target expired at {at}"),
            );
            return self.settle_upload(&job, error, delivery).await;
        };
        let (info, sha256) = match upload.check(&bytes, &ImageLimits::default()) {
            Ok(checked) => checked,
            Err(error) => {
                debug!(code = %error.code, reason = %error.message, "the upload is not what was declared");
                return self.settle_upload(&job, error, delivery).await;
            }
        };
        let Ok(arrived) = job.arrived(info, sha256, self.clock.now()) else {
            return Ok(Upload::Settled(Disposition::Ack));
        };
        match self.jobs.update(&arrived).await {
            Ok(()) => {
                info!(size = bytes.len(), "the upload arrived");
                Ok(Upload::Arrived(Box::new(arrived), bytes))
            }
            // Another delivery (the arrival's, or the first message's) moved it on: look again.
            Err(UpdateError::Conflict) => Ok(Upload::Settled(Disposition::Retry(self.config.backoff.delay(1)))),
            Err(UpdateError::Backend(e)) => Err(e),
        }
    }

    async fn settle_upload(&self, job: &Job, error: Failure, delivery: &Delivery) -> Result<Upload, BackendError> {
        let retry = Disposition::Retry(self.config.backoff.delay(delivery.receive_count));
        self.conclude(job, Outcome::Failed { error }, delivery, (Disposition::Ack, retry)).await.map(Upload::Settled)
    }

    /// Labels the job's image: `read` if its bytes were read already, else from the store.
    async fn detect(&self, job: &Job, read: Option<Bytes>) -> Result<Findings, DetectError> {
        let content_type = job.image.content_type;
        let input = match (self.detector.input_kind(), read) {
            (InputKind::Stored, _) => ImageInput::Stored { key: job.image.object_key.clone(), content_type },
            (InputKind::Bytes, Some(bytes)) => ImageInput::Bytes { bytes, content_type },
            (InputKind::Bytes, None) => match self.images.get(&job.image.object_key).await {
                Ok(Some(bytes)) => ImageInput::Bytes { bytes, content_type },
                Ok(None) => {
                    return Err(DetectError::permanent(FailureCode::ImageMissing, "the stored image no longer exists"));
                }
                // Anything else the store could not do is the store's problem, not the image's:
                // retried, and on the last attempt the job fails with `retries_exhausted`.
                Err(e) => return Err(DetectError::Transient(e.into())),
            },
        };
        self.detector.detect(input, &self.config.detect).await
    }

    /// Finishes a job from the claim this handling holds: `on_win` if this write made it final,
    /// an acknowledgement if another write did (or the job is gone), `retry` if it is unfinished.
    async fn conclude(
        &self,
        claimed: &Job,
        outcome: Outcome,
        delivery: &Delivery,
        (on_win, retry): (Disposition, Disposition),
    ) -> Result<Disposition, BackendError> {
        Ok(match self.finish(claimed, outcome, &delivery.message_id).await? {
            Finish::Won(_) => on_win,
            Finish::AlreadyFinal(_) | Finish::Gone => Disposition::Ack,
            Finish::Unfinished => retry,
        })
    }

    /// Makes the job final: the one way to SUCCEEDED or FAILED. A conditional write from `from`,
    /// the version this worker read or claimed, recording `by`, the id of the message being
    /// handled; the result says whether it won and, if it lost, what the job is now.
    pub async fn finish(&self, from: &Job, outcome: Outcome, by: &str) -> Result<Finish, BackendError> {
        let (next, event) = match from.finish(outcome, self.clock.now()) {
            Ok((next, event)) => (Job { finished_by: Some(by.to_owned()), ..next }, event),
            Err(Refused::Finished(status)) => return Ok(Finish::AlreadyFinal(status)),
            Err(refused) => {
                warn!(job_id = %from.id, %refused, "the job cannot be finished from its state");
                return Ok(Finish::Unfinished);
            }
        };
        match self.jobs.update(&next).await {
            Ok(()) => {
                self.after_final(&next, event.clone()).await?;
                match &event.outcome {
                    Outcome::Succeeded(findings) => info!(
                        job_id = %next.id, labels = findings.labels.len(), lines = findings.text_detections.len(),
                        attempts = next.attempts, "job succeeded"
                    ),
                    Outcome::Failed { error } => info!(
                        job_id = %next.id, code = %error.code, reason = %error.message, attempts = next.attempts,
                        "job failed"
                    ),
                }
                Ok(Finish::Won(event))
            }
            Err(UpdateError::Conflict) => {
                let lost = match self.jobs.get(&from.id).await? {
                    None => Finish::Gone,
                    Some(job) if job.status().is_finished() => Finish::AlreadyFinal(job.status()),
                    Some(_) => Finish::Unfinished,
                };
                if lost == Finish::Gone {
                    // Its owner deleted it while it was being labelled: nothing is lost.
                    info!(job_id = %from.id, "the job was deleted while it was being labelled");
                } else {
                    warn!(job_id = %from.id, now = ?lost, "another write changed the job first; this final write lost");
                }
                Ok(lost)
            }
            Err(UpdateError::Backend(e)) => Err(e),
        }
    }

    fn is_last_attempt(&self, delivery: &Delivery) -> bool {
        delivery.receive_count >= self.config.max_receives.get()
    }

    /// After an infrastructure failure or a panic: give the claim back and retry with backoff,
    /// or on the last delivery fail the job so its owner sees why, and dead-letter the message.
    async fn retry_or_give_up(
        &self,
        job_id: JobId,
        delivery: &Delivery,
        slot: &ClaimSlot,
        failure: Failure,
    ) -> Disposition {
        if !self.is_last_attempt(delivery) {
            self.release(slot).await;
            return Disposition::Retry(self.config.backoff.delay(delivery.receive_count));
        }
        match self.fail_job(job_id, slot, failure, delivery).await {
            Ok(Finish::Unfinished) => warn!("another worker holds the job; its outcome will stand"),
            Ok(Finish::Won(_) | Finish::Gone) => {}
            // Final already, perhaps by this message's own earlier write whose announcement
            // failed: this is the message's last chance to announce it.
            Ok(Finish::AlreadyFinal(_)) => self.announce_final(job_id, delivery).await,
            Err(e) => {
                error!(error = %e, cause = ?e, "could not record the failure of a dead-lettered job");
                self.announce_final(job_id, delivery).await;
            }
        }
        Disposition::DeadLetter
    }

    /// Announces the job if it is final, before its message goes to the dead-letter queue.
    async fn announce_final(&self, job_id: JobId, delivery: &Delivery) {
        let announced = match self.jobs.get(&job_id).await {
            Ok(Some(job)) => self.announce_again(&job, delivery).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = announced {
            error!(error = %e, cause = ?e, "could not follow up a finished job: its announcement (callback, events) or its drop result is lost");
        }
    }

    /// A message nobody can process. Retrying cannot make it readable, so once its job (if it
    /// names one) has failed with the reason, it is acknowledged.
    async fn poison(&self, invalid: InvalidMessage, delivery: &Delivery) -> Disposition {
        warn!(reason = %invalid.reason, job_id = ?invalid.job_id, "unreadable message");
        let Some(job_id) = invalid.job_id else {
            return Disposition::Ack;
        };
        let failure = Failure::new(FailureCode::InvalidMessage, invalid.reason);
        let last = self.is_last_attempt(delivery);
        match self.fail_job(job_id, &ClaimSlot::default(), failure, delivery).await {
            Ok(Finish::Unfinished) if !last => {
                // Another worker holds the job; by the next delivery it has settled it.
                Disposition::Retry(self.config.backoff.delay(delivery.receive_count))
            }
            Ok(Finish::Unfinished) => Disposition::DeadLetter,
            Ok(_) => Disposition::Ack,
            Err(e) if !last => {
                warn!(error = %e, cause = ?e, "could not fail the job of an unreadable message; retrying");
                Disposition::Retry(self.config.backoff.delay(delivery.receive_count))
            }
            Err(e) => {
                error!(error = %e, cause = ?e, "could not fail the job of an unreadable message");
                Disposition::DeadLetter
            }
        }
    }

    /// Fails the job from the claim in `slot`, or, without one, from its current state, unless
    /// another worker's lease on it is running (that worker's outcome will stand).
    async fn fail_job(
        &self,
        job_id: JobId,
        slot: &ClaimSlot,
        failure: Failure,
        delivery: &Delivery,
    ) -> Result<Finish, BackendError> {
        let from = match slot.take() {
            Some(claim) => claim,
            None => match self.jobs.get(&job_id).await? {
                None => return Ok(Finish::Gone),
                Some(job) if job.is_leased(self.clock.now()) => return Ok(Finish::Unfinished),
                Some(job) => job,
            },
        };
        self.finish(&from, Outcome::Failed { error: failure }, &delivery.message_id).await
    }

    /// Gives back the claim `slot` holds, after its consumer abandoned the handling (shutdown, a
    /// deadline), so the message's next delivery can claim the job at once instead of waiting out
    /// the lease. Only that claim: the release is conditional on the claim's own version. Best
    /// effort: if it fails, the lease expires on its own.
    pub async fn release(&self, slot: &ClaimSlot) {
        let Some(claim) = slot.take() else {
            return;
        };
        if let Err(e) = self.give_back(&claim).await {
            warn!(error = %e, cause = ?e, job_id = %claim.id, "could not give back an abandoned job");
        }
    }

    /// PROCESSING -> PENDING from `claim`. If the job moved on since (the lease ran out and
    /// another worker claimed it, or it finished), there is nothing of ours to give back.
    async fn give_back(&self, claim: &Job) -> Result<(), BackendError> {
        let Ok(released) = claim.release(self.clock.now()) else {
            return Ok(());
        };
        match self.jobs.update(&released).await {
            Ok(()) => Ok(()),
            Err(UpdateError::Conflict) => {
                debug!(job_id = %claim.id, "the claim is no longer this worker's; nothing to give back");
                Ok(())
            }
            Err(UpdateError::Backend(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_caps() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100), "{d1:?}");
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400), "{d3:?}");
            assert!(b.delay(30) <= Duration::from_secs(1));
        }
    }
}
