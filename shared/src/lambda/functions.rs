//! The functions, assembled from their configuration. Each binary's `main` reads its
//! config, builds the SDK config once and runs one of these; tests build them against LocalStack.
//!
//! Every variable is read under its one rule ([`crate::config`]): a missing or bad one stops the
//! function at init with a message naming it.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use tracing::warn;

use super::auth::ApiGatewayJwt;
use super::drops::{BucketDrops, WorkerRecords};
use super::sqs_batch::handle_sqs_batch;
use crate::adapters::aws::{
    AwsStores, DROP_PREFIX, DROP_RESULTS_PREFIX, LazyClient, Resources, S3DropResults, S3DroppedObjects,
    S3UploadTargets, SqsQueue, s3_client, sns_publisher,
};
use crate::config::{
    self, Concurrency, ConfigError, JobTtl, MaxImageBytes, MaxLabels, MaxReceives, MinConfidence, Setting,
    VisibilityTimeout,
};
use crate::detectors::{DetectorConfig, DetectorKind, ModelFeatures};
use crate::domain::{DetectOptions, DropOwner, ImageLimits, MAX_DROP_BYTES, OwnerId, SystemClock};
use crate::http::{ApiState, Uploads, router};
use crate::ports::LabelDetector;
use crate::service::{
    Announce, Backoff, DefaultCallbackService, DropIntake, SubmitConfig, SubmitService, UPLOAD_GRACE, WorkerConfig,
    WorkerService,
};
use crate::webhooks::TargetPolicy;

/// API Gateway -> Lambda carries at most 6 MB, and binary bodies arrive base64-encoded (4/3 the
/// size): 4.3 MB of image is what fits.
pub const LAMBDA_MAX_IMAGE_BYTES: usize = 4_300_000;

/// The request-handler's configuration: `LABELQ_TABLE`, `LABELQ_BUCKET`, `LABELQ_TOPIC_ARN`, and
/// optionally `LABELQ_JOB_TTL` (24h), `LABELQ_MAX_IMAGE_BYTES` (4.3 MB), `LABELQ_CALLBACKS`
/// (`false`: set `true` where the callback function delivers them, and `Callback-Url` is taken)
/// and `LABELQ_CALLBACK_ALLOW_PRIVATE` (`false`).
#[derive(Debug, Clone)]
pub struct RequestHandlerConfig {
    pub resources: Resources,
    pub topic_arn: String,
    pub submit: SubmitConfig,
}

impl RequestHandlerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let ttl = config::read::<JobTtl>()?.unwrap_or(JobTtl::DEFAULT);
        let max_bytes = config::read::<MaxImageBytes>()?.map_or(LAMBDA_MAX_IMAGE_BYTES, MaxImageBytes::get);
        Ok(Self {
            resources: Resources::from_env()?,
            topic_arn: config::required("LABELQ_TOPIC_ARN")?,
            submit: SubmitConfig {
                ttl: ttl.get(),
                limits: ImageLimits { max_bytes, ..ImageLimits::default() },
                // Where nothing delivers callbacks, a submission that asks for one is refused.
                callbacks: config::optional::<bool>("LABELQ_CALLBACKS")?
                    .unwrap_or(false)
                    .then_some(TargetPolicy { allow_private: allow_private()? }),
            },
        })
    }
}

/// The request-handler's router: the submission routes (`POST /v1/images`, `POST /v1/uploads`
/// with presigned S3 targets) and, where callbacks are delivered, the
/// default callback's routes (and the reads, which API Gateway routes to the status-api instead).
pub fn request_handler_app(sdk: &SdkConfig, config: &RequestHandlerConfig) -> axum::Router {
    let aws = AwsStores::new(sdk, &config.resources);
    let clock = Arc::new(SystemClock);
    // Direct uploads go to S3 itself, presigned with this function's credentials.
    let targets = S3UploadTargets::new(sdk, &config.resources.bucket, clock.clone());
    let uploads = Uploads {
        publisher: sns_publisher(sdk, &config.topic_arn),
        config: config.submit.clone(),
        targets: Some(Arc::new(targets)),
    };
    let mut state = ApiState::new(aws.stores(), Some(uploads), clock.clone(), Arc::new(ApiGatewayJwt));
    // Where callbacks are delivered, owners may set a default one (`/v1/callback`).
    if let Some(policy) = config.submit.callbacks {
        state = state.with_default_callbacks(Arc::new(DefaultCallbackService::new(aws.defaults, clock, policy)));
    }
    router(state)
}

/// The status-api's router: get, list, delete; no upload route.
pub fn status_api_app(sdk: &SdkConfig, resources: &Resources) -> axum::Router {
    let stores = AwsStores::with_s3_on_first_use(sdk, resources).stores();
    router(ApiState::new(stores, None, Arc::new(SystemClock), Arc::new(ApiGatewayJwt)))
}

/// `LABELQ_CALLBACK_ALLOW_PRIVATE`: whether callbacks may go to loopback and private addresses
/// over plain http (tests, and a deployment whose receivers are inside its own network).
fn allow_private() -> Result<bool, ConfigError> {
    Ok(config::optional::<bool>("LABELQ_CALLBACK_ALLOW_PRIVATE")?.unwrap_or(false))
}

/// The worker's configuration: `LABELQ_TABLE`, `LABELQ_BUCKET`, `LABELQ_QUEUE_URL`,
/// `LABELQ_MAX_RECEIVE_COUNT` (the queue's redrive `maxReceiveCount`), and optionally
/// `LABELQ_COMPLETION_TOPIC_ARN` (where every finished job is announced), `LABEL_DETECTOR`
/// (rekognition), `LABELQ_MODEL_DIR` (/opt/labelq-model), `LABELQ_VISIBILITY_TIMEOUT` (180s, the
/// queue's), `LABELQ_MAX_LABELS` (10), `LABELQ_MIN_CONFIDENCE` (55), `LABELQ_WORKER_CONCURRENCY` (4).
#[derive(Debug, Clone)]
pub struct WorkerFunctionConfig {
    pub resources: Resources,
    pub queue_url: String,
    /// The completion topic: every finished job's [`JobFinished`](crate::domain::JobFinished)
    /// event, which the callback queue and other systems subscribe to.
    pub completion_topic_arn: Option<String>,
    pub detector: DetectorConfig,
    /// Records of a batch handled at once.
    pub concurrency: Concurrency,
    pub worker: WorkerConfig,
    /// Whether objects created under the bucket's drop prefix become jobs, and how.
    pub drops: Option<WorkerDrops>,
}

/// The worker's bucket drops: `LABELQ_DROP_OWNER` (every drop's owner) or
/// `LABELQ_DROP_OWNER_FROM_PATH=true` (the key's first segment under `drops/` is the owner), with
/// `LABELQ_TOPIC_ARN` (where the drops' jobs are announced, as the request-handler announces its
/// own) and `LABELQ_JOB_TTL` (24h). Results go under `drop-results/`.
#[derive(Debug, Clone)]
pub struct WorkerDrops {
    pub owner: DropOwner,
    pub topic_arn: String,
    pub ttl: Duration,
}

impl WorkerDrops {
    fn from_env() -> Result<Option<Self>, ConfigError> {
        let from_path = config::optional::<bool>("LABELQ_DROP_OWNER_FROM_PATH")?.unwrap_or(false);
        let owner = match config::optional::<String>("LABELQ_DROP_OWNER")? {
            _ if from_path => DropOwner::FirstSegment,
            Some(owner) => DropOwner::Fixed(OwnerId::parse(&owner).map_err(|e| ConfigError::Invalid {
                name: "LABELQ_DROP_OWNER",
                value: owner.clone(),
                reason: e.to_string(),
            })?),
            None => return Ok(None),
        };
        let ttl = config::read::<JobTtl>()?.unwrap_or(JobTtl::DEFAULT).get();
        Ok(Some(Self { owner, topic_arn: config::required("LABELQ_TOPIC_ARN")?, ttl }))
    }
}

impl WorkerFunctionConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let resources = Resources::from_env()?;
        let max_receives = config::read::<MaxReceives>()?.ok_or(ConfigError::Missing(MaxReceives::VARIABLE))?;
        let visibility = config::read::<VisibilityTimeout>()?.map_or(Duration::from_secs(180), VisibilityTimeout::get);
        let max_labels = config::read::<MaxLabels>()?.unwrap_or(MaxLabels::DEFAULT);
        let min_confidence = config::read::<MinConfidence>()?.unwrap_or_default();
        let concurrency = config::read::<Concurrency>()?.unwrap_or(Concurrency::FOUR);
        let kind = config::read::<DetectorKind>()?.unwrap_or(DetectorKind::Rekognition);
        let features = config::read::<ModelFeatures>()?.unwrap_or(ModelFeatures::default_for(kind));
        let detector = match kind {
            DetectorKind::Onnx => DetectorConfig::Onnx {
                model_dir: config::optional("LABELQ_MODEL_DIR")?.unwrap_or_else(|| "/opt/labelq-model".into()),
                sessions: concurrency.get(),
                features,
            },
            DetectorKind::Rekognition => DetectorConfig::Rekognition { bucket: resources.bucket.clone(), features },
        };
        Ok(Self {
            resources,
            queue_url: config::required("LABELQ_QUEUE_URL")?,
            completion_topic_arn: config::optional("LABELQ_COMPLETION_TOPIC_ARN")?,
            detector,
            concurrency,
            worker: WorkerConfig {
                max_receives,
                lease: visibility,
                backoff: Backoff { base: Duration::from_secs(2), max: Duration::from_secs(300) },
                detect: DetectOptions { max_labels: max_labels.get(), min_confidence: min_confidence.get() },
                upload_grace: match config::optional::<String>("LABELQ_UPLOAD_GRACE")? {
                    Some(v) => {
                        config::parse_duration(&v)
                            .and_then(|d| {
                                if d > Duration::from_secs(3600) { Err("must be at most 1h".into()) } else { Ok(d) }
                            })
                            .map_err(|reason| config::ConfigError::Invalid {
                                name: "LABELQ_UPLOAD_GRACE",
                                value: v.clone(),
                                reason,
                            })?
                    }
                    None => UPLOAD_GRACE,
                },
            },
            drops: WorkerDrops::from_env()?,
        })
    }
}

/// The worker function: SQS batches in, partial batch responses out.
#[derive(Debug, Clone)]
pub struct WorkerFunction {
    worker: Arc<WorkerService>,
    records: WorkerRecords,
    queue: Arc<SqsQueue>,
    concurrency: usize,
}

/// Time kept back from the function's deadline to report the unfinished records.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

impl WorkerFunction {
    /// Built at init: DynamoDB, which every record uses, and S3 when the built-in model reads
    /// each image from it. On first use: S3 for the Rekognition detector (which reads the image
    /// itself), and SQS, called only to back off a failing record.
    pub fn new(sdk: &SdkConfig, config: &WorkerFunctionConfig, detector: Arc<dyn LabelDetector>) -> Self {
        let stores = match config.detector.kind() {
            DetectorKind::Onnx => AwsStores::new(sdk, &config.resources),
            DetectorKind::Rekognition => AwsStores::with_s3_on_first_use(sdk, &config.resources),
        };
        let clock = Arc::new(SystemClock);
        let mut worker = WorkerService::new(stores.stores(), detector, clock.clone(), config.worker.clone());
        if let Some(topic) = &config.completion_topic_arn {
            worker = worker.with_completions(sns_publisher(sdk, topic), Announce::Every);
        }
        let drops = config.drops.as_ref().map(|drops| {
            let s3 = LazyClient::from_config(sdk, s3_client);
            let bucket = &config.resources.bucket;
            let results = Arc::new(S3DropResults::new(s3.clone(), bucket, DROP_RESULTS_PREFIX));
            worker = worker.clone().with_drop_results(results.clone());
            let limits = ImageLimits { max_bytes: MAX_DROP_BYTES, ..ImageLimits::default() };
            let submit = SubmitService::new(
                stores.stores(),
                sns_publisher(sdk, &drops.topic_arn),
                clock.clone(),
                SubmitConfig { ttl: drops.ttl, limits, callbacks: None },
            );
            let objects = S3DroppedObjects::new(s3, bucket, DROP_PREFIX);
            let intake = DropIntake::new(Arc::new(submit), Arc::new(objects.clone()), results, drops.owner.clone());
            BucketDrops { intake, objects }
        });
        let worker = Arc::new(worker);
        let records = WorkerRecords::new(worker.clone(), &config.resources.bucket, drops);
        let queue = SqsQueue::new(LazyClient::from_config(sdk, aws_sdk_sqs::Client::new), &config.queue_url);
        Self { worker, records, queue: Arc::new(queue), concurrency: config.concurrency.get() }
    }

    pub fn worker(&self) -> &Arc<WorkerService> {
        &self.worker
    }

    /// Handles one invocation; `deadline_ms` is the invocation's deadline in epoch milliseconds
    /// (from the Lambda context), if any.
    pub async fn handle(&self, event: SqsEvent, deadline_ms: Option<u64>) -> SqsBatchResponse {
        handle_sqs_batch(&self.records, &*self.queue, event, self.concurrency, deadline_at(deadline_ms)).await
    }
}

/// When a batch must stop: the invocation's deadline (epoch milliseconds) less a margin to report
/// the unfinished records. A deadline already past when the invocation starts can only be a clock
/// or emulator artefact (cargo-lambda's sends a constant); it is ignored rather than failing every
/// record.
pub(super) fn deadline_at(deadline_ms: Option<u64>) -> Option<tokio::time::Instant> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    deadline_ms.map(Duration::from_millis).and_then(|deadline| match deadline.checked_sub(now) {
        Some(left) if !left.is_zero() => Some(tokio::time::Instant::now() + left.saturating_sub(DEADLINE_MARGIN)),
        _ => {
            warn!(deadline_ms = deadline.as_millis() as u64, "the invocation's deadline is already past; ignoring it");
            None
        }
    })
}

/// The callback function's configuration: `LABELQ_TABLE`, `LABELQ_BUCKET`,
/// `LABELQ_CALLBACK_QUEUE_URL`, `LABELQ_CALLBACK_SECRET_ARN` (the Secrets Manager secret that holds
/// the signing secrets), and optionally `LABELQ_CALLBACK_RETRIES` (5s,5m,30m,2h,5h,10h) and
/// `LABELQ_CALLBACK_ALLOW_PRIVATE` (`false`).
#[cfg(feature = "callbacks")]
#[derive(Debug, Clone)]
pub struct CallbackFunctionConfig {
    pub resources: Resources,
    pub queue_url: String,
    pub secret_id: String,
    pub policy: TargetPolicy,
    pub schedule: crate::webhooks::RetrySchedule,
}

#[cfg(feature = "callbacks")]
impl CallbackFunctionConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            resources: Resources::from_env()?,
            queue_url: config::required("LABELQ_CALLBACK_QUEUE_URL")?,
            secret_id: config::required("LABELQ_CALLBACK_SECRET_ARN")?,
            policy: TargetPolicy { allow_private: allow_private()? },
            schedule: config::read()?.unwrap_or_default(),
        })
    }
}

/// Why the callback function could not start.
#[cfg(feature = "callbacks")]
#[derive(Debug, thiserror::Error)]
pub enum CallbackInitError {
    #[error(transparent)]
    Secrets(#[from] crate::adapters::aws::SecretError),
    #[error("could not build the callback client")]
    Client(#[from] reqwest::Error),
}

/// The callback function: batches of the callback queue (finished jobs whose callback waits),
/// each record one signed call, partial batch responses out. Records run all at once: each is
/// mostly waiting on a receiver, for up to 15 s.
#[cfg(feature = "callbacks")]
#[derive(Debug, Clone)]
pub struct CallbackFunction {
    service: Arc<crate::service::CallbackService>,
    queue: Arc<SqsQueue>,
}

#[cfg(feature = "callbacks")]
impl CallbackFunction {
    /// Reads the signing secrets (once: they are kept for the life of the execution environment)
    /// and builds the clients. DynamoDB at once; S3 on first use, for an oversized result.
    pub async fn new(sdk: &SdkConfig, config: &CallbackFunctionConfig) -> Result<Self, CallbackInitError> {
        let secrets_client = aws_sdk_secretsmanager::Client::new(sdk);
        let secrets = crate::adapters::aws::webhook_secrets(&secrets_client, &config.secret_id).await?;
        let stores = AwsStores::with_s3_on_first_use(sdk, &config.resources);
        let sender = crate::adapters::reqwest::ReqwestCallbackSender::new(config.policy)?;
        let callbacks =
            crate::service::CallbackConfig { secrets, policy: config.policy, schedule: config.schedule.clone() };
        let clock = Arc::new(SystemClock);
        // A 410 also disables the owner's default callback when it was that URL.
        let defaults = DefaultCallbackService::new(stores.defaults, clock.clone(), config.policy);
        let service = crate::service::CallbackService::new(stores.jobs, Arc::new(sender), clock, callbacks)
            .with_default_callbacks(Arc::new(defaults));
        let queue = SqsQueue::new(LazyClient::from_config(sdk, aws_sdk_sqs::Client::new), &config.queue_url);
        Ok(Self { service: Arc::new(service), queue: Arc::new(queue) })
    }

    /// Handles one invocation; `deadline_ms` as for [`WorkerFunction::handle`].
    pub async fn handle(&self, event: SqsEvent, deadline_ms: Option<u64>) -> SqsBatchResponse {
        let concurrency = event.records.len();
        handle_sqs_batch(&self.service, &*self.queue, event, concurrency, deadline_at(deadline_ms)).await
    }
}
