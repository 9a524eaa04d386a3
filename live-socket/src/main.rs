//! The live-socket Lambda: the routes of the API Gateway WebSocket API (`$connect`,
//! `$disconnect`, `subscribe`, `unsubscribe`, `$default`), each one call of the relay in
//! `labelq_shared::http::relay`. `$connect` checks the caller's JWT here, against the same
//! issuer and audiences as the HTTP API's authorizer: API Gateway offers WebSocket APIs no JWT
//! authorizer.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use labelq_shared::adapters::aws::{TlsTrust, sdk_config};
use labelq_shared::lambda::{LiveConfig, LiveSocketFunction, token_verifier_from_env};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

// One thread, as for every labelq Lambda: see `labelq_shared::lambda`, "The runtime".
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // The JWKS client's TLS (the SDK's clients bring their own provider).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = LiveConfig::from_env()?;
    // The issuer's keys are fetched on the first connection, then kept.
    let verifier = Arc::new(token_verifier_from_env()?);
    let sdk = sdk_config(TlsTrust::from_env()?).await;
    let function = LiveSocketFunction::new(config.relay(&sdk), verifier);
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
        Ok::<_, lambda_runtime::Error>(function.handle(event.payload).await)
    }))
    .await
}
