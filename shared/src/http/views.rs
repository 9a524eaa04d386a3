//! The JSON the API answers with, and the opaque list cursor. The types here are also the
//! schemas of the OpenAPI document, so the document describes exactly what is serialised.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::problem::Problem;
use crate::domain::{
    CallbackStatus, ContentType, DeclaredUpload, Failure, ImageProperties, Job, JobId, JobSource, JobStatus, Label,
    TextDetection,
};
use crate::ports::ListPosition;

pub fn image_path(id: &JobId) -> String {
    format!("/v1/images/{id}")
}

/// An image's labelling job: its status, what the image looked like, and, once it is finished,
/// its labels or why it failed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Job)]
pub struct JobView<'a> {
    #[schema(value_type = String, format = "uuid")]
    pub id: JobId,
    pub status: JobStatus,
    #[serde(with = "crate::domain::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::domain::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// When the job and its image are removed.
    #[serde(with = "crate::domain::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub image: ImageView<'a>,
    /// How many times a worker took the job.
    pub attempts: u32,
    /// Present when the status is SUCCEEDED: the labels, most confident first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Label>>, nullable = false)]
    pub labels: Option<&'a [Label]>,
    /// Present when the status is SUCCEEDED and the text feature found text: its lines, in
    /// reading order, shaped like DetectText's `TextDetections` of type `LINE`.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(value_type = Vec<TextDetection>)]
    pub text_detections: &'a [TextDetection],
    /// Present when the status is SUCCEEDED and the properties feature ran: the image's quality
    /// and dominant colours, shaped like DetectLabels' `ImageProperties`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ImageProperties>, nullable = false)]
    pub image_properties: Option<&'a ImageProperties>,
    /// Present when the status is FAILED: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Failure>, nullable = false)]
    pub error: Option<&'a Failure>,
    /// Present when the submission asked for a completion callback: how its delivery stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub callback: Option<CallbackView<'a>>,
    /// Present when the image did not come in a request: where it came from (a drop).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JobSource>, nullable = false)]
    pub source: Option<&'a JobSource>,
    /// Present when the image comes by direct upload (`POST /v1/uploads`): what was declared,
    /// and until when it may be uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DeclaredUpload>, nullable = false)]
    pub upload: Option<&'a DeclaredUpload>,
    pub links: Links,
}

/// A job's completion callback and its delivery.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Callback)]
pub struct CallbackView<'a> {
    #[schema(value_type = String, format = "uri")]
    pub url: &'a str,
    pub status: CallbackStatus,
    /// Calls made so far.
    pub attempts: u32,
    /// The HTTP status of the last answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 100, maximum = 599)]
    pub last_code: Option<u16>,
    /// Why the last attempt did not deliver, when there was no answer or the target was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_error: Option<&'a str>,
}

/// What the image looked like when it was accepted. While a job awaits its upload, the type
/// and size are the declared ones and the rest is absent.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Image)]
pub struct ImageView<'a> {
    pub content_type: ContentType,
    /// Bytes.
    pub size: u64,
    /// Pixels; absent until an upload arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub width: Option<u32>,
    /// Pixels; absent until an upload arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub height: Option<u32>,
    /// Lower-case hex SHA-256 of the bytes; absent until an upload arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false, pattern = "^[0-9a-f]{64}$")]
    pub sha256: Option<&'a str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Links {
    /// This job's status resource.
    #[serde(rename = "self")]
    pub self_: String,
}

impl<'a> From<&'a Job> for JobView<'a> {
    fn from(job: &'a Job) -> Self {
        Self {
            id: job.id,
            status: job.status(),
            created_at: job.created_at,
            updated_at: job.updated_at,
            expires_at: job.expires_at,
            image: {
                // Known once the bytes arrived (an upload job may also fail before they do).
                let known = !job.image.sha256.is_empty();
                ImageView {
                    content_type: job.image.content_type,
                    size: job.image.size,
                    width: known.then_some(job.image.width),
                    height: known.then_some(job.image.height),
                    sha256: known.then_some(job.image.sha256.as_str()),
                }
            },
            attempts: job.attempts,
            labels: job.labels(),
            text_detections: job.findings().map(|f| f.text_detections.as_slice()).unwrap_or_default(),
            image_properties: job.findings().and_then(|f| f.image_properties.as_ref()),
            error: job.failure(),
            callback: job.callback.as_ref().map(|c| CallbackView {
                url: c.url.as_str(),
                status: c.status,
                attempts: c.attempts,
                last_code: c.last_code,
                last_error: c.last_error.as_deref(),
            }),
            source: job.source.as_ref(),
            upload: job.upload.as_ref(),
            links: Links { self_: image_path(&job.id) },
        }
    }
}

/// The result written beside a drop once its job is final: the job exactly as
/// `GET /v1/images/{id}` answers it (its `source` says which version of the drop it labelled).
pub fn drop_result(job: &Job) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec_pretty(&JobView::from(job))
}

/// The result written beside a drop that cannot become a job: which drop, and why, as the problem
/// the API would have answered.
pub fn drop_refusal(source: &JobSource, problem: &Problem) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec_pretty(&serde_json::json!({ "source": source, "status": "REFUSED", "problem": problem }))
}

/// A page of the caller's jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = JobList)]
pub struct ListView<'a> {
    pub items: Vec<JobView<'a>>,
    /// Present while there may be more: pass it as `cursor` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = "labelq-cursor")]
    pub next_cursor: Option<String>,
    pub links: ListLinks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListLinks {
    /// The next page, with the same filters, while there may be more.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next: Option<String>,
}

/// Encodes a list position as an opaque, URL-safe cursor: clients must not build or parse them.
pub fn encode_cursor(pos: &ListPosition) -> String {
    let raw = format!("{}.{}", pos.created_at.unix_timestamp_nanos() / 1_000_000, pos.id);
    URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_cursor(cursor: &str) -> Option<ListPosition> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let raw = std::str::from_utf8(&raw).ok()?;
    let (millis, id) = raw.split_once('.')?;
    let millis: i128 = millis.parse().ok()?;
    let created_at = OffsetDateTime::from_unix_timestamp_nanos(millis.checked_mul(1_000_000)?).ok()?;
    Some(ListPosition { created_at, id: JobId::parse(id).ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let pos = ListPosition { created_at: datetime!(2026-11-23 12:00:00.123 UTC), id: JobId::new() };
        assert_eq!(decode_cursor(&encode_cursor(&pos)), Some(pos));
        for bad in ["", "!!!", "bm90LWEtY3Vyc29y", &URL_SAFE_NO_PAD.encode("99999999999999999999999.x")] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }
}
