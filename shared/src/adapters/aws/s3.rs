//! [`S3ImageStore`]: images as S3 objects under `images/{id}`, with server-side encryption, their
//! content type, and the owner and SHA-256 as object metadata (so an object can be traced to its
//! job without the table).

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;

use super::{LazyClient, classify, service_code};
use crate::domain::ObjectKey;
use crate::ports::{BackendError, ImageStore, StoredImage};

#[derive(Debug, Clone)]
pub struct S3ImageStore {
    client: LazyClient<Client>,
    bucket: String,
}

impl S3ImageStore {
    pub fn new(client: impl Into<LazyClient<Client>>, bucket: impl Into<String>) -> Self {
        Self { client: client.into(), bucket: bucket.into() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

#[async_trait]
impl ImageStore for S3ImageStore {
    async fn put(&self, key: &ObjectKey, image: &StoredImage) -> Result<(), BackendError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(ByteStream::from(image.bytes.clone()))
            .content_type(image.content_type.as_mime())
            .server_side_encryption(ServerSideEncryption::Aes256)
            .metadata("owner", image.owner.as_str())
            .metadata("sha256", &image.sha256)
            .send()
            .await
            .map_err(|e| classify("S3 PutObject", e))?;
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, BackendError> {
        match self.client.get_object().bucket(&self.bucket).key(key.as_str()).send().await {
            Ok(output) => {
                let data = output.body.collect().await.map_err(|e| BackendError::transient("S3 GetObject body", e))?;
                Ok(Some(data.into_bytes()))
            }
            Err(e) if matches!(service_code(&e), Some("NoSuchKey" | "NotFound")) => Ok(None),
            Err(e) => Err(classify("S3 GetObject", e)),
        }
    }

    async fn get_at_most(&self, key: &ObjectKey, max: u64) -> Result<Option<Bytes>, BackendError> {
        let range = format!("bytes=0-{max}");
        match self.client.get_object().bucket(&self.bucket).key(key.as_str()).range(range).send().await {
            Ok(output) => {
                let data = output.body.collect().await.map_err(|e| BackendError::transient("S3 GetObject body", e))?;
                Ok(Some(data.into_bytes()))
            }
            Err(e) if matches!(service_code(&e), Some("NoSuchKey" | "NotFound")) => Ok(None),
            // A range of an empty object is unsatisfiable: the object is there, and empty.
            Err(e) if service_code(&e) == Some("InvalidRange") => Ok(Some(Bytes::new())),
            Err(e) => Err(classify("S3 GetObject", e)),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        // S3 answers 204 for a missing key too: deleting is idempotent.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| classify("S3 DeleteObject", e))?;
        Ok(())
    }
}
