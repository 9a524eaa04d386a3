//! Reading an uploaded image from a request body: either the raw bytes with an image
//! `Content-Type`, or `multipart/form-data` with a field named `image` (browsers, `curl -F`).
//!
//! The body is read with a hard limit, so an oversized upload is refused after at most the limit
//! is buffered, and a declared `Content-Length` over the limit is refused before reading at all.

use axum::body::Body;
use bytes::Bytes;
use futures::stream;
use http::{HeaderMap, header};

use super::problem::ApiError;
use crate::domain::{ContentType, ImageRejection};
use crate::service::Upload;

/// Room for multipart boundaries and part headers on top of the image limit.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// The form field that carries the image.
pub const IMAGE_FIELD: &str = "image";

pub async fn read_upload(headers: &HeaderMap, body: Body, max_bytes: usize) -> Result<Upload, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unsupported("a Content-Type of image/jpeg, image/png or multipart/form-data is required"))?;

    if let Some(declared) = ContentType::from_mime(content_type) {
        let bytes = read_limited(headers, body, max_bytes).await?;
        return Ok(Upload { bytes, declared });
    }
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        unsupported(&format!(
            "unsupported Content-Type {content_type:?}: send image/jpeg, image/png or multipart/form-data"
        ))
    })?;
    let form = read_limited(headers, body, max_bytes + MULTIPART_OVERHEAD).await?;
    read_image_field(form, boundary, max_bytes).await
}

fn unsupported(detail: &str) -> ApiError {
    ApiError::UnsupportedMediaType(detail.to_owned())
}

async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared_len =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { max: limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::PayloadTooLarge { max: limit }
        } else {
            ApiError::bad_request("unreadable-body", "the request body could not be read")
        }
    })
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

async fn read_image_field(form: Bytes, boundary: String, max_bytes: usize) -> Result<Upload, ApiError> {
    let body = stream::once(async move { Ok::<_, std::convert::Infallible>(form) });
    let mut multipart = multer::Multipart::new(body, boundary);
    let malformed =
        |e: multer::Error| ApiError::bad_request("malformed-multipart", format!("malformed multipart body: {e}"));
    let mut upload = None;
    // The form is exactly one field: anything else is refused rather than silently ignored.
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        if field.name() != Some(IMAGE_FIELD) || upload.is_some() {
            let name = field.name().unwrap_or_default().escape_debug().to_string();
            return Err(ApiError::bad_request(
                "malformed-multipart",
                format!("unexpected form field \"{name}\": the form takes one field, {IMAGE_FIELD:?}"),
            ));
        }
        let part_type = field.content_type().map(|m| m.essence_str().to_owned());
        let bytes = field.bytes().await.map_err(malformed)?;
        if bytes.len() > max_bytes {
            return Err(ImageRejection::TooLarge { size: bytes.len(), max: max_bytes }.into());
        }
        let declared = match part_type.as_deref() {
            // Clients often send files as octet-stream or untyped; the signature decides then.
            None | Some("application/octet-stream") => {
                ContentType::sniff(&bytes).ok_or(ApiError::Image(ImageRejection::NotAnImage))?
            }
            Some(mime) => ContentType::from_mime(mime).ok_or_else(|| {
                unsupported(&format!("unsupported image type {mime:?}: send image/jpeg or image/png"))
            })?,
        };
        upload = Some(Upload { bytes, declared });
    }
    upload.ok_or_else(|| {
        ApiError::bad_request("missing-image-field", format!("the form has no field named {IMAGE_FIELD:?}"))
    })
}
