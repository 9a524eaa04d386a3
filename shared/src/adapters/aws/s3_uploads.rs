//! [`S3UploadTargets`]: direct uploads on AWS, as presigned S3 PUTs of the job's upload key
//! (`uploads/{id}`, chosen by the server, never a client's file name).
//!
//! A presigned PUT signs every header set on the request, and S3 refuses the upload unless each
//! arrives with the signed value, so the target binds: `Content-Length` (the exact declared
//! length), `Content-Type`, `x-amz-checksum-sha256` when a digest was declared (S3 also checks the
//! bytes against it), and `If-None-Match: *` (the first upload stays: a second PUT of the same URL
//! is refused with 412, as the local target keeps the first). The URL expires when the
//! declaration does, to the second, or sooner if the signing credentials expire first (a Lambda's
//! role credentials outlive a 15-minute window in all but rare cases).
//!
//! The client that signs is built for it: with `RequestChecksumCalculation::WhenRequired`, so the
//! SDK adds no checksum of its own (a CRC32 of an empty body would be signed into the URL and
//! refuse every real upload), and without a checksum algorithm (which would ask the client to
//! send a trailer). Presigning calls nothing: it needs only credentials.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::presigning::PresigningConfig;
use time::OffsetDateTime;

use crate::domain::{Clock, DeclaredUpload, ObjectKey, UploadTarget};
use crate::ports::{BackendError, UploadTargets};

#[derive(Debug, Clone)]
pub struct S3UploadTargets {
    client: aws_sdk_s3::Client,
    bucket: String,
    clock: Arc<dyn Clock>,
}

impl S3UploadTargets {
    pub fn new(sdk: &SdkConfig, bucket: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Self { client: aws_sdk_s3::Client::from_conf(config), bucket: bucket.into(), clock }
    }
}

/// The presigned URL's start and lifetime in whole seconds (SigV4 counts seconds), ending at
/// `expires_at` or just before it, and at least a second long: a replay of a declaration whose
/// target has expired gets a URL that has expired too.
fn window(now: OffsetDateTime, expires_at: OffsetDateTime) -> (OffsetDateTime, Duration) {
    let end = OffsetDateTime::from_unix_timestamp(expires_at.unix_timestamp()).unwrap_or(expires_at);
    let start =
        OffsetDateTime::from_unix_timestamp(now.unix_timestamp()).unwrap_or(now).min(end - Duration::from_secs(1));
    (start, Duration::from_secs((end - start).whole_seconds().max(1) as u64))
}

#[async_trait]
impl UploadTargets for S3UploadTargets {
    async fn target(&self, key: &ObjectKey, upload: &DeclaredUpload) -> Result<UploadTarget, BackendError> {
        const OPERATION: &str = "presign an S3 PutObject";
        let (start, expires_in) = window(self.clock.now(), upload.expires_at);
        let presigning = PresigningConfig::builder()
            .start_time(SystemTime::from(start))
            .expires_in(expires_in)
            .build()
            .map_err(|e| BackendError::permanent(OPERATION, e))?;
        let length = i64::try_from(upload.length).map_err(|e| BackendError::permanent(OPERATION, e))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_length(length)
            .content_type(upload.content_type.as_mime())
            .set_checksum_sha256(upload.checksum_base64())
            .if_none_match("*")
            .presigned(presigning)
            .await
            .map_err(|e| BackendError::permanent(OPERATION, e))?;
        // The signed headers, named as the local target names them where it has them.
        let required = UploadTarget::required_headers(upload);
        let mut headers = BTreeMap::new();
        for (name, value) in request.headers() {
            let name = required.keys().find(|known| known.eq_ignore_ascii_case(name)).map_or(name, |known| known);
            headers.insert(name.to_owned(), value.to_owned());
        }
        if let Some(missing) = required.keys().find(|name| !headers.contains_key(*name)) {
            return Err(BackendError::permanent(OPERATION, format!("the presigned request does not sign {missing}")));
        }
        Ok(UploadTarget { method: "PUT", url: request.uri().to_owned(), headers, expires_at: start + expires_in })
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_url_ends_by_the_declared_expiry_in_whole_seconds() {
        let now = datetime!(2026-12-03 12:00:00.700 UTC);
        assert_eq!(
            window(now, datetime!(2026-12-03 12:15:00.400 UTC)),
            (datetime!(2026-12-03 12:00:00 UTC), Duration::from_secs(900))
        );
        // Less than a second left, or none: a second that ends at (or before) the expiry.
        for expires_at in [datetime!(2026-12-03 12:00:00.900 UTC), datetime!(2026-12-03 11:00 UTC)] {
            let (start, length) = window(now, expires_at);
            assert_eq!(length, Duration::from_secs(1));
            assert!(start + length <= expires_at, "{expires_at}");
        }
    }
}
