//! Delivering completion callbacks: one queue message per finished job that asked for one
//! ([`JobFinished`], published by the worker's winning final write), handled here by calling the
//! job's callback URL with a signed Standard Webhooks request and recording how it went on the job.
//!
//! At least once, and idempotent: a message whose job's callback is settled (delivered, disabled
//! or failed) is acknowledged without a call, and every retry of one job carries the same
//! `webhook-id`, so a receiver can drop a repeat. The message is acknowledged only once the
//! attempt is recorded; a process killed mid-call leaves the message to be delivered again.
//!
//! | answer | the callback | the message |
//! |---|---|---|
//! | 2xx | DELIVERED | acknowledged |
//! | 410 Gone | DISABLED: never called again | acknowledged |
//! | anything else, or no answer | PENDING, attempts + 1 | retried after the schedule's delay (at least `Retry-After`) |
//! | the same, schedule spent | FAILED | dead-lettered (SQS: made visible, and acknowledged on its next delivery as settled) |
//! | refused target (SSRF guard) | FAILED | acknowledged |

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{DefaultCallbackService, Disposition};
use crate::domain::{Attempt, Callback, CallbackStatus, Clock, Job, JobFinished, Message};
use crate::ports::{BackendError, CallError, CallbackRequest, CallbackSender, Delivery, JobStore, UpdateError};
use crate::webhooks::{RetrySchedule, TargetPolicy, WebhookEvent, WebhookSecrets, webhook_id};

/// How callbacks are signed, where they may go, and when they are retried.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    pub secrets: WebhookSecrets,
    pub policy: TargetPolicy,
    pub schedule: RetrySchedule,
}

#[derive(Debug, Clone)]
pub struct CallbackService {
    jobs: Arc<dyn JobStore>,
    sender: Arc<dyn CallbackSender>,
    clock: Arc<dyn Clock>,
    config: CallbackConfig,
    defaults: Option<Arc<DefaultCallbackService>>,
}

impl CallbackService {
    pub fn new(
        jobs: Arc<dyn JobStore>,
        sender: Arc<dyn CallbackSender>,
        clock: Arc<dyn Clock>,
        config: CallbackConfig,
    ) -> Self {
        Self { jobs, sender, clock, config, defaults: None }
    }

    /// A 410 Gone also disables the owner's default callback, when it was called at that URL.
    pub fn with_default_callbacks(mut self, defaults: Arc<DefaultCallbackService>) -> Self {
        self.defaults = Some(defaults);
        self
    }

    pub fn config(&self) -> &CallbackConfig {
        &self.config
    }

    /// Handles one delivery of a "job finished" message. Never panics.
    pub async fn handle(&self, delivery: &Delivery) -> Disposition {
        let span = info_span!("callback", message_id = %delivery.message_id, receive_count = delivery.receive_count);
        self.handle_in_span(delivery).instrument(span).await
    }

    async fn handle_in_span(&self, delivery: &Delivery) -> Disposition {
        let finished = match Message::parse(&delivery.body) {
            Ok(Message::JobFinished(finished)) => finished,
            Ok(other) => {
                warn!(kind = other.kind(), "not a message the callback queue carries; dropping it");
                return Disposition::Ack;
            }
            Err(invalid) => {
                // Nothing to fail: the job itself is finished. Kept for an operator to read.
                warn!(reason = %invalid.reason, "unreadable message on the callback queue");
                return Disposition::DeadLetter;
            }
        };
        let retry_later = Disposition::Retry(Duration::from_secs(5));
        let job = match self.jobs.get(&finished.job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                debug!(job_id = %finished.job_id, "the job is gone; no callback");
                return Disposition::Ack;
            }
            Err(e) => {
                warn!(error = %e, cause = ?e, "could not read the job; retrying");
                return retry_later;
            }
        };
        let Some(callback) = job.callback.clone().filter(|c| !c.status.is_settled()) else {
            debug!(job_id = %job.id, "no callback to deliver (none asked, or settled)");
            return Disposition::Ack;
        };
        // A duplicate announcement must not shorten the schedule: it waits for its turn.
        let now = self.clock.now();
        if let Some(at) = callback.next_attempt_at.filter(|at| *at > now) {
            debug!(job_id = %job.id, %at, "the next attempt is not due yet");
            return Disposition::Retry((at - now).try_into().unwrap_or(Duration::ZERO));
        }

        let (attempt, retry_after) = self.call(&finished, &callback).await;
        let owner = job.owner.clone();
        let (next, wait) = match self.record(job, &attempt, retry_after).await {
            Ok(Some(recorded)) => recorded,
            Ok(None) => return Disposition::Ack,
            Err(e) => {
                warn!(error = %e, cause = ?e, "could not record the callback attempt; retrying");
                return retry_later;
            }
        };
        let (status, number) = (next.status, next.attempts);
        let job_id = finished.job_id;
        match status {
            CallbackStatus::Delivered => {
                info!(%job_id, attempts = number, "callback delivered");
                Disposition::Ack
            }
            CallbackStatus::Disabled => {
                info!(%job_id, "the receiver answered 410 Gone; callback disabled");
                if let Some(defaults) = &self.defaults
                    && let Err(e) = defaults.gone(&owner, &callback.url).await
                {
                    // The job's own callback is settled; the default is tried again by a later 410.
                    warn!(error = %e, cause = ?e, %job_id, "could not disable the owner's default callback");
                }
                Disposition::Ack
            }
            CallbackStatus::Failed if matches!(attempt, Attempt::Refused(_)) => {
                warn!(%job_id, ?attempt, "callback target refused");
                Disposition::Ack
            }
            CallbackStatus::Failed => {
                warn!(%job_id, attempts = number, ?attempt, "callback failed after every retry");
                Disposition::DeadLetter
            }
            CallbackStatus::Pending => {
                let wait = wait.unwrap_or_default();
                info!(%job_id, attempts = number, ?attempt, ?wait, "callback not delivered; will retry");
                Disposition::Retry(wait)
            }
        }
    }

    /// One signed call: the attempt's outcome and the receiver's `Retry-After`, if any.
    async fn call(&self, finished: &JobFinished, callback: &Callback) -> (Attempt, Option<Duration>) {
        if let Err(refusal) = self.config.policy.check_url(&callback.url) {
            return (Attempt::Refused(refusal.0), None);
        }
        let now = self.clock.now();
        let id = webhook_id(&finished.job_id);
        let body = WebhookEvent::of(finished, now).to_bytes();
        let timestamp = now.unix_timestamp();
        let signature = self.config.secrets.sign(&id, timestamp, &body);
        let request = CallbackRequest {
            url: callback.url.clone(),
            headers: vec![
                ("webhook-id", id),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", signature),
                ("content-type", "application/json".into()),
            ],
            body: Bytes::from(body),
        };
        match self.sender.send(&request).await {
            Ok(answer) => (Attempt::Answered(answer.status), answer.retry_after),
            Err(CallError::Refused(why)) => (Attempt::Refused(why), None),
            Err(CallError::NoAnswer(why)) => (Attempt::NoAnswer(why), None),
        }
    }

    /// Writes the callback's state after `attempt` on the job, computed from the callback as it
    /// is stored (re-read on a conflict): the new state and the wait before the next attempt, or
    /// `None` if the job is gone or its callback was settled by another handling.
    async fn record(
        &self,
        mut job: Job,
        attempt: &Attempt,
        retry_after: Option<Duration>,
    ) -> Result<Option<(Callback, Option<Duration>)>, BackendError> {
        for _ in 0..3 {
            let Some(current) = job.callback.clone().filter(|c| !c.status.is_settled()) else {
                return Ok(None);
            };
            let wait = self.config.schedule.after(current.attempts + 1, retry_after);
            let mut next = current.after(attempt, wait.is_some());
            if next.status == CallbackStatus::Pending {
                next.next_attempt_at = wait.map(|w| self.clock.now() + w);
            }
            match self.jobs.update(&job.with_callback(next.clone())).await {
                Ok(()) => return Ok(Some((next, wait))),
                Err(UpdateError::Backend(e)) => return Err(e),
                Err(UpdateError::Conflict) => match self.jobs.get(&job.id).await? {
                    Some(fresh) => job = fresh,
                    None => return Ok(None),
                },
            }
        }
        Err(BackendError::transient("record a callback attempt", "the job kept changing"))
    }
}
