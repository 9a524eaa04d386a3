//! AWS adapters: [`S3ImageStore`], [`DynamoJobStore`], [`SnsPublisher`], [`SqsQueue`] and
//! [`RekognitionDetector`], plus the SDK configuration they share.
//!
//! Clients are built once per process from one [`SdkConfig`]. Pointing everything at LocalStack is
//! only an endpoint override (`AWS_ENDPOINT_URL`, read by the SDK itself) plus path-style S3
//! addressing, which emulators need and which is switched on whenever an endpoint is overridden.
//!
//! Every SDK error is sorted into transient or permanent here, deliberately: throttling, 5xx,
//! timeouts and dropped connections are transient; everything else (a missing table, a malformed
//! request, an access denial) will not fix itself by retrying.

mod dynamodb;
mod rekognition;
mod s3;
mod sns;
mod sqs;

pub use dynamodb::DynamoJobStore;
pub use rekognition::RekognitionDetector;
pub use s3::S3ImageStore;
pub use sns::{CORRELATION_ID, MESSAGE_TYPE, SnsPublisher};
pub use sqs::{SqsQueue, delivery_from_sqs, unwrap_sns_envelope};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;

use crate::ports::BackendError;

/// The shared SDK configuration: region, credentials and endpoint from the environment.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An S3 client; path-style addressing when the endpoint is overridden (LocalStack, MinIO).
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let builder = aws_sdk_s3::config::Builder::from(config).force_path_style(config.endpoint_url().is_some());
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Service error codes that mean "not now" rather than "not ever".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "LimitExceededException",
    "KMSThrottlingException",
    "InternalServerError",
    "InternalError",
    "InternalFailure",
    "InternalServerErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Whether a service error code, or the HTTP status it came with, is worth a retry.
pub fn is_transient(code: Option<&str>, status: u16) -> bool {
    code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) || status >= 500 || status == 429
}

/// Sorts an SDK error into a [`BackendError`], keeping it whole as the source.
pub(crate) fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => is_transient(e.err().code(), e.raw().status().as_u16()),
        _ => false,
    };
    BackendError { operation, retryable, source: Box::new(err) }
}

/// The service error code of an SDK error, if it is a service error.
pub(crate) fn service_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_transient_the_rest_permanent() {
        assert!(is_transient(Some("ThrottlingException"), 400));
        assert!(is_transient(Some("ProvisionedThroughputExceededException"), 400));
        assert!(is_transient(None, 503));
        assert!(is_transient(None, 429));
        assert!(!is_transient(Some("ResourceNotFoundException"), 400));
        assert!(!is_transient(Some("AccessDenied"), 403));
        assert!(!is_transient(Some("ValidationException"), 400));
    }
}
