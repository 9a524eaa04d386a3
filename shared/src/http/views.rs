//! The JSON the API answers with, and the opaque list cursor.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::{ContentType, Failure, Job, JobId, JobStatus, Label};
use crate::ports::ListPosition;

pub fn image_path(id: &JobId) -> String {
    format!("/v1/images/{id}")
}

#[derive(Debug, Serialize)]
pub struct JobView<'a> {
    pub id: JobId,
    pub status: JobStatus,
    #[serde(with = "crate::domain::timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::domain::timestamp")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "crate::domain::timestamp")]
    pub expires_at: OffsetDateTime,
    pub image: ImageView<'a>,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<&'a [Label]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a Failure>,
    pub links: Links,
}

#[derive(Debug, Serialize)]
pub struct ImageView<'a> {
    pub content_type: ContentType,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    pub sha256: &'a str,
}

#[derive(Debug, Serialize)]
pub struct Links {
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
            image: ImageView {
                content_type: job.image.content_type,
                size: job.image.size,
                width: job.image.width,
                height: job.image.height,
                sha256: &job.image.sha256,
            },
            attempts: job.attempts,
            labels: job.labels(),
            error: job.failure(),
            links: Links { self_: image_path(&job.id) },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ListView<'a> {
    pub items: Vec<JobView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    pub links: ListLinks,
}

#[derive(Debug, Serialize)]
pub struct ListLinks {
    #[serde(skip_serializing_if = "Option::is_none")]
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
