//! Live push on `labelq serve` over a WebSocket (`GET /v1/live`), spoken by a real WebSocket
//! client (tokio-tungstenite) to a real server in process.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use labelq_e2e::{ALICE, AppOptions, BOB, StubDetector, TestApp, png};
use labelq_shared::http::events::LiveConfig;
use labelq_shared::service::WatchConfig;
use labelq_testkit::detectors::{Behaviour, ScriptedDetector};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const PATIENCE: Duration = Duration::from_secs(10);

enum Credentials<'a> {
    Header(&'a str),
    Query(&'a str),
    None,
}

/// What a connection received next.
#[derive(Debug)]
enum Frame {
    Json(Value),
    Ping,
}

/// An open WebSocket to `/v1/live`.
struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    async fn try_connect(app: &TestApp, credentials: Credentials<'_>) -> Result<Self, tungstenite::Error> {
        let base = app.base.replace("http://", "ws://");
        let url = match credentials {
            Credentials::Query(token) => format!("{base}/v1/live?access_token={token}"),
            _ => format!("{base}/v1/live"),
        };
        let mut request = url.into_client_request()?;
        if let Credentials::Header(token) = credentials {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("a header"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { ws })
    }

    async fn connect(app: &TestApp, credentials: Credentials<'_>) -> Self {
        Self::try_connect(app, credentials).await.expect("the upgrade succeeds")
    }

    async fn send(&mut self, message: Value) {
        self.ws.send(Message::text(message.to_string())).await.expect("the message is sent");
    }

    /// The next text message or ping, within [`PATIENCE`].
    async fn frame(&mut self) -> Frame {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("a message in time");
            match next.expect("the connection stays open").expect("the connection reads") {
                Message::Text(text) => return Frame::Json(serde_json::from_str(&text).expect("JSON text")),
                Message::Ping(_) => return Frame::Ping,
                Message::Pong(_) | Message::Frame(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next JSON message, skipping keep-alive pings.
    async fn message(&mut self) -> Value {
        loop {
            if let Frame::Json(value) = self.frame().await {
                return value;
            }
        }
    }

    /// The next `job` message's (version, status, job).
    async fn job(&mut self) -> (u64, String, Value) {
        let message = self.message().await;
        assert_eq!(message["type"], "job", "{message}");
        let status = message["job"]["status"].as_str().expect("a status").to_owned();
        (message["version"].as_u64().expect("a version"), status, message["job"].clone())
    }
}

async fn submitted(app: &TestApp, token: &str) -> String {
    app.submit_ok(token, png(100, 100), "image/png").await
}

#[tokio::test]
async fn a_subscriber_after_the_job_finished_gets_the_final_state_at_once() {
    let app = TestApp::spawn(AppOptions::with_detector(Arc::new(StubDetector::default()))).await;
    let id = submitted(&app, ALICE).await;
    let finished = app.wait_finished(ALICE, &id, PATIENCE).await;

    let mut socket = Socket::connect(&app, Credentials::Header(ALICE)).await;
    socket.send(json!({"action": "subscribe", "id": id})).await;
    assert_eq!(socket.message().await, json!({"type": "subscribed", "id": id}));
    let (version, status, job) = socket.job().await;
    assert_eq!(status, "SUCCEEDED");
    assert_eq!(job, finished, "the message carries the job as GET answers it");
    assert_eq!(socket.message().await, json!({"type": "unsubscribed", "id": id, "reason": "finished"}));

    // Resuming from the final version: nothing to send, and the subscription ends at once.
    socket.send(json!({"action": "subscribe", "id": id, "last_version": version})).await;
    assert_eq!(socket.message().await["type"], "subscribed");
    assert_eq!(socket.message().await, json!({"type": "unsubscribed", "id": id, "reason": "finished"}));
    // One version behind: the final state again.
    socket.send(json!({"action": "subscribe", "id": id, "last_version": version - 1})).await;
    assert_eq!(socket.message().await["type"], "subscribed");
    assert_eq!(socket.job().await.0, version);
    app.shutdown().await;
}

#[tokio::test]
async fn a_job_subscriber_and_an_all_jobs_subscriber_both_get_every_change() {
    let detector = ScriptedDetector::new(Behaviour::Block);
    let mut options = AppOptions::with_detector(detector.clone());
    // No periodic re-reads: the changes must come from what the server announces.
    let watch = WatchConfig { recheck: Duration::from_secs(3600) };
    options.live = LiveConfig { keep_alive: Duration::from_millis(50), watch };
    let app = TestApp::spawn(options).await;

    // A browser-style connection: the token in the query.
    let mut everything = Socket::connect(&app, Credentials::Query(ALICE)).await;
    everything.send(json!({"action": "subscribe"})).await;
    assert_eq!(everything.message().await, json!({"type": "subscribed"}));

    let id = submitted(&app, ALICE).await;
    tokio::time::timeout(PATIENCE, detector.entered.notified()).await.expect("a worker took the job");
    let mut one = Socket::connect(&app, Credentials::Header(ALICE)).await;
    one.send(json!({"action": "subscribe", "id": id})).await;
    assert_eq!(one.message().await["type"], "subscribed");
    let (processing, status, _) = one.job().await;
    assert_eq!(status, "PROCESSING");
    assert!(matches!(one.frame().await, Frame::Ping), "a keep-alive while nothing changes");

    detector.release.notify_one();
    let (finished, status, _) = one.job().await;
    assert_eq!(status, "SUCCEEDED");
    assert!(finished > processing, "versions grow");
    assert_eq!(one.message().await["reason"], "finished");

    let mut seen = Vec::new();
    while seen.last().is_none_or(|(_, status): &(u64, String)| status != "SUCCEEDED") {
        let (version, status, job) = everything.job().await;
        assert_eq!(job["id"], id.as_str());
        seen.push((version, status));
    }
    assert_eq!(seen.first().map(|(_, s)| s.as_str()), Some("PENDING"), "from its creation: {seen:?}");
    assert!(seen.contains(&(processing, "PROCESSING".to_owned())), "{seen:?}");
    assert_eq!(seen.last(), Some(&(finished, "SUCCEEDED".to_owned())));
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "in order, each once: {seen:?}");

    // Deleting is a change too.
    let deleted = app.http.delete(format!("{}/v1/images/{id}", app.base)).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(everything.message().await, json!({"type": "deleted", "id": id}));
    app.shutdown().await;
}

#[tokio::test]
async fn another_owners_jobs_cannot_be_seen_and_bad_requests_are_answered() {
    let detector = ScriptedDetector::new(Behaviour::Block);
    let app = TestApp::spawn(AppOptions::with_detector(detector.clone())).await;
    let alices = submitted(&app, ALICE).await;
    tokio::time::timeout(PATIENCE, detector.entered.notified()).await.expect("a worker took Alice's job");

    let mut bob = Socket::connect(&app, Credentials::Header(BOB)).await;
    bob.send(json!({"action": "subscribe", "id": alices})).await;
    let refused = bob.message().await;
    assert_eq!((refused["type"].as_str(), refused["status"].as_u64()), (Some("error"), Some(404)), "{refused}");
    assert_eq!((refused["code"].as_str(), refused["id"].as_str()), (Some("not-found"), Some(alices.as_str())));
    bob.send(json!({"action": "subscribe"})).await;
    assert_eq!(bob.message().await["type"], "subscribed");
    // Alice's job finishes while Bob follows all of his.
    detector.release.notify_one();
    app.wait_finished(ALICE, &alices, PATIENCE).await;
    // Bob's own job is the first thing he hears of: none of Alice's changes reached him.
    let bobs = submitted(&app, BOB).await;
    tokio::time::timeout(PATIENCE, detector.entered.notified()).await.expect("a worker took Bob's job");
    detector.release.notify_one();
    loop {
        let (_, status, job) = bob.job().await;
        assert_eq!(job["id"], bobs.as_str());
        if status == "SUCCEEDED" {
            break;
        }
    }

    // Messages that are not subscriptions are answered, and the connection stays usable.
    for bad in [json!({"action": "dance"}), json!({"action": "subscribe", "id": "not-an-id"})] {
        bob.send(bad.clone()).await;
        let answer = bob.message().await;
        assert_eq!(answer["type"], "error", "{bad} -> {answer}");
    }
    bob.ws.send(Message::text("{")).await.unwrap();
    assert_eq!(bob.message().await["code"], "bad-message");
    bob.send(json!({"action": "unsubscribe"})).await;
    assert_eq!(bob.message().await, json!({"type": "unsubscribed", "reason": "requested"}));

    match Socket::try_connect(&app, Credentials::None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("an upgrade without a token: {:?}", other.map(|_| "connected")),
    }
    match Socket::try_connect(&app, Credentials::Query("not-a-known-token-at-all")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("an upgrade with an unknown token: {:?}", other.map(|_| "connected")),
    }
    let plain = app.http.get(format!("{}/v1/live", app.base)).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(plain.status(), 426);
    assert_eq!(plain.headers()["content-type"], "application/problem+json");
    assert_eq!(plain.headers()["upgrade"], "websocket");
    app.shutdown().await;
}

/// A connection whose client never reads, over a socket with a small receive buffer so the
/// server's writes to it really back up.
async fn stalled_subscriber(app: &TestApp) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let addr = app.server().addr();
    let stream = socket.connect(addr).await.expect("connects");
    let mut request = format!("ws://{addr}/v1/live").into_client_request().expect("a request");
    request.headers_mut().insert("authorization", format!("Bearer {ALICE}").parse().expect("a header"));
    let (mut ws, _) =
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await.expect("the upgrade succeeds");
    ws.send(Message::text(json!({"action": "subscribe"}).to_string())).await.expect("sent");
    ws
}

#[tokio::test]
async fn subscribers_that_stop_reading_hold_up_neither_the_jobs_nor_other_subscribers() {
    let mut options = AppOptions::with_detector(Arc::new(StubDetector::default()));
    options.live.keep_alive = Duration::from_millis(20);
    let app = TestApp::spawn(options).await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_subscriber(&app).await);
    }
    let mut reader = Socket::connect(&app, Credentials::Header(ALICE)).await;
    reader.send(json!({"action": "subscribe"})).await;
    assert_eq!(reader.message().await["type"], "subscribed");

    // Enough changes that the stalled connections' buffers and queues fill many times over.
    const JOBS: usize = 150;
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        ids.push(submitted(&app, ALICE).await);
    }
    let mut finished = 0;
    while finished < JOBS {
        if reader.job().await.1 == "SUCCEEDED" {
            finished += 1;
        }
    }
    for id in &ids {
        app.wait_finished(ALICE, id, PATIENCE).await;
    }
    drop(stalled);
    app.shutdown().await;
}

#[tokio::test]
async fn open_sockets_and_event_streams_end_when_the_server_stops() {
    // The job is held in the detector, so nothing ends its subscriptions but the server stopping.
    let detector = ScriptedDetector::new(Behaviour::Block);
    let app = TestApp::spawn(AppOptions::with_detector(detector.clone())).await;
    let id = submitted(&app, ALICE).await;
    tokio::time::timeout(PATIENCE, detector.entered.notified()).await.expect("a worker took the job");
    let mut socket = Socket::connect(&app, Credentials::Header(ALICE)).await;
    socket.send(json!({"action": "subscribe", "id": id})).await;
    assert_eq!(socket.message().await["type"], "subscribed");
    assert_eq!(socket.job().await.1, "PROCESSING");
    let mut stream =
        app.http.get(format!("{}/v1/images/{id}/events", app.base)).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some(), "the stream's first event");

    // Well within the workers' 5 s grace for the job they hold.
    let soon = Duration::from_secs(2);
    let stopping = tokio::spawn(app.shutdown());
    match tokio::time::timeout(soon, socket.ws.next()).await.expect("the socket is closed at once") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001, "going away"),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let rest = tokio::time::timeout(soon, stream.chunk()).await.expect("the stream ends at once");
    assert!(matches!(rest, Ok(None)), "the event stream ended: {rest:?}");
    detector.release.notify_one();
    tokio::time::timeout(PATIENCE, stopping).await.expect("the server stops").expect("shutdown");
}
