//! The AWS path end to end on LocalStack: the request-handler, worker and status-api code on the
//! AWS SDK adapters, against the resources `infra/storage.yaml` deploys (one stack per test).
//! LocalStack cannot run Lambda here, so the tests invoke the functions' handlers themselves, the
//! way API Gateway and the SQS event source mapping would.
//!
//! Run by `make test` after `localstack/start.sh`:
//! `cargo test --workspace --features labelq-e2e/localstack --test e2e localstack::`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_dynamodb::types::AttributeValue;
use axum::body::Body;
use http::StatusCode;
use labelq_e2e::aws::{Stack, api_request};
use labelq_e2e::{FailFor, FlakyDetector, ServeProcess, StubDetector, model_dir, onnx_detector, photo, png};
use labelq_shared::adapters::aws::{
    AwsStores, DynamoLiveConnections, S3Notification, SnsPublisher, SqsQueue, parse_s3_notification, s3_client,
    sns_publisher,
};
use labelq_shared::config::{Concurrency, MaxReceives};
use labelq_shared::detectors::{DetectorConfig, ModelFeatures};
use labelq_shared::domain::{
    BoundingBox, Confidence, DetectOptions, DominantColor, Findings, ImageProperties, ImageQuality, JobId, JobStatus,
    Label, LabelName, Message, SystemClock, TextDetection,
};
use labelq_shared::http::{ApiState, Uploads, router};
use labelq_shared::lambda::{
    ApiGatewayJwt, RequestHandlerConfig, WorkerFunction, WorkerFunctionConfig, record_from_sdk, request_handler_app,
    status_api_app,
};
use labelq_shared::ports::{DefaultCallbacks, JobStore};
use labelq_shared::service::{Backoff, SubmitConfig, WorkerConfig};
use labelq_testkit::contract::{
    default_callbacks_contract, image_store_contract, job_store_contract, live_connections_contract,
};
use serde_json::Value;
use tower::ServiceExt;

mod callbacks;
mod drops;
mod uploads;

async fn call(app: &axum::Router, request: http::Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.expect("the router answers");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("a body");
    (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn handler_config(stack: &Stack) -> RequestHandlerConfig {
    RequestHandlerConfig {
        resources: stack.resources(),
        topic_arn: stack.output("TopicArn"),
        submit: SubmitConfig::default(),
    }
}

fn worker_config(stack: &Stack, max_receives: u32) -> WorkerFunctionConfig {
    WorkerFunctionConfig {
        resources: stack.resources(),
        queue_url: stack.output("QueueUrl"),
        completion_topic_arn: None,
        detector: DetectorConfig::Onnx { model_dir: model_dir(), sessions: 4, features: ModelFeatures::ALL },
        concurrency: "4".parse::<Concurrency>().expect("4"),
        worker: WorkerConfig {
            max_receives: max_receives.to_string().parse::<MaxReceives>().expect("a valid count"),
            lease: Duration::from_secs(30),
            backoff: Backoff { base: Duration::from_millis(100), max: Duration::from_millis(400) },
            detect: DetectOptions { max_labels: 10, min_confidence: Confidence::new(50.0).expect("50") },
            upload_grace: Duration::from_millis(500),
        },
        drops: None,
    }
}

async fn submit(app: &axum::Router, sub: &str, body: Vec<u8>, content_type: &str) -> JobId {
    let (status, _, job) = call(app, api_request("POST", "/v1/images", sub, body, content_type)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    JobId::parse(job["id"].as_str().expect("an id")).expect("a job id")
}

/// Receives until `count` messages arrived (or fails after 20 s).
async fn receive(queue: &SqsQueue, count: usize) -> Vec<aws_sdk_sqs::types::Message> {
    let started = Instant::now();
    let mut messages = Vec::new();
    while messages.len() < count {
        assert!(started.elapsed() < Duration::from_secs(20), "only {} of {count} messages arrived", messages.len());
        for message in
            queue.receive_messages(10, Duration::from_secs(30), Duration::from_secs(1)).await.expect("receive")
        {
            // The bucket's notification configuration may announce itself with S3's test event.
            if let Some(Ok(S3Notification::Test)) = parse_s3_notification(message.body().unwrap_or_default()) {
                queue.delete(message.receipt_handle().expect("a receipt")).await.expect("delete");
                continue;
            }
            messages.push(message);
        }
    }
    messages
}

fn event(messages: Vec<aws_sdk_sqs::types::Message>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages.into_iter().map(record_from_sdk).collect();
    event
}

/// What the worker was handed, by kind.
#[derive(Debug, Default)]
struct Seen {
    /// The S3 notifications' bodies.
    notifications: Vec<String>,
    jobs: usize,
}

/// Hands everything on the job queue to the worker, as the event source mapping would, until
/// `done` holds (or fails after 60 s); deletes what the worker acknowledged.
async fn work_until(stack: &Stack, worker: &WorkerFunction, seen: &mut Seen, done: impl AsyncFn() -> bool) {
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&stack.sdk), stack.output("QueueUrl"));
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(60), "not done after 60 s; seen {seen:?}");
        let messages =
            queue.receive_messages(10, Duration::from_secs(30), Duration::from_secs(1)).await.expect("receive");
        if messages.is_empty() {
            continue;
        }
        for m in &messages {
            match parse_s3_notification(m.body().unwrap_or_default()) {
                Some(Ok(S3Notification::Test)) => {}
                Some(_) => seen.notifications.push(m.body().unwrap_or_default().to_owned()),
                None => seen.jobs += 1,
            }
        }
        hand_over(&queue, worker, &messages).await;
    }
}

/// Hands one batch to the worker as the event source mapping would, deletes what it
/// acknowledged, and returns the ids of the messages it retried.
async fn hand_over(queue: &SqsQueue, worker: &WorkerFunction, messages: &[aws_sdk_sqs::types::Message]) -> Vec<String> {
    let retried = failed(&worker.handle(event(messages.to_vec()), None).await);
    for m in messages.iter().filter(|m| !retried.contains(&m.message_id().unwrap_or_default().to_owned())) {
        queue.delete(m.receipt_handle().expect("a receipt")).await.expect("delete");
    }
    retried
}

fn job_of(message: &aws_sdk_sqs::types::Message) -> JobId {
    Message::parse(message.body().unwrap_or_default()).expect("a labelq message").job_id()
}

/// The job's raw DynamoDB item, as the table stores it.
async fn job_item(stack: &Stack, id: &JobId) -> std::collections::HashMap<String, AttributeValue> {
    aws_sdk_dynamodb::Client::new(&stack.sdk)
        .get_item()
        .table_name(stack.output("TableName"))
        .key("pk", AttributeValue::S(format!("job#{id}")))
        .send()
        .await
        .expect("get_item")
        .item
        .expect("the job item")
}

fn failed(response: &SqsBatchResponse) -> Vec<String> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect()
}

async fn stored_status(adapters: &AwsStores, id: &JobId) -> JobStatus {
    adapters.jobs.get(id).await.expect("get").expect("the job").status()
}

#[tokio::test]
async fn a_submission_flows_through_s3_dynamodb_sns_sqs_the_worker_and_the_status_api() {
    let stack = Stack::deploy(&[]).await;
    let sdk = &stack.sdk;
    let api = request_handler_app(sdk, &handler_config(&stack));

    let id = submit(&api, "user-1", photo("coffee.png"), "image/png").await;

    // The image is in S3, encrypted, typed, tagged with its owner.
    let object = s3_client(sdk)
        .head_object()
        .bucket(stack.output("BucketName"))
        .key(format!("images/{id}"))
        .send()
        .await
        .expect("the image object");
    assert_eq!(object.content_type(), Some("image/png"));
    assert_eq!(object.metadata().and_then(|m| m.get("owner")).map(String::as_str), Some("user-1"));
    assert_eq!(object.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
    // The job is PENDING in DynamoDB, with its TTL.
    let item = job_item(&stack, &id).await;
    assert_eq!(item.get("status").and_then(|v| v.as_s().ok()).map(String::as_str), Some("PENDING"));
    assert!(item.contains_key("ttl"));
    // SNS delivered it to SQS raw, with the correlation id as an attribute.
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(sdk), stack.output("QueueUrl"));
    let messages = receive(&queue, 1).await;
    assert_eq!(job_of(&messages[0]), id);
    let attributes = messages[0].message_attributes().expect("message attributes");
    assert!(attributes.contains_key("correlation_id"));

    // The worker (built-in model; LocalStack has no Rekognition) labels it.
    let function = WorkerFunction::new(sdk, &worker_config(&stack, 5), onnx_detector());
    let batch = event(messages.clone());
    // cargo-lambda's emulator sends a constant 600000 as the deadline: a past one is ignored.
    let response = function.handle(batch.clone(), Some(600_000)).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    queue.delete(messages[0].receipt_handle().expect("a receipt")).await.expect("delete");

    // The status-api serves the labels to the owner, and nobody else.
    let status = status_api_app(sdk, &stack.resources());
    let path = format!("/v1/images/{id}");
    let (code, _, job) = call(&status, api_request("GET", &path, "user-1", vec![], "application/json")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    let labels = job["labels"].as_array().expect("labels");
    assert!(labels.iter().any(|l| l["name"] == "Espresso"), "{job}");
    let (code, _, _) = call(&status, api_request("GET", &path, "user-2", vec![], "application/json")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, list) = call(&status, api_request("GET", "/v1/images?label=espresso", "user-1", vec![], "")).await;
    assert_eq!((code, list["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));

    // A redelivery of the same message is a no-op.
    let adapters = AwsStores::new(sdk, &stack.resources());
    let before = adapters.jobs.get(&id).await.expect("get").expect("the job");
    let again = function.handle(batch, None).await;
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(adapters.jobs.get(&id).await.expect("get").expect("the job"), before);

    // Delete removes the record and the image.
    let (code, _, _) = call(&status, api_request("DELETE", &path, "user-1", vec![], "")).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    assert!(adapters.jobs.get(&id).await.expect("get").is_none());
    let listed = s3_client(sdk).list_objects_v2().bucket(stack.output("BucketName")).send().await.expect("list");
    assert_eq!(listed.key_count(), Some(0));
    stack.delete().await;
}

#[tokio::test]
async fn poison_messages_fail_their_job_or_are_dropped_and_never_retried() {
    let stack = Stack::deploy(&[]).await;
    let sdk = &stack.sdk;
    let api = request_handler_app(sdk, &handler_config(&stack));
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(sdk), stack.output("QueueUrl"));
    let id = submit(&api, "user-1", png(100, 100), "image/png").await;
    // Take the job's real message out of the way; publish a message of a future version naming the
    // job, and one that is not a labelq message at all.
    let real = receive(&queue, 1).await;
    queue.delete(real[0].receipt_handle().expect("receipt")).await.expect("delete");
    let future = real[0].body().expect("a body").replace("\"version\":1", "\"version\":9");
    let sns = aws_sdk_sns::Client::new(sdk);
    for body in [future.as_str(), "hello, not json"] {
        sns.publish().topic_arn(stack.output("TopicArn")).message(body).send().await.expect("publish");
    }

    let function = WorkerFunction::new(sdk, &worker_config(&stack, 5), Arc::new(StubDetector::default()));
    let response = function.handle(event(receive(&queue, 2).await), None).await;

    assert!(response.batch_item_failures.is_empty(), "poison is acknowledged, not retried: {response:?}");
    let job = AwsStores::new(sdk, &stack.resources()).jobs.get(&id).await.expect("get").expect("the job");
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.failure().map(|f| f.code.as_str()), Some("invalid_message"));
    stack.delete().await;
}

#[tokio::test]
async fn a_message_that_fails_transiently_every_time_lands_in_the_dead_letter_queue() {
    let stack = Stack::deploy(&[("MaxReceiveCount", "2"), ("QueueVisibilityTimeoutSeconds", "2")]).await;
    let sdk = &stack.sdk;
    let api = request_handler_app(sdk, &handler_config(&stack));
    let id = submit(&api, "user-1", png(100, 100), "image/png").await;

    // The event source mapping's loop, with a detector that never recovers.
    let never = Arc::new(FlakyDetector::new(Arc::new(StubDetector::default()), 1.0, 3));
    let function = WorkerFunction::new(sdk, &worker_config(&stack, 2), never);
    let queue = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), stack.output("QueueUrl")));
    let stop = tokio_util::sync::CancellationToken::new();
    let config = labelq::event_source::EventSourceConfig {
        pollers: 1,
        batch_size: 10,
        concurrency: 2,
        visibility: Duration::from_secs(2),
    };
    let mut pollers = labelq::event_source::spawn(
        queue,
        function.worker().clone(),
        &stack.output("BucketName"),
        config,
        stop.clone(),
    );

    let dlq = SqsQueue::new(aws_sdk_sqs::Client::new(sdk), stack.output("DeadLetterQueueUrl"));
    let started = Instant::now();
    let dead = loop {
        let got = dlq.receive_messages(1, Duration::from_secs(30), Duration::from_secs(1)).await.expect("receive");
        if let Some(message) = got.into_iter().next() {
            break message;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "nothing reached the dead-letter queue");
    };
    stop.cancel();
    while pollers.join_next().await.is_some() {}

    assert_eq!(job_of(&dead), id);
    let job = AwsStores::new(sdk, &stack.resources()).jobs.get(&id).await.expect("get").expect("the job");
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.failure().map(|f| f.code.as_str()), Some("retries_exhausted"));
    assert_eq!(job.attempts, 2);
    stack.delete().await;
}

#[tokio::test]
async fn a_batch_with_one_bad_record_reports_exactly_that_record() {
    let stack = Stack::deploy(&[]).await;
    let sdk = &stack.sdk;
    let api = request_handler_app(sdk, &handler_config(&stack));
    let bodies = [png(100, 100), png(101, 100), png(102, 100)];
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(submit(&api, "user-1", body.clone(), "image/png").await);
    }
    let detector = Arc::new(FailFor::default());
    detector.fail(bodies[1].clone());
    let function = WorkerFunction::new(sdk, &worker_config(&stack, 5), detector);

    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(sdk), stack.output("QueueUrl"));
    let messages = receive(&queue, 3).await;
    let bad =
        messages.iter().find(|m| job_of(m) == ids[1]).and_then(|m| m.message_id()).expect("the bad one").to_owned();
    let response = function.handle(event(messages), None).await;

    assert_eq!(failed(&response), std::slice::from_ref(&bad));
    let adapters = AwsStores::new(sdk, &stack.resources());
    assert_eq!(stored_status(&adapters, &ids[0]).await, JobStatus::Succeeded);
    assert_eq!(stored_status(&adapters, &ids[1]).await, JobStatus::Pending);
    assert_eq!(stored_status(&adapters, &ids[2]).await, JobStatus::Succeeded);
    // The function set the failed record's visibility to its backoff (under a second, against the
    // 30 s it was received with) through the SQS client it builds on first use: it is back at once.
    let started = Instant::now();
    while !receive(&queue, 1).await.iter().any(|m| m.message_id() == Some(bad.as_str())) {
        assert!(started.elapsed() < Duration::from_secs(20), "the failed record stayed hidden: no backoff was set");
    }
    stack.delete().await;
}

#[tokio::test]
async fn a_failed_publish_rolls_back_and_a_retry_with_the_same_key_succeeds() {
    let stack = Stack::deploy(&[]).await;
    let sdk = &stack.sdk;
    let adapters = AwsStores::new(sdk, &stack.resources());
    let app_with = |publisher: Arc<SnsPublisher>| {
        let uploads = Uploads { publisher, config: SubmitConfig::default(), targets: None };
        let state = ApiState::new(adapters.stores(), Some(uploads), Arc::new(SystemClock), Arc::new(ApiGatewayJwt));
        router(state)
    };
    // SNS unreachable: S3 and DynamoDB are written, then the publish fails.
    let unreachable = aws_sdk_sns::config::Builder::from(sdk).endpoint_url("http://127.0.0.1:9").build();
    let sns = aws_sdk_sns::Client::from_conf(unreachable);
    let broken = app_with(Arc::new(SnsPublisher::new(sns, stack.output("TopicArn"))));
    let mut request = api_request("POST", "/v1/images", "user-1", png(100, 100), "image/png");
    request.headers_mut().insert("idempotency-key", "retry-me".parse().expect("header"));

    let (status, headers, problem) = call(&broken, request).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(headers.contains_key("retry-after"));
    let table =
        aws_sdk_dynamodb::Client::new(sdk).scan().table_name(stack.output("TableName")).send().await.expect("scan");
    assert_eq!(table.count(), 0, "no job or key is left behind");
    let bucket = s3_client(sdk).list_objects_v2().bucket(stack.output("BucketName")).send().await.expect("list");
    assert_eq!(bucket.key_count(), Some(0), "no image is left behind");

    let working = app_with(sns_publisher(sdk, &stack.output("TopicArn")));
    let mut retry = api_request("POST", "/v1/images", "user-1", png(100, 100), "image/png");
    retry.headers_mut().insert("idempotency-key", "retry-me".parse().expect("header"));
    let (status, _, job) = call(&working, retry).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(sdk), stack.output("QueueUrl"));
    assert_eq!(receive(&queue, 1).await.len(), 1);
    stack.delete().await;
}

#[tokio::test]
async fn results_too_large_for_an_item_are_kept_in_s3_behind_a_pointer() {
    let stack = Stack::deploy(&[]).await;
    let sdk = &stack.sdk;
    let api = request_handler_app(sdk, &handler_config(&stack));
    let id = submit(&api, "user-1", png(100, 100), "image/png").await;
    let adapters = AwsStores::new(sdk, &stack.resources());
    let job = adapters.jobs.get(&id).await.expect("get").expect("the job");
    // About 600 KB of labels: over DynamoDB's 400 KB item limit.
    let labels: Vec<Label> = (0..2500)
        .map(|i| Label {
            name: format!("label {i} {}", "x".repeat(200)),
            confidence: Confidence::new(60.0).expect("60"),
            parents: vec![LabelName::new("Thing")],
            aliases: vec![],
            categories: vec![],
            instances: vec![],
        })
        .collect();
    let done = job.claim(job.created_at, Duration::from_secs(60)).expect("claim");
    adapters.jobs.update(&done).await.expect("claim");
    // Text and properties travel with the labels, to S3 and back.
    let text_detections = (0..50)
        .map(|i| TextDetection {
            detected_text: format!("line {i}"),
            confidence: Confidence::new(90.0).expect("90"),
            bounding_box: BoundingBox { width: 0.5, height: 0.01, left: 0.1, top: i as f32 / 60.0 },
        })
        .collect();
    let image_properties = Some(ImageProperties {
        quality: ImageQuality { brightness: 50.0, sharpness: 75.0, contrast: 25.0 },
        dominant_colors: vec![DominantColor::new(10, 20, 30, 50.0)],
    });
    let findings = Findings { labels, text_detections, image_properties };
    let done = done.succeed(findings, done.updated_at).expect("succeed");

    adapters.jobs.update(&done).await.expect("a large result is stored");

    let item = job_item(&stack, &id).await;
    assert_eq!(item.get("labels_ref").and_then(|v| v.as_s().ok()), Some(&format!("results/{id}.json")));
    let read = adapters.jobs.get(&id).await.expect("get").expect("the job");
    assert_eq!(read.labels().map(<[Label]>::len), Some(2500));
    assert!(!item.contains_key("text_detections"), "the text went to S3 with the labels");
    assert_eq!(read, done);
    let owner = read.owner.clone();
    adapters.jobs.delete(&owner, &id).await.expect("delete");
    let results = s3_client(sdk).list_objects_v2().bucket(stack.output("BucketName")).prefix("results/").send().await;
    assert_eq!(results.expect("list").key_count(), Some(0), "the results object went with the job");
    stack.delete().await;
}

#[tokio::test]
async fn the_dynamodb_and_s3_stores_keep_their_contracts() {
    let stack = Stack::deploy(&[]).await;
    let adapters = AwsStores::new(&stack.sdk, &stack.resources());
    // A default callback item in the table while the job store is checked: it must not show up
    // in any listing or lookup of jobs.
    let owner = labelq_shared::domain::OwnerId::parse("alice").expect("owner");
    let url = labelq_shared::domain::CallbackUrl::parse("https://hooks.example.com/x").expect("url");
    let callback = labelq_shared::domain::DefaultCallback::new(url, time::OffsetDateTime::now_utc());
    adapters.defaults.put(&owner, &callback).await.expect("put");
    job_store_contract(&*adapters.jobs).await;
    default_callbacks_contract(&*adapters.defaults).await;
    image_store_contract(&*adapters.images).await;
    // The WebSocket API's connections, in their own table (found by owner through its index).
    let connections =
        DynamoLiveConnections::new(aws_sdk_dynamodb::Client::new(&stack.sdk), stack.output("ConnectionsTableName"));
    live_connections_contract(&connections).await;
    stack.delete().await;
}

#[tokio::test]
async fn labelq_serve_with_the_aws_backend_labels_posted_and_uploaded_images_and_calls_the_default_callback() {
    let stack = Stack::deploy(&[]).await;
    let receiver = labelq_e2e::receiver::Receiver::start([200u16]).await;
    let serve = ServeProcess::start(
        env!("CARGO_BIN_EXE_labelq-under-test"),
        &[
            "--backend",
            "aws",
            "--workers",
            "2",
            "--max-receives",
            "5",
            "--visibility-timeout",
            "180s",
            "--callback-allow-private",
        ],
        &stack.env(),
    );
    let base = serve.base.clone();
    let http = reqwest::Client::new();
    // The owner's default callback, an item of the stack's table: the job names none of its own.
    let set = http
        .put(format!("{base}/v1/callback"))
        .json(&serde_json::json!({ "url": receiver.url("/hook") }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(set.status(), 200);
    let response = http
        .post(format!("{base}/v1/images"))
        .header("content-type", "image/png")
        .body(photo("chelsea.png"))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().expect("location").to_owned();
    let started = Instant::now();
    let job = loop {
        let job: Value = http.get(format!("{base}{location}")).send().await.expect("GET").json().await.expect("JSON");
        if job["status"] == "SUCCEEDED" || job["status"] == "FAILED" {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "still {} after a minute", job["status"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The completion topic, the callback queue and the stack's secret, as on Lambda.
    let calls = receiver.wait_for(1, Duration::from_secs(30)).await;

    // A photo over the inline limit: `labelq submit` PUTs it to the presigned S3 URL the server
    // answers with, and the server's worker takes S3's notification of it.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bus-large.png");
    let large = labelq_e2e::large_photo("bus.jpg", 2600);
    std::fs::write(&path, &large).expect("write the photo");
    let submit = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_labelq-under-test"))
            .args(["submit", "--url", &base, "--wait"])
            .arg(&path)
            .env("LABELQ_LOG", "warn")
            .env_remove("LABELQ_TOKENS")
            .output()
            .expect("running labelq submit")
    })
    .await
    .expect("labelq submit ran");
    drop(serve);
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    let uploaded: Value = serde_json::from_slice(&submit.stdout).expect("one JSON document");
    assert_eq!(uploaded["job"]["status"], "SUCCEEDED", "{uploaded}");
    assert_eq!(uploaded["job"]["upload"]["length"], large.len(), "not by direct upload: {uploaded}");

    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert!(job["labels"].as_array().expect("labels").iter().any(|l| l["name"] == "Cat"), "{job}");
    let secrets = labelq_shared::adapters::aws::webhook_secrets(
        &aws_sdk_secretsmanager::Client::new(&stack.sdk),
        &stack.output("CallbackSecretArn"),
    )
    .await
    .expect("the stack's secret");
    calls[0].assert_signed(&secrets);
    assert_eq!(calls[0].json()["data"]["id"], job["id"]);
    stack.delete().await;
}
