//! Live push on AWS: the relay behind the API Gateway WebSocket API, its two Lambda functions fed
//! the `aws_lambda_events` crate's WebSocket fixtures, `$connect`'s JWT check against a JWKS
//! served on 127.0.0.1, and the management API's sender against recorded responses (LocalStack's
//! free edition has no WebSocket APIs, so there is nothing to post to there).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use labelq_shared::adapters::aws::ApiGatewayLiveSender;
use labelq_shared::adapters::oidc::OidcTokenVerifier;
use labelq_shared::domain::{
    Clock, ConnectionId, ContentType, CorrelationId, Findings, ImageMeta, Job, JobId, LiveConnection, NewJob,
    ObjectKey, Outcome, OwnerId, SystemClock,
};
use labelq_shared::http::relay::{Pushed, SocketRelay};
use labelq_shared::http::websocket::{MAX_CLIENT_MESSAGE, MAX_SUBSCRIPTIONS};
use labelq_shared::lambda::LiveSocketFunction;
use labelq_shared::ports::{Delivery, Envelope, JobStore, LiveConnections, LiveSender, SendError, TokenError};
use labelq_shared::service::{Disposition, Stores};
use labelq_testkit::contract::live_connections_contract;
use labelq_testkit::detectors::label;
use labelq_testkit::memory::{MemoryJobs, MemoryLiveConnections, RecordingLiveSender};
use serde_json::{Value, json};

use super::lambda_events::fixture;

struct Relay {
    relay: SocketRelay,
    connections: Arc<MemoryLiveConnections>,
    sender: Arc<RecordingLiveSender>,
    jobs: Arc<MemoryJobs>,
}

fn relay_with(sender: Arc<dyn LiveSender>) -> (SocketRelay, Arc<MemoryLiveConnections>, Arc<MemoryJobs>) {
    let connections = Arc::new(MemoryLiveConnections::default());
    let jobs = Arc::new(MemoryJobs::default());
    let stores = Stores { images: Arc::new(labelq_testkit::memory::MemoryImages::default()), jobs: jobs.clone() };
    let relay = SocketRelay::new(connections.clone(), sender, stores, Arc::new(SystemClock));
    (relay, connections, jobs)
}

fn relay() -> Relay {
    let sender = Arc::new(RecordingLiveSender::default());
    let (relay, connections, jobs) = relay_with(sender.clone());
    Relay { relay, connections, sender, jobs }
}

fn owner(name: &str) -> OwnerId {
    OwnerId::parse(name).expect("an owner")
}

fn connection(name: &str) -> ConnectionId {
    ConnectionId::parse(&format!("{name}Conn=")).expect("a connection id")
}

impl Relay {
    async fn pending(&self, owner_name: &str) -> Job {
        let id = JobId::new();
        let job = Job::new(NewJob {
            id,
            owner: owner(owner_name),
            image: ImageMeta {
                object_key: ObjectKey::for_image(&id),
                content_type: ContentType::Png,
                size: 100,
                width: 10,
                height: 10,
                sha256: "ab".repeat(32),
            },
            idempotency_key: None,
            correlation_id: CorrelationId::new(),
            callback: None,
            source: None,
            now: SystemClock.now(),
            ttl: Duration::from_secs(3600),
        });
        self.jobs.create(&job).await.expect("create");
        job
    }

    /// Finishes `job` in the store as the worker would, and returns the live queue's message.
    async fn finish(&self, job: &Job) -> Delivery {
        let now = SystemClock.now();
        let claimed = job.claim(now, Duration::from_secs(60)).expect("claim");
        self.jobs.update(&claimed).await.expect("claim");
        let (done, delivery) = finished(&claimed);
        self.jobs.update(&done).await.expect("finish");
        delivery
    }

    async fn connect(&self, name: &str, owner_name: &str) -> ConnectionId {
        let id = connection(name);
        self.relay.connect(id.clone(), owner(owner_name)).await.expect("connect");
        id
    }

    async fn say(&self, id: &ConnectionId, message: Value) {
        self.relay.message(id, &message.to_string()).await.expect("message");
    }

    /// What `id` received, parsed, and forgotten.
    fn received(&self, id: &ConnectionId) -> Vec<Value> {
        let mut sent = self.sender.sent.lock().expect("lock");
        let (to, others): (Vec<_>, Vec<_>) = sent.drain(..).partition(|(to, _)| to == id);
        *sent = others;
        to.into_iter().map(|(_, text)| serde_json::from_str(&text).expect("JSON text")).collect()
    }

    fn following(&self, id: &ConnectionId) -> Vec<JobId> {
        let connections = self.connections.connections.lock().expect("lock");
        connections.get(id).map(|c| c.following.jobs.iter().copied().collect()).unwrap_or_default()
    }
}

/// `job` succeeded (not stored), and the live queue's message saying so.
fn finished(claimed: &Job) -> (Job, Delivery) {
    let outcome = Outcome::Succeeded(Findings::labels(vec![label("Cat")]));
    let (done, finished) = claimed.finish(outcome, SystemClock.now()).expect("finish");
    let envelope = Envelope::new(finished, CorrelationId::new());
    let delivery = Delivery {
        message_id: JobId::new().to_string(),
        receipt: "r".into(),
        body: envelope.message.to_json(),
        correlation_id: None,
        receive_count: 1,
    };
    (done, delivery)
}

fn types(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["type"].as_str().expect("a type")).collect()
}

#[tokio::test]
async fn the_memory_connections_keep_the_contract() {
    live_connections_contract(&MemoryLiveConnections::default()).await;
}

#[tokio::test]
async fn a_subscriber_gets_the_current_state_then_the_final_one_then_the_end() {
    let r = relay();
    let a1 = r.connect("a1", "alice").await;
    let job = r.pending("alice").await;

    r.say(&a1, json!({"action": "subscribe", "id": job.id})).await;
    let first = r.received(&a1);
    assert_eq!(types(&first), ["subscribed", "job"]);
    assert_eq!(first[0]["id"], job.id.to_string());
    assert_eq!(first[1]["job"]["status"], "PENDING");
    assert_eq!(r.following(&a1), [job.id]);

    let delivery = r.finish(&job).await;
    assert_eq!(r.relay.handle(&delivery).await, Disposition::Ack);
    let then = r.received(&a1);
    assert_eq!(types(&then), ["job", "unsubscribed"]);
    assert_eq!(then[0]["job"]["status"], "SUCCEEDED");
    assert_eq!(then[0]["job"]["labels"][0]["name"], "Cat");
    assert!(then[0]["version"].as_u64() > first[1]["version"].as_u64(), "versions grow");
    assert_eq!(then[1]["reason"], "finished");
    assert!(r.following(&a1).is_empty(), "a finished job is followed no more");

    // The message again (SQS is at least once): nobody follows the job, nothing is sent.
    assert_eq!(r.relay.handle(&delivery).await, Disposition::Ack);
    assert!(r.received(&a1).is_empty());
}

#[tokio::test]
async fn subscribing_after_the_job_finished_gets_the_final_state_at_once() {
    let r = relay();
    let job = r.pending("alice").await;
    r.finish(&job).await;
    let a1 = r.connect("a1", "alice").await;

    r.say(&a1, json!({"action": "subscribe", "id": job.id})).await;
    let got = r.received(&a1);
    assert_eq!(types(&got), ["subscribed", "job", "unsubscribed"]);
    assert_eq!(got[1]["job"]["status"], "SUCCEEDED");
    assert!(r.following(&a1).is_empty());

    // A client that already has that version is told only that the subscription ended.
    let version = got[1]["version"].as_u64().expect("a version");
    r.say(&a1, json!({"action": "subscribe", "id": job.id, "last_version": version})).await;
    assert_eq!(types(&r.received(&a1)), ["subscribed", "unsubscribed"]);
}

#[tokio::test]
async fn two_subscribers_both_get_the_change_and_an_all_jobs_subscription_stays() {
    let r = relay();
    let (a1, a2) = (r.connect("a1", "alice").await, r.connect("a2", "alice").await);
    let job = r.pending("alice").await;
    r.say(&a1, json!({"action": "subscribe", "id": job.id})).await;
    r.say(&a2, json!({"action": "subscribe"})).await;
    assert_eq!(types(&r.received(&a2)), ["subscribed"]);
    r.received(&a1);

    let delivery = r.finish(&job).await;
    assert_eq!(r.relay.handle(&delivery).await, Disposition::Ack);
    assert_eq!(types(&r.received(&a1)), ["job", "unsubscribed"]);
    let all = r.received(&a2);
    assert_eq!(types(&all), ["job"], "an all-jobs subscription does not end with one job");
    assert_eq!(all[0]["job"]["id"], job.id.to_string());
    assert!(r.connections.get(&a2).await.expect("get").expect("open").following.all);
}

#[tokio::test]
async fn another_owners_job_cannot_be_subscribed_to_nor_is_pushed_to_them() {
    let r = relay();
    let job = r.pending("alice").await;
    let b1 = r.connect("b1", "bob").await;
    r.say(&b1, json!({"action": "subscribe"})).await;
    r.say(&b1, json!({"action": "subscribe", "id": job.id})).await;
    let got = r.received(&b1);
    assert_eq!(types(&got), ["subscribed", "error"]);
    assert_eq!((got[1]["status"].as_u64(), got[1]["code"].as_str()), (Some(404), Some("not-found")));
    assert_eq!(got[1]["id"], job.id.to_string());
    assert!(r.following(&b1).is_empty(), "a refused subscription is not kept");

    let delivery = r.finish(&job).await;
    assert_eq!(r.relay.handle(&delivery).await, Disposition::Ack);
    assert!(r.received(&b1).is_empty(), "Bob follows all of his jobs, and this one is Alice's");
}

#[tokio::test]
async fn a_connection_the_gateway_reports_gone_is_forgotten() {
    let r = relay();
    let (a1, a2) = (r.connect("a1", "alice").await, r.connect("a2", "alice").await);
    let job = r.pending("alice").await;
    r.say(&a1, json!({"action": "subscribe", "id": job.id})).await;
    r.say(&a2, json!({"action": "subscribe", "id": job.id})).await;
    r.sender.gone.lock().expect("lock").push(a1.clone());

    r.finish(&job).await;
    let current = r.jobs.snapshot(&job.id).expect("the job");
    assert_eq!(r.relay.push(&current).await.expect("push"), Pushed { sent: 1, gone: 1 });
    assert_eq!(r.connections.get(&a1).await.expect("get"), None, "gone, so forgotten");
    assert_eq!(types(&r.received(&a2))[2..], ["job", "unsubscribed"]);

    // Replying to a message of a connection that went meanwhile forgets it too.
    r.sender.gone.lock().expect("lock").push(a2.clone());
    r.say(&a2, json!({"action": "subscribe"})).await;
    assert_eq!(r.connections.get(&a2).await.expect("get"), None);
}

#[tokio::test]
async fn a_push_that_could_not_reach_a_follower_is_retried_and_an_unreadable_one_dead_lettered() {
    let r = relay();
    let a1 = r.connect("a1", "alice").await;
    let job = r.pending("alice").await;
    r.say(&a1, json!({"action": "subscribe", "id": job.id})).await;
    let delivery = r.finish(&job).await;

    r.sender.fail.store(true, Ordering::SeqCst);
    assert!(matches!(r.relay.handle(&delivery).await, Disposition::Retry(_)), "the gateway failed: again later");
    assert_eq!(r.following(&a1), [job.id], "still followed, so the retry reaches it");
    r.sender.fail.store(false, Ordering::SeqCst);
    assert_eq!(r.relay.handle(&delivery).await, Disposition::Ack);
    assert_eq!(types(&r.received(&a1))[2..], ["job", "unsubscribed"]);

    let other = r.pending("alice").await;
    let (_, again) = finished(&other.claim(SystemClock.now(), Duration::from_secs(60)).expect("claim"));
    r.say(&a1, json!({"action": "subscribe"})).await;
    r.jobs.down.store(true, Ordering::SeqCst);
    assert!(matches!(r.relay.handle(&again).await, Disposition::Retry(_)), "the jobs table is down: again later");
    r.jobs.down.store(false, Ordering::SeqCst);

    let unreadable = Delivery { body: "{not json".into(), ..delivery.clone() };
    assert_eq!(r.relay.handle(&unreadable).await, Disposition::DeadLetter);
}

#[tokio::test]
async fn unsubscribing_stops_the_pushes_and_a_connection_holds_a_bounded_number() {
    let r = relay();
    let a1 = r.connect("a1", "alice").await;
    let job = r.pending("alice").await;
    r.say(&a1, json!({"action": "subscribe", "id": job.id})).await;
    r.say(&a1, json!({"action": "unsubscribe", "id": job.id})).await;
    let got = r.received(&a1);
    assert_eq!(types(&got), ["subscribed", "job", "unsubscribed"]);
    assert_eq!(got[2]["reason"], "requested");
    let delivery = r.finish(&job).await;
    assert_eq!(r.relay.handle(&delivery).await, Disposition::Ack);
    assert!(r.received(&a1).is_empty());

    for _ in 0..MAX_SUBSCRIPTIONS {
        let job = r.pending("alice").await;
        r.say(&a1, json!({"action": "subscribe", "id": job.id})).await;
    }
    assert_eq!(r.following(&a1).len(), MAX_SUBSCRIPTIONS);
    r.received(&a1);
    let one_more = r.pending("alice").await;
    r.say(&a1, json!({"action": "subscribe", "id": one_more.id})).await;
    let refused = r.received(&a1);
    assert_eq!(types(&refused), ["error"]);
    assert_eq!(refused[0]["code"], "too-many-subscriptions");
    assert!(!r.following(&a1).contains(&one_more.id));
    r.say(&a1, json!({"action": "subscribe"})).await;
    assert_eq!(r.received(&a1)[0]["code"], "too-many-subscriptions", "all jobs count as one more");
    r.say(&a1, json!({"action": "unsubscribe"})).await;
    assert!(r.following(&a1).is_empty(), "unsubscribe without id ends them all");
}

#[tokio::test]
async fn messages_the_protocol_does_not_know_get_an_error_message() {
    let r = relay();
    let a1 = r.connect("a1", "alice").await;
    for (text, status, code) in [
        ("not json", 400, "bad-message"),
        (r#"{"action": "shout"}"#, 400, "bad-message"),
        (r#"{"action": "subscribe", "id": "not-a-uuid"}"#, 404, "not-found"),
        (r#"{"action": "subscribe", "id": 7}"#, 400, "bad-message"),
    ] {
        r.relay.message(&a1, text).await.expect("answered");
        let got = r.received(&a1);
        assert_eq!(types(&got), ["error"], "{text}");
        assert_eq!((got[0]["status"].as_u64(), got[0]["code"].as_str()), (Some(status), Some(code)), "{text}");
    }
    let stranger = connection("never");
    r.say(&stranger, json!({"action": "subscribe"})).await;
    let got = r.received(&stranger);
    assert_eq!((got[0]["status"].as_u64(), got[0]["code"].as_str()), (Some(401), Some("unauthorized")));
    assert_eq!(r.connections.get(&stranger).await.expect("get"), None, "a message does not open a connection");
}

// ---- The management API's sender, against recorded responses ----

fn management(replies: Vec<(u16, &'static str, &'static str)>) -> (ApiGatewayLiveSender, StaticReplayClient) {
    let events = replies
        .into_iter()
        .map(|(status, error_type, body)| {
            let request = http::Request::builder()
                .uri("https://abc123.execute-api.eu-west-1.amazonaws.com/live/@connections/a1Conn%3D")
                .body(String::new().into())
                .expect("a request");
            let mut response = http::Response::builder().status(status).header("content-type", "application/json");
            if !error_type.is_empty() {
                response = response.header("x-amzn-errortype", error_type);
            }
            ReplayEvent::new(request, response.body(body.to_owned().into()).expect("a response"))
        })
        .collect();
    let http = StaticReplayClient::new(events);
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"))
        .endpoint_url("https://abc123.execute-api.eu-west-1.amazonaws.com/live")
        .retry_config(RetryConfig::disabled())
        .http_client(http.clone())
        .build();
    (ApiGatewayLiveSender::with_client(aws_sdk_apigatewaymanagement::Client::from_conf(config)), http)
}

#[tokio::test]
async fn the_sender_posts_the_text_to_the_connection_under_the_stage() {
    let (sender, http) = management(vec![(200, "", "")]);
    sender.send(&connection("a1"), r#"{"type":"subscribed"}"#).await.expect("sent");
    let requests: Vec<_> = http.actual_requests().collect();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method(), "POST");
    assert_eq!(requests[0].uri(), "https://abc123.execute-api.eu-west-1.amazonaws.com/live/@connections/a1Conn%3D");
    assert_eq!(requests[0].body().bytes(), Some(&br#"{"type":"subscribed"}"#[..]));
    let auth = requests[0].headers().get("authorization").expect("signed");
    assert!(auth.contains("/eu-west-1/execute-api/aws4_request"), "signed for execute-api: {auth}");
}

#[tokio::test]
async fn the_sender_tells_gone_from_other_failures() {
    let (sender, _) = management(vec![(410, "GoneException", r#"{"message":"gone"}"#)]);
    assert!(matches!(sender.send(&connection("a1"), "x").await, Err(SendError::Gone)));

    let (sender, _) = management(vec![(500, "InternalServerError", r#"{"message":"oops"}"#)]);
    match sender.send(&connection("a1"), "x").await {
        Err(SendError::Backend(e)) => assert!(e.retryable, "a 500 is worth another try: {e:?}"),
        other => panic!("a 500 is not {other:?}"),
    }
    let (sender, _) = management(vec![(429, "LimitExceededException", r#"{"message":"slow down"}"#)]);
    assert!(matches!(sender.send(&connection("a1"), "x").await, Err(SendError::Backend(e)) if e.retryable));
}

#[tokio::test]
async fn a_push_through_the_management_api_forgets_the_connection_that_answered_gone() {
    let (sender, http) = management(vec![(410, "GoneException", r#"{"message":"gone"}"#)]);
    let (relay, connections, jobs) = relay_with(Arc::new(sender));
    let r = Relay { relay, connections, sender: Arc::default(), jobs };
    let job = r.pending("alice").await;
    let a1 = connection("a1");
    let mut open = LiveConnection::opened(a1.clone(), owner("alice"), SystemClock.now());
    open.following.jobs.insert(job.id);
    r.connections.open(&open).await.expect("open");

    let delivery = r.finish(&job).await;
    assert_eq!(r.relay.handle(&delivery).await, Disposition::Ack);
    assert_eq!(http.actual_requests().count(), 1);
    assert_eq!(r.connections.get(&a1).await.expect("get"), None);
}

// ---- The socket function: $connect's token, $disconnect, messages ----

const ISSUER_KEY: &[u8] = include_bytes!("keys/issuer.der");
/// Another key, which the issuer does not list.
const STRANGER_KEY: &[u8] = include_bytes!("keys/stranger.der");
const KID: &str = "labelq-test-1";

/// An OpenID issuer on 127.0.0.1 that lists [`ISSUER_KEY`] under [`KID`], counting key fetches.
struct Issuer {
    url: String,
    fetches: Arc<AtomicUsize>,
}

async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_rsa_der(ISSUER_KEY), Algorithm::RS256).expect("a JWK");
    jwk.common.key_id = Some(KID.into());
    let keys = serde_json::to_value(JwkSet { keys: vec![jwk] }).expect("JSON");
    let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/keys") });
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", axum::routing::get(move || async move { axum::Json(discovery) }))
        .route(
            "/keys",
            axum::routing::get(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                axum::Json(keys)
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Issuer { url, fetches }
}

fn token(key: &[u8], kid: Option<&str>, claims: Value) -> String {
    let header = Header { kid: kid.map(str::to_owned), ..Header::new(Algorithm::RS256) };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(key)).expect("a signed token")
}

fn claims(issuer: &Issuer, sub: &str) -> Value {
    let now = SystemClock.now().unix_timestamp();
    json!({ "iss": issuer.url, "sub": sub, "aud": "labelq-web", "iat": now, "exp": now + 600 })
}

fn socket(issuer: &Issuer) -> (LiveSocketFunction, Relay) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let r = relay();
    let verifier =
        OidcTokenVerifier::new(&issuer.url, vec!["labelq-web".into(), "cognito-client".into()]).expect("a verifier");
    (LiveSocketFunction::new(r.relay.clone(), Arc::new(verifier)), r)
}

/// The crate's `$connect` fixture, with this connection id and token (a header, or in the query).
fn connect_event(id: &str, header_token: Option<&str>, query_token: Option<&str>) -> ApiGatewayWebsocketProxyRequest {
    let mut event = fixture("example-apigw-websocket-request.json");
    event["requestContext"]["connectionId"] = json!(id);
    event["requestContext"]["routeKey"] = json!("$connect");
    event["body"] = Value::Null;
    if let Some(token) = header_token {
        event["headers"]["Authorization"] = json!(format!("Bearer {token}"));
    }
    event["queryStringParameters"] = json!({});
    event["multiValueQueryStringParameters"] = json!({});
    if let Some(token) = query_token {
        event["queryStringParameters"] = json!({ "access_token": token });
        event["multiValueQueryStringParameters"] = json!({ "access_token": [token] });
    }
    serde_json::from_value(event).expect("a WebSocket event")
}

/// A message event on `route` (`subscribe`, `$default`, ...), from the same fixture.
fn message_event(id: &str, route: &str, body: &str, base64: bool) -> ApiGatewayWebsocketProxyRequest {
    let mut event = fixture("example-apigw-websocket-request.json");
    event["requestContext"]["connectionId"] = json!(id);
    event["requestContext"]["routeKey"] = json!(route);
    event["requestContext"]["eventType"] = json!("MESSAGE");
    event["body"] = json!(body);
    event["isBase64Encoded"] = json!(base64);
    serde_json::from_value(event).expect("a WebSocket event")
}

#[tokio::test]
async fn connect_takes_the_issuers_token_from_the_header_or_the_query() {
    let issuer = issuer().await;
    let (function, r) = socket(&issuer);
    let good = token(ISSUER_KEY, Some(KID), claims(&issuer, "alice"));

    let answer = function.handle(connect_event("a1Conn=", Some(&good), None)).await;
    assert_eq!(answer.status_code, 200);
    let recorded = r.connections.get(&connection("a1")).await.expect("get").expect("recorded");
    assert_eq!(recorded.owner, owner("alice"));
    assert!(recorded.following.is_empty());

    // What a browser can send: the token in the query string.
    assert_eq!(function.handle(connect_event("a2Conn=", None, Some(&good))).await.status_code, 200);
    // A Cognito access token: no aud, its app client in client_id.
    let mut access = claims(&issuer, "alice");
    access.as_object_mut().expect("claims").remove("aud");
    access["client_id"] = json!("cognito-client");
    let access = token(ISSUER_KEY, Some(KID), access);
    assert_eq!(function.handle(connect_event("a3Conn=", Some(&access), None)).await.status_code, 200);
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "the keys are fetched once and kept");

    // Then the connection's messages and its end, through the same function.
    let job = r.pending("alice").await;
    let subscribe = json!({"action": "subscribe", "id": job.id}).to_string();
    assert_eq!(function.handle(message_event("a1Conn=", "subscribe", &subscribe, false)).await.status_code, 200);
    assert_eq!(types(&r.received(&connection("a1"))), ["subscribed", "job"]);
    assert_eq!(function.handle(fixture_disconnect("a1Conn=")).await.status_code, 200);
    assert_eq!(r.connections.get(&connection("a1")).await.expect("get"), None);
}

fn fixture_disconnect(id: &str) -> ApiGatewayWebsocketProxyRequest {
    let mut event = fixture("example-apigw-websocket-request-disconnect-route.json");
    event["requestContext"]["connectionId"] = json!(id);
    serde_json::from_value(event).expect("a WebSocket event")
}

#[tokio::test]
async fn connect_refuses_tokens_that_are_not_the_issuers_for_this_api() {
    let issuer = issuer().await;
    let (function, r) = socket(&issuer);
    let now = SystemClock.now().unix_timestamp();
    let with = |change: Value| {
        let mut c = claims(&issuer, "alice");
        c.as_object_mut().expect("claims").extend(change.as_object().expect("changes").clone());
        c
    };
    let hs256 = jsonwebtoken::encode(
        &Header { kid: Some(KID.into()), ..Header::new(Algorithm::HS256) },
        &claims(&issuer, "alice"),
        &EncodingKey::from_secret(b"a shared secret").expect("a key"),
    )
    .expect("a token");
    let mut no_sub = claims(&issuer, "alice");
    no_sub.as_object_mut().expect("claims").remove("sub");
    let refused = [
        ("expired", token(ISSUER_KEY, Some(KID), with(json!({"exp": now - 120})))),
        ("another issuer", token(ISSUER_KEY, Some(KID), with(json!({"iss": "https://elsewhere.example"})))),
        ("another audience", token(ISSUER_KEY, Some(KID), with(json!({"aud": "someone-else"})))),
        ("another client", token(ISSUER_KEY, Some(KID), with(json!({"aud": null, "client_id": "someone-else"})))),
        // As API Gateway: with an `aud`, `client_id` does not count.
        (
            "another API's, with our client",
            token(ISSUER_KEY, Some(KID), with(json!({"aud": "someone-else", "client_id": "cognito-client"}))),
        ),
        ("not valid yet", token(ISSUER_KEY, Some(KID), with(json!({"nbf": now + 600})))),
        ("no sub", token(ISSUER_KEY, Some(KID), no_sub)),
        ("a bad owner", token(ISSUER_KEY, Some(KID), with(json!({"sub": "bell\u{7}"})))),
        ("signed by a stranger", token(STRANGER_KEY, Some(KID), claims(&issuer, "alice"))),
        ("no kid", token(ISSUER_KEY, None, claims(&issuer, "alice"))),
        ("HS256", hs256),
        ("not a JWT", "not.a.jwt".to_owned()),
    ];
    for (n, (what, token)) in refused.iter().enumerate() {
        let id = format!("r{n}Conn=");
        let answer = function.handle(connect_event(&id, Some(token), None)).await;
        assert_eq!(answer.status_code, 401, "{what}");
        assert_eq!(r.connections.get(&ConnectionId::parse(&id).expect("id")).await.expect("get"), None, "{what}");
    }
    assert_eq!(function.handle(connect_event("nConn=", None, None)).await.status_code, 401, "no token");

    // Unknown key ids fetch the keys again, but not more than once a minute.
    let fetched = issuer.fetches.load(Ordering::SeqCst);
    for n in 0..5 {
        let forged = token(STRANGER_KEY, Some(&format!("forged-{n}")), claims(&issuer, "alice"));
        assert_eq!(function.handle(connect_event("fConn=", Some(&forged), None)).await.status_code, 401);
    }
    assert!(issuer.fetches.load(Ordering::SeqCst) <= fetched + 1, "five forged kids, at most one fetch");
}

#[tokio::test]
async fn the_issuer_is_matched_exactly_as_configured_trailing_slash_and_all() {
    let issuer = issuer().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Auth0's issuers end in `/`, and their tokens' `iss` with them.
    let slashed = format!("{}/", issuer.url);
    let verifier = OidcTokenVerifier::new(&slashed, vec!["labelq-web".into()]).expect("a verifier");
    use labelq_shared::ports::TokenVerifier;
    let with_slash = token(
        ISSUER_KEY,
        Some(KID),
        json!({"iss": slashed, "sub": "alice", "aud": "labelq-web",
        "exp": SystemClock.now().unix_timestamp() + 60}),
    );
    assert_eq!(verifier.verify(&with_slash).await.expect("the configured issuer"), owner("alice"));
    let without = token(ISSUER_KEY, Some(KID), claims(&issuer, "alice"));
    assert!(matches!(verifier.verify(&without).await, Err(TokenError::Invalid(_))), "not the same string");
}

#[tokio::test]
async fn connect_answers_500_when_the_issuers_keys_are_out_of_reach() {
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let verifier = OidcTokenVerifier::new(&url, vec!["labelq-web".into()]).expect("a verifier");
    let now = SystemClock.now().unix_timestamp();
    let good = token(ISSUER_KEY, Some(KID), json!({"iss": url, "sub": "alice", "aud": "labelq-web", "exp": now + 60}));
    use labelq_shared::ports::TokenVerifier;
    for _ in 0..2 {
        assert!(matches!(verifier.verify(&good).await, Err(TokenError::Backend(_))), "ours, not the token's");
    }
    let r = relay();
    let function = LiveSocketFunction::new(r.relay.clone(), Arc::new(verifier));
    assert_eq!(function.handle(connect_event("a1Conn=", Some(&good), None)).await.status_code, 500);
    assert_eq!(r.connections.get(&connection("a1")).await.expect("get"), None);
}

#[tokio::test]
async fn messages_that_are_not_json_text_or_too_long_are_answered_with_an_error() {
    let issuer = issuer().await;
    let (function, r) = socket(&issuer);
    let a1 = r.connect("a1", "alice").await;
    let long = format!(r#"{{"action": "subscribe", "pad": "{}"}}"#, "x".repeat(MAX_CLIENT_MESSAGE));
    for (body, base64) in [("eyJhY3Rpb24iOiJzdWJzY3JpYmUifQ==", true), (long.as_str(), false)] {
        assert_eq!(function.handle(message_event("a1Conn=", "$default", body, base64)).await.status_code, 200);
        let got = r.received(&a1);
        assert_eq!(types(&got), ["error"]);
        assert_eq!(got[0]["code"], "bad-message");
    }
    assert!(!r.connections.get(&a1).await.expect("get").expect("open").following.all, "nothing was acted on");
    let mut no_id = message_event("a1Conn=", "$default", "{}", false);
    no_id.request_context.connection_id = None;
    assert_eq!(function.handle(no_id).await.status_code, 400);
}
