//! The caller's default callback: `GET`, `PUT` and `DELETE /v1/callback`. Where it is set, every
//! image the caller submits without a `Callback-Url` is called back there, as if it had named it.
//! A receiver answering 410 Gone disables it (`status: DISABLED`) until it is set again.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::problem::{self, ApiError};
use super::{ApiState, Owner, openapi};
use crate::domain::{CallbackUrl, DefaultCallback};
use crate::service::{DefaultCallbackError, DefaultCallbackService};

/// The largest body `PUT /v1/callback` reads: a URL of at most 2048 characters, in JSON.
const MAX_BODY: usize = 16 * 1024;

/// The default callback to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultCallbackRequest {
    /// `https` to a public address, unless the server allows private targets.
    #[schema(format = "labelq-callback-url", max_length = 2048)]
    url: String,
}

/// Whether new jobs get the default callback.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DefaultCallbackStatus {
    Active,
    /// A receiver answered 410 Gone: not used until set again.
    Disabled,
}

/// The caller's default callback.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DefaultCallback)]
pub struct DefaultCallbackView<'a> {
    #[schema(value_type = String, format = "uri")]
    url: &'a str,
    status: DefaultCallbackStatus,
    #[serde(with = "crate::domain::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: OffsetDateTime,
    /// When a receiver answered 410 Gone to it.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "optional_timestamp")]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    disabled_at: Option<OffsetDateTime>,
}

fn optional_timestamp<S: serde::Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => crate::domain::timestamp::serialize(t, s),
        None => s.serialize_none(),
    }
}

impl<'a> From<&'a DefaultCallback> for DefaultCallbackView<'a> {
    fn from(c: &'a DefaultCallback) -> Self {
        let status = if c.is_active() { DefaultCallbackStatus::Active } else { DefaultCallbackStatus::Disabled };
        Self { url: c.url.as_str(), status, updated_at: c.updated_at, disabled_at: c.disabled_at }
    }
}

impl From<DefaultCallbackError> for ApiError {
    fn from(e: DefaultCallbackError) -> Self {
        match e {
            DefaultCallbackError::Refused(detail) => Self::bad_request("callback-refused", detail),
            DefaultCallbackError::Backend(b) => Self::Backend(b),
        }
    }
}

fn defaults(state: &ApiState) -> Result<&DefaultCallbackService, ApiError> {
    // Present by construction: the routes only exist where default callbacks are kept.
    state.defaults.as_deref().ok_or(ApiError::NoRoute)
}

fn answer(callback: &DefaultCallback) -> Response {
    let mut response = Json(DefaultCallbackView::from(callback)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The caller's default callback.
#[utoipa::path(
    get,
    path = "/v1/callback",
    tag = openapi::TAG,
    operation_id = "getDefaultCallback",
    params(openapi::RequestIdHeader),
    responses(
        (status = 200, description = "The default callback and whether it is used.", body = DefaultCallbackView),
        (
            status = 404, body = problem::Problem, content_type = "application/problem+json",
            description = "`not-found`: none is set."
        ),
    ),
)]
pub(super) async fn get_default_callback(State(state): State<ApiState>, owner: Owner) -> Result<Response, ApiError> {
    let callback = defaults(&state)?.get(&owner.0).await?.ok_or(ApiError::NoDefaultCallback)?;
    Ok(answer(&callback))
}

/// Set the caller's default callback.
///
/// Every image submitted from now on without a `Callback-Url` is called back here, as if it had
/// named it. Replaces any default callback, and enables a disabled one again.
#[utoipa::path(
    put,
    path = "/v1/callback",
    tag = openapi::TAG,
    operation_id = "setDefaultCallback",
    params(openapi::RequestIdHeader),
    request_body(content = DefaultCallbackRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Set.", body = DefaultCallbackView),
        (
            status = 400, body = problem::Problem, content_type = "application/problem+json",
            description = "`unreadable-body`, `invalid-callback-url`, `callback-refused`."
        ),
        (
            status = 415, body = problem::Problem, content_type = "application/problem+json",
            description = "`unsupported-media-type`: send application/json."
        ),
    ),
)]
pub(super) async fn set_default_callback(
    State(state): State<ApiState>,
    owner: Owner,
    request: Request,
) -> Result<Response, ApiError> {
    let defaults = defaults(&state)?;
    let (parts, body) = request.into_parts();
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType("send the default callback as application/json".into()));
    }
    let body = axum::body::to_bytes(Body::new(body), MAX_BODY).await.map_err(|_| {
        ApiError::bad_request("unreadable-body", format!("the body is unreadable or over {MAX_BODY} bytes"))
    })?;
    let request: DefaultCallbackRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("unreadable-body", format!("expected {{\"url\": \"https://…\"}}: {e}")))?;
    let url = CallbackUrl::parse(&request.url)
        .map_err(|e| ApiError::bad_request("invalid-callback-url", format!("url: {e}")))?;
    let callback = defaults.set(&owner.0, url).await?;
    Ok(answer(&callback))
}

/// Remove the caller's default callback.
#[utoipa::path(
    delete,
    path = "/v1/callback",
    tag = openapi::TAG,
    operation_id = "deleteDefaultCallback",
    params(openapi::RequestIdHeader),
    responses(
        (status = 204, description = "Removed: new jobs without a `Callback-Url` get no callback."),
        (
            status = 404, body = problem::Problem, content_type = "application/problem+json",
            description = "`not-found`: none is set."
        ),
    ),
)]
pub(super) async fn delete_default_callback(State(state): State<ApiState>, owner: Owner) -> Result<Response, ApiError> {
    if defaults(&state)?.remove(&owner.0).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NoDefaultCallback)
    }
}
