//! The "image submitted" message: what the API publishes and the worker consumes.
//!
//! The wire form is JSON with an explicit `type` and `version`, so a consumer can tell a message it
//! does not understand (a newer producer, a stray publisher on the topic) from a broken one, and
//! fail that job with a reason instead of retrying it forever.
//!
//! ```json
//! {"type":"labelq.image.submitted","version":1,"job_id":"…","owner":"…",
//!  "object_key":"images/…","content_type":"image/png","submitted_at":"2026-11-23T12:00:00Z"}
//! ```

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ids::{JobId, ObjectKey, OwnerId};
use super::image::ContentType;
use super::job::Job;

/// The `type` of every message this module writes; also sent as a message attribute.
pub const IMAGE_SUBMITTED: &str = "labelq.image.submitted";

/// Version 1 of "image submitted".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSubmitted {
    pub job_id: JobId,
    pub owner: OwnerId,
    pub object_key: ObjectKey,
    pub content_type: ContentType,
    #[serde(with = "crate::domain::timestamp")]
    pub submitted_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
struct Wire<T> {
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    #[serde(flatten)]
    body: T,
}

/// A message that could not be understood. Carries the job id when one could be read, so the
/// worker can fail that job with the reason rather than leave it PENDING.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable message: {reason}")]
pub struct InvalidMessage {
    pub job_id: Option<JobId>,
    pub reason: String,
}

impl ImageSubmitted {
    pub const VERSION: u32 = 1;

    /// The message announcing `job`, as the API publishes it once the job is recorded.
    pub fn for_job(job: &Job) -> Self {
        Self {
            job_id: job.id,
            owner: job.owner.clone(),
            object_key: job.image.object_key.clone(),
            content_type: job.image.content_type,
            submitted_at: job.created_at,
        }
    }

    pub fn to_json(&self) -> String {
        let wire = Wire { kind: IMAGE_SUBMITTED.to_owned(), version: Self::VERSION, body: self };
        serde_json::to_string(&wire).expect("a struct of strings and numbers always serialises")
    }

    pub fn parse(body: &str) -> Result<Self, InvalidMessage> {
        #[derive(Deserialize)]
        struct Header {
            #[serde(rename = "type")]
            kind: Option<String>,
            version: Option<u32>,
            job_id: Option<String>,
        }
        let header: Header = serde_json::from_str(body)
            .map_err(|e| InvalidMessage { job_id: None, reason: format!("not a JSON object: {e}") })?;
        let job_id = header.job_id.as_deref().and_then(|s| JobId::parse(s).ok());
        let invalid = |reason: String| InvalidMessage { job_id, reason };
        match (header.kind.as_deref(), header.version) {
            (Some(IMAGE_SUBMITTED), Some(Self::VERSION)) => {}
            (Some(IMAGE_SUBMITTED), v) => return Err(invalid(format!("unsupported version {v:?}"))),
            (kind, _) => return Err(invalid(format!("unexpected message type {kind:?}"))),
        }
        serde_json::from_str::<Wire<Self>>(body)
            .map(|w| w.body)
            .map_err(|e| invalid(format!("malformed {IMAGE_SUBMITTED} v1: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn message() -> ImageSubmitted {
        let job_id = JobId::new();
        ImageSubmitted {
            job_id,
            owner: OwnerId::parse("alice").unwrap(),
            object_key: ObjectKey::for_image(&job_id),
            content_type: ContentType::Jpeg,
            submitted_at: datetime!(2026-11-23 12:00 UTC),
        }
    }

    #[test]
    fn a_message_round_trips_with_type_and_version() {
        let msg = message();
        let json = msg.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["type"], IMAGE_SUBMITTED);
        assert_eq!(value["version"], 1);
        assert_eq!(ImageSubmitted::parse(&json), Ok(msg));
    }

    #[test]
    fn an_unknown_version_is_refused_but_keeps_the_job_id() {
        let msg = message();
        let json = msg.to_json().replace("\"version\":1", "\"version\":2");
        let err = ImageSubmitted::parse(&json).unwrap_err();
        assert_eq!(err.job_id, Some(msg.job_id));
        assert!(err.reason.contains("version"), "{}", err.reason);
    }

    #[test]
    fn garbage_is_refused_without_a_job_id() {
        for body in ["", "null", "[1,2]", "{\"type\":\"other\"}", "\u{0}"] {
            let err = ImageSubmitted::parse(body).unwrap_err();
            assert_eq!(err.job_id, None, "{body:?}");
        }
    }

    #[test]
    fn a_message_with_a_bad_field_is_refused_with_its_job_id() {
        let msg = message();
        let json = msg.to_json().replace("image/jpeg", "image/gif");
        let err = ImageSubmitted::parse(&json).unwrap_err();
        assert_eq!(err.job_id, Some(msg.job_id));
    }
}
