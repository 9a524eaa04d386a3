//! The worker pool of `labelq serve`: N consumers that each receive one message at a time from a
//! [`JobQueue`] and hand it to the [`WorkerService`], then settle the message as the service says.
//! This is what Lambda's SQS event source mapping does on AWS, so the same service code runs in
//! both places.
//!
//! Shutdown: on cancellation the workers stop receiving at once; a message in flight gets the grace
//! period to finish, after which its handling is dropped, exactly the claim it held is given back
//! (PROCESSING -> PENDING) and the message made visible again, so a restart picks it up without
//! waiting for a lease to run out.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use labelq_shared::ports::{BackendError, Delivery, JobQueue};
use labelq_shared::service::{ClaimSlot, Disposition, WorkerService};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::consumer::{self, Source};

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub workers: usize,
    /// How long a received message stays hidden; the worker's lease has the same length.
    pub visibility: Duration,
    /// How long one receive waits for a message (long polling).
    pub poll_wait: Duration,
    /// How long in-flight messages may run on after shutdown begins.
    pub grace: Duration,
}

struct Pool {
    queue: Arc<dyn JobQueue>,
    worker: Arc<WorkerService>,
    config: PoolConfig,
}

/// Starts the workers; they run until `stop` is cancelled and their in-flight work is settled.
pub fn spawn(
    queue: Arc<dyn JobQueue>,
    worker: Arc<WorkerService>,
    config: PoolConfig,
    stop: CancellationToken,
) -> JoinSet<()> {
    let workers = config.workers;
    consumer::spawn(Arc::new(Pool { queue, worker, config }), workers, "worker", stop)
}

#[async_trait]
impl Source for Pool {
    type Batch = Vec<Delivery>;

    async fn receive(&self) -> Result<Vec<Delivery>, BackendError> {
        self.queue.receive(1, self.config.visibility, self.config.poll_wait).await
    }

    async fn handle(&self, deliveries: Vec<Delivery>, stop: &CancellationToken) {
        for delivery in deliveries {
            self.process(&delivery, stop).await;
        }
    }
}

impl Pool {
    async fn process(&self, delivery: &Delivery, stop: &CancellationToken) {
        let slot = ClaimSlot::default();
        let mut handled = Box::pin(self.worker.handle_holding(delivery, &slot));
        let disposition = tokio::select! {
            d = &mut handled => d,
            () = async { stop.cancelled().await; tokio::time::sleep(self.config.grace).await } => {
                info!(message_id = %delivery.message_id, "shutting down: giving the job back");
                // Cancel the handling first, so a late result cannot land after the release.
                drop(handled);
                self.worker.release(&slot).await;
                Disposition::Retry(Duration::ZERO)
            }
        };
        consumer::settle(&*self.queue, delivery, disposition).await;
    }
}
