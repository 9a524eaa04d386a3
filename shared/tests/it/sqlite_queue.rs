//! The SQLite queue on real files, with a clock the tests move: SQS's semantics (visibility,
//! receive counts, dead letters, stale receipts), the wake-up on publish, and what a departed
//! holder leaves behind.

use std::sync::Arc;
use std::time::Duration;

use labelq_shared::adapters::sqlite::{QueueCounts, SqliteQueue};
use labelq_shared::config::MaxReceives;
use labelq_shared::domain::{CorrelationId, SystemClock};
use labelq_shared::ports::JobQueue;
use labelq_testkit::ManualClock;

fn max(n: u32) -> MaxReceives {
    n.to_string().parse().unwrap()
}

fn queue(max_receives: u32) -> (tempfile::TempDir, SqliteQueue, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let q = SqliteQueue::open(&dir.path().join("queue.sqlite3"), max(max_receives), clock.clone()).unwrap();
    (dir, q, clock)
}

const VIS: Duration = Duration::from_secs(30);
const NO_WAIT: Duration = Duration::ZERO;

#[tokio::test]
async fn a_received_message_is_hidden_until_acknowledged() {
    let (_dir, q, _) = queue(5);
    q.send_raw("one".into(), None).await.unwrap();
    let got = q.receive(10, VIS, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].body.as_str(), got[0].receive_count), ("one", 1));
    assert!(q.receive(10, VIS, NO_WAIT).await.unwrap().is_empty(), "hidden while in flight");
    q.ack(&got[0]).await.unwrap();
    assert_eq!(q.counts().await.unwrap(), QueueCounts::default());
}

#[tokio::test]
async fn an_unacknowledged_message_comes_back_with_a_higher_receive_count() {
    let (_dir, q, clock) = queue(5);
    q.send_raw("again".into(), None).await.unwrap();
    let first = q.receive(1, VIS, NO_WAIT).await.unwrap();
    clock.advance(VIS - Duration::from_millis(1));
    assert!(q.receive(1, VIS, NO_WAIT).await.unwrap().is_empty(), "still hidden a moment before");
    clock.advance(Duration::from_millis(1));
    let second = q.receive(1, VIS, NO_WAIT).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].receive_count, 2);
    // The first receipt is stale: acknowledging with it must not delete the redelivered copy.
    q.ack(&first[0]).await.unwrap();
    assert_eq!(q.counts().await.unwrap().in_flight, 1);
}

#[tokio::test]
async fn a_message_is_dead_lettered_after_max_receives() {
    let (_dir, q, _) = queue(2);
    q.send_raw("poison".into(), None).await.unwrap();
    for expected in 1..=2 {
        let got = q.receive(1, VIS, NO_WAIT).await.unwrap();
        assert_eq!(got[0].receive_count, expected);
        q.retry(&got[0], Duration::ZERO).await.unwrap();
    }
    assert!(q.receive(1, VIS, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(q.counts().await.unwrap(), QueueCounts { visible: 0, in_flight: 0, dead: 1 });
    assert_eq!(q.dead_letters().await.unwrap(), ["poison"]);
}

#[tokio::test]
async fn dead_letter_moves_a_message_at_once() {
    let (_dir, q, _) = queue(5);
    q.send_raw("give up".into(), None).await.unwrap();
    let got = q.receive(1, VIS, NO_WAIT).await.unwrap();
    q.dead_letter(&got[0]).await.unwrap();
    assert_eq!(q.counts().await.unwrap(), QueueCounts { visible: 0, in_flight: 0, dead: 1 });
}

/// Without the wake-up the receiver would sleep until its deadline: it looks for other
/// processes' messages only every hour here, and the clock never moves.
#[tokio::test]
async fn a_waiting_receiver_wakes_on_publish() {
    let (_dir, q, _) = queue(5);
    let q = q.polling_every(Duration::from_secs(3600));
    let receiver = {
        let q = q.clone();
        tokio::spawn(async move { q.receive(1, VIS, Duration::from_secs(600)).await })
    };
    // Let the receiver find the queue empty and start waiting.
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.send_raw("wake".into(), None).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), receiver).await;
    let got = got.expect("woken by the publish").unwrap().unwrap();
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn a_departed_holders_messages_are_visible_at_once_and_others_keep_theirs() {
    let (dir, q, clock) = queue(5);
    let gone = q.clone().held_by("gone");
    let alive = q.clone().held_by("alive");
    for body in ["a", "b", "c"] {
        q.send_raw(body.into(), None).await.unwrap();
    }
    let held_by_gone = gone.receive(2, VIS, NO_WAIT).await.unwrap();
    let held_by_alive = alive.receive(1, VIS, NO_WAIT).await.unwrap();
    assert_eq!((held_by_gone.len(), held_by_alive.len()), (2, 1));

    // Another process opening the file gives back what the departed one held.
    let reopened = SqliteQueue::open(&dir.path().join("queue.sqlite3"), max(5), clock).unwrap();
    assert_eq!(reopened.release_held_by("gone").await.unwrap(), 2);
    let again = reopened.receive(10, VIS, NO_WAIT).await.unwrap();
    let mut bodies: Vec<&str> = again.iter().map(|d| d.body.as_str()).collect();
    bodies.sort_unstable();
    let mut expected: Vec<&str> = held_by_gone.iter().map(|d| d.body.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(bodies, expected, "the live holder's message stays hidden");
    assert_eq!(reopened.release_held_by("gone").await.unwrap(), 0);
}

#[tokio::test]
async fn a_message_waiting_out_its_backoff_is_nobodys() {
    let (_dir, q, _) = queue(5);
    let held = q.clone().held_by("gone");
    q.send_raw("backoff".into(), None).await.unwrap();
    let got = held.receive(1, VIS, NO_WAIT).await.unwrap();
    held.retry(&got[0], Duration::from_secs(60)).await.unwrap();
    assert_eq!(q.release_held_by("gone").await.unwrap(), 0, "its backoff is kept");
}

#[tokio::test]
async fn messages_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite3");
    {
        let q = SqliteQueue::open(&path, max(5), Arc::new(SystemClock)).unwrap();
        q.send_raw("durable".into(), Some(&CorrelationId::parse("abc").unwrap())).await.unwrap();
    }
    let q = SqliteQueue::open(&path, max(5), Arc::new(SystemClock)).unwrap();
    let got = q.receive(1, VIS, NO_WAIT).await.unwrap();
    assert_eq!(got[0].body, "durable");
    assert_eq!(got[0].correlation_id.as_ref().map(CorrelationId::as_str), Some("abc"));
}
