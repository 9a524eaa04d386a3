//! SQS: reading job messages as SQS (or Lambda's SQS event) delivers them, and [`SqsQueue`], the
//! queue operations the worker needs (visibility changes for backoff) and that `labelq serve
//! --backend aws` polls with.
//!
//! The queue is subscribed to the topic with raw message delivery, so a body is the message
//! itself and the attributes are SQS message attributes. Without raw delivery SNS wraps the body in
//! a JSON envelope (`{"Type":"Notification","Message":"…","MessageAttributes":{…}}`); both shapes
//! are accepted, so a subscription configured either way works.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde::Deserialize;

use super::sns::CORRELATION_ID;
use super::{LazyClient, classify};
use crate::domain::CorrelationId;
use crate::ports::{BackendError, Delivery, JobQueue};

/// SQS's longest visibility timeout (12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

#[derive(Deserialize)]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "TopicArn")]
    topic_arn: Option<String>,
    #[serde(rename = "MessageAttributes", default)]
    attributes: HashMap<String, SnsAttribute>,
}

#[derive(Deserialize)]
struct SnsAttribute {
    #[serde(rename = "Value")]
    value: Option<String>,
}

/// If `body` is an SNS notification envelope, its inner message and correlation id attribute;
/// otherwise `None` (a raw-delivered body).
pub fn unwrap_sns_envelope(body: &str) -> Option<(String, Option<String>)> {
    let envelope: SnsEnvelope = serde_json::from_str(body).ok()?;
    if envelope.kind != "Notification" || envelope.topic_arn.is_none() {
        return None;
    }
    let correlation = envelope.attributes.get(CORRELATION_ID).and_then(|a| a.value.clone());
    Some((envelope.message, correlation))
}

/// A [`Delivery`] from the parts every SQS consumer has: the message id, receipt handle, body, the
/// `ApproximateReceiveCount` system attribute and the `correlation_id` message attribute.
pub fn delivery_from_sqs(
    message_id: String,
    receipt: String,
    body: String,
    receive_count: Option<&str>,
    correlation_attribute: Option<&str>,
) -> Delivery {
    let (body, correlation) = match unwrap_sns_envelope(&body) {
        Some((inner, from_envelope)) => (inner, from_envelope.or(correlation_attribute.map(str::to_owned))),
        None => (body, correlation_attribute.map(str::to_owned)),
    };
    Delivery {
        message_id,
        receipt,
        body,
        correlation_id: correlation.and_then(|c| CorrelationId::parse(&c).ok()),
        // A missing count is treated as a first delivery: never as a last one.
        receive_count: receive_count.and_then(|c| c.parse().ok()).unwrap_or(1),
    }
}

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: LazyClient<Client>,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: impl Into<LazyClient<Client>>, queue_url: impl Into<String>) -> Self {
        Self { client: client.into(), queue_url: queue_url.into() }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Up to `max` (<= 10) raw messages with their system and message attributes, as Lambda's
    /// event source mapping receives them.
    pub async fn receive_messages(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Message>, BackendError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(visibility.min(MAX_VISIBILITY).as_secs() as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| classify("SQS ReceiveMessage", e))?;
        Ok(output.messages.unwrap_or_default())
    }

    /// Deletes by receipt handle.
    pub async fn delete(&self, receipt: &str) -> Result<(), BackendError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| classify("SQS DeleteMessage", e))?;
        Ok(())
    }

    /// Makes a message visible again after `delay`, in whole seconds rounded up (never sooner
    /// than asked: a retry due in 0.8 s that came back at once would only wait again, spending a
    /// receive), capped short of SQS's 12 hours from receipt.
    pub async fn change_visibility(&self, receipt: &str, delay: Duration) -> Result<(), BackendError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(whole_seconds(delay))
            .send()
            .await
            .map_err(|e| classify("SQS ChangeMessageVisibility", e))?;
        Ok(())
    }
}

/// The longest visibility a handler may ask for: SQS refuses a change that would keep a message
/// hidden past 12 hours from its receipt, and some of that has passed by the time a handler
/// answers. A longer wait comes back early and waits again ("not due yet").
const MAX_CHANGE: Duration = Duration::from_secs(43_200 - 300);

/// A visibility timeout in SQS's unit: whole seconds, rounded up, at most [`MAX_CHANGE`].
fn whole_seconds(delay: Duration) -> i32 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.min(MAX_CHANGE.as_secs()) as i32
}

/// The parts of an SQS SDK message as a [`Delivery`].
fn delivery(message: Message) -> Delivery {
    let receive_count =
        message.attributes.as_ref().and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount)).cloned();
    let correlation =
        message.message_attributes.as_ref().and_then(|a| a.get(CORRELATION_ID)).and_then(|v| v.string_value.clone());
    delivery_from_sqs(
        message.message_id.unwrap_or_default(),
        message.receipt_handle.unwrap_or_default(),
        message.body.unwrap_or_default(),
        receive_count.as_deref(),
        correlation.as_deref(),
    )
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Delivery>, BackendError> {
        Ok(self.receive_messages(max, visibility, wait).await?.into_iter().map(delivery).collect())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError> {
        self.delete(&delivery.receipt).await
    }

    async fn retry(&self, delivery: &Delivery, delay: Duration) -> Result<(), BackendError> {
        self.change_visibility(&delivery.receipt, delay).await
    }

    /// SQS dead-letters by receive count (the redrive policy): making the message visible at once
    /// lets the next receive move it.
    async fn dead_letter(&self, delivery: &Delivery) -> Result<(), BackendError> {
        self.change_visibility(&delivery.receipt, Duration::ZERO).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bodies_pass_through_and_sns_envelopes_are_unwrapped() {
        let raw = delivery_from_sqs("m".into(), "r".into(), "{\"type\":\"x\"}".into(), Some("3"), Some("corr-1"));
        assert_eq!((raw.body.as_str(), raw.receive_count), ("{\"type\":\"x\"}", 3));
        assert_eq!(raw.correlation_id.as_ref().map(CorrelationId::as_str), Some("corr-1"));

        let envelope = serde_json::json!({
            "Type": "Notification",
            "MessageId": "abc",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:labelq",
            "Message": "{\"type\":\"x\"}",
            "Timestamp": "2026-11-23T12:00:00.000Z",
            "MessageAttributes": {"correlation_id": {"Type": "String", "Value": "corr-2"}}
        })
        .to_string();
        let wrapped = delivery_from_sqs("m".into(), "r".into(), envelope, None, None);
        assert_eq!(wrapped.body, "{\"type\":\"x\"}");
        assert_eq!(wrapped.correlation_id.as_ref().map(CorrelationId::as_str), Some("corr-2"));
        assert_eq!(wrapped.receive_count, 1);
    }

    #[test]
    fn a_visibility_is_whole_seconds_rounded_up_and_capped_short_of_twelve_hours() {
        let cases = [(0, 0), (1, 1), (800, 1), (1000, 1), (1001, 2), (43_200_000, 42_900), (86_400_000, 42_900)];
        for (millis, secs) in cases {
            assert_eq!(whole_seconds(Duration::from_millis(millis)), secs, "{millis} ms");
        }
    }

    #[test]
    fn a_body_that_merely_looks_like_an_envelope_is_not_unwrapped() {
        assert!(unwrap_sns_envelope("{\"Type\":\"Notification\",\"Message\":\"x\"}").is_none());
        assert!(unwrap_sns_envelope("not json").is_none());
    }
}
