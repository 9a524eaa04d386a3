//! Live push of a job's changes as Server-Sent Events, where the server can hold a connection
//! open (`labelq serve`; API Gateway in front of Lambda buffers whole responses, so the
//! functions do not have this route).
//!
//! `GET /v1/images/{id}/events` answers `text/event-stream`: the job's current state first, then
//! each new state, each as one event whose `data` is the job exactly as `GET /v1/images/{id}`
//! answers it and whose `id` is the job's version. The stream ends after a finished state (an
//! `EventSource` then reconnects with `Last-Event-ID`, and is answered 204, which tells it to
//! stop). A reconnecting client sends the last `id` it got as `Last-Event-ID` and gets only newer
//! states. Comments keep an idle connection open through proxies.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use tokio_util::sync::CancellationToken;
use tracing::debug;
use utoipa::ToSchema;

use super::problem::{self, ApiError};
use super::views::JobView;
use super::{ApiState, Owner, openapi, path_id};
use crate::domain::Job;
use crate::service::{JobChanges, JobFeed, WatchConfig, WatchService};

static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
static ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// How a client should wait before reconnecting a dropped stream.
const RECONNECT: Duration = Duration::from_secs(1);

/// Live push: the changes to follow and how connections are kept open.
#[derive(Debug, Clone)]
pub struct Live {
    pub watch: Arc<WatchService>,
    /// An idle stream gets a comment (a WebSocket a ping) this often.
    pub keep_alive: Duration,
    /// Cancelled when the server stops: open streams and sockets then end, so they do not hold
    /// up a graceful shutdown.
    pub stop: CancellationToken,
}

/// How live push behaves.
#[derive(Debug, Clone, Copy)]
pub struct LiveConfig {
    pub watch: WatchConfig,
    pub keep_alive: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self { watch: WatchConfig::default(), keep_alive: Duration::from_secs(15) }
    }
}

impl ApiState {
    /// Adds live push over `changes`, the changes of the store this state reads; `stop` ends
    /// every open stream and socket.
    pub fn with_live(mut self, changes: JobChanges, config: LiveConfig, stop: CancellationToken) -> Self {
        let watch = Arc::new(WatchService::new(self.query.clone(), changes, config.watch));
        self.live = Some(Live { watch, keep_alive: config.keep_alive, stop });
        self
    }
}

/// One event of a job's stream, as an `EventSource` reads it (the schema of the stream's events).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // a schema only: `event` writes the stream
pub struct JobEvent {
    /// The job's version: send the last one received as `Last-Event-ID` to resume.
    #[schema(pattern = "^[0-9]+$")]
    id: String,
    /// The event type; these events have none, so they arrive as `message`.
    event: Option<String>,
    /// The job as `GET /v1/images/{id}` answers it (schema `Job`), as JSON text.
    data: String,
    /// Milliseconds to wait before reconnecting a dropped stream.
    retry: Option<u32>,
}

/// The last event a reconnecting client got: a version this API wrote as an event `id`.
/// Anything else is a client that has seen nothing yet.
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers.get(&LAST_EVENT_ID)?.to_str().ok()?.trim().parse().ok()
}

fn event(job: &Job) -> Event {
    // A view of strings, numbers and maps always serialises.
    let data = serde_json::to_string(&JobView::from(job)).unwrap_or_default();
    Event::default().id(job.version.to_string()).retry(RECONNECT).data(data)
}

/// Follow an image's job as it changes, as Server-Sent Events.
///
/// The current state first, then each new state, until a finished one (SUCCEEDED or FAILED),
/// after which the stream ends. Each event's `data` is the job as `GET /v1/images/{id}` answers
/// it, and its `id` the job's version: send the last one as `Last-Event-ID` when reconnecting to
/// get only newer states. Only on `labelq serve`.
#[utoipa::path(
    get,
    path = "/v1/images/{id}/events",
    tag = openapi::TAG,
    operation_id = "followImage",
    params(
        openapi::ImageId,
        (
            "Last-Event-ID" = Option<String>, Header,
            description = "The `id` of the last event received: only newer states are sent. Anything that is \
                           not an `id` this API sent is ignored.",
            nullable = false
        ),
        openapi::RequestIdHeader,
    ),
    responses(
        (
            status = 200,
            description = "A stream of `text/event-stream` events, one per state: `id` is the job's version, \
                           `data` the job (schema `Job`). Ends after a finished state.",
            body = JobEvent, content_type = "text/event-stream",
        ),
        (status = 204, description = "The job is finished and `Last-Event-ID` says its final state was received."),
        (
            status = 404, body = problem::Problem, content_type = "application/problem+json",
            description = "`not-found`: no such image for this caller (another owner's looks the same)."
        ),
    ),
)]
pub(super) async fn follow_image(
    State(state): State<ApiState>,
    owner: Owner,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Present by construction: the route only exists where live push is configured.
    let live = state.live.as_ref().ok_or(ApiError::NoRoute)?;
    let id = path_id(&id)?;
    let feed = live.watch.follow(&owner.0, &id, last_event_id(&headers)).await?;
    if feed.is_over() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    debug!(job_id = %id, "following a job");
    let stream = futures::stream::unfold(feed, |mut feed: JobFeed| async move {
        let job = feed.next().await?;
        Some((Ok::<_, Infallible>(event(&job)), feed))
    })
    .take_until(live.stop.clone().cancelled_owned());
    let mut response = Sse::new(stream).keep_alive(KeepAlive::new().interval(live.keep_alive)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert(ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
    Ok(response)
}
