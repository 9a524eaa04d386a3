//! What the three Lambda functions share beyond the services: wiring the AWS adapters from the
//! environment, the owner from API Gateway's JWT authorizer, and the worker's SQS batch handler.
//!
//! The batch handler follows Lambda's partial batch response contract
//! (`FunctionResponseTypes: [ReportBatchItemFailures]` on the event source mapping): it returns
//! exactly the ids of the records to retry, never an empty or unknown id (on AWS either fails the
//! whole batch), and an empty list when all went well. A record that fails transiently has its
//! visibility set to the backoff the worker chose before it is reported.
//!
//! # The runtime
//! Each function runs on a current-thread tokio runtime. Lambda hands an execution environment
//! one event at a time, so the multi-thread scheduler's workers (one per vCPU) would sit idle
//! while every cold start paid for spawning them: a quarter of a millisecond of a 2 ms init here
//! (BENCHMARKS.md). Nothing is lost. The request-handler and the status-api serve one request at a
//! time, so work done on the thread (the SDK's SHA-256 of an upload, which it signs, up to 4.3 MB)
//! delays nothing else. A worker's records share the thread, but the long step, decoding and
//! classifying an image, runs on the blocking pool, and the records still overlap on their I/O.
//! The price: a record that blocked the thread or computed long on it would stall the batch's
//! other records, so the worker keeps such work in `spawn_blocking`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage, SqsMessageAttribute};
use futures::{FutureExt, StreamExt};
use http::request::Parts;
use lambda_http::request::RequestContext;
use tracing::{error, warn};

use crate::adapters::aws::{
    CORRELATION_ID, DynamoJobStore, LazyClient, S3ImageStore, SnsPublisher, SqsQueue, delivery_from_sqs, s3_client,
};
use crate::config::{self, ConfigError};
use crate::domain::{Confidence, DetectOptions, ImageLimits, OwnerId, SystemClock};
use crate::http::auth::{AuthError, Authenticator};
use crate::http::{ApiState, router};
use crate::ports::{JobQueue, LabelDetector};
use crate::service::{Backoff, Disposition, QueryService, SubmitConfig, SubmitService, WorkerConfig, WorkerService};

/// The AWS resources a function works on, named by the environment (see `infra/template.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub table: String,
    pub bucket: String,
}

impl Resources {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { table: config::required("LABELQ_TABLE")?, bucket: config::required("LABELQ_BUCKET")? })
    }
}

/// The adapters over those resources, built once per process.
#[derive(Debug, Clone)]
pub struct Adapters {
    pub images: Arc<S3ImageStore>,
    pub jobs: Arc<DynamoJobStore>,
}

impl Adapters {
    /// Both clients built now: for a process whose requests all use S3 (the request-handler
    /// stores every upload there).
    pub fn new(sdk: &SdkConfig, resources: &Resources) -> Self {
        Self::with_s3(sdk, resources, s3_client(sdk).into())
    }

    /// The S3 client built on first use: for a function whose requests seldom reach S3 (the
    /// status-api reads it for oversized results and deletes; the Rekognition worker, whose
    /// detector reads the image itself, only for oversized results). See [`LazyClient`].
    pub fn with_s3_on_first_use(sdk: &SdkConfig, resources: &Resources) -> Self {
        Self::with_s3(sdk, resources, LazyClient::from_config(sdk, s3_client))
    }

    fn with_s3(sdk: &SdkConfig, resources: &Resources, s3: LazyClient<aws_sdk_s3::Client>) -> Self {
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        Self {
            images: Arc::new(S3ImageStore::new(s3.clone(), &resources.bucket)),
            jobs: Arc::new(DynamoJobStore::new(dynamo, &resources.table, s3, &resources.bucket)),
        }
    }

    pub fn publisher(sdk: &SdkConfig, topic_arn: &str) -> Arc<SnsPublisher> {
        Arc::new(SnsPublisher::new(aws_sdk_sns::Client::new(sdk), topic_arn))
    }

    /// The queue with its client built now, for a poller that calls it all the time.
    pub fn queue(sdk: &SdkConfig, queue_url: &str) -> Arc<SqsQueue> {
        Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), queue_url))
    }
}

/// The owner is the `sub` claim API Gateway's JWT authorizer verified; a request without one
/// did not come through the authorizer and is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiGatewayJwt;

impl Authenticator for ApiGatewayJwt {
    fn authenticate(&self, parts: &Parts) -> Result<OwnerId, AuthError> {
        #[allow(irrefutable_let_patterns)]
        let Some(RequestContext::ApiGatewayV2(context)) = parts.extensions.get::<RequestContext>() else {
            return Err(AuthError("not an API Gateway HTTP API request"));
        };
        let sub = context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get("sub"))
            .ok_or(AuthError("the token has no sub claim"))?;
        OwnerId::parse(sub).map_err(|_| AuthError("the token's sub claim is not a valid owner"))
    }
}

/// An SQS record as Lambda's event source mapping would deliver it, from an SDK message (for
/// `labelq serve --backend aws` and tests, which poll SQS themselves).
pub fn record_from_sdk(message: aws_sdk_sqs::types::Message) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message.message_id;
    record.receipt_handle = message.receipt_handle;
    record.body = message.body;
    record.md5_of_body = message.md5_of_body;
    record.attributes =
        message.attributes.unwrap_or_default().into_iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect();
    record.message_attributes = message
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let mut attribute = SqsMessageAttribute::default();
            attribute.string_value = v.string_value;
            attribute.data_type = Some(v.data_type);
            (k, attribute)
        })
        .collect();
    record.event_source = Some("aws:sqs".into());
    record
}

/// Handles one SQS batch: records run concurrently (at most `concurrency` at once), each in its own
/// span, each contained (a panic or error in one never affects the others). Records not finished by
/// `deadline` (the function's timeout, less a margin) are reported as failures, so they are retried
/// rather than the whole batch timing out.
pub async fn handle_sqs_batch(
    worker: &WorkerService,
    queue: &dyn JobQueue,
    event: SqsEvent,
    concurrency: usize,
    deadline: Option<tokio::time::Instant>,
) -> SqsBatchResponse {
    let failed: Vec<Option<String>> = futures::stream::iter(event.records)
        .map(|record| handle_record(worker, queue, record, deadline))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut ids: Vec<String> = failed.into_iter().flatten().collect();
    ids.sort();
    ids.dedup();
    let mut response = SqsBatchResponse::default();
    for id in ids {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

/// The record's message id if it must be retried, `None` if it is done.
async fn handle_record(
    worker: &WorkerService,
    queue: &dyn JobQueue,
    record: SqsMessage,
    deadline: Option<tokio::time::Instant>,
) -> Option<String> {
    let Some(message_id) = record.message_id.filter(|id| !id.is_empty()) else {
        // It cannot be reported (an empty id fails the whole batch on AWS); SQS never sends one.
        error!("an SQS record without a message id; it cannot be retried");
        return None;
    };
    let correlation =
        record.message_attributes.get(CORRELATION_ID).and_then(|a: &SqsMessageAttribute| a.string_value.as_deref());
    let delivery = delivery_from_sqs(
        message_id.clone(),
        record.receipt_handle.unwrap_or_default(),
        record.body.unwrap_or_default(),
        record.attributes.get("ApproximateReceiveCount").map(String::as_str),
        correlation,
    );
    let handled = AssertUnwindSafe(worker.handle(&delivery)).catch_unwind();
    let outcome = match deadline {
        Some(at) => tokio::time::timeout_at(at, handled).await.ok(),
        None => Some(handled.await),
    };
    let disposition = match outcome {
        Some(Ok(disposition)) => disposition,
        Some(Err(_)) => {
            error!(%message_id, "the record's handling panicked");
            Disposition::Retry(Duration::ZERO)
        }
        None => {
            warn!(%message_id, "the function's deadline is near; leaving the record for a retry");
            return Some(message_id);
        }
    };
    let settled = match disposition {
        Disposition::Ack => return None,
        Disposition::Retry(delay) => queue.retry(&delivery, delay).await,
        Disposition::DeadLetter => queue.dead_letter(&delivery).await,
    };
    if let Err(e) = settled {
        // The message still comes back, after its visibility timeout instead of the backoff.
        warn!(error = %e, cause = ?e, %message_id, "could not change the message's visibility");
    }
    Some(message_id)
}

// ---------------------------------------------------------------------------------------------
// The three functions, assembled from their configuration. Each binary's `main` reads its config,
// builds the SDK config once and runs one of these; tests build them against LocalStack.
// ---------------------------------------------------------------------------------------------

/// API Gateway -> Lambda carries at most 6 MB, and binary bodies arrive base64-encoded (4/3 the
/// size): 4.3 MB of image is what fits.
pub const LAMBDA_MAX_IMAGE_BYTES: usize = 4_300_000;

/// The request-handler's configuration: `LABELQ_TABLE`, `LABELQ_BUCKET`, `LABELQ_TOPIC_ARN`,
/// and optionally `LABELQ_JOB_TTL_HOURS` (24) and `LABELQ_MAX_IMAGE_BYTES` (4.3 MB).
#[derive(Debug, Clone)]
pub struct RequestHandlerConfig {
    pub resources: Resources,
    pub topic_arn: String,
    pub submit: SubmitConfig,
}

impl RequestHandlerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let hours: u64 = config::optional("LABELQ_JOB_TTL_HOURS")?.unwrap_or(24);
        let hours = config::check("LABELQ_JOB_TTL_HOURS", hours, (1..=8760).contains(&hours), "must be 1..=8760")?;
        let max_bytes: usize = config::optional("LABELQ_MAX_IMAGE_BYTES")?.unwrap_or(LAMBDA_MAX_IMAGE_BYTES);
        let max_bytes = config::check("LABELQ_MAX_IMAGE_BYTES", max_bytes, max_bytes > 0, "must be positive")?;
        Ok(Self {
            resources: Resources::from_env()?,
            topic_arn: config::required("LABELQ_TOPIC_ARN")?,
            submit: SubmitConfig {
                ttl: Duration::from_secs(hours * 3600),
                limits: ImageLimits { max_bytes, ..ImageLimits::default() },
            },
        })
    }
}

/// The request-handler's router: the upload route (and the reads, which API Gateway routes to
/// the status-api instead).
pub fn request_handler_app(sdk: &SdkConfig, config: &RequestHandlerConfig) -> axum::Router {
    let adapters = Adapters::new(sdk, &config.resources);
    let clock = Arc::new(SystemClock);
    let publisher = Adapters::publisher(sdk, &config.topic_arn);
    let submit = SubmitService::new(
        adapters.images.clone(),
        adapters.jobs.clone(),
        publisher,
        clock.clone(),
        config.submit.clone(),
    );
    let query = QueryService::new(adapters.images, adapters.jobs, clock);
    router(ApiState { submit: Some(Arc::new(submit)), query: Arc::new(query), auth: Arc::new(ApiGatewayJwt) })
}

/// The status-api's router: get, list, delete; no upload route.
pub fn status_api_app(sdk: &SdkConfig, resources: &Resources) -> axum::Router {
    let adapters = Adapters::with_s3_on_first_use(sdk, resources);
    let query = QueryService::new(adapters.images, adapters.jobs, Arc::new(SystemClock));
    router(ApiState { submit: None, query: Arc::new(query), auth: Arc::new(ApiGatewayJwt) })
}

/// Which detector the worker runs (`LABEL_DETECTOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorChoice {
    Rekognition,
    Onnx,
}

impl std::str::FromStr for DetectorChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rekognition" => Ok(Self::Rekognition),
            "onnx" => Ok(Self::Onnx),
            _ => Err("expected rekognition or onnx".into()),
        }
    }
}

/// The worker's configuration: `LABELQ_TABLE`, `LABELQ_BUCKET`, `LABELQ_QUEUE_URL`,
/// `LABELQ_MAX_RECEIVE_COUNT` (the queue's redrive `maxReceiveCount`), and optionally
/// `LABEL_DETECTOR` (rekognition), `LABELQ_MODEL_DIR` (/opt/labelq-model),
/// `LABELQ_VISIBILITY_TIMEOUT_SECONDS` (180, the queue's), `LABELQ_MAX_LABELS` (10),
/// `LABELQ_MIN_CONFIDENCE` (55), `LABELQ_WORKER_CONCURRENCY` (4).
#[derive(Debug, Clone)]
pub struct WorkerFunctionConfig {
    pub resources: Resources,
    pub queue_url: String,
    pub detector: DetectorChoice,
    pub model_dir: std::path::PathBuf,
    pub concurrency: usize,
    pub worker: WorkerConfig,
}

impl WorkerFunctionConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let max_receives: u32 =
            config::optional("LABELQ_MAX_RECEIVE_COUNT")?.ok_or(ConfigError::Missing("LABELQ_MAX_RECEIVE_COUNT"))?;
        let max_receives =
            config::check("LABELQ_MAX_RECEIVE_COUNT", max_receives, max_receives >= 1, "must be at least 1")?;
        let visibility: u64 = config::optional("LABELQ_VISIBILITY_TIMEOUT_SECONDS")?.unwrap_or(180);
        let max_labels: usize = config::optional("LABELQ_MAX_LABELS")?.unwrap_or(10);
        let max_labels =
            config::check("LABELQ_MAX_LABELS", max_labels, (1..=1000).contains(&max_labels), "must be 1..=1000")?;
        let min: f32 = config::optional("LABELQ_MIN_CONFIDENCE")?.unwrap_or(55.0);
        let min_confidence = Confidence::new(min).ok_or(ConfigError::Invalid {
            name: "LABELQ_MIN_CONFIDENCE",
            value: min.to_string(),
            reason: "must be within 0..=100".into(),
        })?;
        let concurrency: usize = config::optional("LABELQ_WORKER_CONCURRENCY")?.unwrap_or(4);
        Ok(Self {
            resources: Resources::from_env()?,
            queue_url: config::required("LABELQ_QUEUE_URL")?,
            detector: config::optional("LABEL_DETECTOR")?.unwrap_or(DetectorChoice::Rekognition),
            model_dir: config::optional("LABELQ_MODEL_DIR")?.unwrap_or_else(|| "/opt/labelq-model".into()),
            concurrency: concurrency.max(1),
            worker: WorkerConfig {
                max_receives,
                lease: Duration::from_secs(visibility),
                backoff: Backoff { base: Duration::from_secs(2), max: Duration::from_secs(300) },
                detect: DetectOptions { max_labels, min_confidence },
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
        let adapters = match config.detector {
            DetectorChoice::Onnx => Adapters::new(sdk, &config.resources),
            DetectorChoice::Rekognition => Adapters::with_s3_on_first_use(sdk, &config.resources),
        };
        let worker =
            WorkerService::new(adapters.images, adapters.jobs, detector, Arc::new(SystemClock), config.worker.clone());
        let queue = SqsQueue::new(LazyClient::from_config(sdk, aws_sdk_sqs::Client::new), &config.queue_url);
        Self { worker: Arc::new(worker), queue: Arc::new(queue), concurrency: config.concurrency }
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
