//! The REST API, written once as an axum [`Router`]: `labelq serve` runs it behind `axum::serve`,
//! the Lambda functions behind `lambda_http`, and tests drive it with `tower::ServiceExt::oneshot`.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/images` | 202 + `Location` + `Retry-After`: the image, its job and its message are durable |
//! | `POST /v1/uploads` | 201 + `Location`: a job that awaits the client's own upload, and the signed target (see [`direct_upload`]) |
//! | `GET /v1/images/{id}` | 200: status, timestamps, labels or error; `Retry-After` until finished |
//! | `GET /v1/images/{id}/events` | 200 `text/event-stream`: each state as it changes (`labelq serve` only; see [`events`]) |
//! | `GET /v1/live` | 101 WebSocket: subscribe to one job or all of the caller's (`labelq serve` only; see [`websocket`]) |
//! | `GET /v1/images?status=&label=&limit=&cursor=` | 200: the caller's images, newest first |
//! | `DELETE /v1/images/{id}` | 204: record and image removed |
//! | `GET`, `PUT`, `DELETE /v1/callback` | the caller's default callback (where kept; see [`default_callback`]) |
//! | `GET /healthz` | 200 |
//! | `GET /openapi.json` | 200: this API's OpenAPI 3.1 description |
//!
//! Errors are `application/problem+json`; see [`problem`]. Each handler carries its part of the
//! OpenAPI document (`#[utoipa::path]`); [`openapi`] assembles it.

pub mod auth;
pub mod default_callback;
pub mod direct_upload;
pub mod events;
pub mod live_protocol;
pub mod openapi;
pub mod problem;
pub mod relay;
pub mod upload;
#[cfg(feature = "embedded")]
pub mod upload_receiver;
pub mod views;
pub mod websocket;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;
use tracing::{Instrument, info, info_span};
use utoipa::IntoParams;

use self::auth::Authenticator;
use self::problem::ApiError;
use self::views::{JobView, ListLinks, ListView, decode_cursor, encode_cursor, image_path};
use crate::domain::{CallbackUrl, Clock, CorrelationId, IdempotencyKey, Job, JobId, JobStatus, OwnerId};
use crate::ports::{ListQuery, MessagePublisher, UploadTargets};
use crate::service::{DefaultCallbackService, QueryService, Stores, SubmitConfig, SubmitRequest, SubmitService};

/// How long a client should wait before polling an unfinished job, in seconds.
const RETRY_AFTER_SECS: &str = "1";
pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static CALLBACK_URL: HeaderName = HeaderName::from_static("callback-url");
static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the handlers share. `submit` is absent where this process only serves reads
/// (the status-api Lambda); the upload route then does not exist. `live` is present where the
/// process can hold connections open and sees the store's changes (`labelq serve`); the events
/// route exists only then.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub submit: Option<Arc<SubmitService>>,
    pub query: Arc<QueryService>,
    pub auth: Arc<dyn Authenticator>,
    pub live: Option<events::Live>,
    /// Present where owners' default callbacks are kept; the `/v1/callback` routes exist only then.
    pub defaults: Option<Arc<DefaultCallbackService>>,
}

/// Where accepted uploads are announced, and the rules they are accepted by.
#[derive(Debug, Clone)]
pub struct Uploads {
    pub publisher: Arc<dyn MessagePublisher>,
    pub config: SubmitConfig,
    /// Where direct uploads go; without it `POST /v1/uploads` does not exist.
    pub targets: Option<Arc<dyn UploadTargets>>,
}

impl ApiState {
    /// The API's services over `stores`, assembled once for every process that serves it
    /// (`labelq serve`, the request-handler, the status-api): reads always, uploads where there
    /// is a publisher to announce them.
    pub fn new(stores: Stores, uploads: Option<Uploads>, clock: Arc<dyn Clock>, auth: Arc<dyn Authenticator>) -> Self {
        let submit = uploads.map(|u| {
            let service = SubmitService::new(stores.clone(), u.publisher, clock.clone(), u.config);
            Arc::new(match u.targets {
                Some(targets) => service.with_upload_targets(targets),
                None => service,
            })
        });
        Self { submit, query: Arc::new(QueryService::new(stores, clock)), auth, live: None, defaults: None }
    }

    /// Adds owners' default callbacks: the `/v1/callback` routes, and submissions without a
    /// callback of their own get the owner's.
    pub fn with_default_callbacks(mut self, defaults: Arc<DefaultCallbackService>) -> Self {
        self.submit = self.submit.map(|s| Arc::new(SubmitService::clone(&s).with_default_callbacks(defaults.clone())));
        self.defaults = Some(defaults);
        self
    }
}

/// The API as an axum [`Router`]: every route is registered with its OpenAPI description
/// ([`openapi`]), so the document served at `GET /openapi.json` cannot drift from the routes.
pub fn router(state: ApiState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] with `extra` routes that are not part of the API's description (the upload route
/// of `labelq serve`, whose URLs are issued, not built), behind the same fallbacks and logging.
pub fn router_with(state: ApiState, extra: Router) -> Router {
    let direct = state.submit.as_ref().is_some_and(|s| s.takes_uploads());
    let (routes, document) =
        openapi::routes(state.submit.is_some(), direct, state.live.is_some(), state.defaults.is_some())
            .split_for_parts();
    let document = openapi::Document::serve(&document);
    routes
        .with_state(state)
        .merge(extra)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Upload bodies are limited by `upload::read_upload` with a problem+json answer.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::Extension(document))
        .layer(middleware::from_fn(access_log))
}

/// One span and one log line per request, tagged with the request id the client sent (or a new
/// one), which is echoed back and carried with the job's message.
async fn access_log(mut request: Request, next: Next) -> Response {
    let correlation = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| CorrelationId::parse(v).ok())
        .unwrap_or_default();
    request.extensions_mut().insert(correlation.clone());
    let span =
        info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %correlation);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let _entered = span.enter();
    info!(status = response.status().as_u16(), latency_ms = started.elapsed().as_secs_f64() * 1e3, "served");
    if let Ok(value) = HeaderValue::from_str(correlation.as_str()) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

/// The authenticated owner of a request.
struct Owner(OwnerId);

impl FromRequestParts<ApiState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        state.auth.authenticate(parts).map(Owner).map_err(|e| ApiError::Unauthorized(e.0))
    }
}

fn job_response(status: StatusCode, job: &Job) -> Response {
    let mut response = (status, Json(JobView::from(job))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !job.status().is_finished() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    response
}

/// Submit an image for labelling.
///
/// Validated before anything is written (JPEG or PNG, the bytes' signature matching the declared
/// type, at most the size limit, 80..=10000 px a side, read from the header). 202 means durable:
/// the image, its job and its queue message are stored. Poll `Location` no faster than
/// `Retry-After` says.
#[utoipa::path(
    post,
    path = "/v1/images",
    tag = openapi::TAG,
    operation_id = "submitImage",
    params(
        (
            "Idempotency-Key" = Option<String>, Header,
            description = "Makes a retry safe: the same key (scoped to the caller) with the same bytes answers \
                           the same job (202, `Idempotent-Replayed: true`); with other bytes, 409.",
            nullable = false, min_length = 1, max_length = 255, pattern = r"^[!-~]+$"
        ),
        (
            "Callback-Url" = Option<String>, Header,
            description = "Called when the job finishes: a signed Standard Webhooks POST (`job.succeeded` or \
                           `job.failed`), retried on failure; its delivery shows as the job's `callback`. `https` \
                           to a public address, unless the server allows private targets.",
            nullable = false, format = "labelq-callback-url", max_length = 2048
        ),
        openapi::RequestIdHeader,
    ),
    request_body(
        description = "The raw image with its type, or a form with the image in a field named `image`.",
        content(("image/jpeg"), ("image/png"), (inline(openapi::ImageForm) = "multipart/form-data")),
    ),
    responses(
        (
            status = 202, description = "Accepted: the job is recorded and queued.", body = views::JobView,
            headers(
                ("Location" = String, description = "The job's status resource."),
                ("Retry-After" = u32, description = "Seconds to wait before polling."),
                ("Idempotent-Replayed" = String, description = "`true` when this answers a retry."),
            ),
            links(
                ("GetImage" = (operation_id = "getImage", parameters(("id" = "$response.body#/id")))),
                ("DeleteImage" = (operation_id = "deleteImage", parameters(("id" = "$response.body#/id")))),
            ),
        ),
        (
            status = 400, body = problem::Problem, content_type = "application/problem+json",
            description = "Not an acceptable image, or a bad header: `not-an-image`, `empty-body`, \
                           `content-type-mismatch`, `malformed-image`, `image-dimensions`, `malformed-multipart`, \
                           `missing-image-field`, `invalid-idempotency-key`, `unreadable-body`, \
                           `invalid-callback-url`, `callback-refused`."
        ),
        (
            status = 409, body = problem::Problem, content_type = "application/problem+json",
            description = "`idempotency-key-reused`: the key was used with other bytes."
        ),
        (
            status = 413, body = problem::Problem, content_type = "application/problem+json",
            description = "`image-too-large`."
        ),
        (
            status = 415, body = problem::Problem, content_type = "application/problem+json",
            description = "`unsupported-media-type`: send image/jpeg, image/png or multipart/form-data."
        ),
    ),
)]
async fn submit_image(State(state): State<ApiState>, owner: Owner, request: Request) -> Result<Response, ApiError> {
    // Present by construction: the route only exists when submit is configured.
    let submit = state.submit.as_ref().ok_or(ApiError::MethodNotAllowed)?;
    let (parts, body) = request.into_parts();
    let idempotency_key = idempotency_key(&parts.headers)?;
    let callback = callback_url(&parts.headers)?;
    let correlation_id = parts.extensions.get::<CorrelationId>().cloned().unwrap_or_default();
    let upload = upload::read_upload(&parts.headers, body, submit.limits().max_bytes).await?;
    let request = SubmitRequest { owner: owner.0, upload, idempotency_key, correlation_id, callback, source: None };
    let submission = submit.submit(request).await?;

    let mut response = job_response(StatusCode::ACCEPTED, &submission.job);
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&image_path(&submission.job.id)) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    if submission.replayed {
        headers.insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// An optional header parsed by `parse`; a value that is not visible ASCII or that `parse`
/// refuses is a 400 with `slug`, naming the header.
fn optional_header<T, E: std::fmt::Display>(
    headers: &HeaderMap,
    name: &HeaderName,
    display: &str,
    slug: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ApiError::bad_request(slug, format!("{display} must be visible ASCII")))?;
    parse(value).map(Some).map_err(|e| ApiError::bad_request(slug, format!("{display}: {e}")))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    optional_header(headers, &IDEMPOTENCY_KEY, "Idempotency-Key", "invalid-idempotency-key", |v| {
        IdempotencyKey::parse(v).map_err(|e| e.reason)
    })
}

fn callback_url(headers: &HeaderMap) -> Result<Option<CallbackUrl>, ApiError> {
    optional_header(headers, &CALLBACK_URL, "Callback-Url", "invalid-callback-url", CallbackUrl::parse)
}

/// Parses a path id; a malformed id is simply an image that does not exist.
fn path_id(raw: &str) -> Result<JobId, ApiError> {
    JobId::parse(raw).map_err(|_| ApiError::NotFound)
}

/// An image's job: its status, and its labels or failure once finished.
#[utoipa::path(
    get,
    path = "/v1/images/{id}",
    tag = openapi::TAG,
    operation_id = "getImage",
    params(openapi::ImageId, openapi::RequestIdHeader),
    responses(
        (
            status = 200, description = "The job.", body = views::JobView,
            headers(("Retry-After" = u32, description = "While the job is unfinished: seconds to wait before polling again.")),
        ),
        (
            status = 404, body = problem::Problem, content_type = "application/problem+json",
            description = "`not-found`: no such image for this caller (another owner's looks the same)."
        ),
    ),
)]
async fn get_image(State(state): State<ApiState>, owner: Owner, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = state.query.get(&owner.0, &path_id(&id)?).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Deletes an image and its job.
#[utoipa::path(
    delete,
    path = "/v1/images/{id}",
    tag = openapi::TAG,
    operation_id = "deleteImage",
    params(openapi::ImageId, openapi::RequestIdHeader),
    responses(
        (status = 204, description = "Deleted: the record and the stored image are gone."),
        (
            status = 404, body = problem::Problem, content_type = "application/problem+json",
            description = "`not-found`: no such image for this caller."
        ),
    ),
)]
async fn delete_image(
    State(state): State<ApiState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.query.delete(&owner.0, &path_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What to list. Every field is read as text, so a bad value gets this API's own 400.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only jobs with this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs with a label (or a label's parent) of this name, compared case-insensitively.
    #[param(min_length = 1, max_length = 256)]
    label: Option<String>,
    /// Jobs per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 20)]
    limit: Option<String>,
    /// Where to resume: the `next_cursor` of the previous page, exactly as it was given.
    #[param(format = "labelq-cursor")]
    cursor: Option<String>,
}

impl ListParams {
    fn into_query(self) -> Result<ListQuery, ApiError> {
        let bad = |slug, detail: String| ApiError::bad_request(slug, detail);
        let status = self
            .status
            .map(|s| {
                JobStatus::parse(&s).ok_or_else(|| {
                    bad(
                        "invalid-parameter",
                        format!(
                            "status must be one of AWAITING_UPLOAD, PENDING, PROCESSING, SUCCEEDED, FAILED; got {s:?}"
                        ),
                    )
                })
            })
            .transpose()?;
        let label = self
            .label
            .map(|l| {
                if (1..=256).contains(&l.chars().count()) {
                    Ok(l)
                } else {
                    Err(bad("invalid-parameter", "label must be 1..=256 characters".into()))
                }
            })
            .transpose()?;
        let limit =
            match self.limit {
                None => DEFAULT_PAGE,
                Some(l) => l.parse::<usize>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                    bad("invalid-parameter", format!("limit must be an integer within 1..={MAX_PAGE}"))
                })?,
            };
        let after = self
            .cursor
            .map(|c| {
                decode_cursor(&c).ok_or_else(|| bad("invalid-cursor", "the cursor is not one this API issued".into()))
            })
            .transpose()?;
        Ok(ListQuery { status, label, limit, after })
    }
}

/// The caller's images, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/images",
    tag = openapi::TAG,
    operation_id = "listImages",
    params(ListParams, openapi::RequestIdHeader),
    responses(
        (status = 200, description = "A page of jobs; `links.next` while there may be more.", body = views::ListView),
        (
            status = 400, body = problem::Problem, content_type = "application/problem+json",
            description = "`invalid-parameter` or `invalid-cursor`."
        ),
    ),
)]
async fn list_images(
    State(state): State<ApiState>,
    owner: Owner,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request("invalid-parameter", e.body_text()))?;
    let query = params.into_query()?;
    let page = state.query.list(&owner.0, &query).await?;
    let next_cursor = page.next.as_ref().map(encode_cursor);
    let next = next_cursor.as_ref().map(|cursor| next_link(&query, cursor));
    let view =
        ListView { items: page.jobs.iter().map(JobView::from).collect(), next_cursor, links: ListLinks { next } };
    let mut response = Json(view).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn next_link(query: &ListQuery, cursor: &str) -> String {
    let mut link = format!("/v1/images?limit={}&cursor={cursor}", query.limit);
    if let Some(status) = query.status {
        link.push_str(&format!("&status={status}"));
    }
    if let Some(label) = &query.label {
        link.push_str("&label=");
        link.extend(form_urlencode(label));
    }
    link
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
fn form_urlencode(value: &str) -> impl Iterator<Item = String> + '_ {
    value.bytes().map(|b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
    })
}
