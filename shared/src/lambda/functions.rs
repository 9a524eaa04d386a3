//! The three functions, assembled from their configuration. Each binary's `main` reads its
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
use super::sqs_batch::handle_sqs_batch;
use crate::adapters::aws::{AwsStores, LazyClient, Resources, SqsQueue, sns_publisher};
use crate::config::{
    self, Concurrency, ConfigError, JobTtl, MaxImageBytes, MaxLabels, MaxReceives, MinConfidence, Setting,
    VisibilityTimeout,
};
use crate::detectors::{DetectorConfig, DetectorKind};
use crate::domain::{DetectOptions, ImageLimits, SystemClock};
use crate::http::{ApiState, Uploads, router};
use crate::ports::LabelDetector;
use crate::service::{Backoff, SubmitConfig, WorkerConfig, WorkerService};

/// API Gateway -> Lambda carries at most 6 MB, and binary bodies arrive base64-encoded (4/3 the
/// size): 4.3 MB of image is what fits.
pub const LAMBDA_MAX_IMAGE_BYTES: usize = 4_300_000;

/// The request-handler's configuration: `LABELQ_TABLE`, `LABELQ_BUCKET`, `LABELQ_TOPIC_ARN`, and
/// optionally `LABELQ_JOB_TTL` (24h) and `LABELQ_MAX_IMAGE_BYTES` (4.3 MB).
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
            // No callback delivery on AWS yet: a submission that asks for one is refused.
            submit: SubmitConfig {
                ttl: ttl.get(),
                limits: ImageLimits { max_bytes, ..ImageLimits::default() },
                callbacks: None,
            },
        })
    }
}

/// The request-handler's router: the upload route (and the reads, which API Gateway routes to
/// the status-api instead).
pub fn request_handler_app(sdk: &SdkConfig, config: &RequestHandlerConfig) -> axum::Router {
    let stores = AwsStores::new(sdk, &config.resources).stores();
    let uploads = Uploads { publisher: sns_publisher(sdk, &config.topic_arn), config: config.submit.clone() };
    router(ApiState::new(stores, Some(uploads), Arc::new(SystemClock), Arc::new(ApiGatewayJwt)))
}

/// The status-api's router: get, list, delete; no upload route.
pub fn status_api_app(sdk: &SdkConfig, resources: &Resources) -> axum::Router {
    let stores = AwsStores::with_s3_on_first_use(sdk, resources).stores();
    router(ApiState::new(stores, None, Arc::new(SystemClock), Arc::new(ApiGatewayJwt)))
}

/// The worker's configuration: `LABELQ_TABLE`, `LABELQ_BUCKET`, `LABELQ_QUEUE_URL`,
/// `LABELQ_MAX_RECEIVE_COUNT` (the queue's redrive `maxReceiveCount`), and optionally
/// `LABEL_DETECTOR` (rekognition), `LABELQ_MODEL_DIR` (/opt/labelq-model),
/// `LABELQ_VISIBILITY_TIMEOUT` (180s, the queue's), `LABELQ_MAX_LABELS` (10),
/// `LABELQ_MIN_CONFIDENCE` (55), `LABELQ_WORKER_CONCURRENCY` (4).
#[derive(Debug, Clone)]
pub struct WorkerFunctionConfig {
    pub resources: Resources,
    pub queue_url: String,
    pub detector: DetectorConfig,
    /// Records of a batch handled at once.
    pub concurrency: Concurrency,
    pub worker: WorkerConfig,
}

impl WorkerFunctionConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let resources = Resources::from_env()?;
        let max_receives = config::read::<MaxReceives>()?.ok_or(ConfigError::Missing(MaxReceives::VARIABLE))?;
        let visibility = config::read::<VisibilityTimeout>()?.map_or(Duration::from_secs(180), VisibilityTimeout::get);
        let max_labels = config::read::<MaxLabels>()?.unwrap_or(MaxLabels::DEFAULT);
        let min_confidence = config::read::<MinConfidence>()?.unwrap_or_default();
        let concurrency = config::read::<Concurrency>()?.unwrap_or(Concurrency::FOUR);
        let detector = match config::read::<DetectorKind>()?.unwrap_or(DetectorKind::Rekognition) {
            DetectorKind::Onnx => DetectorConfig::Onnx {
                model_dir: config::optional("LABELQ_MODEL_DIR")?.unwrap_or_else(|| "/opt/labelq-model".into()),
                sessions: concurrency.get(),
            },
            DetectorKind::Rekognition => DetectorConfig::Rekognition { bucket: resources.bucket.clone() },
        };
        Ok(Self {
            resources,
            queue_url: config::required("LABELQ_QUEUE_URL")?,
            detector,
            concurrency,
            worker: WorkerConfig {
                max_receives,
                lease: visibility,
                backoff: Backoff { base: Duration::from_secs(2), max: Duration::from_secs(300) },
                detect: DetectOptions { max_labels: max_labels.get(), min_confidence: min_confidence.get() },
            },
        })
    }
}

/// The worker function: SQS batches in, partial batch responses out.
#[derive(Debug, Clone)]
pub struct WorkerFunction {
    worker: Arc<WorkerService>,
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
        let worker = WorkerService::new(stores.stores(), detector, Arc::new(SystemClock), config.worker.clone());
        let queue = SqsQueue::new(LazyClient::from_config(sdk, aws_sdk_sqs::Client::new), &config.queue_url);
        Self { worker: Arc::new(worker), queue: Arc::new(queue), concurrency: config.concurrency.get() }
    }

    pub fn worker(&self) -> &Arc<WorkerService> {
        &self.worker
    }

    /// Handles one invocation; `deadline_ms` is the invocation's deadline in epoch milliseconds
    /// (from the Lambda context), if any. A deadline already past when the invocation starts can
    /// only be a clock or emulator artefact (cargo-lambda's sends a constant); it is ignored
    /// rather than failing every record.
    pub async fn handle(&self, event: SqsEvent, deadline_ms: Option<u64>) -> SqsBatchResponse {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let deadline = deadline_ms.map(Duration::from_millis).and_then(|deadline| match deadline.checked_sub(now) {
            Some(left) if !left.is_zero() => Some(tokio::time::Instant::now() + left.saturating_sub(DEADLINE_MARGIN)),
            _ => {
                warn!(
                    deadline_ms = deadline.as_millis() as u64,
                    "the invocation's deadline is already past; ignoring it"
                );
                None
            }
        });
        handle_sqs_batch(&self.worker, &*self.queue, event, self.concurrency, deadline).await
    }
}
