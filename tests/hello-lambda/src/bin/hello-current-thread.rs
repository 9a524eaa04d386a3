//! The hello-world baseline on a current-thread runtime, as labelq's functions run: the Lambda
//! benchmark's like-for-like baseline, beside the template's multi-thread one (`src/main.rs`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<Value, Error>(event.payload) })).await
}
