//! The callback deliverers of `labelq serve`: consumers of the callback queue, apart from the
//! worker pool, so that a slow or vanished receiver holds up only other callbacks, never labelling.
//! Each receives one message at a time, hands it to the [`CallbackService`] and settles it as the
//! service says. A call in flight at shutdown runs to its end (at most its 15 s timeout).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use labelq_shared::ports::{BackendError, Delivery, JobQueue};
use labelq_shared::service::CallbackService;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::consumer::{self, Source};

/// How long a callback message stays hidden while it is handled: longer than a call may take.
const VISIBILITY: Duration = Duration::from_secs(60);

struct Deliverers {
    queue: Arc<dyn JobQueue>,
    service: Arc<CallbackService>,
    poll_wait: Duration,
}

/// Starts `tasks` deliverers; they run until `stop` is cancelled.
pub fn spawn(
    queue: Arc<dyn JobQueue>,
    service: Arc<CallbackService>,
    tasks: usize,
    poll_wait: Duration,
    stop: CancellationToken,
) -> JoinSet<()> {
    consumer::spawn(Arc::new(Deliverers { queue, service, poll_wait }), tasks, "callback", stop)
}

#[async_trait]
impl Source for Deliverers {
    type Batch = Vec<Delivery>;

    async fn receive(&self) -> Result<Vec<Delivery>, BackendError> {
        self.queue.receive(1, VISIBILITY, self.poll_wait).await
    }

    async fn handle(&self, deliveries: Vec<Delivery>, _stop: &CancellationToken) {
        for delivery in deliveries {
            let disposition = self.service.handle(&delivery).await;
            consumer::settle(&*self.queue, &delivery, disposition).await;
        }
    }
}
