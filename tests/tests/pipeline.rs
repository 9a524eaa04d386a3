//! The asynchronous pipeline behind the API: queue, workers, retries, dead letters, expiry.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use labelq_e2e::{ALICE, AppOptions, FlakyDetector, ManualClock, StubDetector, TestApp, onnx_detector, png};
use labelq_shared::domain::JobId;
use labelq_shared::ports::JobStore;
use labelq_shared::service::SubmitConfig;
use serde_json::Value;

#[tokio::test]
async fn the_same_message_delivered_three_times_gives_one_result() {
    let detector = Arc::new(StubDetector::default());
    let mut options = AppOptions::with_detector(detector.clone());
    options.workers = 3;
    options.visibility = Duration::from_millis(300);
    let app = TestApp::spawn(options).await;

    let id = app.submit_ok(ALICE, png(100, 100), "image/png").await;
    // Two more copies of exactly the message the API published, as SNS/SQS may deliver it.
    let job = app.embedded.jobs.get(&JobId::parse(&id).unwrap()).await.unwrap().unwrap();
    let body = labelq_shared::domain::ImageSubmitted::for_job(&job).to_json();
    for _ in 0..2 {
        app.embedded.queue.send_raw(body.clone(), None).await.unwrap();
    }

    let finished = app.wait_finished(ALICE, &id, Duration::from_secs(10)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.queue_counts().await != Default::default() {
        assert!(std::time::Instant::now() < deadline, "duplicates were not all settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(finished["status"], "SUCCEEDED");
    assert_eq!(detector.calls(), 1, "only one delivery ran the detector");
    let now: Value = app.get(ALICE, &format!("/v1/images/{id}")).await.json().await.unwrap();
    assert_eq!(now["attempts"], 1);
    assert_eq!(now["updated_at"], finished["updated_at"], "the duplicates changed nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn a_detector_failing_transiently_30_percent_of_the_time_still_labels_every_job() {
    let flaky = Arc::new(FlakyDetector::new(Arc::new(StubDetector::default()), 0.3, 7));
    let mut options = AppOptions::with_detector(flaky.clone());
    options.max_receives = 10;
    let app = TestApp::spawn(options).await;

    let mut ids = Vec::new();
    for side in 0..20 {
        ids.push(app.submit_ok(ALICE, png(100 + side, 100), "image/png").await);
    }
    for id in &ids {
        let job = app.wait_finished(ALICE, id, Duration::from_secs(30)).await;
        assert_eq!(job["status"], "SUCCEEDED", "{job}");
    }

    assert!(flaky.failures.load(Ordering::SeqCst) > 0, "the test injected no failure");
    assert_eq!(app.queue_counts().await.dead, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_detector_that_never_recovers_fails_the_job_and_dead_letters_the_message() {
    let flaky = Arc::new(FlakyDetector::new(Arc::new(StubDetector::default()), 1.0, 1));
    let mut options = AppOptions::with_detector(flaky.clone());
    options.max_receives = 3;
    let app = TestApp::spawn(options).await;

    let id = app.submit_ok(ALICE, png(100, 100), "image/png").await;
    let job = app.wait_finished(ALICE, &id, Duration::from_secs(10)).await;

    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["error"]["code"], "retries_exhausted");
    assert_eq!(job["attempts"], 3);
    assert_eq!(flaky.failures.load(Ordering::SeqCst), 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.queue_counts().await.dead != 1 {
        assert!(std::time::Instant::now() < deadline, "the message never reached the dead-letter table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_permanently_bad_image_ends_failed_with_a_reason() {
    let app = TestApp::spawn(AppOptions::with_detector(onnx_detector())).await;
    // A PNG whose header passes the API's checks but whose pixel data is cut off.
    let mut truncated = png(200, 200);
    truncated.truncate(truncated.len() / 2);

    let id = app.submit_ok(ALICE, truncated, "image/png").await;
    let job = app.wait_finished(ALICE, &id, Duration::from_secs(20)).await;

    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["error"]["code"], "image_undecodable");
    assert!(job["error"]["message"].as_str().unwrap().contains("corrupt or truncated"), "{job}");
    assert_eq!(job["attempts"], 1, "a permanent failure is not retried");
    assert!(job.get("labels").is_none());
    assert_eq!(app.queue_counts().await, Default::default(), "the message was acknowledged");
    app.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_message_is_acknowledged_and_never_retried() {
    let detector = Arc::new(StubDetector::default());
    let app = TestApp::spawn(AppOptions::with_detector(detector.clone())).await;
    app.embedded.queue.send_raw("{not json".into(), None).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.queue_counts().await != Default::default() {
        assert!(std::time::Instant::now() < deadline, "the poison message is still queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(detector.calls(), 0);
    // The pipeline still works afterwards.
    let id = app.submit_ok(ALICE, png(100, 100), "image/png").await;
    assert_eq!(app.wait_finished(ALICE, &id, Duration::from_secs(10)).await["status"], "SUCCEEDED");
    app.shutdown().await;
}

#[tokio::test]
async fn expiry_removes_old_jobs_and_their_images() {
    let clock = Arc::new(ManualClock::default());
    let mut options = AppOptions::with_detector(Arc::new(StubDetector::default()));
    options.clock = clock.clone();
    let app = TestApp::spawn(options).await;
    let id = app.submit_ok(ALICE, png(100, 100), "image/png").await;
    let job = app.wait_finished(ALICE, &id, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "SUCCEEDED");

    clock.advance(SubmitConfig::default().ttl - Duration::from_secs(60));
    assert_eq!(app.server().sweep_now().await.unwrap().jobs, 0, "not expired a minute early");
    assert_eq!(app.get(ALICE, &format!("/v1/images/{id}")).await.status(), 200);

    clock.advance(Duration::from_secs(61));
    // Already hidden from reads before the sweep gets to it.
    assert_eq!(app.get(ALICE, &format!("/v1/images/{id}")).await.status(), 404);
    let swept = app.server().sweep_now().await.unwrap();

    assert_eq!(swept.jobs, 1);
    assert_eq!(app.image_files(), 0, "the image went with its job");
    let job_id = JobId::parse(&id).unwrap();
    assert!(app.embedded.jobs.get(&job_id).await.unwrap().is_none(), "the record is gone from the store");
    app.shutdown().await;
}
