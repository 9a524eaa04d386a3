//! The live-push Lambda: SQS batches of the live queue, which the completion topic fills with
//! every finished job. Each is sent to the WebSocket connections of its owner that follow it
//! (through API Gateway's management API), and connections that answer Gone are forgotten.
//!
//! A function of its own beside `live-socket`: it runs on the queue's events, with the queue's
//! retries and dead-letter queue, and needs no token verifier.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use labelq_shared::adapters::aws::{TlsTrust, sdk_config};
use labelq_shared::config;
use labelq_shared::lambda::{LiveConfig, LivePushFunction};
use lambda_runtime::{LambdaEvent, service_fn};

// One thread, as for every labelq Lambda: see `labelq_shared::lambda`, "The runtime".
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = LiveConfig::from_env()?;
    let queue_url = config::required("LABELQ_LIVE_QUEUE_URL")?;
    let sdk = sdk_config(TlsTrust::from_env()?).await;
    let function = LivePushFunction::new(&sdk, config.relay(&sdk), &queue_url);
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = event.context.deadline;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(function.handle(event.payload, Some(deadline)).await)
    }))
    .await
}
