//! The asynchronous pipeline behind the API: queue, workers, retries, dead letters, expiry.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use labelq::embedded::Embedded;
use labelq_e2e::{ALICE, AppOptions, FlakyDetector, ManualClock, StubDetector, TestApp, onnx_detector, png};
use labelq_shared::config::MaxReceives;
use labelq_shared::domain::{Clock, JobId, JobStatus};
use labelq_shared::ports::{Delivery, JobQueue, JobStore, LabelDetector};
use labelq_shared::service::{ClaimSlot, Disposition, SubmitConfig, SubmitService, WorkerConfig, WorkerService};
use labelq_testkit::detectors::{Behaviour, ScriptedDetector};
use labelq_testkit::png_submission;
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
    let body = labelq_shared::ports::Envelope::for_job(&job).message.to_json();
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
    options.max_receives = "10".parse().unwrap();
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
    options.max_receives = "3".parse().unwrap();
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

/// Two processes' worth of stores and workers on one data directory, with a clock the test moves:
/// what `labelq serve` runs when two processes share `--data-dir`.
struct SharedDir {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    first: Embedded,
    second: Embedded,
}

const SHARED_LEASE: Duration = Duration::from_secs(30);

impl SharedDir {
    async fn open() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let first = Embedded::open(dir.path(), MaxReceives::DEFAULT, clock.clone()).await.unwrap();
        let second = Embedded::open(dir.path(), MaxReceives::DEFAULT, clock.clone()).await.unwrap();
        Self { _dir: dir, clock, first, second }
    }

    fn worker(&self, embedded: &Embedded, detector: Arc<dyn LabelDetector>) -> Arc<WorkerService> {
        let config = WorkerConfig { lease: SHARED_LEASE, ..WorkerConfig::default() };
        Arc::new(WorkerService::new(embedded.stores(), detector, self.clock.clone(), config))
    }

    async fn submit(&self) -> JobId {
        let publisher = self.first.queue.clone();
        let submit = SubmitService::new(self.first.stores(), publisher, self.clock.clone(), SubmitConfig::default());
        let request = png_submission("alice");
        submit.submit(request).await.unwrap().job.id
    }

    async fn receive(&self, embedded: &Embedded) -> Delivery {
        let mut got = embedded.queue.receive(1, SHARED_LEASE, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1, "the message is visible to this process");
        got.remove(0)
    }

    /// Handles `delivery` in a task, returning it with the slot of its claim.
    fn handle(worker: &Arc<WorkerService>, delivery: &Delivery) -> (tokio::task::JoinHandle<Disposition>, ClaimSlot) {
        let (worker, delivery, slot) = (worker.clone(), delivery.clone(), ClaimSlot::default());
        let held = slot.clone();
        (tokio::spawn(async move { worker.handle_holding(&delivery, &held).await }), slot)
    }

    async fn settle(embedded: &Embedded, delivery: &Delivery, disposition: Disposition) {
        match disposition {
            Disposition::Ack => embedded.queue.ack(delivery).await.unwrap(),
            Disposition::Retry(delay) => embedded.queue.retry(delivery, delay).await.unwrap(),
            Disposition::DeadLetter => embedded.queue.dead_letter(delivery).await.unwrap(),
        }
    }
}

/// The first worker's lease runs out while its detector is slow; the message comes back to the
/// second, which claims and finishes the job. The first worker's late result then loses, and the
/// job is finished once, by the second, with nothing left in the queue.
#[tokio::test]
async fn two_workers_on_one_data_directory_finish_a_job_whose_lease_ran_out_exactly_once() {
    let shared = SharedDir::open().await;
    let slow = ScriptedDetector::new(Behaviour::Block);
    let first = shared.worker(&shared.first, slow.clone());
    let second = shared.worker(&shared.second, Arc::new(StubDetector::default()));
    let id = shared.submit().await;

    let first_delivery = shared.receive(&shared.first).await;
    let (first_handling, _) = SharedDir::handle(&first, &first_delivery);
    slow.entered.notified().await;
    shared.clock.advance(SHARED_LEASE + Duration::from_secs(1));

    let second_delivery = shared.receive(&shared.second).await;
    assert_eq!(second_delivery.receive_count, 2);
    let done = second.handle(&second_delivery).await;
    assert_eq!(done, Disposition::Ack);
    SharedDir::settle(&shared.second, &second_delivery, done).await;

    slow.release.notify_one();
    let late = first_handling.await.unwrap();
    assert_eq!(late, Disposition::Ack, "the job is final: the late result is simply dropped");
    SharedDir::settle(&shared.first, &first_delivery, late).await;

    let job = shared.first.jobs.get(&id).await.unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Succeeded);
    assert_eq!(job.label_names(), ["stub"], "the second worker's labels");
    // Created (1), claimed by each worker (2, 3), finished once (4).
    assert_eq!((job.version, job.attempts), (4, 2));
    assert_eq!(shared.first.queue_counts().await.unwrap(), Default::default(), "no message left, none dead-lettered");
}

/// The first worker's handling is abandoned (its process is shutting down) after its lease ran
/// out and the second worker claimed the job. Giving back the first claim must leave the second
/// one alone, so the second worker's result is recorded.
#[tokio::test]
async fn an_abandoned_claim_given_back_late_does_not_undo_the_next_workers_claim() {
    let shared = SharedDir::open().await;
    let (slow, held) = (ScriptedDetector::new(Behaviour::Block), ScriptedDetector::new(Behaviour::Block));
    let first = shared.worker(&shared.first, slow.clone());
    let second = shared.worker(&shared.second, held.clone());
    let id = shared.submit().await;

    let first_delivery = shared.receive(&shared.first).await;
    let (first_handling, first_slot) = SharedDir::handle(&first, &first_delivery);
    slow.entered.notified().await;
    shared.clock.advance(SHARED_LEASE + Duration::from_secs(1));
    let second_delivery = shared.receive(&shared.second).await;
    let (second_handling, _) = SharedDir::handle(&second, &second_delivery);
    held.entered.notified().await;

    first_handling.abort();
    let _ = first_handling.await;
    first.release(&first_slot).await;
    SharedDir::settle(&shared.first, &first_delivery, Disposition::Retry(Duration::ZERO)).await;

    held.release.notify_one();
    let done = second_handling.await.unwrap();
    assert_eq!(done, Disposition::Ack);
    SharedDir::settle(&shared.second, &second_delivery, done).await;

    let job = shared.second.jobs.get(&id).await.unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Succeeded, "{job:?}");
    assert_eq!(shared.second.queue_counts().await.unwrap(), Default::default(), "no message left, none dead-lettered");
}

/// A process that opens the data directory gives back what a stopped process held (its claim and
/// its in-flight message) at once; one that is still running keeps its own.
#[tokio::test]
async fn opening_a_data_directory_gives_back_only_what_stopped_processes_held() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let open = || Embedded::open(dir.path(), MaxReceives::DEFAULT, clock.clone());
    let stopped = open().await.unwrap();
    let submit = SubmitService::new(stopped.stores(), stopped.queue.clone(), clock.clone(), SubmitConfig::default());
    let request = png_submission("alice");
    let id = submit.submit(request).await.unwrap().job.id;
    let delivery = stopped.queue.receive(1, SHARED_LEASE, Duration::ZERO).await.unwrap().remove(0);
    let job = stopped.jobs.get(&id).await.unwrap().unwrap();
    stopped.jobs.update(&job.claim(clock.now(), SHARED_LEASE).unwrap()).await.unwrap();

    // While it runs, a second process leaves its claim and message alone.
    let alive = open().await.unwrap();
    assert_eq!(alive.jobs.get(&id).await.unwrap().unwrap().status(), JobStatus::Processing);
    assert!(alive.queue.receive(1, SHARED_LEASE, Duration::ZERO).await.unwrap().is_empty());

    // It stops without settling anything (what a SIGKILL leaves, bar the lock the kernel drops).
    drop((submit, stopped));
    let restarted = open().await.unwrap();
    let job = restarted.jobs.get(&id).await.unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Pending, "the claim was given back");
    let again = restarted.queue.receive(1, SHARED_LEASE, Duration::ZERO).await.unwrap();
    assert_eq!(again.iter().map(|d| d.message_id.as_str()).collect::<Vec<_>>(), [delivery.message_id.as_str()]);
    assert_eq!(again[0].receive_count, 2);
    drop(alive);
}
