//! The worker Lambda: SQS batches from the event source mapping (with `ReportBatchItemFailures`).
//! Each record is one job: claim it, label the image with Rekognition or the built-in model
//! (`LABEL_DETECTOR`), finish the job; the response names exactly the records to retry.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use labelq_shared::adapters::aws::{TlsTrust, sdk_config};
use labelq_shared::detectors::DetectorBuilder;
use labelq_shared::lambda::{WorkerFunction, WorkerFunctionConfig};
use lambda_runtime::{LambdaEvent, service_fn};

// One thread, as for every labelq Lambda: see `labelq_shared::lambda`, "The runtime".
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = WorkerFunctionConfig::from_env()?;
    let sdk = sdk_config(TlsTrust::from_env()?).await;
    // The built-in model loads during init, once per execution environment, not on the first batch.
    let detector = DetectorBuilder::new(config.detector.clone()).with_aws(&sdk).build().await?;
    let function = WorkerFunction::new(&sdk, &config, detector);
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = event.context.deadline;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(function.handle(event.payload, Some(deadline)).await)
    }))
    .await
}
