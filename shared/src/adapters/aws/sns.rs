//! [`SnsPublisher`]: publishes labelq's messages, whatever their kind, on an SNS topic (new jobs
//! on the one the job queue subscribes to).
//!
//! The message type and the correlation id travel as message attributes, so they reach the
//! worker beside the body (SQS raw delivery keeps them), and the worker's log lines can be tied
//! to the request that caused them (X-Ray does not follow SNS -> SQS on its own). A finished
//! job's event also carries `status` and `callback` ([`Message::filter_attributes`]), for the
//! subscription filter policies of the completion topic.
//!
//! [`Message::filter_attributes`]: crate::domain::Message::filter_attributes

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;

use super::classify;
use crate::ports::{BackendError, Envelope, MessagePublisher};

pub const CORRELATION_ID: &str = "correlation_id";
pub const MESSAGE_TYPE: &str = "message_type";

#[derive(Debug, Clone)]
pub struct SnsPublisher {
    client: Client,
    topic_arn: String,
}

impl SnsPublisher {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self { client, topic_arn: topic_arn.into() }
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, BackendError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| BackendError::permanent("build SNS message attribute", e))
}

#[async_trait]
impl MessagePublisher for SnsPublisher {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BackendError> {
        let mut request = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(envelope.message.to_json())
            .message_attributes(MESSAGE_TYPE, string_attribute(envelope.message.kind())?)
            .message_attributes(CORRELATION_ID, string_attribute(envelope.correlation_id.as_str())?);
        for (name, value) in envelope.message.filter_attributes() {
            request = request.message_attributes(name, string_attribute(value)?);
        }
        request.send().await.map_err(|e| classify("SNS Publish", e))?;
        Ok(())
    }
}
