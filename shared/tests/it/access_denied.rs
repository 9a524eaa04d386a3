//! The one access-denied policy (`labelq_shared::adapters::aws`), adapter by adapter, against
//! recorded service answers replayed through the SDK's own HTTP test client: a denial is a
//! permanent backend error, the API answers it with an opaque 500, and the worker retries it and
//! on the last delivery fails the job with `retries_exhausted`, never with a reason about the image.

use std::sync::Arc;

use aws_credential_types::Credentials;
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use axum::body::Body;
use http::StatusCode;
use http_body_util::BodyExt;
use labelq_shared::adapters::aws::{DynamoJobStore, S3ImageStore, SnsPublisher};
use labelq_shared::config::MaxReceives;
use labelq_shared::domain::{ContentType, CorrelationId, FailureCode, JobId, JobStatus, ObjectKey, OwnerId};
use labelq_shared::http::auth::OpenAccess;
use labelq_shared::http::{ApiState, router};
use labelq_shared::ports::{BackendError, Delivery, Envelope, ImageStore, JobStore, MessagePublisher, StoredImage};
use labelq_shared::service::WorkerService;
use labelq_shared::service::{Disposition, Stores, SubmitConfig, SubmitService, WorkerConfig};
use labelq_testkit::detectors::StubDetector;
use labelq_testkit::memory::{MemoryJobs, MemoryPublisher};
use labelq_testkit::{ManualClock, png_header, png_submission};
use tower::ServiceExt;

const REGION: &str = "us-east-1";

/// A client that answers each request with the next of these (status, content type, body).
fn replay(answers: &[(u16, &str, &str)]) -> StaticReplayClient {
    let events = answers
        .iter()
        .map(|(status, content_type, body)| {
            let request =
                http::Request::builder().uri("https://example.amazonaws.com/").body(SdkBody::empty()).unwrap();
            let response = http::Response::builder()
                .status(*status)
                .header("content-type", *content_type)
                .body(SdkBody::from(body.to_string()))
                .unwrap();
            ReplayEvent::new(request, response)
        })
        .collect();
    StaticReplayClient::new(events)
}

fn sdk(http: &StaticReplayClient) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            "test",
        )))
        .http_client(http.clone())
        .build()
}

const S3_DENIED: (u16, &str, &str) = (
    403,
    "application/xml",
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message>\
     <RequestId>4442587FB7D0A2F9</RequestId><HostId>host</HostId></Error>",
);
const DYNAMODB_DENIED: (u16, &str, &str) = (
    400,
    "application/x-amz-json-1.0",
    r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"User: arn:aws:sts::123456789012:assumed-role/worker is not authorized to perform: dynamodb:GetItem"}"#,
);
const SNS_DENIED: (u16, &str, &str) = (
    403,
    "text/xml",
    "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type>\
     <Code>AuthorizationError</Code><Message>User is not authorized to perform: SNS:Publish</Message></Error>\
     <RequestId>e0a3b2c1</RequestId></ErrorResponse>",
);

fn s3_store(http: &StaticReplayClient) -> S3ImageStore {
    S3ImageStore::new(aws_sdk_s3::Client::new(&sdk(http)), "labelq-images")
}

fn assert_denied(err: &BackendError, operation: &str) {
    assert_eq!(err.operation, operation);
    assert!(!err.retryable, "{operation}: a denial does not clear up by retrying the call: {err:?}");
}

#[tokio::test]
async fn every_aws_adapter_reports_a_denial_as_a_permanent_backend_error() {
    let key = ObjectKey::for_image(&JobId::new());
    let image = StoredImage {
        bytes: png_header(100, 100),
        content_type: ContentType::Png,
        owner: OwnerId::parse("alice").unwrap(),
        sha256: "00".repeat(32),
    };

    let s3 = replay(&[S3_DENIED, S3_DENIED]);
    assert_denied(&s3_store(&s3).get(&key).await.unwrap_err(), "S3 GetObject");
    assert_denied(&s3_store(&s3).put(&key, &image).await.unwrap_err(), "S3 PutObject");

    let dynamodb = replay(&[DYNAMODB_DENIED]);
    let config = sdk(&dynamodb);
    let jobs =
        DynamoJobStore::new(aws_sdk_dynamodb::Client::new(&config), "jobs", aws_sdk_s3::Client::new(&config), "b");
    assert_denied(&jobs.get(&JobId::new()).await.unwrap_err(), "DynamoDB GetItem");

    let sns = replay(&[SNS_DENIED]);
    let publisher = SnsPublisher::new(aws_sdk_sns::Client::new(&sdk(&sns)), "arn:aws:sns:us-east-1:123456789012:t");
    let job = labelq_shared::domain::Job::new(labelq_shared::domain::NewJob {
        id: JobId::new(),
        owner: OwnerId::parse("alice").unwrap(),
        image: labelq_shared::domain::ImageMeta {
            object_key: key.clone(),
            content_type: ContentType::Png,
            size: 1,
            width: 100,
            height: 100,
            sha256: "00".repeat(32),
        },
        idempotency_key: None,
        correlation_id: CorrelationId::new(),
        callback: None,
        source: None,
        now: time::OffsetDateTime::now_utc(),
        ttl: std::time::Duration::from_secs(60),
    });
    assert_denied(&publisher.publish(&Envelope::for_job(&job)).await.unwrap_err(), "SNS Publish");
}

#[tokio::test]
async fn the_api_answers_a_denial_with_an_opaque_500() {
    let http = replay(&[DYNAMODB_DENIED]);
    let config = sdk(&http);
    let jobs =
        DynamoJobStore::new(aws_sdk_dynamodb::Client::new(&config), "jobs", aws_sdk_s3::Client::new(&config), "b");
    let stores = Stores { images: Arc::new(s3_store(&http)), jobs: Arc::new(jobs) };
    let auth = Arc::new(OpenAccess::new(OwnerId::parse("alice").unwrap()));
    let app = router(ApiState::new(stores, None, Arc::new(ManualClock::default()), auth));

    let request = http::Request::get(format!("/v1/images/{}", JobId::new())).body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["type"], "https://labelq.dev/problems/internal");
    assert!(!String::from_utf8_lossy(&body).contains("authorized"), "the cause stays in the log: {problem}");
}

/// The image is there, but the worker's role may not read it: the job is not failed as
/// `image_missing` (nothing is wrong with the image); it is retried, and on the last delivery it
/// fails with `retries_exhausted` and the message is dead-lettered.
#[tokio::test]
async fn a_worker_denied_the_image_retries_then_fails_the_job_as_retries_exhausted() {
    let http = replay(&[S3_DENIED, S3_DENIED]);
    let jobs = Arc::new(MemoryJobs::default());
    let clock = Arc::new(ManualClock::default());
    let publisher = Arc::new(MemoryPublisher::default());
    let stores = Stores { images: Arc::new(s3_store(&http)), jobs: jobs.clone() };
    // Submitted through an in-memory image store (the denial is the worker's, not the API's).
    let submit = SubmitService::new(
        Stores { images: Arc::new(labelq_testkit::memory::MemoryImages::default()), jobs: jobs.clone() },
        publisher.clone(),
        clock.clone(),
        SubmitConfig::default(),
    );
    let request = png_submission("alice");
    let id = submit.submit(request).await.unwrap().job.id;
    let config = WorkerConfig { max_receives: "2".parse::<MaxReceives>().unwrap(), ..WorkerConfig::default() };
    let worker = WorkerService::new(stores, Arc::new(StubDetector::default()), clock, config);
    let delivery = |receive_count| Delivery {
        message_id: "m-1".into(),
        receipt: format!("r-{receive_count}"),
        body: publisher.published()[0].message.to_json(),
        correlation_id: None,
        receive_count,
    };

    assert!(matches!(worker.handle(&delivery(1)).await, Disposition::Retry(_)));
    assert_eq!(jobs.snapshot(&id).unwrap().status(), JobStatus::Pending, "given back, not failed");
    assert_eq!(worker.handle(&delivery(2)).await, Disposition::DeadLetter);
    let failed = jobs.snapshot(&id).unwrap();
    assert_eq!(failed.failure().map(|f| f.code), Some(FailureCode::RetriesExhausted));
    assert_eq!(http.actual_requests().count(), 2, "one GetObject per delivery");
}
