//! The two functions of live push on AWS, around one [`SocketRelay`]:
//!
//! - [`LiveSocketFunction`]: the API Gateway WebSocket API's routes. `$connect` checks the
//!   caller's JWT itself ([`TokenVerifier`]; a WebSocket API has no JWT authorizer) from
//!   `?access_token=` (what a browser can send) or `Authorization`, and answers 401 to refuse
//!   the connection; `$disconnect` forgets it; every other route (`subscribe`, `unsubscribe`,
//!   `$default`) is a client message of the protocol in [`crate::http::live_protocol`].
//! - [`LivePushFunction`]: batches of the live queue (every finished job, from the completion
//!   topic), each pushed to the connections that follow it.
//!
//! Their configuration: `LABELQ_TABLE`, `LABELQ_BUCKET` (the jobs, read to send their state),
//! `LABELQ_CONNECTIONS_TABLE`, `LABELQ_LIVE_ENDPOINT` (the stage's management endpoint,
//! `https://{api}.execute-api.{region}.amazonaws.com/{stage}`); the socket function also
//! `LABELQ_JWT_ISSUER` and `LABELQ_JWT_AUDIENCE` (comma-separated), as the HTTP API's
//! authorizer has them; the push function `LABELQ_LIVE_QUEUE_URL`.

use std::sync::Arc;

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use http::header;
use tracing::{debug, error, warn};

use super::functions::deadline_at;
use super::sqs_batch::handle_sqs_batch;
use crate::adapters::aws::{ApiGatewayLiveSender, AwsStores, DynamoLiveConnections, LazyClient, Resources, SqsQueue};
use crate::adapters::oidc::{OidcTokenVerifier, VerifierError};
use crate::config::{self, ConfigError};
use crate::domain::{ConnectionId, SystemClock};
use crate::http::problem::ApiError;
use crate::http::relay::SocketRelay;
use crate::http::websocket::MAX_CLIENT_MESSAGE;
use crate::ports::{TokenError, TokenVerifier};

/// What both functions need.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub resources: Resources,
    pub connections_table: String,
    pub endpoint: String,
}

impl LiveConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            resources: Resources::from_env()?,
            connections_table: config::required("LABELQ_CONNECTIONS_TABLE")?,
            endpoint: config::required("LABELQ_LIVE_ENDPOINT")?,
        })
    }

    /// The relay over these resources: DynamoDB at once (every event uses it), S3 on first use
    /// (an oversized result).
    pub fn relay(&self, sdk: &SdkConfig) -> SocketRelay {
        let stores = AwsStores::with_s3_on_first_use(sdk, &self.resources);
        let connections = DynamoLiveConnections::new(aws_sdk_dynamodb::Client::new(sdk), &self.connections_table);
        let sender = ApiGatewayLiveSender::new(sdk, &self.endpoint);
        SocketRelay::new(Arc::new(connections), Arc::new(sender), stores.stores(), Arc::new(SystemClock))
    }
}

/// The token verifier `$connect` uses, from `LABELQ_JWT_ISSUER` and `LABELQ_JWT_AUDIENCE`.
pub fn token_verifier_from_env() -> Result<OidcTokenVerifier, LiveInitError> {
    let issuer = config::required("LABELQ_JWT_ISSUER")?;
    let audiences = config::required("LABELQ_JWT_AUDIENCE")?
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(OidcTokenVerifier::new(&issuer, audiences)?)
}

/// Why a live function could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiveInitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Verifier(#[from] VerifierError),
}

/// The WebSocket API's routes.
#[derive(Debug, Clone)]
pub struct LiveSocketFunction {
    relay: SocketRelay,
    verifier: Arc<dyn TokenVerifier>,
}

fn respond(status: u16) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(status);
    response
}

fn refuse(status: u16, detail: &str) -> ApiGatewayProxyResponse {
    let mut response = respond(status);
    response.body = Some(Body::Text(detail.to_owned()));
    response
}

impl LiveSocketFunction {
    pub fn new(relay: SocketRelay, verifier: Arc<dyn TokenVerifier>) -> Self {
        Self { relay, verifier }
    }

    /// Handles one route invocation. The status answers API Gateway: on `$connect`, anything but
    /// 2xx refuses the connection with that status; on the other routes a 500 only logs.
    pub async fn handle(&self, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let context = &event.request_context;
        let Some(id) = context.connection_id.as_deref().and_then(|id| ConnectionId::parse(id).ok()) else {
            warn!(connection_id = ?context.connection_id, "a WebSocket event without a usable connection id");
            return refuse(400, "no connection id");
        };
        let outcome = match context.route_key.as_deref() {
            Some("$connect") => return self.connect(id, &event).await,
            Some("$disconnect") => self.relay.disconnect(&id).await,
            _ => {
                let body = event.body.as_deref().unwrap_or_default();
                if event.is_base64_encoded {
                    let error = ApiError::bad_request("bad-message", "messages are JSON text");
                    self.relay.reply_error(&id, &error).await
                } else if body.len() > MAX_CLIENT_MESSAGE {
                    let error = ApiError::bad_request(
                        "bad-message",
                        format!("messages are at most {MAX_CLIENT_MESSAGE} bytes"),
                    );
                    self.relay.reply_error(&id, &error).await
                } else {
                    self.relay.message(&id, body).await
                }
            }
        };
        match outcome {
            Ok(()) => respond(200),
            Err(e) => {
                error!(error = %e, cause = ?e, connection = %id, route = ?context.route_key, "live route failed");
                respond(500)
            }
        }
    }

    async fn connect(&self, id: ConnectionId, event: &ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let Some(token) = bearer_token(event) else {
            return refuse(401, "a bearer token is needed: Authorization or ?access_token=");
        };
        let owner = match self.verifier.verify(&token).await {
            Ok(owner) => owner,
            Err(TokenError::Invalid(reason)) => {
                debug!(connection = %id, reason, "connection refused");
                return refuse(401, reason);
            }
            Err(TokenError::Backend(e)) => {
                error!(error = %e, cause = ?e, "could not check a token");
                return respond(500);
            }
        };
        match self.relay.connect(id, owner).await {
            Ok(()) => respond(200),
            Err(e) => {
                error!(error = %e, cause = ?e, "could not record a connection");
                respond(500)
            }
        }
    }
}

/// The token of a `$connect`: the `Authorization` header's, else `access_token` in the query.
fn bearer_token(event: &ApiGatewayWebsocketProxyRequest) -> Option<String> {
    let header = event
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    header
        .map(str::to_owned)
        .or_else(|| event.query_string_parameters.first("access_token").map(str::to_owned))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The push function: SQS batches of the live queue, partial batch responses out.
#[derive(Debug, Clone)]
pub struct LivePushFunction {
    relay: Arc<SocketRelay>,
    queue: Arc<SqsQueue>,
}

impl LivePushFunction {
    pub fn new(sdk: &SdkConfig, relay: SocketRelay, queue_url: &str) -> Self {
        let queue = SqsQueue::new(LazyClient::from_config(sdk, aws_sdk_sqs::Client::new), queue_url);
        Self { relay: Arc::new(relay), queue: Arc::new(queue) }
    }

    /// Handles one invocation; `deadline_ms` as for the worker.
    pub async fn handle(&self, event: SqsEvent, deadline_ms: Option<u64>) -> SqsBatchResponse {
        let concurrency = event.records.len();
        handle_sqs_batch(&self.relay, &*self.queue, event, concurrency, deadline_at(deadline_ms)).await
    }
}
