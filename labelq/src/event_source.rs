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

use async_trait::async_trait;
use aws_lambda_events::sqs::SqsEvent;
use labelq_shared::adapters::aws::SqsQueue;
use labelq_shared::lambda::{WorkerRecords, handle_sqs_batch, record_from_sdk};
use labelq_shared::ports::BackendError;
use labelq_shared::service::WorkerService;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::consumer::{self, Source};

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

struct EventSource {
    queue: Arc<SqsQueue>,
    /// The worker, taking the bucket's direct uploads but no bucket drops: their notifications go
    /// to the dead-letter queue, to be redriven to a worker that takes them (the worker Lambda),
    /// not lost.
    records: WorkerRecords,
    config: EventSourceConfig,
}

pub fn spawn(
    queue: Arc<SqsQueue>,
    worker: Arc<WorkerService>,
    bucket: &str,
    config: EventSourceConfig,
    stop: CancellationToken,
) -> JoinSet<()> {
    let pollers = config.pollers;
    let records = WorkerRecords::new(worker, bucket, None);
    consumer::spawn(Arc::new(EventSource { queue, records, config }), pollers, "event_source", stop)
}

#[async_trait]
impl Source for EventSource {
    type Batch = Vec<aws_sdk_sqs::types::Message>;

    async fn receive(&self) -> Result<Self::Batch, BackendError> {
        self.queue.receive_messages(self.config.batch_size, self.config.visibility, Duration::from_secs(20)).await
    }

    async fn handle(&self, messages: Self::Batch, _: &CancellationToken) {
        if messages.is_empty() {
            return;
        }
        let receipts: Vec<(String, String)> =
            messages.iter().filter_map(|m| Some((m.message_id.clone()?, m.receipt_handle.clone()?))).collect();
        let mut event = SqsEvent::default();
        event.records = messages.into_iter().map(record_from_sdk).collect();
        let response = handle_sqs_batch(&self.records, &*self.queue, event, self.config.concurrency, None).await;
        let failed: HashSet<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
        debug!(records = receipts.len(), failed = failed.len(), "batch handled");
        for (message_id, receipt) in receipts {
            if failed.contains(&message_id) {
                continue;
            }
            if let Err(e) = self.queue.delete(&receipt).await {
                // Redelivered after its visibility timeout, and then a no-op for the worker.
                warn!(error = %e, %message_id, "could not delete a handled message");
            }
        }
    }
}
