//! Following a job: what a feed yields when it is told of a change, when it lagged behind the
//! broadcast, when another process changed the job, and when the job goes.

use std::sync::Arc;
use std::time::Duration;

use labelq_shared::domain::{Clock, Failure, FailureCode, Findings, Job, JobStatus, OwnerId};
use labelq_shared::ports::JobStore;
use labelq_shared::service::{
    Change, JobChanges, JobFeed, OwnerChange, OwnerFeed, QueryService, Stores, SubmitConfig, SubmitService,
    WatchConfig, WatchService, WatchedJobStore,
};
use labelq_testkit::memory::{MemoryImages, MemoryJobs, MemoryPublisher};
use labelq_testkit::{ManualClock, png_submission};

const LEASE: Duration = Duration::from_secs(60);
const PATIENCE: Duration = Duration::from_secs(5);

struct Fixture {
    /// The store underneath: a write here is one another process made, never announced.
    inner: Arc<MemoryJobs>,
    watched: Arc<WatchedJobStore>,
    changes: JobChanges,
    clock: Arc<ManualClock>,
    watch: WatchService,
    submit: SubmitService,
}

fn fixture(recheck: Duration) -> Fixture {
    let inner = Arc::new(MemoryJobs::default());
    let changes = JobChanges::new();
    let watched = Arc::new(WatchedJobStore::new(inner.clone(), changes.clone()));
    let clock = Arc::new(ManualClock::default());
    let stores = Stores { images: Arc::new(MemoryImages::default()), jobs: watched.clone() };
    let query = Arc::new(QueryService::new(stores.clone(), clock.clone()));
    let watch = WatchService::new(query, changes.clone(), WatchConfig { recheck });
    let submit =
        SubmitService::new(stores, Arc::new(MemoryPublisher::default()), clock.clone(), SubmitConfig::default());
    Fixture { inner, watched, changes, clock, watch, submit }
}

impl Fixture {
    async fn job(&self) -> Job {
        self.submit.submit(png_submission("alice")).await.unwrap().job
    }

    async fn follow(&self, job: &Job, seen: Option<u64>) -> JobFeed {
        self.watch.follow(&job.owner, &job.id, seen).await.unwrap()
    }
}

async fn next(feed: &mut JobFeed) -> Option<Job> {
    tokio::time::timeout(PATIENCE, feed.next()).await.expect("the feed answers in time")
}

fn status_and_version(job: &Job) -> (JobStatus, u64) {
    (job.status(), job.version)
}

#[tokio::test]
async fn a_feed_gives_the_current_state_then_each_new_one_and_ends_after_a_finished_one() {
    let f = fixture(Duration::from_secs(3600));
    let pending = f.job().await;
    let mut feed = f.follow(&pending, None).await;
    assert_eq!(next(&mut feed).await.as_ref().map(status_and_version), Some((JobStatus::Pending, 1)));

    let claimed = pending.claim(f.clock.now(), LEASE).unwrap();
    f.watched.update(&claimed).await.unwrap();
    // The same version told twice is given once.
    f.changes.announce(|| Change::Written(Arc::new(claimed.clone())));
    let done = claimed.succeed(Findings::default(), f.clock.now()).unwrap();
    f.watched.update(&done).await.unwrap();

    assert_eq!(next(&mut feed).await.as_ref().map(status_and_version), Some((JobStatus::Processing, 2)));
    assert_eq!(next(&mut feed).await.as_ref().map(status_and_version), Some((JobStatus::Succeeded, 3)));
    assert!(next(&mut feed).await.is_none(), "a finished job's feed ends");
    assert!(feed.is_over());
}

#[tokio::test]
async fn a_subscriber_that_has_seen_the_final_state_gets_nothing_and_one_that_has_not_gets_it() {
    let f = fixture(Duration::from_secs(3600));
    let job = f.job().await;
    let done = job.fail(Failure::new(FailureCode::Internal, "x"), f.clock.now()).unwrap();
    f.watched.update(&done).await.unwrap();

    assert!(f.follow(&done, Some(done.version)).await.is_over());
    let mut behind = f.follow(&done, Some(done.version - 1)).await;
    assert_eq!(next(&mut behind).await.as_ref().map(status_and_version), Some((JobStatus::Failed, 2)));
    assert!(next(&mut behind).await.is_none());
}

#[tokio::test]
async fn a_feed_that_fell_behind_the_broadcast_reads_its_job_again() {
    let f = fixture(Duration::from_secs(3600));
    let job = f.job().await;
    let other = f.job().await;
    let mut feed = f.follow(&job, None).await;
    assert_eq!(next(&mut feed).await.as_ref().map(status_and_version), Some((JobStatus::Pending, 1)));

    // The job moves on where nobody announces it, and the broadcast overflows with another job's changes.
    let claimed = job.claim(f.clock.now(), LEASE).unwrap();
    f.inner.update(&claimed).await.unwrap();
    for _ in 0..JobChanges::CAPACITY + 10 {
        f.changes.announce(|| Change::Written(Arc::new(other.clone())));
    }

    assert_eq!(next(&mut feed).await.as_ref().map(status_and_version), Some((JobStatus::Processing, 2)));
}

#[tokio::test]
async fn a_change_another_process_made_reaches_the_feed_on_its_recheck() {
    let f = fixture(Duration::from_millis(50));
    let job = f.job().await;
    let mut feed = f.follow(&job, None).await;
    assert_eq!(next(&mut feed).await.as_ref().map(status_and_version), Some((JobStatus::Pending, 1)));

    let claimed = job.claim(f.clock.now(), LEASE).unwrap();
    f.inner.update(&claimed).await.unwrap();

    assert_eq!(next(&mut feed).await.as_ref().map(status_and_version), Some((JobStatus::Processing, 2)));
}

#[tokio::test]
async fn a_deleted_job_ends_its_feed_and_another_owners_job_cannot_be_followed() {
    let f = fixture(Duration::from_secs(3600));
    let job = f.job().await;
    let bob = OwnerId::parse("bob").unwrap();
    assert!(f.watch.follow(&bob, &job.id, None).await.is_err(), "bob follows alice's job");

    let mut feed = f.follow(&job, None).await;
    assert!(next(&mut feed).await.is_some());
    f.watched.delete(&job.owner, &job.id).await.unwrap();
    assert!(next(&mut feed).await.is_none(), "the feed of a deleted job ends");
}

async fn next_change(feed: &mut OwnerFeed) -> Option<OwnerChange> {
    tokio::time::timeout(PATIENCE, feed.next()).await.expect("the feed answers in time")
}

#[tokio::test]
async fn an_owner_feed_gives_only_that_owners_changes_and_says_when_it_fell_behind() {
    let f = fixture(Duration::from_secs(3600));
    let alice = OwnerId::parse("alice").unwrap();
    let mut feed = f.watch.follow_owner(&alice);
    let mut bobs = f.watch.follow_owner(&OwnerId::parse("bob").unwrap());

    let job = f.job().await;
    assert!(matches!(next_change(&mut feed).await, Some(OwnerChange::Written(j)) if j.id == job.id && j.version == 1));
    let claimed = job.claim(f.clock.now(), LEASE).unwrap();
    f.watched.update(&claimed).await.unwrap();
    assert!(matches!(next_change(&mut feed).await, Some(OwnerChange::Written(j)) if j.version == 2));
    f.watched.delete(&alice, &job.id).await.unwrap();
    assert!(matches!(next_change(&mut feed).await, Some(OwnerChange::Deleted(id)) if id == job.id));

    // Bob heard nothing of it: the first thing his feed gives is that it fell behind.
    for _ in 0..JobChanges::CAPACITY + 10 {
        f.changes.announce(|| Change::Written(Arc::new(claimed.clone())));
    }
    assert!(matches!(next_change(&mut bobs).await, Some(OwnerChange::Lagged(missed)) if missed > 0));
}
