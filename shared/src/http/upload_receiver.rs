//! `PUT /v1/uploads/{id}?signature=...`: where a direct upload's bytes go on `labelq serve`, the
//! target [`HmacUploadTargets`] issues. It makes the checks S3 makes of a presigned PUT, in the
//! same order of concern: the signature (recomputed from the job's record, so nothing in the URL
//! but the job id and the signature is trusted), the expiry, the signed headers (type, length,
//! digest). The body is streamed to a temporary file and counted and hashed on the way, never
//! held whole; only when all of it is there and matches does it become the job's image, and the
//! job is announced again so a worker takes it at once. The first complete upload stays (a later
//! one never replaces bytes a worker may have checked), and storing it is recorded on the job, so
//! it and a worker's `upload_expired` cannot both win; a body must be in by the time the worker
//! gives up (the expiry plus the grace). Whether it is an image is the worker's
//! check, as it is for an object uploaded to S3.
//!
//! Not part of the OpenAPI document: its URL is issued, not built, exactly like a presigned S3 URL.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::problem::ApiError;
use crate::adapters::fs::FsImageStore;
use crate::adapters::hmac_uploads::HmacUploadTargets;
use crate::domain::{CHECKSUM_HEADER, Clock, ContentType, FailureCode, JobId, JobStatus, UploadTarget};
use crate::ports::{BackendError, Envelope, ImageStore, JobStore, MessagePublisher, UpdateError};

/// What the upload route works with.
#[derive(Debug, Clone)]
pub struct UploadReceiver {
    pub jobs: Arc<dyn JobStore>,
    pub images: Arc<FsImageStore>,
    pub publisher: Arc<dyn MessagePublisher>,
    pub targets: HmacUploadTargets,
    pub clock: Arc<dyn Clock>,
    /// How long after the expiry the worker still waits for the bytes: an upload must end by then.
    pub grace: std::time::Duration,
}

/// The route, to merge into the API's router.
pub fn routes(receiver: UploadReceiver) -> Router {
    Router::new().route("/v1/uploads/{id}", put(receive)).with_state(receiver)
}

#[derive(Debug, Deserialize)]
struct Signed {
    signature: Option<String>,
}

fn refused(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::Refused { status, slug, title, detail: detail.into() }
}

fn mismatch(detail: impl Into<String>) -> ApiError {
    refused(StatusCode::BAD_REQUEST, "upload-mismatch", "Upload does not match its declaration", detail)
}

async fn receive(
    State(receiver): State<UploadReceiver>,
    Path(id): Path<String>,
    query: Result<Query<Signed>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let forbidden = |detail: &str| refused(StatusCode::FORBIDDEN, "invalid-signature", "Invalid signature", detail);
    let signature = query.ok().and_then(|Query(q)| q.signature).ok_or_else(|| forbidden("the URL is not signed"))?;
    let id = JobId::parse(&id).map_err(|_| forbidden("the signature does not match"))?;
    let job = receiver.jobs.get(&id).await?;
    // A job that does not exist, or has no upload, answers as a bad signature does: a URL that
    // was never issued learns nothing.
    let (job, upload) = match job {
        Some(job) => match job.upload.clone() {
            Some(upload) if receiver.targets.verify(&id, &upload, &signature) => (job, upload),
            _ => return Err(forbidden("the signature does not match")),
        },
        None => return Err(forbidden("the signature does not match")),
    };
    if upload.has_expired(receiver.clock.now()) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "upload-expired",
            "Upload target expired",
            "the upload target has expired",
        ));
    }
    if job.status() != JobStatus::AwaitingUpload {
        return Err(not_awaited(&format!("the job is {}; it takes no upload", job.status())));
    }
    let declared_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(ContentType::from_mime);
    if declared_type != Some(upload.content_type) {
        return Err(mismatch(format!("Content-Type must be {}", upload.content_type.as_mime())));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .ok_or_else(|| {
            refused(StatusCode::LENGTH_REQUIRED, "length-required", "Length required", "send Content-Length")
        })?
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if length != Some(upload.length) {
        return Err(mismatch(format!("Content-Length must be {}", upload.length)));
    }
    let checksum = headers.get(CHECKSUM_HEADER).map(|v| v.to_str().unwrap_or_default().to_owned());
    let expected = UploadTarget::required_headers(&upload).remove(CHECKSUM_HEADER);
    if expected.is_some() && checksum != expected {
        return Err(mismatch(format!("{CHECKSUM_HEADER} must be the declared digest, in base64")));
    }

    let (staged, file) = receiver.images.staging().await?;
    let staged = Staged(Some(staged));
    // The whole upload must be in by the time the worker gives up on it.
    let remaining: std::time::Duration =
        (upload.expires_at + receiver.grace - receiver.clock.now()).try_into().unwrap_or_default();
    let digest = tokio::time::timeout(remaining, stream_to(file, body, upload.length)).await.map_err(|_| {
        refused(StatusCode::FORBIDDEN, "upload-expired", "Upload target expired", "the upload did not end in time")
    })??;
    let digest_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest);
    if checksum.is_some_and(|c| c != digest_b64) {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "bad-digest",
            "Bad digest",
            "the body's SHA-256 is not the one sent",
        ));
    }
    let key = &job.image.object_key.clone();
    if !receiver.images.adopt(staged.take(), key).await? {
        // Another upload's bytes are stored already: the same bytes are a retry that succeeded.
        return match receiver.images.get(key).await? {
            Some(stored) if Sha256::digest(&stored)[..] == digest[..] => Ok(stored_response(&digest)),
            _ => Err(not_awaited("other bytes were uploaded to this target already")),
        };
    }
    // Recorded on the job, so this and a worker failing it with `upload_expired` cannot both win.
    let mut current = job;
    while let Ok(stored) = current.upload_stored(receiver.clock.now()) {
        match receiver.jobs.update(&stored).await {
            Ok(()) => {
                // Announced again so a worker takes it now; if that fails, the client's retry
                // of the PUT announces it, and the job's first message, when it comes back after
                // the expiry, finds the bytes anyway.
                receiver.publisher.publish(&Envelope::for_job(&stored)).await?;
                info!(job_id = %id, size = upload.length, "upload received");
                return Ok(stored_response(&digest));
            }
            Err(UpdateError::Conflict) => {}
            Err(UpdateError::Backend(e)) => return Err(e.into()),
        }
        match receiver.jobs.get(&id).await? {
            Some(job) => current = job,
            None => {
                receiver.images.delete(key).await?;
                return Err(not_awaited("the job was deleted"));
            }
        }
    }
    // The job moved on while the bytes were being stored: a worker took them (they are checked
    // now), or it failed first and they are of no use.
    if !current.image.sha256.is_empty() {
        return Ok(stored_response(&digest));
    }
    receiver.images.delete(key).await?;
    match current.failure() {
        Some(f) if f.code == FailureCode::UploadExpired => Err(refused(
            StatusCode::FORBIDDEN,
            "upload-expired",
            "Upload target expired",
            "the job failed with upload_expired before the upload ended",
        )),
        _ => Err(not_awaited(&format!("the job is {}; it takes no upload", current.status()))),
    }
}

fn not_awaited(detail: &str) -> ApiError {
    refused(StatusCode::CONFLICT, "upload-not-awaited", "Upload not awaited", detail)
}

fn stored_response(digest: &[u8; 32]) -> Response {
    let mut response = StatusCode::OK.into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", hex::encode(digest))) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// A staged file, removed when dropped unless taken: a refused upload, or a handler dropped
/// with its connection, leaves nothing behind.
struct Staged(Option<std::path::PathBuf>);

impl Staged {
    fn take(mut self) -> std::path::PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The longest an upload's body may stop sending before the upload is refused: a client that
/// stalls (or sends less than its `Content-Length`) does not hold a connection and a file forever.
const STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes the body to `file`, hashing it, and refuses one that is not exactly `length` bytes.
async fn stream_to(mut file: tokio::fs::File, body: Body, length: u64) -> Result<[u8; 32], ApiError> {
    let write_error = |e| ApiError::Backend(BackendError::transient("write an upload", e));
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut stream = body.into_data_stream();
    loop {
        let next = tokio::time::timeout(STALL, stream.next()).await.map_err(|_| {
            refused(StatusCode::REQUEST_TIMEOUT, "upload-stalled", "Upload stalled", "no bytes arrived for 30 s")
        })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            warn!(error = %e, "an upload's body broke off");
            ApiError::bad_request("unreadable-body", "the body could not be read to its end")
        })?;
        received += chunk.len() as u64;
        if received > length {
            return Err(mismatch(format!("the body is longer than the declared {length} bytes")));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(write_error)?;
    }
    if received != length {
        return Err(mismatch(format!("the body is {received} bytes; {length} were declared")));
    }
    file.flush().await.map_err(write_error)?;
    Ok(hasher.finalize().into())
}
