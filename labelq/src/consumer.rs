//! The receive loop every consumer in `labelq serve` runs: N tasks, each receiving from a
//! [`Source`] and handling what it got, until stopped. A failed receive is tried again after a
//! pause that grows with each failure in a row, so a queue that is down is not hammered.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use labelq_shared::ports::{BackendError, Delivery, JobQueue};
use labelq_shared::service::Disposition;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

/// Where a consumer's work comes from, and what it does with it.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    type Batch: Send;
    /// The next batch, waiting (long polling) while there is none.
    async fn receive(&self) -> Result<Self::Batch, BackendError>;
    /// Handles one batch; `stop` tells it the server is shutting down.
    async fn handle(&self, batch: Self::Batch, stop: &CancellationToken);
}

/// Starts `tasks` consumers of `source`, named `kind` in their spans; they run until `stop` is
/// cancelled and the batch in hand is handled.
pub fn spawn<S: Source>(source: Arc<S>, tasks: usize, kind: &'static str, stop: CancellationToken) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for n in 0..tasks.max(1) {
        let (source, stop) = (source.clone(), stop.clone());
        set.spawn(run(source, stop).instrument(info_span!("consumer", kind, n)));
    }
    set
}

async fn run<S: Source>(source: Arc<S>, stop: CancellationToken) {
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            r = source.receive() => r,
        };
        match received {
            Ok(batch) => {
                failures = 0;
                source.handle(batch, &stop).await;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
                warn!(error = %e, cause = ?e, ?pause, "receive failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    debug!("consumer stopped");
}

/// Does with a message what its handling decided.
pub async fn settle(queue: &dyn JobQueue, delivery: &Delivery, disposition: Disposition) {
    let settled = match disposition {
        Disposition::Ack => queue.ack(delivery).await,
        Disposition::Retry(delay) => queue.retry(delivery, delay).await,
        Disposition::DeadLetter => queue.dead_letter(delivery).await,
    };
    if let Err(e) = settled {
        // The message will reappear after its visibility timeout; handling is idempotent.
        warn!(error = %e, cause = ?e, message_id = %delivery.message_id, ?disposition, "could not settle message");
    }
}
