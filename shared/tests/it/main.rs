//! labelq-shared's integration tests, in one binary (each test binary is another link of the
//! whole dependency graph). `TEST_LOG=1` logs what the code under test says.

#[cfg(feature = "aws")]
mod access_denied;
mod http;
#[cfg(feature = "lambda")]
mod lambda_events;
#[cfg(feature = "live-api")]
mod live;
mod openapi;
#[cfg(feature = "aws")]
mod rekognition;
mod services;
#[cfg(feature = "embedded")]
mod sqlite_queue;
mod stores;
mod watch;
