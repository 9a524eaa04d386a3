//! Errors as `application/problem+json` (RFC 9457).
//!
//! Every client error has a stable `type` a client can branch on; the list is in the README. Server
//! errors are logged once here, with their cause chain, and answered with an opaque body.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tracing::error;
use utoipa::ToSchema;

use crate::domain::ImageRejection;
use crate::ports::BackendError;
use crate::service::{QueryError, SubmitError};

/// Prefix of every problem `type`.
pub const PROBLEM_BASE: &str = "https://labelq.dev/problems/";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{detail}")]
    BadRequest { slug: &'static str, detail: String },
    #[error(transparent)]
    Image(#[from] ImageRejection),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the body is larger than {max} bytes")]
    PayloadTooLarge { max: usize },
    #[error("no such image")]
    NotFound,
    /// The caller has no default callback.
    #[error("no default callback is set")]
    NoDefaultCallback,
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A browser page of another origin, on a server without credentials.
    #[error("a page from another origin ({0}) may not open this server's WebSocket while it runs without tokens")]
    CrossOrigin(String),
    /// A WebSocket route called without a WebSocket upgrade.
    #[error("this route speaks WebSocket: {0}")]
    UpgradeRequired(String),
    #[error("the idempotency key was already used with a different image")]
    KeyReused,
    /// A client error with its own status (the upload route's 403, 409, 411).
    #[error("{detail}")]
    Refused { status: StatusCode, slug: &'static str, title: &'static str, detail: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl ApiError {
    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest { slug, detail: detail.into() }
    }

    /// The status and the stable slug of the problem `type`.
    pub fn status_and_slug(&self) -> (StatusCode, &'static str) {
        let (status, slug, _) = self.classify();
        (status, slug)
    }

    /// Status, stable slug, and title.
    fn classify(&self) -> (StatusCode, &'static str, &'static str) {
        use ImageRejection as R;
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::BadRequest { slug, .. } => (StatusCode::BAD_REQUEST, slug, "Bad request"),
            Self::Image(R::TooLarge { .. }) => (StatusCode::PAYLOAD_TOO_LARGE, "image-too-large", "Image too large"),
            Self::Image(R::Empty) => (StatusCode::BAD_REQUEST, "empty-body", "Empty body"),
            Self::Image(R::NotAnImage) => (StatusCode::BAD_REQUEST, "not-an-image", "Not an image"),
            Self::Image(R::TypeMismatch { .. }) => {
                (StatusCode::BAD_REQUEST, "content-type-mismatch", "Content does not match its type")
            }
            Self::Image(R::MalformedHeader(_)) => (StatusCode::BAD_REQUEST, "malformed-image", "Malformed image"),
            Self::Image(R::Dimensions { .. }) => {
                (StatusCode::BAD_REQUEST, "image-dimensions", "Image dimensions out of range")
            }
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "image-too-large", "Image too large"),
            Self::NotFound | Self::NoDefaultCallback | Self::NoRoute => {
                (StatusCode::NOT_FOUND, "not-found", "Not found")
            }
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed"),
            Self::CrossOrigin(_) => (StatusCode::FORBIDDEN, "cross-origin", "Cross-origin request refused"),
            Self::UpgradeRequired(_) => (StatusCode::UPGRADE_REQUIRED, "upgrade-required", "Upgrade required"),
            Self::KeyReused => (StatusCode::CONFLICT, "idempotency-key-reused", "Idempotency key reused"),
            Self::Refused { status, slug, title, .. } => (*status, slug, title),
            Self::Backend(e) if e.retryable => {
                (StatusCode::SERVICE_UNAVAILABLE, "service-unavailable", "Service unavailable")
            }
            Self::Backend(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal server error"),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Rejected(r) => Self::Image(r),
            SubmitError::KeyReused => Self::KeyReused,
            SubmitError::CallbackRefused(detail) => Self::bad_request("callback-refused", detail),
            SubmitError::Declaration(refused) => Self::bad_request("invalid-upload", refused.to_string()),
            SubmitError::NoUploads => Self::NoRoute,
            SubmitError::Backend(b) => Self::Backend(b),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::NotFound => Self::NotFound,
            QueryError::Backend(b) => Self::Backend(b),
        }
    }
}

/// An RFC 9457 problem: what went wrong, as `application/problem+json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `https://labelq.dev/problems/<slug>`, stable: clients branch on it.
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    pub kind: String,
    #[schema(value_type = String)]
    pub title: &'static str,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What was wrong with the request; absent on server errors, whose cause is only logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
}

impl ApiError {
    /// The problem this error is answered with; a server error's detail is left out.
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.classify();
        let detail = (!status.is_server_error()).then(|| self.to_string());
        Problem { kind: format!("{PROBLEM_BASE}{slug}"), title, status: status.as_u16(), detail }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            error!(error = %self, cause = ?self, %status, "request failed");
        }
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            StatusCode::UPGRADE_REQUIRED => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
            _ => {}
        }
        response
    }
}
