//! The glue between the Lambda functions and the services: the owner from API Gateway's JWT
//! authorizer ([`auth`]), the SQS batch handler with partial batch failures of the worker and the
//! callback function ([`sqs_batch`]), each function assembled from its configuration
//! ([`functions`]), and the WebSocket API's two (`live`, feature `live-api`). The AWS
//! adapters and their wiring live in [`crate::adapters::aws`].
//!
//! # The runtime
//! Each function runs on a current-thread tokio runtime. Lambda hands an execution environment
//! one event at a time, so the multi-thread scheduler's workers (one per vCPU) would sit idle
//! while every cold start paid for spawning them: a quarter of a millisecond of a 2 ms init here
//! (BENCHMARKS.md). Nothing is lost. The request-handler and the status-api serve one request at a
//! time, so work done on the thread (the SDK's SHA-256 of an upload, which it signs, up to 4.3 MB)
//! delays nothing else. A worker's records share the thread, but the long step, decoding and
//! labelling an image, runs on the built-in detector's own threads, and the records still overlap
//! on their I/O. The price: a record that blocked the thread or computed long on it would stall the
//! batch's other records, so the worker keeps such work off it.

pub mod auth;
pub mod drops;
pub mod functions;
#[cfg(feature = "live-api")]
pub mod live;
pub mod sqs_batch;

pub use auth::ApiGatewayJwt;
pub use drops::{BucketDrops, WorkerRecords};
#[cfg(feature = "callbacks")]
pub use functions::{CallbackFunction, CallbackFunctionConfig, CallbackInitError};
pub use functions::{
    LAMBDA_MAX_IMAGE_BYTES, RequestHandlerConfig, WorkerDrops, WorkerFunction, WorkerFunctionConfig,
    request_handler_app, status_api_app,
};
#[cfg(feature = "live-api")]
pub use live::{LiveConfig, LiveInitError, LivePushFunction, LiveSocketFunction, token_verifier_from_env};
pub use sqs_batch::{RecordHandler, handle_sqs_batch, record_from_sdk};
