//! Processing one queue message: claim the job, detect labels, record the outcome.
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
//! Failures are sorted, never lost: a permanent one (the image is bad or gone) fails the job with
//! a reason and acknowledges the message; a transient one gives the job back and retries the
//! message with exponential backoff; on the last delivery the job fails with `retries_exhausted`
//! and the message goes to the dead-letter queue. A panic is contained to its message.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rand::Rng;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::domain::{Clock, DetectOptions, Failure, FailureCode, ImageSubmitted, InvalidMessage, Job, JobId, Refused};
use crate::ports::{
    BackendError, Delivery, DetectError, ImageInput, ImageStore, InputKind, JobStore, LabelDetector, UpdateError,
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
    pub max_receives: u32,
    /// How long a claim holds a job. Equal to the queue's visibility timeout, so a job and its
    /// message become available again together when a worker dies.
    pub lease: Duration,
    pub backoff: Backoff,
    pub detect: DetectOptions,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_receives: 5,
            lease: Duration::from_secs(60),
            backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) },
            detect: DetectOptions::default(),
        }
    }
}

/// An infrastructure failure while handling a message (the job store or image store failed);
/// always worth another delivery.
#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("the job changed while it was being processed")]
    Conflict,
}

impl From<UpdateError> for ProcessError {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::Conflict => Self::Conflict,
            UpdateError::Backend(b) => Self::Backend(b),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerService {
    images: Arc<dyn ImageStore>,
    jobs: Arc<dyn JobStore>,
    detector: Arc<dyn LabelDetector>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
}

impl WorkerService {
    pub fn new(
        images: Arc<dyn ImageStore>,
        jobs: Arc<dyn JobStore>,
        detector: Arc<dyn LabelDetector>,
        clock: Arc<dyn Clock>,
        config: WorkerConfig,
    ) -> Self {
        Self { images, jobs, detector, clock, config }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Handles one delivery, in its own span. Never panics, whatever the message holds.
    pub async fn handle(&self, delivery: &Delivery) -> Disposition {
        let span = info_span!(
            "message",
            message_id = %delivery.message_id,
            receive_count = delivery.receive_count,
            correlation_id = delivery.correlation_id.as_ref().map(tracing::field::display),
            job_id = tracing::field::Empty,
        );
        self.handle_in_span(delivery).instrument(span).await
    }

    async fn handle_in_span(&self, delivery: &Delivery) -> Disposition {
        let message = match ImageSubmitted::parse(&delivery.body) {
            Ok(message) => message,
            Err(invalid) => return self.poison(invalid, delivery).await,
        };
        tracing::Span::current().record("job_id", tracing::field::display(&message.job_id));
        let outcome = AssertUnwindSafe(self.process(&message, delivery)).catch_unwind().await;
        match outcome {
            Ok(Ok(disposition)) => disposition,
            Ok(Err(e)) => {
                warn!(error = %e, cause = ?e, "processing failed transiently");
                let failure = Failure::new(FailureCode::RetriesExhausted, format!("gave up after retries: {e}"));
                self.retry_or_give_up(message.job_id, delivery, failure).await
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(panic = %what, "processing panicked");
                let failure = Failure::new(FailureCode::Internal, "the worker failed unexpectedly");
                self.retry_or_give_up(message.job_id, delivery, failure).await
            }
        }
    }

    async fn process(&self, message: &ImageSubmitted, delivery: &Delivery) -> Result<Disposition, ProcessError> {
        let Some(job) = self.jobs.get(&message.job_id).await? else {
            info!("job no longer exists (deleted or expired); nothing to do");
            return Ok(Disposition::Ack);
        };
        if job.owner != message.owner || job.image.object_key != message.object_key {
            warn!("message does not match its job; ignoring it");
            return Ok(Disposition::Ack);
        }
        let now = self.clock.now();
        let claimed = match job.claim(now, self.config.lease) {
            Ok(claimed) => claimed,
            Err(Refused::Finished(status)) => {
                debug!(%status, "duplicate delivery of a finished job");
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
            Ok(()) => {}
            // Someone else changed the job between our read and our claim: re-evaluate shortly.
            Err(UpdateError::Conflict) => return Ok(Disposition::Retry(self.config.backoff.delay(1))),
            Err(UpdateError::Backend(e)) => return Err(e.into()),
        }

        match self.detect(&claimed).await {
            Ok(labels) => {
                let count = labels.len();
                self.record(&claimed, claimed.succeed(labels, self.clock.now())).await?;
                info!(labels = count, attempt = claimed.attempts, "job succeeded");
                Ok(Disposition::Ack)
            }
            Err(DetectError::Permanent { code, message: reason, source }) => {
                let failure = Failure::new(code, reason);
                info!(code = %failure.code, reason = %failure.message, cause = ?source, "job failed permanently");
                self.record(&claimed, claimed.fail(failure, self.clock.now())).await?;
                Ok(Disposition::Ack)
            }
            Err(DetectError::Transient(e)) => {
                warn!(error = %e, cause = ?e, attempt = delivery.receive_count, "detection failed transiently");
                if self.is_last_attempt(delivery) {
                    let failure = Failure::new(FailureCode::RetriesExhausted, format!("gave up after retries: {e}"));
                    self.record(&claimed, claimed.fail(failure, self.clock.now())).await?;
                    return Ok(Disposition::DeadLetter);
                }
                self.record(&claimed, claimed.release(self.clock.now())).await?;
                Ok(Disposition::Retry(self.config.backoff.delay(delivery.receive_count)))
            }
        }
    }

    async fn detect(&self, job: &Job) -> Result<Vec<crate::domain::Label>, DetectError> {
        let content_type = job.image.content_type;
        let input = match self.detector.input_kind() {
            InputKind::Stored => ImageInput::Stored { key: job.image.object_key.clone(), content_type },
            InputKind::Bytes => match self.images.get(&job.image.object_key).await {
                Ok(Some(bytes)) => ImageInput::Bytes { bytes, content_type },
                Ok(None) => {
                    return Err(DetectError::permanent(FailureCode::ImageMissing, "the stored image no longer exists"));
                }
                Err(e) if e.retryable => return Err(DetectError::Transient(e.into())),
                Err(e) => {
                    return Err(DetectError::Permanent {
                        code: FailureCode::ImageMissing,
                        message: "the stored image could not be read".into(),
                        source: Some(e.into()),
                    });
                }
            },
        };
        self.detector.detect(input, &self.config.detect).await
    }

    /// Writes a transition computed from `claimed`. A conflict means the job was deleted or
    /// re-claimed after our lease ran out; the other party's write stands.
    async fn record(&self, claimed: &Job, next: Result<Job, Refused>) -> Result<(), ProcessError> {
        let next = match next {
            Ok(next) => next,
            Err(refused) => {
                warn!(%refused, "transition refused");
                return Ok(());
            }
        };
        match self.jobs.update(&next).await {
            Ok(()) => Ok(()),
            Err(UpdateError::Conflict) => {
                warn!(job_id = %claimed.id, "job changed while it was being processed; keeping the other write");
                Ok(())
            }
            Err(UpdateError::Backend(e)) => Err(e.into()),
        }
    }

    fn is_last_attempt(&self, delivery: &Delivery) -> bool {
        delivery.receive_count >= self.config.max_receives
    }

    /// After an infrastructure failure or a panic: retry with backoff, or on the last delivery
    /// fail the job so its owner sees why, and dead-letter the message.
    async fn retry_or_give_up(&self, job_id: JobId, delivery: &Delivery, failure: Failure) -> Disposition {
        if !self.is_last_attempt(delivery) {
            return Disposition::Retry(self.config.backoff.delay(delivery.receive_count));
        }
        if let Err(e) = self.fail_job(job_id, failure).await {
            error!(error = %e, cause = ?e, "could not record the failure of a dead-lettered job");
        }
        Disposition::DeadLetter
    }

    /// A message nobody can process. It is acknowledged, not retried: retrying cannot make it
    /// readable. If it named a job, that job fails with the reason.
    async fn poison(&self, invalid: InvalidMessage, delivery: &Delivery) -> Disposition {
        warn!(reason = %invalid.reason, job_id = ?invalid.job_id, "unreadable message");
        let Some(job_id) = invalid.job_id else {
            return Disposition::Ack;
        };
        let failure = Failure::new(FailureCode::InvalidMessage, invalid.reason);
        match self.fail_job(job_id, failure).await {
            Ok(()) => Disposition::Ack,
            Err(e) if !self.is_last_attempt(delivery) => {
                warn!(error = %e, cause = ?e, "could not fail the job of an unreadable message; retrying");
                Disposition::Retry(self.config.backoff.delay(delivery.receive_count))
            }
            Err(e) => {
                error!(error = %e, cause = ?e, "could not fail the job of an unreadable message");
                Disposition::DeadLetter
            }
        }
    }

    /// Gives back the job of a delivery whose processing was abandoned (the consumer is shutting
    /// down), so the message's next delivery can claim it at once instead of waiting out the
    /// lease. Best effort: if this fails, the lease expires on its own.
    pub async fn release(&self, delivery: &Delivery) {
        let Ok(message) = ImageSubmitted::parse(&delivery.body) else {
            return;
        };
        let released = match self.jobs.get(&message.job_id).await {
            Ok(Some(job)) => job.release(self.clock.now()),
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, cause = ?e, job_id = %message.job_id, "could not read an abandoned job");
                return;
            }
        };
        if let Ok(released) = released
            && let Err(e) = self.jobs.update(&released).await
        {
            warn!(error = %e, cause = ?e, job_id = %message.job_id, "could not give back an abandoned job");
        }
    }

    /// Fails the job from whatever non-final state it is in, re-reading on a lost race.
    async fn fail_job(&self, job_id: JobId, failure: Failure) -> Result<(), ProcessError> {
        for _ in 0..3 {
            let Some(job) = self.jobs.get(&job_id).await? else {
                return Ok(());
            };
            let Ok(failed) = job.fail(failure.clone(), self.clock.now()) else {
                return Ok(()); // already finished: its outcome stands
            };
            match self.jobs.update(&failed).await {
                Ok(()) => {
                    info!(%job_id, code = %failure.code, "job failed");
                    return Ok(());
                }
                Err(UpdateError::Conflict) => continue,
                Err(UpdateError::Backend(e)) => return Err(e.into()),
            }
        }
        Err(ProcessError::Conflict)
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
