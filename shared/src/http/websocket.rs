//! Live push over a WebSocket, where the server can hold connections open (`labelq serve`).
//!
//! `GET /v1/live` upgrades to a WebSocket on which the caller subscribes to its jobs with JSON
//! text messages, one job or all of them, and gets each change as it happens:
//!
//! | client sends | server answers |
//! |---|---|
//! | `{"action":"subscribe","id":"<job id>"}` (optionally `"last_version": n`) | `subscribed`, then a `job` message per state newer than `n` (the current one first), then `unsubscribed` with reason `finished` (or `gone`) |
//! | `{"action":"subscribe"}` | `subscribed` with no `id`, then a `job` message for every change to any of the caller's jobs from now on, `deleted` for a deleted one, and `lagged` if changes were missed (list the jobs again) |
//! | `{"action":"unsubscribe","id":...}` / `{"action":"unsubscribe"}` | `unsubscribed` with reason `requested` |
//! | anything else | `error` (a problem's `status`, `code` and `detail`); the connection stays open |
//!
//! The caller authenticates on the upgrade request: `Authorization: Bearer <token>`, or, since a
//! browser's `WebSocket` cannot send headers, `?access_token=<token>`. A server that runs without
//! tokens refuses pages of other origins (browsers do not apply CORS to WebSockets).
//!
//! Every subscription is a task of its connection, feeding the connection's writer through a
//! small queue, so a client that stops reading holds up only itself: its queue fills, its
//! subscriptions fall behind the broadcast (which never waits) and catch up by reading the store,
//! and a write that cannot complete within [`WRITE_PATIENCE`] closes the connection. When the
//! server stops, it closes every connection with 1001 (going away).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, header};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, warn};

use super::events::Live;
use super::live_protocol::{EndReason, LiveMessage, LiveRequest};
use super::problem::{self, ApiError};
use super::{ApiState, Owner, openapi};
use crate::domain::{JobId, OwnerId};
use crate::service::{OwnerChange, QueryError};

/// The largest message a client may send; subscriptions are a few dozen bytes.
pub const MAX_CLIENT_MESSAGE: usize = 4096;
/// Subscriptions one connection may hold at once (all jobs counts as one).
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// Messages waiting for a connection's writer before its subscriptions wait too.
const QUEUE: usize = 32;
/// How long one write to a client may take before the connection is closed as stalled.
pub const WRITE_PATIENCE: Duration = Duration::from_secs(30);

/// The caller of an upgrade request: as for any route, or from `access_token` in the query,
/// which a browser can send where it cannot send a header.
pub(super) struct SocketOwner(OwnerId);

impl FromRequestParts<ApiState> for SocketOwner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(header::AUTHORIZATION)
            && let Some(token) = access_token(parts.uri.query().unwrap_or_default())
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            parts.headers.insert(header::AUTHORIZATION, value);
        }
        let Owner(owner) = Owner::from_request_parts(parts, state).await?;
        Ok(Self(owner))
    }
}

/// The request's `Origin`, when there is one and it is not the server itself (its `Host`).
/// Clients other than browsers send none.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("(unreadable)").to_owned();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).and_then(|h| h.parse::<Authority>().ok());
    let same = match (url::Url::parse(&origin), host) {
        (Ok(o), Some(host)) => {
            let port = o.port_or_known_default();
            // `Host` leaves out the scheme's default port.
            o.host_str().is_some_and(|h| h.eq_ignore_ascii_case(host.host())) && host.port_u16().or(port) == port
        }
        _ => false,
    };
    (!same).then_some(origin)
}

fn access_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned())
}

/// Follow the caller's jobs over a WebSocket.
///
/// Upgrades to a WebSocket (RFC 6455). Send `{"action":"subscribe","id":"<job id>"}` to follow
/// one job (its current state first, then each change, until finished; add `"last_version"` to
/// get only newer states), or `{"action":"subscribe"}` to get every change to any of your jobs
/// from now on; `{"action":"unsubscribe"}`, with or without `id`, stops. Messages are JSON text:
/// the client's are `LiveRequest`, the server's `LiveMessage` (see the schemas). Authenticate
/// with the `Authorization` header or, from a browser, `access_token`. Only on `labelq serve`.
#[utoipa::path(
    get,
    path = "/v1/live",
    tag = openapi::TAG,
    operation_id = "liveJobs",
    params(
        (
            "access_token" = Option<String>, Query,
            description = "The bearer token, for clients that cannot send an `Authorization` header (a browser's \
                           `WebSocket`). Ignored when the header is present.",
            nullable = false
        ),
        openapi::RequestIdHeader,
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; then `LiveRequest` and `LiveMessage` \
                                      JSON text messages."),
        (
            status = 403, body = problem::Problem, content_type = "application/problem+json",
            description = "`cross-origin`: a server running without tokens refuses a page from another origin."
        ),
        (
            status = 426, body = problem::Problem, content_type = "application/problem+json",
            description = "`upgrade-required`: not a WebSocket upgrade request."
        ),
    ),
)]
pub(super) async fn live_jobs(
    State(state): State<ApiState>,
    owner: SocketOwner,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Present by construction: the route only exists where live push is configured.
    let live = state.live.clone().ok_or(ApiError::NoRoute)?;
    // Browsers do not apply CORS to WebSockets: without credentials to check, any page the
    // user visits could otherwise read the owner's jobs. With tokens, the token is the proof.
    if state.auth.is_open()
        && let Some(origin) = foreign_origin(&headers)
    {
        return Err(ApiError::CrossOrigin(origin));
    }
    let upgrade = upgrade.map_err(|e| ApiError::UpgradeRequired(e.body_text()))?;
    let owner = owner.0;
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| Session::new(live, owner).run(socket)))
}

/// What a subscription follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Job(JobId),
    All,
}

impl Target {
    fn id(self) -> Option<JobId> {
        match self {
            Self::Job(id) => Some(id),
            Self::All => None,
        }
    }
}

/// One connection: its subscriptions, each a task, and the queue they write to.
struct Session {
    live: Live,
    owner: OwnerId,
    subscriptions: HashMap<Target, AbortHandle>,
    tasks: JoinSet<Target>,
    queue: mpsc::Sender<Utf8Bytes>,
    outgoing: mpsc::Receiver<Utf8Bytes>,
}

impl Session {
    fn new(live: Live, owner: OwnerId) -> Self {
        let (queue, outgoing) = mpsc::channel(QUEUE);
        Self { live, owner, subscriptions: HashMap::new(), tasks: JoinSet::new(), queue, outgoing }
    }

    async fn run(mut self, socket: WebSocket) {
        debug!(owner = %self.owner, "live connection opened");
        let (mut sink, mut stream) = socket.split();
        let mut ping = tokio::time::interval(self.live.keep_alive);
        ping.reset();
        loop {
            let reply = tokio::select! {
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => self.act(text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => {
                        let error = ApiError::bad_request("bad-message", "messages are JSON text");
                        vec![LiveMessage::error(None, &error)]
                    }
                    // Pings are answered by the protocol layer; pongs need nothing.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Vec::new(),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                },
                Some(text) = self.outgoing.recv() => vec![text],
                Some(ended) = self.tasks.join_next_with_id() => {
                    if let Ok((task, target)) = ended
                        && self.subscriptions.get(&target).is_some_and(|h| h.id() == task)
                    {
                        self.subscriptions.remove(&target);
                    }
                    Vec::new()
                }
                _ = ping.tick() => {
                    if !write(&mut sink, Message::Ping(Default::default())).await {
                        break;
                    }
                    Vec::new()
                }
                () = self.live.stop.cancelled() => {
                    let frame = CloseFrame { code: close_code::AWAY, reason: "the server is stopping".into() };
                    let _ = write(&mut sink, Message::Close(Some(frame))).await;
                    break;
                }
            };
            let mut open = true;
            for text in reply {
                open = open && write(&mut sink, Message::Text(text)).await;
            }
            if !open {
                break;
            }
        }
        self.tasks.abort_all();
        debug!(owner = %self.owner, "live connection closed");
    }

    /// Acts on one client message; the replies to send at once.
    async fn act(&mut self, text: &str) -> Vec<Utf8Bytes> {
        let request = match serde_json::from_str::<LiveRequest>(text) {
            Ok(request) => request,
            Err(e) => {
                let error = ApiError::bad_request("bad-message", format!("not a subscription message: {e}"));
                return vec![LiveMessage::error(None, &error)];
            }
        };
        match request {
            LiveRequest::Subscribe { id, last_version } => match target(id.as_deref()) {
                Ok(target) => self.subscribe(target, last_version).await,
                Err(error) => vec![LiveMessage::error(None, &error)],
            },
            LiveRequest::Unsubscribe { id } => match target(id.as_deref()) {
                Ok(target) => {
                    if let Some(task) = self.subscriptions.remove(&target) {
                        task.abort();
                    }
                    vec![LiveMessage::Unsubscribed { id: target.id(), reason: EndReason::Requested }.text()]
                }
                Err(error) => vec![LiveMessage::error(None, &error)],
            },
        }
    }

    /// Starts following `target`, in place of any subscription to it already.
    async fn subscribe(&mut self, target: Target, seen: Option<u64>) -> Vec<Utf8Bytes> {
        if !self.subscriptions.contains_key(&target) && self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            let error = ApiError::bad_request(
                "too-many-subscriptions",
                format!("a connection holds at most {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe first"),
            );
            return vec![LiveMessage::error(target.id(), &error)];
        }
        let queue = self.queue.clone();
        let task = match target {
            Target::Job(id) => {
                let mut feed = match self.live.watch.follow(&self.owner, &id, seen).await {
                    Ok(feed) => feed,
                    Err(e) => {
                        if let QueryError::Backend(b) = &e {
                            warn!(error = %b, cause = ?b, job_id = %id, "could not start a live subscription");
                        }
                        return vec![LiveMessage::error(Some(id), &ApiError::from(e))];
                    }
                };
                self.tasks.spawn(async move {
                    // Over before it began: the subscriber has the final version already.
                    let mut reason = if feed.is_over() { EndReason::Finished } else { EndReason::Gone };
                    while let Some(job) = feed.next().await {
                        if job.status().is_finished() {
                            reason = EndReason::Finished;
                        }
                        if queue.send(LiveMessage::job(&job)).await.is_err() {
                            return target;
                        }
                    }
                    let _ = queue.send(LiveMessage::Unsubscribed { id: Some(id), reason }.text()).await;
                    target
                })
            }
            Target::All => {
                let mut feed = self.live.watch.follow_owner(&self.owner);
                self.tasks.spawn(async move {
                    while let Some(change) = feed.next().await {
                        let text = match change {
                            OwnerChange::Written(job) => LiveMessage::job(&job),
                            OwnerChange::Deleted(id) => LiveMessage::Deleted { id }.text(),
                            OwnerChange::Lagged(missed) => LiveMessage::Lagged { missed }.text(),
                        };
                        if queue.send(text).await.is_err() {
                            break;
                        }
                    }
                    target
                })
            }
        };
        if let Some(previous) = self.subscriptions.insert(target, task) {
            previous.abort();
        }
        vec![LiveMessage::Subscribed { id: target.id() }.text()]
    }
}

fn target(id: Option<&str>) -> Result<Target, ApiError> {
    match id {
        None => Ok(Target::All),
        Some(id) => JobId::parse(id).map(Target::Job).map_err(|_| ApiError::NotFound),
    }
}

/// Writes one message, or gives up on a client that does not take it in time.
async fn write<S>(sink: &mut S, message: Message) -> bool
where
    S: futures::Sink<Message, Error = axum::Error> + Unpin,
{
    match tokio::time::timeout(WRITE_PATIENCE, sink.send(message)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "live connection write failed");
            false
        }
        Err(_) => {
            warn!(patience_s = WRITE_PATIENCE.as_secs(), "live connection stalled; closing it");
            false
        }
    }
}
