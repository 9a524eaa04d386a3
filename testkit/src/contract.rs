//! What every `JobStore` (and every `ImageStore`, `DefaultCallbacks`, `LiveConnections`) must do, as one test body run against each adapter (SQLite on a real
//! file, DynamoDB on LocalStack) and against the in-memory double the service tests use, so none
//! of them can drift from the others.

use std::time::Duration;

use labelq_shared::domain::DefaultCallback;
use labelq_shared::domain::{
    Attempt, BoundingBox, Callback, CallbackUrl, Clock, Confidence, ContentType, CorrelationId, DominantColor, Failure,
    FailureCode, Findings, IdempotencyKey, ImageMeta, ImageProperties, ImageQuality, Job, JobId, JobStatus, Label,
    LabelName, NewJob, ObjectKey, OwnerId, SystemClock, TextDetection,
};
use labelq_shared::domain::{ConnectionId, LiveConnection};
use labelq_shared::ports::{
    Created, DefaultCallbacks, Followed, ImageStore, JobStore, ListQuery, LiveConnections, StoredImage, UpdateError,
};
use time::OffsetDateTime;

fn job(owner: &str, key: Option<&str>, created_at: OffsetDateTime) -> Job {
    let id = JobId::new();
    Job::new(NewJob {
        id,
        owner: OwnerId::parse(owner).expect("owner"),
        image: ImageMeta {
            object_key: ObjectKey::for_image(&id),
            content_type: ContentType::Png,
            size: 100,
            width: 100,
            height: 100,
            sha256: "ab".repeat(32),
        },
        idempotency_key: key.map(|k| IdempotencyKey::parse(k).expect("key")),
        correlation_id: CorrelationId::new(),
        callback: None,
        source: None,
        now: created_at,
        ttl: Duration::from_secs(86_400),
    })
}

fn label(name: &str, parent: &str) -> Label {
    Label {
        name: name.into(),
        confidence: Confidence::new(90.0).expect("90"),
        parents: vec![LabelName::new(parent)],
        aliases: vec![],
        categories: vec![],
        instances: vec![],
    }
}

fn query(limit: usize) -> ListQuery {
    ListQuery { status: None, label: None, limit, after: None }
}

/// Runs the contract; panics on the first violation.
pub async fn job_store_contract(store: &dyn JobStore) {
    let now = SystemClock.now();
    // An owner of its own, so a shared store (one table for many tests) does not interfere.
    let owner = format!("owner-{}", CorrelationId::new());
    let other = format!("other-{}", CorrelationId::new());

    // Create and read back, equal to what was written.
    let first = job(&owner, Some("key-1"), now);
    assert!(matches!(store.create(&first).await.expect("create"), Created::Created));
    assert_eq!(store.get(&first.id).await.expect("get"), Some(first.clone()));
    assert_eq!(store.get(&JobId::new()).await.expect("get"), None);

    // The idempotency key is the owner's: reused by them it names the first job, by another owner
    // it is free.
    let same_key = job(&owner, Some("key-1"), now + Duration::from_millis(1));
    match store.create(&same_key).await.expect("create") {
        Created::KeyTaken(existing) => assert_eq!(existing.id, first.id),
        Created::Created => panic!("a reused key created a second job"),
    }
    assert_eq!(store.get(&same_key.id).await.expect("get"), None, "the loser left no job behind");
    let others = job(&other, Some("key-1"), now);
    assert!(matches!(store.create(&others).await.expect("create"), Created::Created));
    let found = store.find_by_idempotency_key(&first.owner, first.idempotency_key.as_ref().expect("key")).await;
    assert_eq!(found.expect("find").map(|j| j.id), Some(first.id));

    // Transitions are compare-and-swap on the version.
    let claimed = first.claim(now, Duration::from_secs(60)).expect("claim");
    store.update(&claimed).await.expect("the first claim wins");
    let rival = first.claim(now, Duration::from_secs(60)).expect("claim");
    assert!(matches!(store.update(&rival).await, Err(UpdateError::Conflict)), "a stale claim loses");
    // Everything a detector finds reads back as it was written: labels, text, properties.
    let findings = Findings {
        labels: vec![label("Tabby Cat", "Cat"), label("Sofa", "Furniture")],
        text_detections: vec![TextDetection {
            detected_text: "HOME SWEET HOME".into(),
            confidence: Confidence::from_probability(0.97),
            bounding_box: BoundingBox { width: 0.5, height: 0.125, left: 0.25, top: 0.5 },
        }],
        image_properties: Some(ImageProperties {
            quality: ImageQuality { brightness: 62.5, sharpness: 81.25, contrast: 40.0 },
            dominant_colors: vec![DominantColor::new(200, 150, 100, 37.5)],
        }),
    };
    let done = claimed.succeed(findings, now).expect("succeed");
    store.update(&done).await.expect("succeed");
    assert_eq!(store.get(&first.id).await.expect("get"), Some(done.clone()));

    // A callback's delivery state is recorded on a finished job, compare-and-swap like the rest.
    let url = CallbackUrl::parse("https://example.com/hooks/labelq").expect("url");
    let with_callback = Job { callback: Some(Callback::new(url)), ..job(&owner, None, now) };
    store.create(&with_callback).await.expect("create");
    assert_eq!(store.get(&with_callback.id).await.expect("get"), Some(with_callback.clone()));
    let failed = with_callback.fail(Failure::new(FailureCode::ImageUndecodable, "bad"), now).expect("fail");
    store.update(&failed).await.expect("fail");
    let callback = failed.callback.clone().expect("callback");
    let attempted = failed.with_callback(callback.after(&Attempt::Answered(503), true));
    store.update(&attempted).await.expect("record an attempt");
    let rival = failed.with_callback(callback.after(&Attempt::Answered(200), true));
    assert!(matches!(store.update(&rival).await, Err(UpdateError::Conflict)), "a stale record loses");
    assert_eq!(store.get(&with_callback.id).await.expect("get"), Some(attempted));
    store.delete(&OwnerId::parse(&owner).expect("owner"), &with_callback.id).await.expect("delete");

    // Listing: newest first, paginated, filtered by status and by label or parent name.
    let mut newer = Vec::new();
    for i in 1..=4u64 {
        let j = job(&owner, None, now + Duration::from_secs(i));
        store.create(&j).await.expect("create");
        newer.push(j);
    }
    let failed = newer[0].fail(Failure::new(FailureCode::ImageUndecodable, "bad"), now).expect("fail");
    store.update(&failed).await.expect("fail");
    let owner_id = OwnerId::parse(&owner).expect("owner");
    let mut seen = Vec::new();
    let mut q = query(2);
    loop {
        let page = store.list(&owner_id, &q).await.expect("list");
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    let expected: Vec<JobId> = newer.iter().rev().map(|j| j.id).chain([first.id]).collect();
    assert_eq!(seen, expected, "newest first, every job once");

    let by_status =
        store.list(&owner_id, &ListQuery { status: Some(JobStatus::Failed), ..query(10) }).await.expect("list");
    assert_eq!(by_status.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [newer[0].id]);
    for name in ["tabby cat", "CAT", "furniture"] {
        let by_label = store.list(&owner_id, &ListQuery { label: Some(name.into()), ..query(10) }).await.expect("list");
        assert_eq!(by_label.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [first.id], "label {name}");
    }
    let none = store.list(&owner_id, &ListQuery { label: Some("giraffe".into()), ..query(10) }).await.expect("list");
    assert!(none.jobs.is_empty() && none.next.is_none());

    // Delete is scoped to the owner and frees the key.
    let other_id = OwnerId::parse(&other).expect("owner");
    assert_eq!(store.delete(&other_id, &first.id).await.expect("delete"), None);
    assert_eq!(store.delete(&owner_id, &first.id).await.expect("delete").map(|j| j.id), Some(first.id));
    assert_eq!(store.get(&first.id).await.expect("get"), None);
    let reuse = job(&owner, Some("key-1"), now);
    assert!(matches!(store.create(&reuse).await.expect("create"), Created::Created), "the key is free again");
}

/// What every `ImageStore` must do, under both kinds of key; panics on the first violation.
pub async fn image_store_contract(store: &dyn ImageStore) {
    let id = JobId::new();
    let stored = |bytes: Vec<u8>| StoredImage {
        bytes: bytes.into(),
        content_type: ContentType::Png,
        owner: OwnerId::parse("alice").expect("owner"),
        sha256: "ab".repeat(32),
    };
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    for key in [ObjectKey::for_image(&id), ObjectKey::for_upload(&id)] {
        assert_eq!(store.get(&key).await.expect("get"), None, "{key} before it was put");
        assert_eq!(store.get_at_most(&key, 10).await.expect("get"), None, "{key} before it was put");
        store.put(&key, &stored(bytes.clone())).await.expect("put");
        assert_eq!(store.get(&key).await.expect("get").as_deref(), Some(&bytes[..]), "{key}");
        // At most one byte more than asked for: enough to tell the object is larger.
        for (max, expected) in [(0, 1), (10, 11), (999, 1000), (1000, 1000), (u64::MAX, 1000)] {
            let read = store.get_at_most(&key, max).await.expect("get").expect("there");
            assert_eq!(&read[..], &bytes[..expected], "{key}, at most {max}");
        }
        store.delete(&key).await.expect("delete");
        assert_eq!(store.get(&key).await.expect("get"), None, "{key} after it was deleted");
        store.delete(&key).await.expect("deleting a missing image is no error");
    }
    let empty = ObjectKey::for_upload(&JobId::new());
    store.put(&empty, &stored(vec![])).await.expect("put");
    assert_eq!(store.get_at_most(&empty, 10).await.expect("get").as_deref(), Some(&[][..]), "an empty object");
    store.delete(&empty).await.expect("delete");
}

/// What every `DefaultCallbacks` must do; panics on the first violation.
pub async fn default_callbacks_contract(store: &dyn DefaultCallbacks) {
    let owner = |s: &str| OwnerId::parse(s).expect("owner");
    let (alice, bob) = (owner(&format!("alice-{}", JobId::new())), owner(&format!("bob-{}", JobId::new())));
    let url = |s: &str| CallbackUrl::parse(s).expect("a URL");
    // Whole milliseconds: what every store keeps of a timestamp.
    let now = OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("a time");

    assert_eq!(store.get(&alice).await.expect("get"), None, "nothing set yet");
    assert!(!store.delete(&alice).await.expect("delete"), "nothing to delete");
    assert!(!store.disable(&alice, &url("https://a.example/x"), now).await.expect("disable"), "nothing to disable");

    let first = DefaultCallback::new(url("https://a.example/hooks?x=1"), now);
    store.put(&alice, &first).await.expect("put");
    assert_eq!(store.get(&alice).await.expect("get"), Some(first.clone()), "kept as given");
    assert_eq!(store.get(&bob).await.expect("get"), None, "per owner");

    // Another URL (the owner changed it since) is not disabled; the current one is, once.
    assert!(!store.disable(&alice, &url("https://old.example/"), now).await.expect("disable"));
    assert!(store.get(&alice).await.expect("get").expect("set").is_active());
    let later = now + time::Duration::seconds(5);
    assert!(store.disable(&alice, &first.url, later).await.expect("disable"));
    let disabled = store.get(&alice).await.expect("get").expect("still there");
    assert_eq!((disabled.url.clone(), disabled.disabled_at), (first.url.clone(), Some(later)));
    assert!(!store.disable(&alice, &first.url, later).await.expect("disable"), "already disabled");

    // Setting it again enables it; deleting removes it.
    let again = DefaultCallback::new(first.url.clone(), later);
    store.put(&alice, &again).await.expect("put");
    assert_eq!(store.get(&alice).await.expect("get"), Some(again));
    assert!(store.delete(&alice).await.expect("delete"));
    assert_eq!(store.get(&alice).await.expect("get"), None);
}

/// What every `LiveConnections` must do; panics on the first violation.
pub async fn live_connections_contract(store: &dyn LiveConnections) {
    let unique = JobId::new().to_string().replace('-', "");
    let connection = |n: &str| ConnectionId::parse(&format!("{n}{unique}=")).expect("a connection id");
    let owner = |s: &str| OwnerId::parse(&format!("{s}-{unique}")).expect("owner");
    let (alice, bob) = (owner("alice"), owner("bob"));
    let now = OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("a time");
    let (a1, a2, b1) = (connection("a1"), connection("a2"), connection("b1"));
    let (job, other) = (JobId::new(), JobId::new());

    assert_eq!(store.get(&a1).await.expect("get"), None, "nothing open yet");
    let follow = |id: &ConnectionId, job: Option<JobId>| {
        let id = id.clone();
        async move { store.follow(&id, job.as_ref(), 3).await.expect("follow") }
    };
    assert_eq!(follow(&a1, Some(job)).await, Followed::NoConnection, "no such connection to follow with");
    assert_eq!(store.get(&a1).await.expect("get"), None, "following does not create a connection");
    store.close(&a1).await.expect("closing an unknown connection is not an error");

    let opened = LiveConnection::opened(a1.clone(), alice.clone(), now);
    store.open(&opened).await.expect("open");
    assert_eq!(store.get(&a1).await.expect("get"), Some(opened.clone()), "kept as given");
    store.open(&LiveConnection::opened(a2.clone(), alice.clone(), now)).await.expect("open");
    store.open(&LiveConnection::opened(b1.clone(), bob.clone(), now)).await.expect("open");
    assert!(store.following(&alice, &job).await.expect("following").is_empty(), "nobody follows anything yet");

    // a1 follows one job, a2 all of Alice's, b1 the same job id (which is not Bob's: never told).
    assert_eq!(follow(&a1, Some(job)).await, Followed::Following);
    assert_eq!(follow(&a1, Some(job)).await, Followed::Following, "following twice is following");
    assert_eq!(follow(&a2, None).await, Followed::Following);
    assert_eq!(follow(&b1, Some(job)).await, Followed::Following);
    let ids = |mut v: Vec<LiveConnection>| {
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v.into_iter().map(|c| c.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(store.following(&alice, &job).await.expect("following")), vec![a1.clone(), a2.clone()]);
    assert_eq!(ids(store.following(&alice, &other).await.expect("following")), vec![a2.clone()], "all jobs");
    assert_eq!(ids(store.following(&bob, &job).await.expect("following")), vec![b1.clone()], "per owner");
    let followed = store.get(&a1).await.expect("get").expect("open");
    assert_eq!(followed.following.jobs.iter().collect::<Vec<_>>(), vec![&job]);
    assert!(!followed.following.all);
    assert_eq!((followed.owner, followed.expires_at), (alice.clone(), opened.expires_at), "the rest untouched");

    // The limit (3 here): all jobs count as one, one already followed is no more.
    let (third, fourth) = (JobId::new(), JobId::new());
    assert_eq!(follow(&a1, Some(other)).await, Followed::Following);
    assert_eq!(follow(&a1, None).await, Followed::Following);
    assert_eq!(follow(&a1, Some(third)).await, Followed::Full, "two jobs and all jobs make three");
    assert_eq!(follow(&a1, Some(job)).await, Followed::Following, "followed already: not one more");
    assert_eq!(follow(&a1, None).await, Followed::Following, "followed already: not one more");
    store.unfollow(&a1, None).await.expect("unfollow every subscription");
    assert!(store.get(&a1).await.expect("get").expect("open").following.is_empty());
    for job in [job, other, third] {
        assert_eq!(follow(&a1, Some(job)).await, Followed::Following);
    }
    assert_eq!(follow(&a1, Some(fourth)).await, Followed::Full, "three jobs");
    assert_eq!(follow(&a1, None).await, Followed::Full, "three jobs, so not all of them too");
    // Unfollowing one job, then everything.
    store.unfollow(&a1, Some(&third)).await.expect("unfollow");
    store.unfollow(&a1, Some(&job)).await.expect("unfollow");
    assert_eq!(ids(store.following(&alice, &job).await.expect("following")), vec![a2.clone()]);
    assert_eq!(ids(store.following(&alice, &other).await.expect("following")), vec![a1.clone(), a2.clone()]);
    store.unfollow(&a2, None).await.expect("unfollow all");
    store.unfollow(&a1, None).await.expect("unfollow all");
    assert!(store.following(&alice, &other).await.expect("following").is_empty());
    assert!(store.get(&a2).await.expect("get").expect("still open").following.is_empty());
    store
        .unfollow(&connection("never"), Some(&job))
        .await
        .expect("unfollowing on an unknown connection is not an error");

    // Closing forgets the connection and what it followed.
    store.close(&b1).await.expect("close");
    assert_eq!(store.get(&b1).await.expect("get"), None);
    assert!(store.following(&bob, &job).await.expect("following").is_empty());
    store.close(&a1).await.expect("close");
    store.close(&a2).await.expect("close");
}
