//! The status-api Lambda: `GET /v1/images/{id}`, `GET /v1/images` and `DELETE /v1/images/{id}`
//! behind API Gateway's HTTP API, scoped to the JWT's `sub`. The same axum router as
//! `labelq serve`, without the upload route.

use labelq_shared::adapters::aws::{Resources, TlsTrust, sdk_config};
use labelq_shared::lambda::status_api_app;

// One thread, as for every labelq Lambda: see `labelq_shared::lambda`, "The runtime".
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let resources = Resources::from_env()?;
    let sdk = sdk_config(TlsTrust::from_env()?).await;
    lambda_http::run(status_api_app(&sdk, &resources)).await
}
