//! Live push on `labelq serve`: `GET /v1/images/{id}/events` as Server-Sent Events, read the
//! way an `EventSource` reads them, from a real server in process.

use std::sync::Arc;
use std::time::Duration;

use labelq_e2e::{ALICE, AppOptions, BOB, StubDetector, TestApp, png};
use labelq_shared::http::events::LiveConfig;
use labelq_shared::service::WatchConfig;
use labelq_testkit::detectors::{Behaviour, ScriptedDetector};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(10);

/// One event of a stream: its `id` and its `data` as JSON; or a comment (a keep-alive).
#[derive(Debug)]
enum Block {
    Event { id: u64, data: Value },
    Comment,
}

/// An open event stream.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(app: &TestApp, token: &str, id: &str, last_event_id: Option<u64>) -> reqwest::Response {
        let mut request = app.http.get(format!("{}/v1/images/{id}/events", app.base)).bearer_auth(token);
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last.to_string());
        }
        request.send().await.expect("the GET reaches the server")
    }

    async fn follow(app: &TestApp, token: &str, id: &str) -> Self {
        let response = Self::open(app, token, id, None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: String::new() }
    }

    /// The next block, or `None` when the server ended the stream.
    async fn block(&mut self) -> Option<Block> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().expect("a numeric id"));
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str(v.trim()).expect("JSON data"));
                    }
                }
                return Some(match (id, data) {
                    (Some(id), Some(data)) => Block::Event { id, data },
                    _ => Block::Comment,
                });
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the stream answers in time")
                .expect("the stream reads");
            self.buffer.push_str(std::str::from_utf8(&chunk?).expect("UTF-8"));
        }
    }

    /// The next event, skipping keep-alives, within [`PATIENCE`] however many keep-alives come;
    /// `None` when the stream ended.
    async fn event(&mut self) -> Option<(u64, Value)> {
        let next = async {
            loop {
                match self.block().await? {
                    Block::Event { id, data } => return Some((id, data)),
                    Block::Comment => {}
                }
            }
        };
        tokio::time::timeout(PATIENCE, next).await.expect("an event or the end of the stream in time")
    }
}

async fn submitted(app: &TestApp) -> String {
    app.submit_ok(ALICE, png(100, 100), "image/png").await
}

#[tokio::test]
async fn a_subscriber_after_the_job_finished_gets_the_final_state_at_once_and_a_reconnection_is_told_to_stop() {
    let app = TestApp::spawn(AppOptions::with_detector(Arc::new(StubDetector::default()))).await;
    let id = submitted(&app).await;
    let finished = app.wait_finished(ALICE, &id, PATIENCE).await;

    let mut events = Events::follow(&app, ALICE, &id).await;
    let (last, job) = events.event().await.expect("the final state");
    assert_eq!(job, finished, "the event is the job as GET answers it");
    assert!(events.event().await.is_none(), "the stream ends after a finished state");

    assert_eq!(Events::open(&app, ALICE, &id, Some(last)).await.status(), 204, "the final state was seen");
    let mut behind = Events { response: Events::open(&app, ALICE, &id, Some(last - 1)).await, buffer: String::new() };
    assert_eq!(behind.event().await.map(|(id, job)| (id, job["status"].clone())), Some((last, "SUCCEEDED".into())));
    app.shutdown().await;
}

#[tokio::test]
async fn two_subscribers_both_get_every_change_and_an_idle_stream_is_kept_alive() {
    let detector = ScriptedDetector::new(Behaviour::Block);
    let mut options = AppOptions::with_detector(detector.clone());
    // No periodic re-reads: the changes must come from what the server announces.
    let watch = WatchConfig { recheck: Duration::from_secs(3600) };
    options.live = LiveConfig { keep_alive: Duration::from_millis(50), watch };
    let app = TestApp::spawn(options).await;
    let id = submitted(&app).await;
    tokio::time::timeout(PATIENCE, detector.entered.notified()).await.expect("a worker took the job");

    let mut first = Events::follow(&app, ALICE, &id).await;
    let mut second = Events::follow(&app, ALICE, &id).await;
    let mut seen = Vec::new();
    for events in [&mut first, &mut second] {
        let (id, job) = events.event().await.expect("the current state");
        assert_eq!(job["status"], "PROCESSING");
        seen.push(id);
    }
    assert!(matches!(first.block().await, Some(Block::Comment)), "a keep-alive while nothing changes");

    detector.release.notify_one();
    for events in [&mut first, &mut second] {
        let (later, job) = events.event().await.expect("the finished state");
        assert_eq!(job["status"], "SUCCEEDED");
        assert!(later > seen[0], "ids grow with the job's versions");
        assert!(events.event().await.is_none(), "then the stream ends");
    }
    assert_eq!(seen[0], seen[1], "both subscribers got the same version");
    app.shutdown().await;
}

#[tokio::test]
async fn another_owners_job_cannot_be_followed() {
    let app = TestApp::spawn(AppOptions::with_detector(Arc::new(StubDetector::default()))).await;
    let id = submitted(&app).await;

    let response = Events::open(&app, BOB, &id, None).await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let anonymous = app.http.get(format!("{}/v1/images/{id}/events", app.base)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    app.shutdown().await;
}
