//! The worker pool of `labelq serve`: N tasks that each receive one message at a time from a
//! [`JobQueue`] and hand it to the [`WorkerService`], then settle the message as the service says.
//! This is what Lambda's SQS event source mapping does on AWS, so the same service code runs in
//! both places.
//!
//! Shutdown: on cancellation the workers stop receiving at once; a message in flight gets the grace
//! period to finish, after which its job is given back (PROCESSING -> PENDING) and the message made
//! visible again, so a restart picks it up without waiting for a lease to run out.

use std::sync::Arc;
use std::time::Duration;

use labelq_shared::ports::{Delivery, JobQueue};
use labelq_shared::service::{Disposition, WorkerService};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

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

/// Starts the workers; they run until `stop` is cancelled and their in-flight work is settled.
pub fn spawn(
    queue: Arc<dyn JobQueue>,
    worker: Arc<WorkerService>,
    config: PoolConfig,
    stop: CancellationToken,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for n in 0..config.workers.max(1) {
        let (queue, worker, config, stop) = (queue.clone(), worker.clone(), config.clone(), stop.clone());
        set.spawn(run(queue, worker, config, stop).instrument(info_span!("worker", n)));
    }
    set
}

async fn run(queue: Arc<dyn JobQueue>, worker: Arc<WorkerService>, config: PoolConfig, stop: CancellationToken) {
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            r = queue.receive(1, config.visibility, config.poll_wait) => r,
        };
        let deliveries = match received {
            Ok(d) => {
                failures = 0;
                d
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
                warn!(error = %e, cause = ?e, ?pause, "receive failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        for delivery in deliveries {
            process(&*queue, &worker, &delivery, &config, &stop).await;
        }
    }
    debug!("worker stopped");
}

async fn process(
    queue: &dyn JobQueue,
    worker: &WorkerService,
    delivery: &Delivery,
    config: &PoolConfig,
    stop: &CancellationToken,
) {
    let mut handled = Box::pin(worker.handle(delivery));
    let disposition = tokio::select! {
        d = &mut handled => d,
        () = async { stop.cancelled().await; tokio::time::sleep(config.grace).await } => {
            info!(message_id = %delivery.message_id, "shutting down: giving the job back");
            // Cancel the handling first, so a late result cannot land after the release.
            drop(handled);
            worker.release(delivery).await;
            Disposition::Retry(Duration::ZERO)
        }
    };
    let settled = match disposition {
        Disposition::Ack => queue.ack(delivery).await,
        Disposition::Retry(delay) => queue.retry(delivery, delay).await,
        Disposition::DeadLetter => queue.dead_letter(delivery).await,
    };
    if let Err(e) = settled {
        // The message will reappear after its visibility timeout; processing is idempotent.
        warn!(error = %e, cause = ?e, message_id = %delivery.message_id, ?disposition, "could not settle message");
    }
}
