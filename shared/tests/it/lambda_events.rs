//! The Lambda handlers fed real event JSON: the fixtures that ship with the `aws_lambda_events`
//! crate (API Gateway HTTP API with a JWT authorizer, SQS, SNS), read from the crate's own source
//! at test time and adapted to labelq's routes and messages.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use base64::Engine;
use http::StatusCode;
use http_body_util::BodyExt;
use labelq_shared::domain::{ContentType, CorrelationId, JobId, JobStatus, OwnerId, SystemClock};
use labelq_shared::http::{ApiState, Uploads, router};
use labelq_shared::lambda::{ApiGatewayJwt, handle_sqs_batch};
use labelq_shared::ports::Envelope;
use labelq_shared::service::{Stores, SubmitConfig, SubmitRequest, SubmitService, Upload, WorkerConfig, WorkerService};
use labelq_testkit::detectors::{Behaviour, FailFor, ScriptedDetector};
use labelq_testkit::memory::{MemoryImages, MemoryJobs, MemoryPublisher, RecordingQueue};
use labelq_testkit::png_header;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A fixture from the `aws_lambda_events` crate this build uses (located with `cargo metadata`).
pub(crate) fn fixture(name: &str) -> Value {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Only this platform's packages: the others may not be downloaded.
        let output = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", "host-tuple"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("running cargo metadata");
        let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
        let manifest = metadata["packages"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "aws_lambda_events"))
            .and_then(|p| p["manifest_path"].as_str())
            .expect("aws_lambda_events in the dependency graph");
        PathBuf::from(manifest).parent().expect("a crate directory").join("src/fixtures")
    });
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

struct Api {
    jobs: Arc<MemoryJobs>,
    app: axum::Router,
}

/// In-memory stores, as the services take them.
fn stores(images: &Arc<MemoryImages>, jobs: &Arc<MemoryJobs>) -> Stores {
    Stores { images: images.clone(), jobs: jobs.clone() }
}

fn api() -> Api {
    let jobs = Arc::new(MemoryJobs::default());
    let uploads =
        Uploads { publisher: Arc::new(MemoryPublisher::default()), config: SubmitConfig::default(), targets: None };
    let state =
        ApiState::new(stores(&Arc::default(), &jobs), Some(uploads), Arc::new(SystemClock), Arc::new(ApiGatewayJwt));
    Api { jobs, app: router(state) }
}

/// The JWT-authorizer HTTP API fixture, turned into a labelq request from `sub`.
fn api_event(method: &str, path: &str, sub: &str, body: Option<(&[u8], bool)>) -> Value {
    let mut event = fixture("example-apigw-v2-request-jwt-authorizer.json");
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!("");
    event["routeKey"] = json!(format!("{method} {path}"));
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["authorizer"]["jwt"]["claims"] =
        json!({ "sub": sub, "iss": "https://cognito-idp.example" });
    for key in ["queryStringParameters", "pathParameters", "cookies"] {
        event.as_object_mut().map(|o| o.remove(key));
    }
    match body {
        Some((bytes, true)) => {
            event["headers"] = json!({ "content-type": "image/png" });
            event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            event["isBase64Encoded"] = json!(true);
        }
        Some((bytes, false)) => {
            event["headers"] = json!({ "content-type": "image/png" });
            event["body"] = json!(String::from_utf8_lossy(bytes));
            event["isBase64Encoded"] = json!(false);
        }
        None => {
            event["headers"] = json!({});
            event.as_object_mut().map(|o| o.remove("body"));
            event["isBase64Encoded"] = json!(false);
        }
    }
    event
}

async fn call(app: &axum::Router, event: &Value) -> (StatusCode, Value) {
    let request = lambda_http::request::from_str(&event.to_string()).expect("an API Gateway event");
    let response = app.clone().oneshot(request).await.expect("the router answers");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_base64_upload_through_api_gateway_is_accepted_for_the_jwt_subject() {
    let api = api();
    let png = png_header(120, 90);

    let (status, job) = call(&api.app, &api_event("POST", "/v1/images", "user-1", Some((&png, true)))).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = JobId::parse(job["id"].as_str().unwrap()).unwrap();
    let stored = api.jobs.snapshot(&id).unwrap();
    assert_eq!(stored.owner.as_str(), "user-1");
    assert_eq!(stored.image.size, png.len() as u64, "the base64 body was decoded");

    let path = format!("/v1/images/{id}");
    assert_eq!(call(&api.app, &api_event("GET", &path, "user-1", None)).await.0, StatusCode::OK);
    assert_eq!(call(&api.app, &api_event("GET", &path, "user-2", None)).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_text_body_that_is_not_an_image_is_refused() {
    let api = api();
    let (status, problem) =
        call(&api.app, &api_event("POST", "/v1/images", "user-1", Some((b"{\"a\": 1}", false)))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["type"], "https://labelq.dev/problems/not-an-image");
    assert_eq!(api.jobs.len(), 0);
}

#[tokio::test]
async fn a_request_that_did_not_pass_the_jwt_authorizer_is_refused() {
    let api = api();
    let mut event = fixture("example-apigw-v2-request-no-authorizer.json");
    event["rawPath"] = json!("/v1/images");
    event["requestContext"]["http"]["path"] = json!("/v1/images");
    event["requestContext"]["http"]["method"] = json!("GET");
    let (status, problem) = call(&api.app, &event).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");

    // A JWT without a sub claim is refused too.
    let mut event = api_event("GET", "/v1/images", "x", None);
    event["requestContext"]["authorizer"]["jwt"]["claims"] = json!({ "iss": "https://cognito-idp.example" });
    assert_eq!(call(&api.app, &event).await.0, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------------
// The worker: SQS batches
// ---------------------------------------------------------------------------------------------

struct Worker {
    stores: Stores,
    jobs: Arc<MemoryJobs>,
    detector: Arc<FailFor>,
    submit: SubmitService,
    worker: WorkerService,
    queue: RecordingQueue,
}

fn worker() -> Worker {
    let jobs = Arc::new(MemoryJobs::default());
    let stores = stores(&Arc::default(), &jobs);
    let detector = Arc::new(FailFor::default());
    let clock = Arc::new(SystemClock);
    let publisher = Arc::new(MemoryPublisher::default());
    let submit = SubmitService::new(stores.clone(), publisher, clock.clone(), SubmitConfig::default());
    let worker = WorkerService::new(stores.clone(), detector.clone(), clock, WorkerConfig::default());
    Worker { stores, jobs, detector, submit, worker, queue: RecordingQueue::default() }
}

impl Worker {
    async fn job(&self, width: u32) -> (JobId, String, bytes::Bytes) {
        let png = png_header(width, 100);
        let request = SubmitRequest {
            owner: OwnerId::parse("user-1").unwrap(),
            upload: Upload { bytes: png.clone(), declared: ContentType::Png },
            idempotency_key: None,
            correlation_id: CorrelationId::new(),
            callback: None,
            source: None,
        };
        let job = self.submit.submit(request).await.unwrap().job;
        (job.id, Envelope::for_job(&job).message.to_json(), png)
    }
}

/// The SQS fixture's record with this id and body.
fn record(message_id: &str, body: &str) -> Value {
    let mut record = fixture("example-sqs-event.json")["Records"][0].clone();
    record["messageId"] = json!(message_id);
    record["receiptHandle"] = json!(format!("receipt-{message_id}"));
    record["body"] = json!(body);
    record
}

/// The body SQS delivers when the subscription is not raw: the SNS notification envelope
/// (the SNS fixture's message), wrapping our message.
fn sns_envelope(message: &str) -> String {
    let mut sns = fixture("example-sns-event.json")["Records"][0]["Sns"].clone();
    sns["Message"] = json!(message);
    sns["MessageAttributes"] = json!({ "correlation_id": { "Type": "String", "Value": "corr-from-sns" } });
    sns.to_string()
}

fn event(records: Vec<Value>) -> SqsEvent {
    serde_json::from_value(json!({ "Records": records })).expect("an SQS event")
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
}

#[tokio::test]
async fn a_batch_with_one_failing_record_reports_exactly_that_record() {
    let w = worker();
    let (raw_id, raw_body, _) = w.job(100).await;
    let (wrapped_id, wrapped_body, _) = w.job(101).await;
    let (failing_id, failing_body, failing_png) = w.job(102).await;
    w.detector.fail(failing_png);
    let mut nameless = record("ignored", "{}");
    nameless.as_object_mut().map(|r| r.remove("messageId"));

    let batch = event(vec![
        record("m-raw", &raw_body),
        record("m-sns", &sns_envelope(&wrapped_body)),
        record("m-failing", &failing_body),
        record("m-poison", "this is not a labelq message"),
        nameless,
    ]);
    let response = handle_sqs_batch(&w.worker, &w.queue, batch, 4, None).await;

    assert_eq!(failed_ids(&response), ["m-failing"]);
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(json, json!({ "batchItemFailures": [{ "itemIdentifier": "m-failing" }] }));
    let retried = w.queue.retried.lock().unwrap().clone();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].0, "m-failing");
    assert!(retried[0].1 > std::time::Duration::ZERO, "the backoff is applied as visibility");
    for id in [raw_id, wrapped_id] {
        assert_eq!(w.jobs.snapshot(&id).unwrap().status(), JobStatus::Succeeded);
    }
    assert_eq!(w.jobs.snapshot(&failing_id).unwrap().status(), JobStatus::Pending, "given back for the retry");
}

#[tokio::test]
async fn a_batch_where_everything_succeeds_reports_an_empty_list() {
    let w = worker();
    let (_, body, _) = w.job(100).await;
    let response = handle_sqs_batch(&w.worker, &w.queue, event(vec![record("m-1", &body)]), 4, None).await;
    assert_eq!(serde_json::to_value(&response).unwrap(), json!({ "batchItemFailures": [] }));
}

#[tokio::test]
async fn a_redelivered_record_of_a_finished_job_is_a_no_op() {
    let w = worker();
    let (id, body, _) = w.job(100).await;
    handle_sqs_batch(&w.worker, &w.queue, event(vec![record("m-1", &body)]), 1, None).await;
    let before = w.jobs.snapshot(&id).unwrap();
    let response = handle_sqs_batch(&w.worker, &w.queue, event(vec![record("m-1", &body)]), 1, None).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(w.jobs.snapshot(&id).unwrap(), before);
}

#[tokio::test]
async fn records_left_at_the_deadline_are_reported_for_retry_and_give_their_job_back() {
    let w = worker();
    let (id, body, _) = w.job(100).await;
    // A detector that never finishes, and a deadline 50 ms away.
    let stuck = ScriptedDetector::new(Behaviour::Block);
    let slow = WorkerService::new(w.stores.clone(), stuck, Arc::new(SystemClock), WorkerConfig::default());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(50);

    let response = handle_sqs_batch(&slow, &w.queue, event(vec![record("m-late", &body)]), 1, Some(deadline)).await;

    assert_eq!(failed_ids(&response), ["m-late"]);
    // Its job was given back, so the retry can claim it at once rather than wait out the lease.
    assert_eq!(w.jobs.snapshot(&id).unwrap().status(), JobStatus::Pending);
}

/// The functions run on a current-thread runtime (`labelq_shared::lambda`, "The runtime"): a
/// batch's records must still be in flight together, as many as the bound allows and no more.
#[tokio::test(flavor = "current_thread")]
async fn a_batchs_records_overlap_up_to_the_bound_on_one_thread() {
    let w = worker();
    let mut records = Vec::new();
    for i in 0..4 {
        let (_, body, _) = w.job(100 + i).await;
        records.push(record(&format!("m-{i}"), &body));
    }
    let detector = ScriptedDetector::new(Behaviour::Block);
    let held = Arc::new(WorkerService::new(
        w.stores.clone(),
        detector.clone(),
        Arc::new(SystemClock),
        WorkerConfig::default(),
    ));
    let queue = Arc::new(RecordingQueue::default());
    let batch = tokio::spawn({
        let (held, queue) = (held.clone(), queue.clone());
        async move { handle_sqs_batch(&held, &*queue, event(records), 2, None).await }
    });
    // Lets the batch run until `calls` records have entered the detector, then a while longer,
    // so a third record would have been started by now if the bound let it.
    let settle = |calls: usize| {
        let detector = detector.clone();
        async move {
            let entered = async {
                while detector.calls() < calls {
                    tokio::task::yield_now().await;
                }
            };
            let reached = tokio::time::timeout(std::time::Duration::from_secs(5), entered).await.is_ok();
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            reached
        }
    };

    assert!(settle(2).await, "two records in the detector at once");
    assert_eq!(detector.calls(), 2, "no more than the bound");
    detector.release.notify_waiters();
    assert!(settle(4).await, "the other two started as the first finished");
    detector.release.notify_waiters();
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), batch).await;

    let response = response.expect("the batch finished").expect("the batch did not panic");
    assert!(response.batch_item_failures.is_empty());
    assert!(queue.retried.lock().unwrap().is_empty());
}
