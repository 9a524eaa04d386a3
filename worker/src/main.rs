//! The worker Lambda: SQS batches from the event source mapping (with `ReportBatchItemFailures`).
//! Each record is one job: claim it, label the image with Rekognition or the built-in model
//! (`LABEL_DETECTOR`), record the outcome; the response names exactly the records to retry.

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use labelq_shared::adapters::aws::{RekognitionDetector, TlsTrust, sdk_config};
use labelq_shared::adapters::onnx::{OnnxConfig, OnnxDetector};
use labelq_shared::lambda::{DetectorChoice, WorkerFunction, WorkerFunctionConfig};
use labelq_shared::ports::LabelDetector;
use lambda_runtime::{LambdaEvent, service_fn};

// One thread, as for every labelq Lambda: see `labelq_shared::lambda`, "The runtime".
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = WorkerFunctionConfig::from_env()?;
    let sdk = sdk_config(TlsTrust::from_env()?).await;
    // The model loads during init, once per execution environment, not on the first batch.
    let detector: Arc<dyn LabelDetector> = match config.detector {
        DetectorChoice::Rekognition => {
            Arc::new(RekognitionDetector::new(aws_sdk_rekognition::Client::new(&sdk), &config.resources.bucket))
        }
        DetectorChoice::Onnx => Arc::new(OnnxDetector::load(&OnnxConfig::new(&config.model_dir, config.concurrency))?),
    };
    let function = WorkerFunction::new(&sdk, &config, detector);
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = event.context.deadline;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(function.handle(event.payload, Some(deadline)).await)
    }))
    .await
}
