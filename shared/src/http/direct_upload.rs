//! `POST /v1/uploads`: a job that waits for the client to upload its image itself, and the signed
//! target to upload it to (see [`crate::service::SubmitService::reserve_upload`]).

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::problem::ApiError;
use super::views::{JobView, image_path};
use super::{ApiState, IDEMPOTENT_REPLAYED, Owner, callback_url, idempotency_key, openapi, problem, views};
use crate::domain::{ContentType, CorrelationId, MAX_UPLOAD_WINDOW, UploadTarget};
use crate::service::UploadRequest;

/// The most bytes of a declaration read.
const MAX_DECLARATION: usize = 16 * 1024;

/// The image a client will upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UploadDeclaration)]
pub struct UploadDeclaration {
    /// The image's type.
    #[schema(value_type = ContentType)]
    content_type: String,
    /// The exact length in bytes, at most 15 MiB.
    #[schema(value_type = u64, minimum = 1, maximum = 15728640)]
    length: serde_json::Number,
    /// Lower-case hex SHA-256 of the bytes; when given, the storage refuses other bytes.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
    /// Seconds the upload target stays valid.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, nullable = false, minimum = 1, maximum = 900, default = 900)]
    expires_in: Option<serde_json::Number>,
}

/// An optional field that, when present, must not be `null`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A non-negative integer, however it is written (`1500` or `1500.0`: JSON Schema's integers
/// are numbers without a fraction); `None` for anything else or anything beyond `u64`.
fn whole(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && (0.0..1.8e19).contains(f)).map(|f| f as u64))
}

/// A job waiting for its upload, and where to send the bytes.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = UploadReservation)]
pub struct UploadReservation<'a> {
    pub job: JobView<'a>,
    pub upload: &'a UploadTarget,
}

/// Reserve a direct upload: a job that waits for its image, and where to upload it.
///
/// For images the request body cannot carry (up to 15 MiB) and browsers that upload straight to
/// storage. Validated before anything is written. The job is `AWAITING_UPLOAD` until the bytes
/// arrive at `upload.url` (one `PUT` with exactly `upload.headers`); then it goes on as a posted
/// image, and fails with `upload_mismatch` if the bytes are not what was declared, or with
/// `upload_expired` if none arrived before `upload.expires_at`.
#[utoipa::path(
    post,
    path = "/v1/uploads",
    tag = openapi::TAG,
    operation_id = "reserveUpload",
    params(
        (
            "Idempotency-Key" = Option<String>, Header,
            description = "Makes a retry safe: the same key with the same declaration answers the same job \
                           (`Idempotent-Replayed: true`) and a target that expires when the first did; with \
                           another declaration, 409.",
            nullable = false, min_length = 1, max_length = 255, pattern = r"^[!-~]+$"
        ),
        (
            "Callback-Url" = Option<String>, Header,
            description = "Called when the job finishes, as for `POST /v1/images`.",
            nullable = false, format = "labelq-callback-url", max_length = 2048
        ),
        openapi::RequestIdHeader,
    ),
    request_body(content = UploadDeclaration, content_type = "application/json"),
    responses(
        (
            status = 201, description = "The job awaits its upload.", body = UploadReservation,
            headers(
                ("Location" = String, description = "The job's status resource."),
                ("Idempotent-Replayed" = String, description = "`true` when this answers a retry."),
            ),
            links(
                ("GetImage" = (operation_id = "getImage", parameters(("id" = "$response.body#/job/id")))),
                ("DeleteImage" = (operation_id = "deleteImage", parameters(("id" = "$response.body#/job/id")))),
            ),
        ),
        (
            status = 400, body = problem::Problem, content_type = "application/problem+json",
            description = "`invalid-upload` (a malformed declaration; a length outside 1..=15 MiB; a bad \
                           digest or expiry), \
                           `invalid-idempotency-key`, `invalid-callback-url`, `callback-refused`."
        ),
        (
            status = 409, body = problem::Problem, content_type = "application/problem+json",
            description = "`idempotency-key-reused`: the key was used with another declaration or image."
        ),
        (
            status = 415, body = problem::Problem, content_type = "application/problem+json",
            description = "`unsupported-media-type`: declare image/jpeg or image/png, in a JSON body."
        ),
    ),
)]
pub(super) async fn reserve_upload(
    State(state): State<ApiState>,
    owner: Owner,
    request: Request,
) -> Result<Response, ApiError> {
    let submit = state.submit.as_ref().filter(|s| s.takes_uploads()).ok_or(ApiError::NoRoute)?;
    let (parts, body) = request.into_parts();
    let idempotency_key = idempotency_key(&parts.headers)?;
    let callback = callback_url(&parts.headers)?;
    let correlation_id = parts.extensions.get::<CorrelationId>().cloned().unwrap_or_default();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType("declare the upload in an application/json body".into()));
    }
    // A declaration is a few hundred bytes: anything much larger is not one.
    let bytes = axum::body::to_bytes(body, MAX_DECLARATION).await.map_err(|_| {
        ApiError::bad_request("invalid-upload", format!("the declaration is over {MAX_DECLARATION} bytes"))
    })?;
    let Json(declaration) = Json::<UploadDeclaration>::from_bytes(&bytes)
        .map_err(|rejection: JsonRejection| ApiError::bad_request("invalid-upload", rejection.body_text()))?;
    let content_type = ContentType::from_mime(&declaration.content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "content_type must be image/jpeg or image/png; got {:?}",
            declaration.content_type
        ))
    })?;
    let length = whole(&declaration.length)
        .ok_or_else(|| ApiError::bad_request("invalid-upload", "length must be a whole number of bytes"))?;
    let window = match &declaration.expires_in {
        None => MAX_UPLOAD_WINDOW,
        Some(n) => Duration::from_secs(
            whole(n).ok_or_else(|| ApiError::bad_request("invalid-upload", "expires_in must be a whole number"))?,
        ),
    };
    let request = UploadRequest {
        owner: owner.0,
        content_type,
        length,
        sha256: declaration.sha256,
        window,
        idempotency_key,
        correlation_id,
        callback,
    };
    let reservation = submit.reserve_upload(request).await?;
    let view = UploadReservation { job: views::JobView::from(&reservation.job), upload: &reservation.target };
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(location) = HeaderValue::from_str(&image_path(&reservation.job.id)) {
        headers.insert(header::LOCATION, location);
    }
    if reservation.replayed {
        headers.insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
    }
    Ok(response)
}
