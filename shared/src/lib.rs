//! labelq's core, shared by every binary: the local runner `labelq` and the three Lambda
//! functions.
//!
//! - [`domain`]: ids, the job record and its state machine, labels, the queue message. No I/O.
//! - [`ports`]: the async traits the services need (`ImageStore`, `JobStore`, `JobPublisher`,
//!   `JobQueue`, `LabelDetector`).
//! - [`service`]: submit, query (get/list/delete) and process-one-message, written once.
//! - [`http`]: the REST API as one axum `Router`.
//! - [`adapters`]: the port implementations, each behind a feature: `embedded` (directory +
//!   SQLite), `onnx` (the built-in detector), `aws` (S3, DynamoDB, SNS, SQS, Rekognition).
//! - [`config`]: reading configuration from the environment, failing fast by name.
//! - `lambda` (feature `lambda`): wiring for the Lambda functions: the JWT owner, the SQS batch
//!   handler with partial failures.

pub mod adapters;
pub mod config;
pub mod domain;
pub mod http;
pub mod ports;
pub mod service;

#[cfg(feature = "lambda")]
pub mod lambda;
