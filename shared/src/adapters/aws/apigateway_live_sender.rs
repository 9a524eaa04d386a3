//! [`ApiGatewayLiveSender`]: messages down the WebSocket API's connections, through API Gateway's
//! management API (`POST @connections/{id}`).
//!
//! The client's endpoint is the API's stage, `https://{api}.execute-api.{region}.amazonaws.com/{stage}`:
//! the management API lives under each stage rather than at a regional endpoint. A
//! `GoneException` (410) is a connection that closed without `$disconnect` reaching us yet.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;

use super::classify;
use crate::domain::ConnectionId;
use crate::ports::{LiveSender, SendError};

#[derive(Debug, Clone)]
pub struct ApiGatewayLiveSender {
    client: Client,
}

impl ApiGatewayLiveSender {
    /// A sender for the connections of the stage at `endpoint` (`LABELQ_LIVE_ENDPOINT`).
    pub fn new(sdk: &SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk).endpoint_url(endpoint).build();
        Self::with_client(Client::from_conf(config))
    }

    pub fn with_client(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl LiveSender for ApiGatewayLiveSender {
    async fn send(&self, id: &ConnectionId, text: &str) -> Result<(), SendError> {
        let sent =
            self.client.post_to_connection().connection_id(id.as_str()).data(Blob::new(text.as_bytes())).send().await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.as_service_error(), Some(PostToConnectionError::GoneException(_))) => {
                Err(SendError::Gone)
            }
            Err(e) => Err(SendError::Backend(classify("API Gateway PostToConnection", e))),
        }
    }
}
