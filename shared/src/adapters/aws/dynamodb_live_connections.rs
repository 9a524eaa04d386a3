//! [`DynamoLiveConnections`]: the WebSocket API's open connections, one item per connection in a
//! table of their own (the jobs table's items and indexes are about jobs):
//!
//! | attribute | |
//! |---|---|
//! | `connection_id` (key) | the gateway's id |
//! | `owner` | the caller `$connect` authenticated; the key of the `by-owner` index |
//! | `jobs` | a string set of the job ids followed; absent when none |
//! | `follows_all` | `true` while the connection follows all the owner's jobs |
//! | `connected_at`, `expires_at` | epoch seconds; `expires_at` is the table's TTL attribute |
//!
//! A push finds its connections through `by-owner`, filtered on `jobs` and `follows_all`. That
//! index is eventually consistent (a write usually shows in it within a second): a subscription
//! written just before its job finished could be missed by the push, so the live queue holds
//! each message back a few seconds (`LiveQueueDelaySeconds` in `infra/storage.yaml`) before it is
//! pushed. Every update is conditional on the item existing, so a message racing `$disconnect`
//! cannot bring a closed connection back, and a follow's limit is part of its condition, so
//! messages handled at once cannot pass it together.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use super::{classify, service_code};
use crate::domain::{ConnectionId, Following, JobId, LiveConnection, OwnerId};
use crate::ports::{BackendError, Followed, LiveConnections};

/// The index of connections by owner.
pub const BY_OWNER_INDEX: &str = "by-owner";

#[derive(Debug, Clone)]
pub struct DynamoLiveConnections {
    client: Client,
    table: String,
}

impl DynamoLiveConnections {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    fn key(id: &ConnectionId) -> AttributeValue {
        AttributeValue::S(id.as_str().to_owned())
    }

    /// An update of what a connection follows.
    fn update_following(&self, id: &ConnectionId) -> UpdateItemFluentBuilder {
        self.client.update_item().table_name(&self.table).key("connection_id", Self::key(id))
    }
}

fn corrupt(reason: impl Into<crate::ports::BoxError>) -> BackendError {
    BackendError::permanent("decode a live connection", reason)
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<LiveConnection, BackendError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).ok_or_else(|| corrupt(format!("no {name}")));
    let time = |name: &str| -> Result<OffsetDateTime, BackendError> {
        let n = item.get(name).and_then(|v| v.as_n().ok()).ok_or_else(|| corrupt(format!("no {name}")))?;
        let seconds = n.parse::<i64>().map_err(corrupt)?;
        OffsetDateTime::from_unix_timestamp(seconds).map_err(corrupt)
    };
    let jobs = match item.get("jobs") {
        None => BTreeSet::new(),
        Some(set) => set
            .as_ss()
            .map_err(|_| corrupt("jobs is not a string set"))?
            .iter()
            .map(|id| JobId::parse(id).map_err(corrupt))
            .collect::<Result<_, _>>()?,
    };
    let all = item.get("follows_all").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
    Ok(LiveConnection {
        id: ConnectionId::parse(text("connection_id")?).map_err(corrupt)?,
        owner: OwnerId::parse(text("owner")?).map_err(corrupt)?,
        following: Following { jobs, all },
        connected_at: time("connected_at")?,
        expires_at: time("expires_at")?,
    })
}

fn seconds(at: OffsetDateTime) -> AttributeValue {
    AttributeValue::N(at.unix_timestamp().to_string())
}

fn job_set(job: &JobId) -> AttributeValue {
    AttributeValue::Ss(vec![job.to_string()])
}

#[async_trait]
impl LiveConnections for DynamoLiveConnections {
    async fn open(&self, connection: &LiveConnection) -> Result<(), BackendError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("connection_id", Self::key(&connection.id))
            .item("owner", AttributeValue::S(connection.owner.as_str().to_owned()))
            .item("connected_at", seconds(connection.connected_at))
            .item("expires_at", seconds(connection.expires_at));
        if !connection.following.jobs.is_empty() {
            let jobs = connection.following.jobs.iter().map(ToString::to_string).collect();
            put = put.item("jobs", AttributeValue::Ss(jobs));
        }
        if connection.following.all {
            put = put.item("follows_all", AttributeValue::Bool(true));
        }
        put.send().await.map_err(|e| classify("DynamoDB PutItem (live connection)", e))?;
        Ok(())
    }

    async fn get(&self, id: &ConnectionId) -> Result<Option<LiveConnection>, BackendError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("connection_id", Self::key(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("DynamoDB GetItem (live connection)", e))?;
        output.item.as_ref().map(decode).transpose()
    }

    async fn follow(&self, id: &ConnectionId, job: Option<&JobId>, limit: usize) -> Result<Followed, BackendError> {
        // Room for one more: no jobs, or fewer than the limit (one fewer while all jobs are
        // followed, which counts as one); or what is asked for is followed already.
        let room = "attribute_not_exists(jobs) OR size(jobs) < :fewer \
                    OR (size(jobs) < :limit AND attribute_not_exists(follows_all))";
        let count = |n: usize| AttributeValue::N(n.to_string());
        // (DynamoDB refuses a value the expressions do not use.)
        let update = self.update_following(id).expression_attribute_values(":limit", count(limit));
        let update = match job {
            Some(job) => update
                .condition_expression(format!("attribute_exists(connection_id) AND (contains(jobs, :one) OR {room})"))
                .update_expression("ADD jobs :job")
                .expression_attribute_values(":job", job_set(job))
                .expression_attribute_values(":one", AttributeValue::S(job.to_string()))
                .expression_attribute_values(":fewer", count(limit.saturating_sub(1))),
            None => update
                .condition_expression(
                    "attribute_exists(connection_id) AND (attribute_exists(follows_all) OR \
                     attribute_not_exists(jobs) OR size(jobs) < :limit)",
                )
                .update_expression("SET follows_all = :yes")
                .expression_attribute_values(":yes", AttributeValue::Bool(true)),
        };
        match update.send().await {
            Ok(_) => Ok(Followed::Following),
            // Either no such connection or no room: the item tells which.
            Err(e) if service_code(&e) == Some("ConditionalCheckFailedException") => match self.get(id).await? {
                Some(_) => Ok(Followed::Full),
                None => Ok(Followed::NoConnection),
            },
            Err(e) => Err(classify("DynamoDB UpdateItem (follow)", e)),
        }
    }

    async fn unfollow(&self, id: &ConnectionId, job: Option<&JobId>) -> Result<(), BackendError> {
        // Only a connection that is still recorded: an update would make one up.
        let update = self.update_following(id).condition_expression("attribute_exists(connection_id)");
        let update = match job {
            // Deleting the last element removes the attribute.
            Some(job) => update.update_expression("DELETE jobs :job").expression_attribute_values(":job", job_set(job)),
            None => update.update_expression("REMOVE jobs, follows_all"),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if service_code(&e) == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(classify("DynamoDB UpdateItem (unfollow)", e)),
        }
    }

    async fn close(&self, id: &ConnectionId) -> Result<(), BackendError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("connection_id", Self::key(id))
            .send()
            .await
            .map_err(|e| classify("DynamoDB DeleteItem (live connection)", e))?;
        Ok(())
    }

    async fn following(&self, owner: &OwnerId, job: &JobId) -> Result<Vec<LiveConnection>, BackendError> {
        let mut connections = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_OWNER_INDEX)
                .key_condition_expression("#owner = :owner")
                .filter_expression("follows_all = :yes OR contains(jobs, :job)")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":owner", AttributeValue::S(owner.as_str().to_owned()))
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .expression_attribute_values(":job", AttributeValue::S(job.to_string()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("DynamoDB Query (live connections)", e))?;
            for item in output.items() {
                connections.push(decode(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(connections),
            }
        }
    }
}
