//! The SQS batch handler of the worker and the callback function, following Lambda's partial
//! batch response contract (`FunctionResponseTypes: [ReportBatchItemFailures]` on the event
//! source mapping): it returns exactly the ids of the records to retry, never an empty or unknown
//! id (on AWS either fails the whole batch), and an empty list when all went well. A record to be
//! retried has its visibility set to the delay its handler chose before it is reported.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage, SqsMessageAttribute};
use futures::{FutureExt, StreamExt};
use tracing::{error, warn};

use crate::adapters::aws::{CORRELATION_ID, delivery_from_sqs};
use crate::ports::{Delivery, JobQueue};
use crate::service::{CallbackService, ClaimSlot, Disposition, WorkerService};

/// What handles one record: the worker (which holds a claim on a job while it works, and gives it
/// back when the handling is abandoned) or the callback service (which holds nothing).
#[async_trait]
pub trait RecordHandler: Sync {
    async fn handle(&self, delivery: &Delivery, slot: &ClaimSlot) -> Disposition;
    /// Gives back what an abandoned handling held in `slot`.
    async fn release(&self, slot: &ClaimSlot);
}

#[async_trait]
impl<H: RecordHandler + Send + ?Sized> RecordHandler for std::sync::Arc<H> {
    async fn handle(&self, delivery: &Delivery, slot: &ClaimSlot) -> Disposition {
        (**self).handle(delivery, slot).await
    }

    async fn release(&self, slot: &ClaimSlot) {
        (**self).release(slot).await
    }
}

#[async_trait]
impl RecordHandler for WorkerService {
    async fn handle(&self, delivery: &Delivery, slot: &ClaimSlot) -> Disposition {
        self.handle_holding(delivery, slot).await
    }

    async fn release(&self, slot: &ClaimSlot) {
        WorkerService::release(self, slot).await
    }
}

#[async_trait]
impl RecordHandler for CallbackService {
    async fn handle(&self, delivery: &Delivery, _slot: &ClaimSlot) -> Disposition {
        CallbackService::handle(self, delivery).await
    }

    /// A call abandoned mid-way left nothing written; its message comes back and calls again
    /// (with the same `webhook-id`).
    async fn release(&self, _slot: &ClaimSlot) {}
}

#[async_trait]
impl RecordHandler for crate::http::relay::SocketRelay {
    async fn handle(&self, delivery: &Delivery, _slot: &ClaimSlot) -> Disposition {
        crate::http::relay::SocketRelay::handle(self, delivery).await
    }

    /// A push abandoned mid-way is pushed again: followers may get the state twice, each with
    /// its `version`.
    async fn release(&self, _slot: &ClaimSlot) {}
}

/// An SQS record as Lambda's event source mapping would deliver it, from an SDK message (for
/// `labelq serve --backend aws` and tests, which poll SQS themselves).
pub fn record_from_sdk(message: aws_sdk_sqs::types::Message) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message.message_id;
    record.receipt_handle = message.receipt_handle;
    record.body = message.body;
    record.md5_of_body = message.md5_of_body;
    record.attributes =
        message.attributes.unwrap_or_default().into_iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect();
    record.message_attributes = message
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let mut attribute = SqsMessageAttribute::default();
            attribute.string_value = v.string_value;
            attribute.data_type = Some(v.data_type);
            (k, attribute)
        })
        .collect();
    record.event_source = Some("aws:sqs".into());
    record
}

/// Handles one SQS batch: records run concurrently (at most `concurrency` at once), each in its own
/// span, each contained (a panic or error in one never affects the others). Records not finished by
/// `deadline` (the function's timeout, less a margin) give back their job and are reported as
/// failures, so they are retried rather than the whole batch timing out.
pub async fn handle_sqs_batch(
    handler: &dyn RecordHandler,
    queue: &dyn JobQueue,
    event: SqsEvent,
    concurrency: usize,
    deadline: Option<tokio::time::Instant>,
) -> SqsBatchResponse {
    let failed: Vec<Option<String>> = futures::stream::iter(event.records)
        .map(|record| handle_record(handler, queue, record, deadline))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut ids: Vec<String> = failed.into_iter().flatten().collect();
    ids.sort();
    ids.dedup();
    let mut response = SqsBatchResponse::default();
    for id in ids {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

/// The record's message id if it must be retried, `None` if it is done.
async fn handle_record(
    handler: &dyn RecordHandler,
    queue: &dyn JobQueue,
    record: SqsMessage,
    deadline: Option<tokio::time::Instant>,
) -> Option<String> {
    let Some(message_id) = record.message_id.filter(|id| !id.is_empty()) else {
        // It cannot be reported (an empty id fails the whole batch on AWS); SQS never sends one.
        error!("an SQS record without a message id; it cannot be retried");
        return None;
    };
    let correlation =
        record.message_attributes.get(CORRELATION_ID).and_then(|a: &SqsMessageAttribute| a.string_value.as_deref());
    let delivery = delivery_from_sqs(
        message_id.clone(),
        record.receipt_handle.unwrap_or_default(),
        record.body.unwrap_or_default(),
        record.attributes.get("ApproximateReceiveCount").map(String::as_str),
        correlation,
    );
    let slot = ClaimSlot::default();
    let handled = AssertUnwindSafe(handler.handle(&delivery, &slot)).catch_unwind();
    let outcome = match deadline {
        Some(at) => tokio::time::timeout_at(at, handled).await.ok(),
        None => Some(handled.await),
    };
    let disposition = match outcome {
        Some(Ok(disposition)) => disposition,
        Some(Err(_)) => {
            error!(%message_id, "the record's handling panicked");
            handler.release(&slot).await;
            Disposition::Retry(Duration::ZERO)
        }
        None => {
            warn!(%message_id, "the function's deadline is near; giving the job back for a retry");
            handler.release(&slot).await;
            return Some(message_id);
        }
    };
    let settled = match disposition {
        Disposition::Ack => return None,
        Disposition::Retry(delay) => queue.retry(&delivery, delay).await,
        Disposition::DeadLetter => queue.dead_letter(&delivery).await,
    };
    if let Err(e) = settled {
        // The message still comes back, after its visibility timeout instead of the backoff.
        warn!(error = %e, cause = ?e, %message_id, "could not change the message's visibility");
    }
    Some(message_id)
}
