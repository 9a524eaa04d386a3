//! The request-handler Lambda: `POST /v1/images` behind API Gateway's HTTP API. Validates the
//! image, stores it in S3, records the job as PENDING in DynamoDB and publishes it to SNS, then
//! answers 202. The handler is labelq's one axum router (`labelq_shared::http`), run by
//! `lambda_http`, which also decodes API Gateway's base64 bodies.

use labelq_shared::adapters::aws::{TlsTrust, sdk_config};
use labelq_shared::lambda::{RequestHandlerConfig, request_handler_app};

// One thread, as for every labelq Lambda: see `labelq_shared::lambda`, "The runtime".
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = RequestHandlerConfig::from_env()?;
    let sdk = sdk_config(TlsTrust::from_env()?).await;
    lambda_http::run(request_handler_app(&sdk, &config)).await
}
