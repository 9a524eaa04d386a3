//! Drops in the bucket: [`S3DroppedObjects`] reads the objects created under the drop prefix,
//! [`S3DropResults`] writes their results under the results prefix, which must not be inside the
//! drop prefix (the bucket's notification watches only the drop prefix, so nothing written here
//! triggers the worker again).

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;

use super::{LazyClient, classify, service_code};
use crate::domain::DropKey;
use crate::ports::{BackendError, DropResults, DroppedObjects};

/// The drop prefix when none is configured.
pub const DROP_PREFIX: &str = "drops/";
/// The drop results' prefix when none is configured. Not `results/`: that is the jobs' offloaded
/// labels, which expire with their jobs.
pub const DROP_RESULTS_PREFIX: &str = "drop-results/";
/// What a drop's result adds to its key.
const RESULT_SUFFIX: &str = ".json";

#[derive(Debug, Clone)]
pub struct S3DroppedObjects {
    client: LazyClient<Client>,
    bucket: String,
    prefix: String,
}

impl S3DroppedObjects {
    pub fn new(client: impl Into<LazyClient<Client>>, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self { client: client.into(), bucket: bucket.into(), prefix: prefix.into() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The drop key of an object key, if the object is under the drop prefix and its rest is a
    /// valid drop key whose result's key fits in S3's 1024 bytes.
    pub fn drop_key(&self, object_key: &str) -> Option<DropKey> {
        let key = DropKey::parse(object_key.strip_prefix(&self.prefix)?).ok()?;
        (DROP_RESULTS_PREFIX.len() + key.as_str().len() + RESULT_SUFFIX.len() <= 1024).then_some(key)
    }
}

#[async_trait]
impl DroppedObjects for S3DroppedObjects {
    async fn get(&self, key: &DropKey, max: u64, etag: Option<&str>) -> Result<Option<Bytes>, BackendError> {
        let object_key = format!("{}{key}", self.prefix);
        // Never more than the caller takes, whatever the object has grown to since it was seen,
        // and only the content the notification named: an object overwritten since has its own.
        let range = format!("bytes=0-{max}");
        let request = self.client.get_object().bucket(&self.bucket).key(object_key).range(range);
        let request = match etag {
            Some(etag) => request.if_match(format!("\"{}\"", etag.trim_matches('"'))),
            None => request,
        };
        match request.send().await {
            Ok(output) => {
                let data = output.body.collect().await.map_err(|e| BackendError::transient("S3 GetObject body", e))?;
                Ok(Some(data.into_bytes()))
            }
            Err(e) if matches!(service_code(&e), Some("NoSuchKey" | "NotFound" | "PreconditionFailed")) => Ok(None),
            Err(e) => Err(classify("S3 GetObject", e)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3DropResults {
    client: LazyClient<Client>,
    bucket: String,
    prefix: String,
}

impl S3DropResults {
    pub fn new(client: impl Into<LazyClient<Client>>, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self { client: client.into(), bucket: bucket.into(), prefix: prefix.into() }
    }

    /// The object key of the result of the drop under `key`.
    pub fn result_key(&self, key: &DropKey) -> String {
        format!("{}{key}{RESULT_SUFFIX}", self.prefix)
    }
}

#[async_trait]
impl DropResults for S3DropResults {
    async fn write(&self, key: &DropKey, json: &[u8]) -> Result<(), BackendError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.result_key(key))
            .body(ByteStream::from(json.to_vec()))
            .content_type("application/json")
            .server_side_encryption(ServerSideEncryption::Aes256)
            .send()
            .await
            .map_err(|e| classify("S3 PutObject (drop result)", e))?;
        Ok(())
    }
}
