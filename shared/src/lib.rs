//! labelq's core, shared by every binary: the local runner `labelq` and the six Lambda
//! functions.
//!
//! - [`domain`]: ids, the job record and its state machine, labels, the messages. No I/O.
//! - [`ports`]: the async traits the services need (`ImageStore`, `JobStore`,
//!   `MessagePublisher`, `JobQueue`, `LabelDetector`).
//! - [`service`]: submit, query (get/list/delete) and process-one-message, written once.
//! - [`http`]: the REST API as one axum `Router`, and live push: Server-Sent Events, the
//!   WebSocket protocol, and its relay for a gateway that holds the connections.
//! - [`adapters`]: the port implementations, each behind a feature: `embedded` (directory +
//!   SQLite), `onnx` (the built-in detector), `aws` (S3, DynamoDB, SNS, SQS, Rekognition;
//!   with `live-api` also API Gateway's management API and the OpenID token verifier).
//! - [`webhooks`]: completion callbacks as Standard Webhooks: signatures, the SSRF guard, the
//!   event body, the retry schedule (`callbacks` adds the reqwest client that sends them).
//! - [`config`]: one rule per setting, shared by `labelq`'s flags and the functions' environment.
//! - [`detectors`]: which label detector runs, built in one place.
//! - `lambda` (feature `lambda`): the glue for the Lambda functions: the JWT owner, the SQS batch
//!   handler with partial failures, and each function assembled from its configuration
//!   (`live-api` adds the WebSocket API's two).

pub mod adapters;
pub mod config;
pub mod detectors;
pub mod domain;
pub mod http;
pub mod ports;
pub mod retry_after;
pub mod service;
pub mod webhooks;

#[cfg(feature = "lambda")]
pub mod lambda;
