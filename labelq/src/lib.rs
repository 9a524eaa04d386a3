//! The local runner: `labelq serve` runs the whole pipeline (API, durable queue, worker pool,
//! expiry) in one process with embedded backends and the built-in label model; `labelq label`
//! labels files directly; `labelq submit` is a well-behaved API client.
//!
//! The same services run in the Lambda functions on AWS; only the adapters and the event loop
//! differ. The AWS backend (`serve --backend aws`, the Rekognition detector) is the cargo feature
//! `aws`, which `make run` leaves out: a first run then builds no AWS SDK.

pub mod callbacks;
pub mod cli;
pub mod client;
mod consumer;
pub mod drop_dir;
pub mod embedded;
#[cfg(feature = "aws")]
pub mod event_source;
pub mod model;
pub mod output;
pub mod pool;
pub mod server;
