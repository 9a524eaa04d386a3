//! Completion events and callbacks on the AWS path: the worker announces every finished job on
//! the completion topic; SNS routes those whose callback waits to the callback queue (the
//! subscription's filter on `callback`), and any other subscriber filters on `status`; the
//! callback function reads its signing secret from Secrets Manager and calls a receiver on
//! 127.0.0.1 (allowed by the explicit setting, as `LABELQ_CALLBACK_ALLOW_PRIVATE=true`).

use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use labelq_e2e::aws::{Stack, api_request};
use labelq_e2e::receiver::Receiver;
use labelq_e2e::{StubDetector, onnx_detector, photo};
use labelq_shared::adapters::aws::{AwsStores, SqsQueue, webhook_secrets};
use labelq_shared::domain::{CallbackStatus, JobId, Message};
use labelq_shared::lambda::{CallbackFunction, CallbackFunctionConfig, WorkerFunction, request_handler_app};
use labelq_shared::ports::JobStore;
use labelq_shared::webhooks::{TargetPolicy, webhook_id};
use std::sync::Arc;

use super::{call, event, failed, handler_config, receive, worker_config};

const PRIVATE_ALLOWED: TargetPolicy = TargetPolicy { allow_private: true };

/// The request-handler as deployed with callbacks on, receivers on 127.0.0.1 allowed.
fn api(stack: &Stack) -> axum::Router {
    let mut config = handler_config(stack);
    config.submit.callbacks = Some(PRIVATE_ALLOWED);
    request_handler_app(&stack.sdk, &config)
}

async fn submit(api: &axum::Router, body: Vec<u8>, callback: Option<&str>) -> JobId {
    let mut request = api_request("POST", "/v1/images", "user-1", body, "image/png");
    if let Some(url) = callback {
        request.headers_mut().insert("callback-url", url.parse().expect("a header value"));
    }
    let (status, _, job) = call(api, request).await;
    assert_eq!(status, http::StatusCode::ACCEPTED, "{job}");
    JobId::parse(job["id"].as_str().expect("an id")).expect("a job id")
}

fn callback_config(stack: &Stack, retries: &str) -> CallbackFunctionConfig {
    CallbackFunctionConfig {
        resources: stack.resources(),
        queue_url: stack.output("CallbackQueueUrl"),
        secret_id: stack.output("CallbackSecretArn"),
        policy: PRIVATE_ALLOWED,
        schedule: retries.parse().expect("a schedule"),
    }
}

/// Labels everything on the job queue with the worker function, announcing on the completion topic.
async fn work(stack: &Stack, jobs: usize, detector: Arc<dyn labelq_shared::ports::LabelDetector>) {
    let mut config = worker_config(stack, 5);
    config.completion_topic_arn = Some(stack.output("CompletionTopicArn"));
    let worker = WorkerFunction::new(&stack.sdk, &config, detector);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&stack.sdk), stack.output("QueueUrl"));
    let messages = receive(&queue, jobs).await;
    let response = worker.handle(event(messages.clone()), None).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    for m in &messages {
        queue.delete(m.receipt_handle().expect("a receipt")).await.expect("delete");
    }
}

/// Everything on `queue` within `wait`, deleted as it is read.
async fn drain(queue: &SqsQueue, wait: Duration) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    let started = Instant::now();
    while started.elapsed() < wait {
        let batch = queue.receive_messages(10, Duration::from_secs(30), Duration::from_secs(1)).await.expect("receive");
        for m in &batch {
            queue.delete(m.receipt_handle().expect("a receipt")).await.expect("delete");
        }
        all.extend(batch);
    }
    all
}

#[tokio::test]
async fn finished_jobs_reach_the_completion_topic_and_their_callbacks_are_signed_with_the_stacks_secret() {
    let stack = Stack::deploy(&[]).await;
    let sdk = &stack.sdk;
    // Another system's subscription to the completion topic: failures only.
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let failures_url = sqs.create_queue().queue_name(format!("{}-failures", stack.name)).send().await.expect("queue");
    let failures = SqsQueue::new(sqs.clone(), failures_url.queue_url().expect("a url"));
    let failures_arn = sqs
        .get_queue_attributes()
        .queue_url(failures.queue_url())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .expect("the queue's ARN");
    aws_sdk_sns::Client::new(sdk)
        .subscribe()
        .topic_arn(stack.output("CompletionTopicArn"))
        .protocol("sqs")
        .endpoint(failures_arn)
        .attributes("RawMessageDelivery", "true")
        .attributes("FilterPolicy", r#"{"status": ["FAILED"]}"#)
        .send()
        .await
        .expect("subscribe");

    let receiver = Receiver::start([200u16]).await;
    let api = api(&stack);
    let succeeds = submit(&api, photo("coffee.png"), Some(&receiver.url("/hooks/a"))).await;
    let fails = submit(&api, labelq_testkit::png_header(100, 100).to_vec(), Some(&receiver.url("/hooks/b"))).await;
    let plain = submit(&api, photo("coffee.png"), None).await;
    work(&stack, 3, onnx_detector()).await;

    // The callback queue holds the two jobs with a callback, and only them.
    let callbacks = SqsQueue::new(sqs.clone(), stack.output("CallbackQueueUrl"));
    let announced = receive(&callbacks, 2).await;
    let mut ids: Vec<JobId> = announced
        .iter()
        .map(|m| Message::parse(m.body().unwrap_or_default()).expect("a labelq message").job_id())
        .collect();
    ids.sort();
    let mut expected = vec![succeeds, fails];
    expected.sort();
    assert_eq!(ids, expected);
    let extra = callbacks.receive_messages(10, Duration::from_secs(30), Duration::from_secs(2)).await.expect("receive");
    assert!(extra.is_empty(), "a job without a callback reached the callback queue: {extra:?}");

    // The callback function, with the secret the stack generated, calls each once.
    let function = CallbackFunction::new(sdk, &callback_config(&stack, "1s")).await.expect("the function starts");
    let response = function.handle(event(announced), None).await;
    assert!(failed(&response).is_empty(), "{response:?}");
    let calls = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(calls.len(), 2);
    let secrets = webhook_secrets(&aws_sdk_secretsmanager::Client::new(sdk), &stack.output("CallbackSecretArn"))
        .await
        .expect("the stack's secret");
    for call in &calls {
        call.assert_signed(&secrets);
        let body = call.json();
        let id = JobId::parse(body["data"]["id"].as_str().expect("an id")).expect("a job id");
        assert_eq!(call.header("webhook-id"), webhook_id(&id));
        let kind = if id == succeeds { "job.succeeded" } else { "job.failed" };
        assert_eq!(body["type"], kind, "{body}");
    }
    let jobs = AwsStores::new(sdk, &stack.resources()).jobs;
    for id in [succeeds, fails] {
        let callback = jobs.get(&id).await.expect("get").expect("the job").callback.expect("a callback");
        assert_eq!((callback.status, callback.attempts, callback.last_code), (CallbackStatus::Delivered, 1, Some(200)));
    }
    assert!(jobs.get(&plain).await.expect("get").expect("the job").callback.is_none());

    // The other system got the failure alone, with the attribute it filtered on.
    let got = drain(&failures, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let finished = Message::parse(got[0].body().unwrap_or_default()).expect("a labelq message");
    assert_eq!(finished.job_id(), fails);
    let status = got[0].message_attributes().and_then(|a| a.get("status")).and_then(|v| v.string_value());
    assert_eq!(status, Some("FAILED"));
    stack.delete().await;
}

#[tokio::test]
async fn a_callback_is_retried_through_the_queue_with_one_webhook_id_and_a_410_disables_it_and_the_default() {
    let stack = Stack::deploy(&[]).await;
    let sdk = &stack.sdk;
    let flaky = Receiver::start([500u16, 500, 200]).await;
    let gone = Receiver::start([410u16]).await;
    let api = api(&stack);
    let retried = submit(&api, photo("coffee.png"), Some(&flaky.url("/hook"))).await;
    // The second job names no callback: it gets the owner's default, set through the
    // request-handler's route and kept in the stack's table.
    let body = serde_json::to_vec(&serde_json::json!({ "url": gone.url("/hook") })).expect("JSON");
    let (status, _, set) = call(&api, api_request("PUT", "/v1/callback", "user-1", body, "application/json")).await;
    assert_eq!((status, set["status"].as_str()), (http::StatusCode::OK, Some("ACTIVE")), "{set}");
    let disabled = submit(&api, photo("coffee.png"), None).await;
    work(&stack, 2, Arc::new(StubDetector::default())).await;

    // The event source mapping's part: receive what is visible, hand it over, until both settle.
    let function = CallbackFunction::new(sdk, &callback_config(&stack, "1s,1s,1s")).await.expect("the function");
    let callbacks = SqsQueue::new(aws_sdk_sqs::Client::new(sdk), stack.output("CallbackQueueUrl"));
    let jobs = AwsStores::new(sdk, &stack.resources()).jobs;
    let started = Instant::now();
    let settled = |job: &labelq_shared::domain::Job| job.callback.as_ref().is_some_and(|c| c.status.is_settled());
    loop {
        let both = [jobs.get(&retried).await, jobs.get(&disabled).await];
        if both.iter().all(|j| matches!(j, Ok(Some(job)) if settled(job))) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "callbacks still pending: {both:?}");
        let batch =
            callbacks.receive_messages(10, Duration::from_secs(30), Duration::from_secs(1)).await.expect("receive");
        if !batch.is_empty() {
            let mut records = SqsEvent::default();
            records.records = event(batch).records;
            function.handle(records, None).await;
        }
    }

    let calls = flaky.calls();
    assert_eq!(calls.len(), 3, "500, 500, then 200");
    assert!(calls.iter().all(|c| c.header("webhook-id") == webhook_id(&retried)));
    // Each retry waited for the schedule's delay (1 s, less its jitter) on the queue.
    for pair in calls.windows(2) {
        assert!(pair[1].at - pair[0].at >= Duration::from_millis(700), "{:?}", pair[1].at - pair[0].at);
    }
    let callback = jobs.get(&retried).await.expect("get").expect("the job").callback.expect("a callback");
    assert_eq!((callback.status, callback.attempts, callback.last_code), (CallbackStatus::Delivered, 3, Some(200)));
    let callback = jobs.get(&disabled).await.expect("get").expect("the job").callback.expect("a callback");
    assert_eq!((callback.status, callback.attempts, callback.last_code), (CallbackStatus::Disabled, 1, Some(410)));
    assert_eq!(gone.calls().len(), 1, "410 stops delivery");
    // ... and disables the owner's default callback, so later jobs get none.
    let request = api_request("GET", "/v1/callback", "user-1", Vec::new(), "application/json");
    let (status, _, default) = call(&api, request).await;
    assert_eq!((status, default["status"].as_str()), (http::StatusCode::OK, Some("DISABLED")), "{default}");
    // Nothing is left on the queue to call again.
    assert!(drain(&callbacks, Duration::from_secs(3)).await.is_empty());
    stack.delete().await;
}
