//! A webhook receiver for the tests: a real HTTP server on 127.0.0.1:0 that answers each call
//! with the next status of a script (the last one repeats) and records every call it got.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use labelq_shared::webhooks::signature::DEFAULT_TOLERANCE;
use labelq_shared::webhooks::{WebhookSecrets, verify};
use tokio::task::JoinHandle;

/// One call the receiver got.
#[derive(Debug, Clone)]
pub struct Call {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Call {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Verifies the call's signature as a receiver would, with `secrets`, against the clock now.
    pub fn assert_signed(&self, secrets: &WebhookSecrets) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let verified = verify(
            secrets,
            self.header("webhook-id"),
            self.header("webhook-timestamp"),
            self.header("webhook-signature"),
            &self.body,
            now,
            DEFAULT_TOLERANCE,
        );
        assert_eq!(verified, Ok(()), "{:?}", self.headers);
    }
}

/// What the receiver answers: a status, a `Location` for redirects, and a `Retry-After`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub retry_after: Option<String>,
}

impl From<u16> for Answer {
    fn from(status: u16) -> Self {
        Self { status, location: None, retry_after: None }
    }
}

#[derive(Debug, Default)]
struct Shared {
    script: Vec<Answer>,
    calls: Vec<Call>,
}

/// What the receiver does per call: record it and pick its answer, then take `delay` to send it.
fn answer(state: &Mutex<Shared>, headers: HeaderMap, body: Bytes) -> Answer {
    let mut shared = state.lock().expect("the receiver's state");
    let n = shared.calls.len();
    shared.calls.push(Call { headers, body, at: Instant::now() });
    shared.script.get(n).or(shared.script.last()).cloned().unwrap_or(200.into())
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that answers with `script` in order, repeating its last answer.
    pub async fn start(script: impl IntoIterator<Item = impl Into<Answer>>) -> Self {
        Self::start_slow(script, Duration::ZERO).await
    }

    /// The same, taking `delay` over every answer.
    pub async fn start_slow(script: impl IntoIterator<Item = impl Into<Answer>>, delay: Duration) -> Self {
        let shared =
            Arc::new(Mutex::new(Shared { script: script.into_iter().map(Into::into).collect(), calls: Vec::new() }));
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let answer = answer(&state, headers, body);
                tokio::time::sleep(delay).await;
                let mut response: Response =
                    StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response();
                if let Some(location) = answer.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                if let Some(retry_after) = answer.retry_after.and_then(|r| HeaderValue::from_str(&r).ok()) {
                    response.headers_mut().insert(header::RETRY_AFTER, retry_after);
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the receiver");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The URL to give as a callback.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().expect("the receiver's state").calls.clone()
    }

    /// How many calls it got, without copying them (for a loop that waits for them).
    pub fn call_count(&self) -> usize {
        self.shared.lock().expect("the receiver's state").calls.len()
    }

    /// Waits until the receiver has had `n` calls, returning them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Call> {
        let started = Instant::now();
        loop {
            let calls = self.calls();
            if calls.len() >= n {
                return calls;
            }
            assert!(started.elapsed() < timeout, "{} calls after {timeout:?}, expected {n}", calls.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
