//! `labelq serve` as a library: the API, the worker pool and expiry in one process, over
//! whichever backends it is given. Tests start it on `127.0.0.1:0` with their own data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use labelq_shared::adapters::aws::SqsQueue;
use labelq_shared::adapters::fs::FsImageStore;
use labelq_shared::adapters::sqlite::{QueueCounts, SqliteJobStore, SqliteQueue};
use labelq_shared::domain::Clock;
use labelq_shared::http::auth::Authenticator;
use labelq_shared::http::{ApiState, router};
use labelq_shared::ports::{BackendError, ImageStore, JobPublisher, JobQueue, JobStore, LabelDetector};
use labelq_shared::service::{QueryService, SubmitConfig, SubmitService, WorkerConfig, WorkerService};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::event_source::{self, EventSourceConfig};
use crate::pool::{self, PoolConfig};

/// The embedded backends: one directory holds everything.
///
/// ```text
/// DATA_DIR/images/{id}     the images
/// DATA_DIR/jobs.sqlite3    the jobs
/// DATA_DIR/queue.sqlite3   the queue and its dead letters
/// ```
#[derive(Debug, Clone)]
pub struct Embedded {
    pub images: Arc<FsImageStore>,
    pub jobs: Arc<SqliteJobStore>,
    pub queue: Arc<SqliteQueue>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("could not create the data directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not open the database {path}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// What an expiry pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub jobs: usize,
    pub images: usize,
}

impl Embedded {
    pub fn open(data_dir: &Path, max_receives: u32) -> Result<Self, OpenError> {
        let dir_error = |source| OpenError::Dir { path: data_dir.to_owned(), source };
        std::fs::create_dir_all(data_dir).map_err(dir_error)?;
        let images = FsImageStore::open(data_dir).map_err(dir_error)?;
        let db = |name: &str| data_dir.join(name);
        let jobs = SqliteJobStore::open(&db("jobs.sqlite3"))
            .map_err(|source| OpenError::Db { path: db("jobs.sqlite3"), source })?;
        let queue = SqliteQueue::open(&db("queue.sqlite3"), max_receives)
            .map_err(|source| OpenError::Db { path: db("queue.sqlite3"), source })?;
        Ok(Self { images: Arc::new(images), jobs: Arc::new(jobs), queue: Arc::new(queue) })
    }

    /// Removes expired jobs with their images, then images older than `ttl` that no job points
    /// to any more (left by a failed submission or a failed delete).
    pub async fn sweep(&self, clock: &dyn Clock, ttl: Duration) -> Result<Swept, BackendError> {
        let mut swept = Swept::default();
        loop {
            let expired = self.jobs.delete_expired(clock.now(), 500).await?;
            for job in &expired {
                self.images.delete(&job.image.object_key).await?;
            }
            swept.jobs += expired.len();
            swept.images += expired.len();
            if expired.len() < 500 {
                break;
            }
        }
        // Orphans go by file age, with an hour's grace over the TTL so an image whose job is
        // still alive is never touched.
        let cutoff = SystemTime::from(clock.now()) - ttl - Duration::from_secs(3600);
        swept.images += self.images.remove_older_than(cutoff).await?;
        Ok(swept)
    }

    pub async fn queue_counts(&self) -> Result<QueueCounts, BackendError> {
        self.queue.counts().await
    }
}

/// How the workers get their messages.
#[derive(Debug, Clone)]
pub enum Consumer {
    /// The worker pool, one message at a time per worker (the SQLite queue).
    Pool(Arc<dyn JobQueue>),
    /// Batches from SQS through the worker Lambda's own handler, as Lambda's event source
    /// mapping delivers them.
    Sqs { queue: Arc<SqsQueue>, batch_size: usize },
}

/// The ports the server runs on.
#[derive(Debug, Clone)]
pub struct Backends {
    pub images: Arc<dyn ImageStore>,
    pub jobs: Arc<dyn JobStore>,
    pub publisher: Arc<dyn JobPublisher>,
    pub consumer: Consumer,
    /// Present for the embedded backends, which expire jobs themselves (AWS uses DynamoDB TTL
    /// and an S3 lifecycle rule instead).
    pub embedded: Option<Embedded>,
}

impl From<Embedded> for Backends {
    fn from(e: Embedded) -> Self {
        Self {
            images: e.images.clone(),
            jobs: e.jobs.clone(),
            publisher: e.queue.clone(),
            consumer: Consumer::Pool(e.queue.clone()),
            embedded: Some(e),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub workers: usize,
    pub auth: Arc<dyn Authenticator>,
    pub submit: SubmitConfig,
    pub worker: WorkerConfig,
    /// How long one receive waits for a message.
    pub poll_wait: Duration,
    /// How long in-flight jobs may finish after shutdown begins.
    pub grace: Duration,
    pub sweep_interval: Duration,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    embedded: Option<Embedded>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
}

impl Server {
    /// Binds, then starts the API, the workers and (embedded) the expiry sweeper.
    pub async fn start(
        backends: Backends,
        detector: Arc<dyn LabelDetector>,
        clock: Arc<dyn Clock>,
        options: ServeOptions,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let submit = SubmitService::new(
            backends.images.clone(),
            backends.jobs.clone(),
            backends.publisher.clone(),
            clock.clone(),
            options.submit.clone(),
        );
        let query = QueryService::new(backends.images.clone(), backends.jobs.clone(), clock.clone());
        let app =
            router(ApiState { submit: Some(Arc::new(submit)), query: Arc::new(query), auth: options.auth.clone() });
        let http_stop = stop.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(http_stop.cancelled_owned()).await;
            if let Err(e) = served {
                error!(error = %e, "HTTP server failed");
            }
        });

        let worker = WorkerService::new(
            backends.images.clone(),
            backends.jobs.clone(),
            detector,
            clock.clone(),
            options.worker.clone(),
        );
        let mut workers = match &backends.consumer {
            Consumer::Pool(queue) => {
                let config = PoolConfig {
                    workers: options.workers,
                    visibility: options.worker.lease,
                    poll_wait: options.poll_wait,
                    grace: options.grace,
                };
                pool::spawn(queue.clone(), Arc::new(worker), config, stop.clone())
            }
            Consumer::Sqs { queue, batch_size } => {
                let config = EventSourceConfig {
                    pollers: 1,
                    batch_size: *batch_size,
                    concurrency: options.workers,
                    visibility: options.worker.lease,
                };
                event_source::spawn(queue.clone(), Arc::new(worker), config, stop.clone())
            }
        };
        tasks.spawn(async move { while workers.join_next().await.is_some() {} });

        if let Some(embedded) = backends.embedded.clone() {
            let (stop, clock, ttl, every) = (stop.clone(), clock.clone(), options.submit.ttl, options.sweep_interval);
            tasks.spawn(async move {
                loop {
                    match embedded.sweep(&*clock, ttl).await {
                        Ok(s) if s != Swept::default() => {
                            info!(jobs = s.jobs, images = s.images, "expired jobs removed")
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, cause = ?e, "expiry sweep failed"),
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(every) => {}
                    }
                }
            });
        }
        info!(%addr, workers = options.workers, "labelq serving");
        Ok(Self { addr, stop, tasks, embedded: backends.embedded, clock, ttl: options.submit.ttl })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn embedded(&self) -> Option<&Embedded> {
        self.embedded.as_ref()
    }

    /// Runs one expiry pass now (embedded backends only).
    pub async fn sweep_now(&self) -> Result<Swept, BackendError> {
        match &self.embedded {
            Some(e) => e.sweep(&*self.clock, self.ttl).await,
            None => Ok(Swept::default()),
        }
    }

    /// A token that stops the server when cancelled (what SIGINT/SIGTERM do).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops taking work and waits for in-flight requests and jobs to finish or be given back.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        info!("labelq stopped");
    }

    /// Waits until the stop token is cancelled, then shuts down.
    pub async fn run(self) {
        self.stop.cancelled().await;
        self.shutdown().await;
    }
}
