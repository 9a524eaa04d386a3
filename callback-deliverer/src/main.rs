//! The callback-deliverer Lambda: SQS batches from the callback queue, which the completion topic
//! fills with the finished jobs whose client asked for a callback (a subscription filtered on the
//! `callback` attribute). Each record is one signed Standard Webhooks call to the job's callback
//! URL, its outcome recorded on the job; the response names the records to retry, each made
//! visible again after its retry schedule's delay.
//!
//! A function of its own rather than a second duty of the worker: it needs none of the worker's
//! rights (Rekognition, the images) and the worker none of its own (the signing secret, calling
//! out), and receivers that answer slowly hold up only other callbacks, within a concurrency of
//! their own, never labelling.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use labelq_shared::adapters::aws::{TlsTrust, sdk_config};
use labelq_shared::lambda::{CallbackFunction, CallbackFunctionConfig};
use lambda_runtime::{LambdaEvent, service_fn};

// One thread, as for every labelq Lambda: see `labelq_shared::lambda`, "The runtime".
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // The callback client's TLS (the SDK's clients bring their own provider).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = CallbackFunctionConfig::from_env()?;
    let sdk = sdk_config(TlsTrust::from_env()?).await;
    // The signing secrets are read here, once per execution environment.
    let function = CallbackFunction::new(&sdk, &config).await?;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = event.context.deadline;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(function.handle(event.payload, Some(deadline)).await)
    }))
    .await
}
