//! The services against in-memory ports: the worker's idempotency, its one way to finish a job,
//! its failure sorting, and the submit path's rollback, each forced deterministically.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use labelq_shared::config::MaxReceives;
use labelq_shared::domain::{
    Attempt, CallbackUrl, Clock, Failure, FailureCode, Findings, IdempotencyKey, Job, JobId, JobStatus, Message,
    Outcome,
};
use labelq_shared::ports::{Delivery, ImageStore, JobStore};
use labelq_shared::service::{
    Announce, Backoff, ClaimSlot, Disposition, Finish, Stores, Submission, SubmitConfig, SubmitError, SubmitRequest,
    SubmitService, WorkerConfig, WorkerService,
};
use labelq_testkit::detectors::{Behaviour, ScriptedDetector, label};
use labelq_testkit::memory::{MemoryImages, MemoryJobs, MemoryPublisher};
use labelq_testkit::{ManualClock, png_submission};

struct Fixture {
    images: Arc<MemoryImages>,
    jobs: Arc<MemoryJobs>,
    publisher: Arc<MemoryPublisher>,
    detector: Arc<ScriptedDetector>,
    clock: Arc<ManualClock>,
    submit: SubmitService,
    worker: Arc<WorkerService>,
}

const LEASE: Duration = Duration::from_secs(60);

fn fixture(behaviour: Behaviour) -> Fixture {
    let images = Arc::new(MemoryImages::default());
    let jobs = Arc::new(MemoryJobs::default());
    let publisher = Arc::new(MemoryPublisher::default());
    let detector = ScriptedDetector::new(behaviour);
    let clock = Arc::new(ManualClock::default());
    let stores = Stores { images: images.clone(), jobs: jobs.clone() };
    let submit = SubmitService::new(stores.clone(), publisher.clone(), clock.clone(), SubmitConfig::default());
    let config = WorkerConfig {
        max_receives: "3".parse::<MaxReceives>().unwrap(),
        lease: LEASE,
        backoff: Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) },
        ..WorkerConfig::default()
    };
    let worker = Arc::new(WorkerService::new(stores, detector.clone(), clock.clone(), config));
    Fixture { images, jobs, publisher, detector, clock, submit, worker }
}

fn request(key: Option<&str>) -> SubmitRequest {
    SubmitRequest { idempotency_key: key.map(|k| IdempotencyKey::parse(k).unwrap()), ..png_submission("alice") }
}

impl Fixture {
    async fn submitted(&self) -> Submission {
        self.submit.submit(request(None)).await.unwrap()
    }

    fn delivery(&self, receive_count: u32) -> Delivery {
        let published = self.publisher.published();
        let envelope = published.last().expect("something was published");
        Delivery {
            message_id: "m-1".into(),
            receipt: format!("r-{receive_count}"),
            body: envelope.message.to_json(),
            correlation_id: Some(envelope.correlation_id.clone()),
            receive_count,
        }
    }

    fn status(&self, id: &JobId) -> JobStatus {
        self.jobs.snapshot(id).unwrap().status()
    }

    /// A first worker handles the job's message in a task (its claim kept in `slot`) and is still
    /// in the blocking detector when its lease runs out and another worker claims the job. Returns
    /// the first handling and the rival's claim.
    async fn outlived_lease(&self, id: &JobId, slot: &ClaimSlot) -> (tokio::task::JoinHandle<Disposition>, Job) {
        let first = {
            let (worker, delivery, slot) = (self.worker.clone(), self.delivery(1), slot.clone());
            tokio::spawn(async move { worker.handle_holding(&delivery, &slot).await })
        };
        self.detector.entered.notified().await;
        self.clock.advance(LEASE + Duration::from_secs(1));
        (first, self.rival_claims(id).await)
    }

    /// Another worker claims the job as it stands, as one would after this one's lease ran out.
    async fn rival_claims(&self, id: &JobId) -> Job {
        let current = self.jobs.snapshot(id).unwrap();
        let claimed = current.claim(self.clock.now(), LEASE).expect("the lease has run out");
        self.jobs.update(&claimed).await.unwrap();
        claimed
    }
}

#[tokio::test]
async fn finish_says_whether_its_write_won_and_the_winner_carries_the_event() {
    let f = fixture(Behaviour::Succeed);
    let job = f.submitted().await.job;
    let claimed = job.claim(f.clock.now(), LEASE).unwrap();
    f.jobs.update(&claimed).await.unwrap();

    let won = f.worker.finish(&claimed, Outcome::Succeeded(Findings::labels(vec![label("Cat")])), "m-1").await.unwrap();
    let Finish::Won(event) = won else { panic!("the first final write wins: {won:?}") };
    assert_eq!((event.job_id, &event.owner, &event.correlation_id), (job.id, &job.owner, &job.correlation_id));
    assert_eq!(event.outcome, Outcome::Succeeded(Findings::labels(vec![label("Cat")])));
    assert_eq!((event.attempts, event.created_at), (1, job.created_at));
    assert_eq!(f.jobs.snapshot(&job.id).unwrap().finished_by.as_deref(), Some("m-1"));

    let again = Outcome::Failed { error: Failure::new(FailureCode::Internal, "late") };
    assert_eq!(
        f.worker.finish(&claimed, again.clone(), "m-2").await.unwrap(),
        Finish::AlreadyFinal(JobStatus::Succeeded)
    );
    f.jobs.delete(&job.owner, &job.id).await.unwrap();
    assert_eq!(f.worker.finish(&claimed, again, "m-2").await.unwrap(), Finish::Gone);
}

#[tokio::test]
async fn a_final_write_lost_to_a_later_claim_is_retried_not_acknowledged() {
    let f = fixture(Behaviour::Block);
    let job = f.submitted().await.job;
    let (first, rivals) = f.outlived_lease(&job.id, &ClaimSlot::default()).await;

    f.detector.release.notify_one();
    let disposition = first.await.unwrap();

    assert!(matches!(disposition, Disposition::Retry(_)), "the job is unfinished: {disposition:?}");
    assert_eq!(f.jobs.snapshot(&job.id).unwrap(), rivals, "the rival's claim stands");
}

#[tokio::test]
async fn a_final_write_lost_to_a_finished_job_is_acknowledged() {
    let f = fixture(Behaviour::Block);
    let job = f.submitted().await.job;
    let (first, rivals) = f.outlived_lease(&job.id, &ClaimSlot::default()).await;
    let done = rivals.fail(Failure::new(FailureCode::ImageUndecodable, "theirs"), f.clock.now()).unwrap();
    f.jobs.update(&done).await.unwrap();

    f.detector.release.notify_one();

    assert_eq!(first.await.unwrap(), Disposition::Ack);
    assert_eq!(f.jobs.snapshot(&job.id).unwrap(), done, "the first final write stands");
}

#[tokio::test]
async fn an_abandoned_handling_gives_back_only_its_own_claim() {
    let f = fixture(Behaviour::Block);
    let job = f.submitted().await.job;
    let slot = ClaimSlot::default();
    // Its lease runs out, another worker claims the job, then the first handling is abandoned.
    let (first, rivals) = f.outlived_lease(&job.id, &slot).await;
    assert!(slot.is_held(), "the first handling still holds its (stale) claim");
    first.abort();
    let _ = first.await;
    f.worker.release(&slot).await;

    assert_eq!(f.jobs.snapshot(&job.id).unwrap(), rivals, "the rival's claim is untouched");
    assert!(!slot.is_held());
}

#[tokio::test]
async fn an_abandoned_handling_whose_claim_still_stands_gives_the_job_back() {
    let f = fixture(Behaviour::Block);
    let job = f.submitted().await.job;
    let slot = ClaimSlot::default();
    let first = {
        let (worker, delivery, slot) = (f.worker.clone(), f.delivery(1), slot.clone());
        tokio::spawn(async move { worker.handle_holding(&delivery, &slot).await })
    };
    f.detector.entered.notified().await;
    first.abort();
    let _ = first.await;
    f.worker.release(&slot).await;

    assert_eq!(f.status(&job.id), JobStatus::Pending);
    f.detector.set(Behaviour::Succeed);
    assert_eq!(f.worker.handle(&f.delivery(2)).await, Disposition::Ack, "claimed at once, no lease to wait out");
}

#[tokio::test]
async fn an_unreadable_message_for_a_job_another_worker_holds_waits_for_that_worker() {
    let f = fixture(Behaviour::Succeed);
    let job = f.submitted().await.job;
    let claimed = job.claim(f.clock.now(), LEASE).unwrap();
    f.jobs.update(&claimed).await.unwrap();
    let mut poison = f.delivery(1);
    poison.body = poison.body.replace("\"version\":1", "\"version\":99");

    assert!(matches!(f.worker.handle(&poison).await, Disposition::Retry(_)));
    assert_eq!(f.jobs.snapshot(&job.id).unwrap(), claimed, "the holder's work is not failed under it");
    // Once the holder has finished, the poison message is simply done.
    f.jobs.update(&claimed.succeed(Findings::default(), f.clock.now()).unwrap()).await.unwrap();
    assert_eq!(f.worker.handle(&poison).await, Disposition::Ack);
}

#[tokio::test]
async fn concurrent_duplicate_deliveries_run_the_detector_once() {
    let f = fixture(Behaviour::Block);
    let job = f.submitted().await.job;
    let first = {
        let (worker, delivery) = (f.worker.clone(), f.delivery(1));
        tokio::spawn(async move { worker.handle(&delivery).await })
    };
    f.detector.entered.notified().await;

    // While the first delivery holds the job, a duplicate arrives.
    let duplicate = f.worker.handle(&f.delivery(1)).await;
    f.detector.release.notify_one();
    let first = first.await.unwrap();

    assert_eq!(first, Disposition::Ack);
    assert!(matches!(duplicate, Disposition::Retry(d) if d <= LEASE && d > LEASE / 2), "{duplicate:?}");
    assert_eq!(f.detector.calls(), 1);
    // When the duplicate comes back, the job is finished: a no-op acknowledgement.
    assert_eq!(f.worker.handle(&f.delivery(2)).await, Disposition::Ack);
    assert_eq!(f.detector.calls(), 1);
    let stored = f.jobs.snapshot(&job.id).unwrap();
    assert_eq!((stored.status(), stored.attempts), (JobStatus::Succeeded, 1));
}

#[tokio::test]
async fn a_job_whose_worker_died_is_reclaimed_after_its_lease() {
    let f = fixture(Behaviour::Succeed);
    let job = f.submitted().await.job;
    // A worker claimed it and vanished.
    let claimed = job.claim(f.clock.now(), LEASE).unwrap();
    f.jobs.update(&claimed).await.unwrap();

    assert!(matches!(f.worker.handle(&f.delivery(2)).await, Disposition::Retry(_)), "lease still held");
    f.clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(f.worker.handle(&f.delivery(3)).await, Disposition::Ack);
    let stored = f.jobs.snapshot(&job.id).unwrap();
    assert_eq!((stored.status(), stored.attempts), (JobStatus::Succeeded, 2));
}

#[tokio::test]
async fn transient_failures_retry_with_backoff_then_fail_and_dead_letter_on_the_last_delivery() {
    let f = fixture(Behaviour::FailTransiently);
    let job = f.submitted().await.job;

    for receive in 1..3 {
        let d = f.worker.handle(&f.delivery(receive)).await;
        assert!(matches!(d, Disposition::Retry(delay) if delay > Duration::ZERO), "{d:?}");
        assert_eq!(f.status(&job.id), JobStatus::Pending, "the job is given back between attempts");
    }
    assert_eq!(f.worker.handle(&f.delivery(3)).await, Disposition::DeadLetter);

    let stored = f.jobs.snapshot(&job.id).unwrap();
    assert_eq!(stored.status(), JobStatus::Failed);
    assert_eq!(stored.failure().unwrap().code, FailureCode::RetriesExhausted);
    assert_eq!(stored.attempts, 3);
}

#[tokio::test]
async fn a_panicking_detector_is_contained_and_fails_the_job_on_the_last_delivery() {
    let f = fixture(Behaviour::Panic);
    let job = f.submitted().await.job;

    assert!(matches!(f.worker.handle(&f.delivery(1)).await, Disposition::Retry(_)));
    assert_eq!(f.status(&job.id), JobStatus::Pending, "the panicked claim is given back");
    assert_eq!(f.worker.handle(&f.delivery(3)).await, Disposition::DeadLetter);

    let stored = f.jobs.snapshot(&job.id).unwrap();
    assert_eq!(stored.failure().unwrap().code, FailureCode::Internal);
}

#[tokio::test]
async fn a_store_outage_is_retried_not_failed() {
    let f = fixture(Behaviour::Succeed);
    let job = f.submitted().await.job;
    f.jobs.down.store(true, Ordering::SeqCst);
    assert!(matches!(f.worker.handle(&f.delivery(1)).await, Disposition::Retry(_)));
    f.jobs.down.store(false, Ordering::SeqCst);
    assert_eq!(f.worker.handle(&f.delivery(2)).await, Disposition::Ack);
    assert_eq!(f.status(&job.id), JobStatus::Succeeded);
}

#[tokio::test]
async fn a_missing_image_fails_the_job_permanently() {
    let f = fixture(Behaviour::Succeed);
    let job = f.submitted().await.job;
    f.images.delete(&job.image.object_key).await.unwrap();

    assert_eq!(f.worker.handle(&f.delivery(1)).await, Disposition::Ack);
    let stored = f.jobs.snapshot(&job.id).unwrap();
    assert_eq!(stored.failure().unwrap().code, FailureCode::ImageMissing);
    assert_eq!(f.detector.calls(), 0);
}

#[tokio::test]
async fn a_message_for_a_deleted_job_is_acknowledged() {
    let f = fixture(Behaviour::Succeed);
    let job = f.submitted().await.job;
    f.jobs.delete(&job.owner, &job.id).await.unwrap();
    assert_eq!(f.worker.handle(&f.delivery(1)).await, Disposition::Ack);
    assert_eq!(f.detector.calls(), 0);
}

#[tokio::test]
async fn an_unreadable_message_naming_a_job_fails_that_job() {
    let f = fixture(Behaviour::Succeed);
    let job = f.submitted().await.job;
    let mut delivery = f.delivery(1);
    delivery.body = delivery.body.replace("\"version\":1", "\"version\":99");

    assert_eq!(f.worker.handle(&delivery).await, Disposition::Ack);
    let stored = f.jobs.snapshot(&job.id).unwrap();
    assert_eq!(stored.failure().unwrap().code, FailureCode::InvalidMessage);
}

#[tokio::test]
async fn a_failed_publish_rolls_back_the_job_and_the_image() {
    let f = fixture(Behaviour::Succeed);
    f.publisher.fail.store(true, Ordering::SeqCst);

    let err = f.submit.submit(request(Some("k-1"))).await.unwrap_err();

    assert!(matches!(&err, SubmitError::Backend(e) if e.retryable), "{err:?}");
    assert_eq!(f.jobs.len(), 0, "no job is left PENDING without a message");
    assert_eq!(f.images.len(), 0);
    // The client retries with the same key once the topic is back.
    f.publisher.fail.store(false, Ordering::SeqCst);
    let ok = f.submit.submit(request(Some("k-1"))).await.unwrap();
    assert!(!ok.replayed);
    assert_eq!(f.publisher.published().len(), 1);
}

#[tokio::test]
async fn a_replay_of_a_pending_job_publishes_its_message_again() {
    let f = fixture(Behaviour::Succeed);
    let first = f.submit.submit(request(Some("k-2"))).await.unwrap();
    let again = f.submit.submit(request(Some("k-2"))).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(f.publisher.published().len(), 2, "a lost first message is replaced");
    assert_eq!(f.images.len(), 1);
}

#[tokio::test]
async fn a_failed_image_write_leaves_nothing_behind() {
    let f = fixture(Behaviour::Succeed);
    f.images.fail_puts.store(true, Ordering::SeqCst);
    assert!(f.submit.submit(request(None)).await.is_err());
    assert_eq!(f.jobs.len(), 0);
    assert!(f.publisher.published().is_empty());
}

/// A job asking for a callback, with a worker that announces finished jobs on `completions`.
async fn with_callback(f: &Fixture, completions: Arc<MemoryPublisher>, which: Announce) -> (Job, WorkerService) {
    let policy = labelq_shared::webhooks::TargetPolicy::default();
    let config = SubmitConfig { callbacks: Some(policy), ..SubmitConfig::default() };
    let stores = Stores { images: f.images.clone(), jobs: f.jobs.clone() };
    let submit = SubmitService::new(stores.clone(), f.publisher.clone(), f.clock.clone(), config);
    let callback = Some(CallbackUrl::parse("https://example.com/hook").unwrap());
    let job = submit.submit(SubmitRequest { callback, ..request(None) }).await.unwrap().job;
    let worker = WorkerService::new(stores, f.detector.clone(), f.clock.clone(), WorkerConfig::default())
        .with_completions(completions, which);
    (job, worker)
}

#[tokio::test]
async fn a_job_with_a_callback_is_announced_once_it_finishes_and_others_are_not() {
    let f = fixture(Behaviour::Succeed);
    let completions = Arc::new(MemoryPublisher::default());
    let (job, worker) = with_callback(&f, completions.clone(), Announce::WithCallback).await;

    assert_eq!(worker.handle(&f.delivery(1)).await, Disposition::Ack);
    let announced = completions.published();
    assert_eq!(announced.len(), 1);
    let Message::JobFinished(event) = &announced[0].message else { panic!("{:?}", announced[0]) };
    assert_eq!((event.job_id, event.outcome.status()), (job.id, JobStatus::Succeeded));
    assert_eq!(announced[0].correlation_id, job.correlation_id);

    let plain = f.submitted().await.job;
    assert_eq!(worker.handle(&f.delivery(1)).await, Disposition::Ack);
    assert_eq!(f.status(&plain.id), JobStatus::Succeeded);
    assert_eq!(completions.published().len(), 1, "a job without a callback is not announced");
}

#[tokio::test]
async fn a_worker_announcing_every_job_says_of_each_whether_a_callback_waits_for_it() {
    let f = fixture(Behaviour::Succeed);
    let completions = Arc::new(MemoryPublisher::default());
    let (job, worker) = with_callback(&f, completions.clone(), Announce::Every).await;
    assert_eq!(worker.handle(&f.delivery(1)).await, Disposition::Ack);
    let plain = f.submitted().await.job;
    assert_eq!(worker.handle(&f.delivery(1)).await, Disposition::Ack);

    let announced: Vec<_> = completions.published().into_iter().map(|e| e.message).collect();
    let attributes: Vec<_> = announced.iter().map(|m| (m.job_id(), m.filter_attributes())).collect();
    assert_eq!(
        attributes,
        vec![
            (job.id, vec![("status", "SUCCEEDED"), ("callback", "true")]),
            (plain.id, vec![("status", "SUCCEEDED"), ("callback", "false")]),
        ]
    );
}

#[tokio::test]
async fn a_worker_that_died_between_the_final_write_and_the_announcement_is_made_good_by_the_redelivery() {
    let f = fixture(Behaviour::Succeed);
    let completions = Arc::new(MemoryPublisher::default());
    let (job, worker) = with_callback(&f, completions.clone(), Announce::WithCallback).await;

    // The final write lands, the announcement fails: the message is not acknowledged.
    completions.fail.store(true, Ordering::SeqCst);
    assert!(matches!(worker.handle(&f.delivery(1)).await, Disposition::Retry(_)));
    assert_eq!(f.status(&job.id), JobStatus::Succeeded);
    assert!(completions.published().is_empty());

    // Its redelivery finds the job final, announces it, and only then is done.
    completions.fail.store(false, Ordering::SeqCst);
    assert_eq!(worker.handle(&f.delivery(2)).await, Disposition::Ack);
    assert_eq!(completions.published().len(), 1);

    // Once the callback is settled, a further duplicate announces nothing.
    let settled = f.jobs.snapshot(&job.id).unwrap();
    let delivered = settled.with_callback(settled.callback.clone().unwrap().after(&Attempt::Answered(200), true));
    f.jobs.update(&delivered).await.unwrap();
    assert_eq!(worker.handle(&f.delivery(3)).await, Disposition::Ack);
    assert_eq!(completions.published().len(), 1);
}

#[tokio::test]
async fn only_the_message_that_made_a_job_final_announces_it_again() {
    let f = fixture(Behaviour::Succeed);
    let completions = Arc::new(MemoryPublisher::default());
    let (job, worker) = with_callback(&f, completions.clone(), Announce::Every).await;
    assert_eq!(worker.handle(&f.delivery(1)).await, Disposition::Ack);
    assert_eq!(completions.published().len(), 1);

    // Another message naming the job (a direct upload's second one, an SNS duplicate) finds it
    // final and leaves the announcing to the message that made it so.
    let other = Delivery { message_id: "m-other".into(), ..f.delivery(1) };
    assert_eq!(worker.handle(&other).await, Disposition::Ack);
    assert_eq!(completions.published().len(), 1, "another message announced the job again");

    // A redelivery of that message may follow a handler that died after the final write.
    assert_eq!(worker.handle(&f.delivery(2)).await, Disposition::Ack);
    assert_eq!(completions.published().len(), 2);
    assert_eq!(f.status(&job.id), JobStatus::Succeeded);
}

#[tokio::test]
async fn an_upload_notification_that_made_its_job_final_announces_it_on_its_redelivery() {
    let f = fixture(Behaviour::Succeed);
    let completions = Arc::new(MemoryPublisher::default());
    let (job, worker) = with_callback(&f, completions.clone(), Announce::Every).await;
    let notification = Delivery { message_id: "m-upload".into(), ..f.delivery(1) };

    // The notification's handling makes the job final, but the announcement fails.
    completions.fail.store(true, Ordering::SeqCst);
    let slot = ClaimSlot::default();
    assert!(matches!(worker.handle_upload(job.id, &notification, &slot).await, Disposition::Retry(_)));
    assert_eq!(f.status(&job.id), JobStatus::Succeeded);

    // Its redelivery announces it; the job's own message, coming back later, does not again.
    completions.fail.store(false, Ordering::SeqCst);
    let again = Delivery { receive_count: 2, ..notification };
    assert_eq!(worker.handle_upload(job.id, &again, &slot).await, Disposition::Ack);
    assert_eq!(completions.published().len(), 1);
    assert_eq!(worker.handle(&f.delivery(1)).await, Disposition::Ack);
    assert_eq!(completions.published().len(), 1);
}

#[tokio::test]
async fn a_callback_is_refused_before_anything_is_written_where_callbacks_are_not_delivered() {
    let f = fixture(Behaviour::Succeed);
    let callback = Some(CallbackUrl::parse("https://example.com/hook").unwrap());
    let refused = f.submit.submit(SubmitRequest { callback, ..request(None) }).await;
    assert!(matches!(refused, Err(SubmitError::CallbackRefused(_))), "{refused:?}");
    assert!(f.images.is_empty() && f.jobs.is_empty() && f.publisher.published().is_empty());
}

/// Drop results are written by the real file adapter (the embedded backends' feature).
#[cfg(feature = "embedded")]
mod drop_results {
    use super::*;

    /// A dropped job (`source` a drop), with a worker writing drop results under `results`.
    async fn dropped(f: &Fixture, results: &std::path::Path, key: &str) -> (Job, WorkerService) {
        use labelq_shared::domain::{DropKey, JobSource};
        let source = Some(JobSource::drop(DropKey::parse(key).unwrap(), "v1"));
        let job = f.submit.submit(SubmitRequest { source, ..request(None) }).await.unwrap().job;
        let stores = Stores { images: f.images.clone(), jobs: f.jobs.clone() };
        let worker = WorkerService::new(stores, f.detector.clone(), f.clock.clone(), WorkerConfig::default())
            .with_drop_results(Arc::new(labelq_shared::adapters::fs::FsDropResults::new(results)));
        (job, worker)
    }

    fn read_result(path: std::path::PathBuf) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
    }

    #[tokio::test]
    async fn a_dropped_job_gets_its_result_written_beside_it_when_it_finishes_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture(Behaviour::Succeed);
        let (job, worker) = dropped(&f, dir.path(), "alice/a b+(1).png").await;
        assert_eq!(worker.handle(&f.delivery(1)).await, Disposition::Ack);
        let result = read_result(dir.path().join("alice/a b+(1).png.json"));
        assert_eq!(
            (result["id"].as_str(), result["status"].as_str()),
            (Some(job.id.to_string().as_str()), Some("SUCCEEDED"))
        );
        assert_eq!(result["source"]["key"], "alice/a b+(1).png");
        assert_eq!(result["labels"][0]["name"], "Thing");

        // A job submitted through the API has no drop to write beside.
        let plain = f.submitted().await.job;
        assert_eq!(worker.handle(&f.delivery(1)).await, Disposition::Ack);
        assert_eq!(f.status(&plain.id), JobStatus::Succeeded);
        let written: Vec<_> = walk(dir.path());
        assert_eq!(written, vec![dir.path().join("alice/a b+(1).png.json")], "only the drop's result");
    }

    #[tokio::test]
    async fn a_result_that_cannot_be_written_retries_the_message_and_its_redelivery_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the result's directory must go: the write fails until it is removed.
        std::fs::write(dir.path().join("alice"), b"in the way").unwrap();
        let f = fixture(Behaviour::Succeed);
        let (job, worker) = dropped(&f, dir.path(), "alice/cat.png").await;
        assert!(matches!(worker.handle(&f.delivery(1)).await, Disposition::Retry(_)));
        assert_eq!(f.status(&job.id), JobStatus::Succeeded, "the job's outcome stands");

        std::fs::remove_file(dir.path().join("alice")).unwrap();
        assert_eq!(worker.handle(&f.delivery(2)).await, Disposition::Ack);
        assert_eq!(read_result(dir.path().join("alice/cat.png.json"))["status"], "SUCCEEDED");
        assert_eq!(f.detector.calls.load(Ordering::SeqCst), 1, "the image was labelled once");
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn a_drop_taken_again_after_its_job_finished_answers_that_job_and_rewrites_a_lost_result() {
        use labelq_shared::adapters::fs::{FsDropResults, FsDroppedObjects};
        use labelq_shared::domain::{DropKey, DropOwner, OwnerId};
        use labelq_shared::service::{DropIntake, Dropped, Taken};

        let (drops, results) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let bytes = labelq_testkit::png_header(120, 90);
        std::fs::write(drops.path().join("cat.png"), &bytes).unwrap();
        let f = fixture(Behaviour::Succeed);
        let stores = Stores { images: f.images.clone(), jobs: f.jobs.clone() };
        let submit = SubmitService::new(stores.clone(), f.publisher.clone(), f.clock.clone(), SubmitConfig::default());
        let written = Arc::new(FsDropResults::new(results.path()));
        let owner = DropOwner::Fixed(OwnerId::parse("alice").unwrap());
        let intake =
            DropIntake::new(Arc::new(submit), Arc::new(FsDroppedObjects::new(drops.path())), written.clone(), owner);
        let worker = WorkerService::new(stores, f.detector.clone(), f.clock.clone(), WorkerConfig::default())
            .with_drop_results(written);
        let dropped = Dropped {
            key: DropKey::parse("cat.png").unwrap(),
            version: "v1".into(),
            size: bytes.len() as u64,
            etag: None,
        };

        let Taken::Job { id, replayed: false } = intake.take(&dropped).await.unwrap() else { panic!("not taken") };
        assert_eq!(worker.handle(&f.delivery(1)).await, Disposition::Ack);
        let result_path = results.path().join("cat.png.json");
        assert_eq!(read_result(result_path.clone())["status"], "SUCCEEDED");

        // The result is lost (deleted, or its write ran out of attempts); the drop is seen again.
        std::fs::remove_file(&result_path).unwrap();
        assert_eq!(intake.take(&dropped).await.unwrap(), Taken::Job { id, replayed: true });
        let result = read_result(result_path);
        assert_eq!(
            (result["id"].as_str(), result["status"].as_str()),
            (Some(id.to_string().as_str()), Some("SUCCEEDED"))
        );
        assert_eq!(result["source"]["version"], "v1");
        assert_eq!(f.detector.calls.load(Ordering::SeqCst), 1, "labelled once");

        // Another version is another job; a version that is not what was seen is left for later.
        let grown = Dropped { size: bytes.len() as u64 + 1, ..dropped.clone() };
        assert_eq!(intake.take(&grown).await.unwrap(), Taken::Changed);
        let other = Dropped { version: "v2".into(), ..dropped };
        assert!(matches!(intake.take(&other).await.unwrap(), Taken::Job { replayed: false, .. }));
    }
}
