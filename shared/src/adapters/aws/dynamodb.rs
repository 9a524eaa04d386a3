//! [`DynamoJobStore`]: jobs in one DynamoDB table (the one `infra/storage.yaml` creates).
//!
//! | item | `pk` | other attributes |
//! |---|---|---|
//! | a job | `job#{id}` | the job record (serde_dynamo), `created_key`, `ttl`, `label_names`, `labels_ref` |
//! | an idempotency key | `idem#{sha256(owner)}#{key}` | `job_id`, `ttl` |
//!
//! - Creating a job with a key is one transaction of two conditional puts, so a key is never
//!   taken without its job, and two racing requests with the same key create one job.
//! - Every transition is a conditional put on `version` (the compare-and-swap the worker relies on).
//! - Reads by id are strongly consistent: a worker must see the job the API just wrote.
//! - The `owner-created-index` (`owner`, `created_key` = creation time + id) lists an owner's
//!   jobs newest first; idempotency items lack both attributes and stay out of it.
//! - `ttl` (epoch seconds) lets DynamoDB expire jobs; reads hide expired jobs before that happens.
//! - Findings (labels, text, properties) over [`OFFLOAD_BYTES`] go to S3 as `results/{id}.json`
//!   and the item keeps a pointer,
//!   since an item may not exceed 400 KB.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use sha2::{Digest, Sha256};

use super::{LazyClient, classify, service_code};
use crate::domain::{Findings, IdempotencyKey, Job, JobId, JobState, Label, OwnerId, timestamp};
use crate::ports::{BackendError, Created, JobStore, ListPosition, ListQuery, Page, UpdateError};

/// Findings whose JSON exceeds this go to S3: well under the 400 KB item limit with room for the
/// rest of the record.
pub const OFFLOAD_BYTES: usize = 300 * 1024;
pub const OWNER_INDEX: &str = "owner-created-index";
/// The most bytes of label names kept for the `label=` filter.
pub const LABEL_NAMES_BYTES: usize = 32 * 1024;

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone)]
pub struct DynamoJobStore {
    client: Client,
    table: String,
    s3: LazyClient<aws_sdk_s3::Client>,
    bucket: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn job_pk(id: &JobId) -> String {
    format!("job#{id}")
}

fn idem_pk(owner: &OwnerId, key: &IdempotencyKey) -> String {
    format!("idem#{}#{key}", hex::encode(Sha256::digest(owner.as_str().as_bytes())))
}

fn created_key(pos: &ListPosition) -> String {
    format!("{}#{}", timestamp::format(pos.created_at), pos.id)
}

fn results_key(id: &JobId) -> String {
    format!("results/{id}.json")
}

fn corrupt(operation: &'static str, e: impl Into<crate::ports::BoxError>) -> BackendError {
    BackendError::permanent(operation, e)
}

/// Whether a cancelled transaction failed on a condition (and not on throttling or a conflict).
fn condition_failed(e: &SdkError<TransactWriteItemsError, aws_smithy_runtime_api::http::Response>) -> Option<usize> {
    let SdkError::ServiceError(se) = e else { return None };
    let TransactWriteItemsError::TransactionCanceledException(tc) = se.err() else { return None };
    tc.cancellation_reasons().iter().position(|r| r.code() == Some("ConditionalCheckFailed"))
}

fn transaction_error(
    operation: &'static str,
    e: SdkError<TransactWriteItemsError, aws_smithy_runtime_api::http::Response>,
) -> BackendError {
    // A cancellation for a conflicting transaction or throttling clears up on retry.
    let conflict = match &e {
        SdkError::ServiceError(se) => match se.err() {
            TransactWriteItemsError::TransactionCanceledException(tc) => tc.cancellation_reasons().iter().any(|r| {
                matches!(r.code(), Some("TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"))
            }),
            _ => false,
        },
        _ => false,
    };
    if conflict { BackendError::transient(operation, e) } else { classify(operation, e) }
}

impl DynamoJobStore {
    /// `s3` and `bucket` hold results too large for an item.
    pub fn new(
        client: Client,
        table: impl Into<String>,
        s3: impl Into<LazyClient<aws_sdk_s3::Client>>,
        bucket: impl Into<String>,
    ) -> Self {
        Self { client, table: table.into(), s3: s3.into(), bucket: bucket.into() }
    }

    /// The job as an item, offloading large labels to S3 first.
    async fn encode_item(&self, job: &Job) -> Result<Item, BackendError> {
        let mut item: Item = serde_dynamo::to_item(job).map_err(|e| corrupt("encode job item", e))?;
        item.insert("pk".into(), s(job_pk(&job.id)));
        item.insert("created_key".into(), s(created_key(&ListPosition::of(job))));
        item.insert("ttl".into(), AttributeValue::N(job.expires_at.unix_timestamp().to_string()));
        let mut names = job.label_names();
        // The filter set shares the item's 400 KB; a pathological label list keeps the first names
        // within the budget (the labels themselves are complete, in S3 if need be).
        let mut budget = LABEL_NAMES_BYTES;
        names.retain(|n| {
            let fits = n.len() <= budget;
            budget = budget.saturating_sub(n.len());
            fits
        });
        if !names.is_empty() {
            item.insert("label_names".into(), AttributeValue::Ss(names));
        }
        if let Some(findings) = job.findings() {
            let json = serde_json::to_vec(findings).map_err(|e| corrupt("encode findings", e))?;
            if json.len() > OFFLOAD_BYTES {
                let key = results_key(&job.id);
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .body(ByteStream::from(json))
                    .content_type("application/json")
                    .server_side_encryption(ServerSideEncryption::Aes256)
                    .send()
                    .await
                    .map_err(|e| classify("S3 PutObject (results)", e))?;
                item.insert("labels".into(), AttributeValue::L(Vec::new()));
                item.remove("text_detections");
                item.remove("image_properties");
                item.insert("labels_ref".into(), s(key));
            }
        }
        Ok(item)
    }

    /// An item back to a job, fetching offloaded findings.
    async fn decode_item(&self, mut item: Item) -> Result<Job, BackendError> {
        let labels_ref = match item.remove("labels_ref") {
            Some(AttributeValue::S(key)) => Some(key),
            _ => None,
        };
        let mut job: Job = serde_dynamo::from_item(item).map_err(|e| corrupt("decode job item", e))?;
        if let (Some(key), JobState::Succeeded(findings)) = (labels_ref, &mut job.state) {
            let object = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| classify("S3 GetObject (results)", e))?;
            let bytes = object.body.collect().await.map_err(|e| BackendError::transient("S3 GetObject body", e))?;
            let bytes = bytes.into_bytes();
            // Results offloaded before text and properties existed are a bare list of labels.
            *findings = match serde_json::from_slice::<Findings>(&bytes) {
                Ok(offloaded) => offloaded,
                Err(e) => Findings::labels(
                    serde_json::from_slice::<Vec<Label>>(&bytes).map_err(|_| corrupt("decode results", e))?,
                ),
            };
        }
        Ok(job)
    }

    async fn get_item(&self, pk: String) -> Result<Option<Item>, BackendError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("DynamoDB GetItem", e))?;
        Ok(output.item)
    }

    fn put(&self, item: Item, condition: &str) -> Result<TransactWriteItem, BackendError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .build()
            .map_err(|e| corrupt("build Put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn delete_results(&self, id: &JobId) {
        if let Err(e) = self.s3.delete_object().bucket(&self.bucket).key(results_key(id)).send().await {
            tracing::warn!(error = %e, job_id = %id, "could not delete a results object; the lifecycle rule will");
        }
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn create(&self, job: &Job) -> Result<Created, BackendError> {
        let item = self.encode_item(job).await?;
        let Some(key) = &job.idempotency_key else {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
                .map_err(|e| classify("DynamoDB PutItem", e))?;
            return Ok(Created::Created);
        };
        let idem_item: Item = HashMap::from([
            ("pk".to_owned(), s(idem_pk(&job.owner, key))),
            ("job_id".to_owned(), s(job.id.to_string())),
            ("ttl".to_owned(), AttributeValue::N(job.expires_at.unix_timestamp().to_string())),
        ]);
        let result = self
            .client
            .transact_write_items()
            .transact_items(self.put(item, "attribute_not_exists(pk)")?)
            .transact_items(self.put(idem_item, "attribute_not_exists(pk)")?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Created::Created),
            Err(e) if condition_failed(&e) == Some(1) => match self.find_by_idempotency_key(&job.owner, key).await? {
                Some(existing) => Ok(Created::KeyTaken(Box::new(existing))),
                // The key's job expired or was deleted between the two reads: a retry creates anew.
                None => Err(BackendError::transient("DynamoDB TransactWriteItems", e)),
            },
            Err(e) => Err(transaction_error("DynamoDB TransactWriteItems", e)),
        }
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, BackendError> {
        match self.get_item(job_pk(id)).await? {
            Some(item) => Ok(Some(self.decode_item(item).await?)),
            None => Ok(None),
        }
    }

    async fn find_by_idempotency_key(
        &self,
        owner: &OwnerId,
        key: &IdempotencyKey,
    ) -> Result<Option<Job>, BackendError> {
        let Some(item) = self.get_item(idem_pk(owner, key)).await? else {
            return Ok(None);
        };
        let Some(id) = item.get("job_id").and_then(|v| v.as_s().ok()).and_then(|s| JobId::parse(s).ok()) else {
            return Err(corrupt("decode idempotency item", "missing or invalid job_id"));
        };
        self.get(&id).await
    }

    async fn update(&self, job: &Job) -> Result<(), UpdateError> {
        let item = self.encode_item(job).await?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(job.version.saturating_sub(1).to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if service_code(&e) == Some("ConditionalCheckFailedException") => Err(UpdateError::Conflict),
            Err(e) => Err(classify("DynamoDB PutItem", e).into()),
        }
    }

    async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<Page, BackendError> {
        let mut key_condition = "#owner = :owner".to_owned();
        let mut names = HashMap::from([("#owner".to_owned(), "owner".to_owned())]);
        let mut values = HashMap::from([(":owner".to_owned(), s(owner.as_str()))]);
        if let Some(after) = &query.after {
            key_condition.push_str(" AND created_key < :after");
            values.insert(":after".into(), s(created_key(after)));
        }
        let mut filters = Vec::new();
        if let Some(status) = query.status {
            filters.push("#status = :status");
            names.insert("#status".into(), "status".into());
            values.insert(":status".into(), s(status.as_str()));
        }
        if let Some(label) = &query.label {
            filters.push("contains(label_names, :label)");
            values.insert(":label".into(), s(label.to_lowercase()));
        }
        let wanted = query.limit + 1;
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OWNER_INDEX)
                .key_condition_expression(&key_condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .set_exclusive_start_key(start.take())
                // With a filter, a page can match few items: read more per page.
                .limit(if filters.is_empty() { wanted as i32 } else { 100 });
            if !filters.is_empty() {
                request = request.filter_expression(filters.join(" AND "));
            }
            let output = request.send().await.map_err(|e| classify("DynamoDB Query", e))?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if items.len() >= wanted || start.is_none() {
                break;
            }
        }
        let more = items.len() > query.limit;
        items.truncate(query.limit);
        let mut jobs = Vec::with_capacity(items.len());
        for item in items {
            jobs.push(self.decode_item(item).await?);
        }
        let next = if more { jobs.last().map(ListPosition::of) } else { None };
        Ok(Page { jobs, next })
    }

    async fn delete(&self, owner: &OwnerId, id: &JobId) -> Result<Option<Job>, BackendError> {
        // Read, then delete the job and its key together on the version read; a worker's write in
        // between makes the condition fail, and we read again.
        for _ in 0..3 {
            let Some(item) = self.get_item(job_pk(id)).await? else {
                return Ok(None);
            };
            let offloaded = item.contains_key("labels_ref");
            let job = self.decode_item(item).await?;
            if &job.owner != owner {
                return Ok(None);
            }
            let delete_job = Delete::builder()
                .table_name(&self.table)
                .key("pk", s(job_pk(id)))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(job.version.to_string()))
                .build()
                .map_err(|e| corrupt("build Delete", e))?;
            let mut transaction = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().delete(delete_job).build());
            if let Some(key) = &job.idempotency_key {
                let delete_key = Delete::builder()
                    .table_name(&self.table)
                    .key("pk", s(idem_pk(owner, key)))
                    .build()
                    .map_err(|e| corrupt("build Delete", e))?;
                transaction = transaction.transact_items(TransactWriteItem::builder().delete(delete_key).build());
            }
            match transaction.send().await {
                Ok(_) => {
                    if offloaded {
                        self.delete_results(id).await;
                    }
                    return Ok(Some(job));
                }
                Err(e) if condition_failed(&e).is_some() => continue,
                Err(e) => return Err(transaction_error("DynamoDB TransactWriteItems", e)),
            }
        }
        Err(BackendError::transient("DynamoDB delete job", "the job kept changing while being deleted"))
    }
}
