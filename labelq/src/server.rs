//! `labelq serve` as a library: the API, the worker pool and expiry in one process, over
//! whichever backends it is given. Tests start it on `127.0.0.1:0` with their own data directory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use labelq_shared::adapters::fs::FsDropResults;
use labelq_shared::adapters::hmac_uploads::HmacUploadTargets;
use labelq_shared::adapters::reqwest::ReqwestCallbackSender;
use labelq_shared::domain::{Clock, ImageLimits, MAX_DROP_BYTES};
use labelq_shared::http::auth::Authenticator;
use labelq_shared::http::events::LiveConfig;
use labelq_shared::http::upload_receiver::{self, UploadReceiver};
use labelq_shared::http::{ApiState, Uploads, router_with};
use labelq_shared::ports::{BackendError, DefaultCallbacks, JobQueue, LabelDetector, MessagePublisher, UploadTargets};
use labelq_shared::service::{
    Announce, CallbackConfig, CallbackService, DefaultCallbackService, JobChanges, Stores, SubmitConfig, SubmitService,
    WatchedJobStore, WorkerConfig, WorkerService,
};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::callbacks;
use crate::drop_dir::{DropConfig, DropDir};
use crate::embedded::{Embedded, Swept};
use crate::pool::{self, PoolConfig};

/// How the workers get their messages.
#[derive(Debug, Clone)]
pub enum Consumer {
    /// The worker pool, one message at a time per worker (the SQLite queue).
    Pool(Arc<dyn JobQueue>),
    /// Batches from SQS through the worker Lambda's own handler, as Lambda's event source
    /// mapping delivers them.
    /// `bucket` is the one whose notifications (of direct uploads) are taken.
    #[cfg(feature = "aws")]
    Sqs { queue: Arc<labelq_shared::adapters::aws::SqsQueue>, batch_size: usize, bucket: String },
}

/// The ports the server runs on.
#[derive(Debug, Clone)]
pub struct Backends {
    pub stores: Stores,
    pub publisher: Arc<dyn MessagePublisher>,
    pub consumer: Consumer,
    /// Present for the embedded backends, which expire jobs themselves (AWS uses DynamoDB TTL
    /// and an S3 lifecycle rule instead).
    pub embedded: Option<Embedded>,
    /// Where finished jobs are announced and callbacks delivered from; `None` where this server
    /// delivers no callbacks (the AWS backends without a completion topic and callback queue).
    pub callbacks: Option<CallbackQueue>,
    /// Where owners' default callbacks are kept (used only where callbacks are delivered; the
    /// `/v1/callback` routes exist only then).
    pub defaults: Option<Arc<dyn DefaultCallbacks>>,
    /// Where direct uploads go when not to this server itself (presigned S3 PUTs); the embedded
    /// backends receive them on this server.
    pub upload_targets: Option<Arc<dyn UploadTargets>>,
}

/// The callback queue: the worker announces finished jobs on `publisher` (the queue itself, or
/// the completion topic it subscribes to), the deliverers consume `queue`.
#[derive(Debug, Clone)]
pub struct CallbackQueue {
    pub publisher: Arc<dyn MessagePublisher>,
    /// Which finished jobs are announced: those with a callback when `publisher` is the queue,
    /// every one when it is a topic that filters for the queue.
    pub announce: Announce,
    pub queue: Arc<dyn JobQueue>,
}

impl From<Embedded> for Backends {
    fn from(e: Embedded) -> Self {
        Self {
            stores: e.stores(),
            publisher: e.queue.clone(),
            consumer: Consumer::Pool(e.queue.clone()),
            callbacks: Some(CallbackQueue {
                publisher: e.callbacks.clone(),
                announce: Announce::WithCallback,
                queue: e.callbacks.clone(),
            }),
            defaults: Some(e.defaults.clone()),
            upload_targets: None,
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
    /// How callbacks are signed, where they may go and when they are retried; used where the
    /// backends have a callback queue.
    pub callbacks: CallbackConfig,
    /// Callbacks delivered at once.
    pub deliverers: usize,
    /// How the events stream follows jobs and keeps idle connections open.
    pub live: LiveConfig,
    /// The drop directory, when one is watched.
    pub drops: Option<DropConfig>,
    /// Where clients reach this server (`http://host:port`), for the upload targets it issues;
    /// `None`: the address it listens on (loopback when it listens on every interface).
    pub public_url: Option<String>,
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
        mut backends: Backends,
        detector: Arc<dyn LabelDetector>,
        clock: Arc<dyn Clock>,
        options: ServeOptions,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();

        // Every write to the jobs, from the API, the workers and the deliverers, is announced to
        // the live subscribers.
        let changes = JobChanges::new();
        backends.stores.jobs = Arc::new(WatchedJobStore::new(backends.stores.jobs.clone(), changes.clone()));

        let mut submit = options.submit.clone();
        submit.callbacks = backends.callbacks.as_ref().map(|_| options.callbacks.policy);
        // Direct uploads: to this server itself on the embedded backends (S3 presigns its own).
        let receiver = match &backends.embedded {
            Some(embedded) => {
                let key = HmacUploadTargets::key_in(&embedded.data_dir)?;
                let base = match &options.public_url {
                    Some(url) => url.clone(),
                    None => {
                        let ip = addr.ip();
                        let host = if ip.is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { ip };
                        format!("http://{}", SocketAddr::new(host, addr.port()))
                    }
                };
                Some(UploadReceiver {
                    jobs: backends.stores.jobs.clone(),
                    images: embedded.images.clone(),
                    publisher: backends.publisher.clone(),
                    targets: HmacUploadTargets::new(base, key),
                    clock: clock.clone(),
                    grace: options.worker.upload_grace,
                })
            }
            None => None,
        };
        let targets = match &receiver {
            Some(receiver) => Some(Arc::new(receiver.targets.clone()) as Arc<dyn UploadTargets>),
            None => backends.upload_targets.clone(),
        };
        let uploads = Uploads { publisher: backends.publisher.clone(), config: submit.clone(), targets };
        let mut state = ApiState::new(backends.stores.clone(), Some(uploads), clock.clone(), options.auth.clone())
            .with_live(changes, options.live, stop.clone());
        // Default callbacks only where callbacks are delivered.
        let defaults = match (&backends.callbacks, &backends.defaults) {
            (Some(_), Some(store)) => {
                Some(Arc::new(DefaultCallbackService::new(store.clone(), clock.clone(), options.callbacks.policy)))
            }
            _ => None,
        };
        if let Some(defaults) = &defaults {
            state = state.with_default_callbacks(defaults.clone());
        }
        if let Some(drops) = &options.drops {
            drops.prepare().map_err(std::io::Error::other)?;
            let limits = ImageLimits { max_bytes: MAX_DROP_BYTES, ..submit.limits };
            let config = SubmitConfig { limits, ..submit.clone() };
            let mut service =
                SubmitService::new(backends.stores.clone(), backends.publisher.clone(), clock.clone(), config);
            if let Some(defaults) = &defaults {
                service = service.with_default_callbacks(defaults.clone());
            }
            let watcher = DropDir::new(drops.clone(), Arc::new(service));
            tasks.spawn(watcher.run(stop.clone()));
        }
        let app = router_with(state, receiver.map(upload_receiver::routes).unwrap_or_default());
        let http_stop = stop.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(http_stop.cancelled_owned()).await;
            if let Err(e) = served {
                error!(error = %e, "HTTP server failed");
            }
        });

        let mut worker = WorkerService::new(backends.stores.clone(), detector, clock.clone(), options.worker.clone());
        if let Some(drops) = &options.drops {
            worker = worker.with_drop_results(Arc::new(FsDropResults::new(&drops.results)));
        }
        if let Some(callbacks) = &backends.callbacks {
            worker = worker.with_completions(callbacks.publisher.clone(), callbacks.announce);
            let sender = ReqwestCallbackSender::new(options.callbacks.policy).map_err(std::io::Error::other)?;
            let mut service = CallbackService::new(
                backends.stores.jobs.clone(),
                Arc::new(sender),
                clock.clone(),
                options.callbacks.clone(),
            );
            if let Some(defaults) = &defaults {
                service = service.with_default_callbacks(defaults.clone());
            }
            let mut deliverers = callbacks::spawn(
                callbacks.queue.clone(),
                Arc::new(service),
                options.deliverers,
                options.poll_wait,
                stop.clone(),
            );
            tasks.spawn(async move { while deliverers.join_next().await.is_some() {} });
        }
        let worker = Arc::new(worker);
        let mut workers = match &backends.consumer {
            Consumer::Pool(queue) => {
                let config = PoolConfig {
                    workers: options.workers,
                    visibility: options.worker.lease,
                    poll_wait: options.poll_wait,
                    grace: options.grace,
                };
                pool::spawn(queue.clone(), worker, config, stop.clone())
            }
            #[cfg(feature = "aws")]
            Consumer::Sqs { queue, batch_size, bucket } => {
                let config = crate::event_source::EventSourceConfig {
                    pollers: 1,
                    batch_size: *batch_size,
                    concurrency: options.workers,
                    visibility: options.worker.lease,
                };
                crate::event_source::spawn(queue.clone(), worker, bucket, config, stop.clone())
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
