//! [`DynamoDefaultCallbacks`]: owners' default callbacks as items of the jobs table, one per
//! owner, beside the jobs and their idempotency keys:
//!
//! | item | `pk` | other attributes |
//! |---|---|---|
//! | a default callback | `callback#{sha256(owner)}` | `owner_id`, `url`, `updated_at`, `disabled_at` |
//!
//! They carry neither `owner` nor `created_key`, so they stay out of the owners' listing index,
//! and no `ttl`, so they do not expire. Disabling is one conditional update (the same URL, not yet
//! disabled), so a 410 for a URL the owner has since replaced leaves the new one alone.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{classify, service_code};
use crate::domain::{CallbackUrl, DefaultCallback, OwnerId, timestamp};
use crate::ports::{BackendError, DefaultCallbacks};

#[derive(Debug, Clone)]
pub struct DynamoDefaultCallbacks {
    client: Client,
    table: String,
}

impl DynamoDefaultCallbacks {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn pk(owner: &OwnerId) -> AttributeValue {
    AttributeValue::S(format!("callback#{}", hex::encode(Sha256::digest(owner.as_str().as_bytes()))))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn corrupt(reason: impl Into<crate::ports::BoxError>) -> BackendError {
    BackendError::permanent("decode a default callback", reason)
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<DefaultCallback, BackendError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str);
    let time = |value: &str| OffsetDateTime::parse(value, &Rfc3339).map_err(corrupt);
    let url = CallbackUrl::parse(text("url").ok_or_else(|| corrupt("no url"))?).map_err(corrupt)?;
    let updated_at = time(text("updated_at").ok_or_else(|| corrupt("no updated_at"))?)?;
    let disabled_at = text("disabled_at").map(time).transpose()?;
    Ok(DefaultCallback { url, updated_at, disabled_at })
}

#[async_trait]
impl DefaultCallbacks for DynamoDefaultCallbacks {
    async fn get(&self, owner: &OwnerId) -> Result<Option<DefaultCallback>, BackendError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk(owner))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("DynamoDB GetItem (default callback)", e))?;
        output.item.as_ref().map(decode).transpose()
    }

    async fn put(&self, owner: &OwnerId, callback: &DefaultCallback) -> Result<(), BackendError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk(owner))
            .item("owner_id", s(owner.as_str()))
            .item("url", s(callback.url.as_str()))
            .item("updated_at", s(timestamp::format(callback.updated_at)));
        if let Some(at) = callback.disabled_at {
            put = put.item("disabled_at", s(timestamp::format(at)));
        }
        put.send().await.map_err(|e| classify("DynamoDB PutItem (default callback)", e))?;
        Ok(())
    }

    async fn delete(&self, owner: &OwnerId) -> Result<bool, BackendError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk(owner))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| classify("DynamoDB DeleteItem (default callback)", e))?;
        Ok(output.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn disable(&self, owner: &OwnerId, url: &CallbackUrl, at: OffsetDateTime) -> Result<bool, BackendError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk(owner))
            .update_expression("SET disabled_at = :at")
            .condition_expression("#url = :url AND attribute_not_exists(disabled_at)")
            .expression_attribute_names("#url", "url")
            .expression_attribute_values(":url", s(url.as_str()))
            .expression_attribute_values(":at", s(timestamp::format(at)))
            .send()
            .await;
        match updated {
            Ok(_) => Ok(true),
            Err(e) if service_code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(classify("DynamoDB UpdateItem (default callback)", e)),
        }
    }
}
