//! Hello world as a Rust Lambda: echoes its event, on `#[tokio::main]`'s multi-thread runtime as
//! the runtime's examples and `cargo lambda new` write it. The Lambda benchmark measures labelq's
//! functions against this one, and against the same on one thread (`src/bin/hello-current-thread.rs`),
//! built the same way in the same run.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<Value, Error>(event.payload) })).await
}
