//! Bucket drops on the AWS path: an object created under `drops/` is announced by S3 on the job
//! topic (the notification configuration `infra/storage.yaml` deploys), reaches the worker's queue
//! beside labelq's own messages, and becomes a job of the owner its first key segment names; the
//! worker writes the result under `drop-results/`. LocalStack encodes a key's space as `%20` where
//! AWS writes `+`; the unit tests of the decoder cover both.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labelq_e2e::aws::{Stack, api_request};
use labelq_e2e::{StubDetector, png};
use labelq_shared::adapters::aws::{S3Notification, parse_s3_notification, s3_client};
use labelq_shared::domain::DropOwner;
use labelq_shared::lambda::{WorkerDrops, WorkerFunction, status_api_app};
use serde_json::Value;

use super::{Seen, call, work_until, worker_config};

/// The worker as deployed with drops owned by their first key segment.
fn worker(stack: &Stack, detector: Arc<StubDetector>) -> WorkerFunction {
    let mut config = worker_config(stack, 5);
    config.drops = Some(WorkerDrops {
        owner: DropOwner::FirstSegment,
        topic_arn: stack.output("TopicArn"),
        ttl: Duration::from_secs(24 * 3600),
    });
    WorkerFunction::new(&stack.sdk, &config, detector)
}

async fn put(stack: &Stack, key: &str, body: Vec<u8>) {
    s3_client(&stack.sdk)
        .put_object()
        .bucket(stack.output("BucketName"))
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

async fn drop_result(stack: &Stack, key: &str) -> Option<Value> {
    let object = s3_client(&stack.sdk)
        .get_object()
        .bucket(stack.output("BucketName"))
        .key(format!("drop-results/{key}.json"))
        .send()
        .await
        .ok()?;
    let bytes = object.body.collect().await.expect("the result's body").into_bytes();
    Some(serde_json::from_slice(&bytes).expect("a result is JSON"))
}

async fn jobs_of(stack: &Stack, owner: &str) -> Vec<Value> {
    let status = status_api_app(&stack.sdk, &stack.resources());
    let (code, _, page) = call(&status, api_request("GET", "/v1/images?limit=100", owner, vec![], "")).await;
    assert_eq!(code, http::StatusCode::OK, "{page}");
    page["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn objects_dropped_into_the_bucket_are_labelled_once_with_their_results_beside_them() {
    let stack = Stack::deploy(&[]).await;
    let detector = Arc::new(StubDetector::default());
    let worker = worker(&stack, detector.clone());
    let keys = ["alice/a b.png", "alice/a+b.png", "alice/photo (1).png", "alice/été/東京 café.png"];
    for (i, key) in keys.iter().enumerate() {
        put(&stack, &format!("drops/{key}"), png(100 + i as u32, 100)).await;
    }
    put(&stack, "drops/alice/notes.png", b"not an image".to_vec()).await;
    put(&stack, "drops/stray.png", png(100, 100)).await;
    // Written outside drops/: announced to nobody.
    put(&stack, "elsewhere/x.png", png(100, 100)).await;

    let mut seen = Seen::default();
    let all = [&keys[..], &["alice/notes.png", "stray.png"]].concat();
    work_until(&stack, &worker, &mut seen, async || {
        for key in &all {
            match drop_result(&stack, key).await {
                Some(result) if result["status"] != "PENDING" && result["status"] != "PROCESSING" => {}
                _ => return false,
            }
        }
        true
    })
    .await;

    for key in keys {
        let result = drop_result(&stack, key).await.expect("a result");
        assert_eq!(result["status"], "SUCCEEDED", "{key}: {result}");
        assert_eq!(result["source"]["key"], key);
    }
    for (key, problem) in [("alice/notes.png", "not-an-image"), ("stray.png", "drop-without-owner")] {
        let result = drop_result(&stack, key).await.expect("a result");
        assert_eq!(result["status"], "REFUSED", "{key}: {result}");
        assert_eq!(result["problem"]["type"], format!("https://labelq.dev/problems/{problem}"), "{key}");
    }
    let jobs = jobs_of(&stack, "alice").await;
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for job in &jobs {
        *by_key.entry(job["source"]["key"].as_str().expect("a drop's key").to_owned()).or_default() += 1;
    }
    assert_eq!(by_key.len(), keys.len(), "{by_key:?}");
    assert!(by_key.values().all(|n| *n == 1), "{by_key:?}");
    assert_eq!(detector.calls(), keys.len());
    // One notification per object under drops/ (none for elsewhere/, images/ or drop-results/),
    // and one job message per job.
    assert_eq!(seen.notifications.len(), all.len(), "{seen:?}");
    assert_eq!(seen.jobs, keys.len(), "{seen:?}");

    // The same notification (of an image's drop) delivered again makes no second job, and
    // nothing more arrives after it.
    let first = seen
        .notifications
        .iter()
        .find(|body| {
            matches!(parse_s3_notification(body), Some(Ok(S3Notification::Created(objects)))
                if objects.iter().any(|o| o.key == format!("drops/{}", keys[0])))
        })
        .expect("the first image's notification")
        .clone();
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    sqs.send_message().queue_url(stack.output("QueueUrl")).message_body(&first).send().await.expect("send a duplicate");
    let before = seen.notifications.len();
    let deadline = Instant::now() + Duration::from_secs(3);
    work_until(&stack, &worker, &mut seen, async || Instant::now() > deadline).await;
    assert_eq!(seen.notifications.len(), before + 1, "{seen:?}");
    assert_eq!(jobs_of(&stack, "alice").await.len(), keys.len());
    assert_eq!(detector.calls(), keys.len(), "a duplicate was labelled again");
    // (The same bytes uploaded again are another upload on AWS, told apart by the event's
    // sequencer; LocalStack sends one constant sequencer, so that is the decoder's unit test.)
    stack.delete().await;
}
