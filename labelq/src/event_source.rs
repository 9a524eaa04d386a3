//! An SQS poller that behaves like Lambda's event source mapping, so `labelq serve --backend aws`
//! runs the worker Lambda's own batch handler against real SQS (or LocalStack, which cannot run
//! Lambda without Docker).
//!
//! Like the mapping with `ReportBatchItemFailures`: it receives up to `batch_size` messages
//! (hidden for the queue's visibility timeout), hands them to the handler as an `SqsEvent`, then
//! deletes every record the response does not name. Named records stay in the queue: the handler
//! has set their visibility to the retry backoff, and SQS's redrive policy dead-letters them after
//! `maxReceiveCount` receives. Several pollers run at once, like concurrent batches.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use labelq_shared::adapters::aws::SqsQueue;
use labelq_shared::lambda::{handle_sqs_batch, record_from_sdk};
use labelq_shared::service::WorkerService;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

#[derive(Debug, Clone)]
pub struct EventSourceConfig {
    /// Concurrent batches.
    pub pollers: usize,
    /// Records per batch (SQS allows 1..=10).
    pub batch_size: usize,
    /// Records of one batch handled at once.
    pub concurrency: usize,
    /// The queue's visibility timeout, applied at receive.
    pub visibility: Duration,
}

pub fn spawn(
    queue: Arc<SqsQueue>,
    worker: Arc<WorkerService>,
    config: EventSourceConfig,
    stop: CancellationToken,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for n in 0..config.pollers.max(1) {
        let (queue, worker, config, stop) = (queue.clone(), worker.clone(), config.clone(), stop.clone());
        set.spawn(poll(queue, worker, config, stop).instrument(info_span!("event_source", n)));
    }
    set
}

async fn poll(queue: Arc<SqsQueue>, worker: Arc<WorkerService>, config: EventSourceConfig, stop: CancellationToken) {
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            r = queue.receive_messages(config.batch_size, config.visibility, Duration::from_secs(20)) => r,
        };
        let messages = match received {
            Ok(m) => {
                failures = 0;
                m
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                warn!(error = %e, cause = ?e, "receive failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25)))) => continue,
                }
            }
        };
        if messages.is_empty() {
            continue;
        }
        let receipts: Vec<(String, String)> =
            messages.iter().filter_map(|m| Some((m.message_id.clone()?, m.receipt_handle.clone()?))).collect();
        let mut event = SqsEvent::default();
        event.records = messages.into_iter().map(record_from_sdk).collect();
        let response = handle_sqs_batch(&worker, &*queue, event, config.concurrency, None).await;
        let failed: HashSet<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
        debug!(records = receipts.len(), failed = failed.len(), "batch handled");
        for (message_id, receipt) in receipts {
            if failed.contains(&message_id) {
                continue;
            }
            if let Err(e) = queue.delete(&receipt).await {
                // Redelivered after its visibility timeout, and then a no-op for the worker.
                warn!(error = %e, %message_id, "could not delete a handled message");
            }
        }
    }
}
