//! The messages labelq's parts send one another through the topic and the queue.
//!
//! Every message is one JSON object: a `type` and a `version` beside the kind's own fields, so a
//! consumer can tell a message it does not understand (a newer producer, a stray publisher on the
//! topic) from a broken one, and fail that job with a reason instead of retrying it forever.
//!
//! ```json
//! {"type":"labelq.image.submitted","version":1,"job_id":"…","owner":"…",
//!  "object_key":"images/…","content_type":"image/png","submitted_at":"2026-11-23T12:00:00.000Z"}
//! ```
//!
//! | kind | `type` | sent when |
//! |---|---|---|
//! | [`ImageSubmitted`] | `labelq.image.submitted` | the API recorded a job; the worker labels it |
//! | [`JobFinished`] | `labelq.job.finished` | a job became SUCCEEDED or FAILED (the worker's winning final write) |
//!
//! A new kind is a struct, a [`MessageKind`] impl and a [`Message`] variant; [`Message::parse`] is
//! the one entry point, and turns an unknown type, an unsupported version or a malformed body into
//! an [`InvalidMessage`] with a reason (and the job id, when one could be read).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::findings::Findings;
use super::ids::{CorrelationId, JobId, ObjectKey, OwnerId};
use super::image::ContentType;
use super::job::{Failure, Job, JobState, JobStatus};

/// A kind of message: its wire `type` and the version this build writes and reads.
pub trait MessageKind: Serialize + DeserializeOwned {
    const TYPE: &'static str;
    const VERSION: u32;
}

/// `type` of [`ImageSubmitted`]; also sent as a message attribute.
pub const IMAGE_SUBMITTED: &str = "labelq.image.submitted";
/// `type` of [`JobFinished`].
pub const JOB_FINISHED: &str = "labelq.job.finished";

/// A job was recorded and waits for its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSubmitted {
    pub job_id: JobId,
    pub owner: OwnerId,
    pub object_key: ObjectKey,
    pub content_type: ContentType,
    #[serde(with = "crate::domain::timestamp")]
    pub submitted_at: OffsetDateTime,
}

impl MessageKind for ImageSubmitted {
    const TYPE: &'static str = IMAGE_SUBMITTED;
    const VERSION: u32 = 1;
}

impl ImageSubmitted {
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
}

/// How a job ended: its labels, or why it failed. The `status` field tells them apart, as on the
/// job itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Succeeded(Findings),
    Failed { error: Failure },
}

impl Outcome {
    pub fn status(&self) -> JobStatus {
        match self {
            Self::Succeeded { .. } => JobStatus::Succeeded,
            Self::Failed { .. } => JobStatus::Failed,
        }
    }
}

/// A job reached its final state. Everything a consumer of "job finished" needs (a completion
/// callback, a live subscriber, an event for other systems) without reading the job again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFinished {
    pub job_id: JobId,
    pub owner: OwnerId,
    pub correlation_id: CorrelationId,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Claims the job took, this last one included.
    pub attempts: u32,
    #[serde(with = "crate::domain::timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::domain::timestamp")]
    pub finished_at: OffsetDateTime,
    /// Whether a completion callback waits for this event. Travels as the `callback` attribute
    /// too, so that the callback queue's subscription takes only the events it delivers.
    #[serde(default)]
    pub callback: bool,
}

impl MessageKind for JobFinished {
    const TYPE: &'static str = JOB_FINISHED;
    const VERSION: u32 = 1;
}

impl JobFinished {
    /// The event for a job in its final state; `None` while it is unfinished.
    pub fn of(job: &Job) -> Option<Self> {
        let outcome = match &job.state {
            JobState::Succeeded(findings) => Outcome::Succeeded(findings.clone()),
            JobState::Failed { failure } => Outcome::Failed { error: failure.clone() },
            JobState::AwaitingUpload | JobState::Pending | JobState::Processing { .. } => return None,
        };
        Some(Self::with_outcome(job, outcome))
    }

    /// The event for `job`, final with `outcome`.
    pub(crate) fn with_outcome(job: &Job, outcome: Outcome) -> Self {
        Self {
            job_id: job.id,
            owner: job.owner.clone(),
            correlation_id: job.correlation_id.clone(),
            outcome,
            attempts: job.attempts,
            created_at: job.created_at,
            finished_at: job.updated_at,
            callback: job.callback.as_ref().is_some_and(|c| !c.status.is_settled()),
        }
    }
}

/// The attribute naming a finished job's status (`SUCCEEDED`, `FAILED`), for subscribers that
/// filter on it.
pub const STATUS_ATTRIBUTE: &str = "status";
/// The attribute saying whether a completion callback waits for a finished job (`true`, `false`).
pub const CALLBACK_ATTRIBUTE: &str = "callback";

/// Any message labelq sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    ImageSubmitted(ImageSubmitted),
    JobFinished(JobFinished),
}

impl From<ImageSubmitted> for Message {
    fn from(m: ImageSubmitted) -> Self {
        Self::ImageSubmitted(m)
    }
}

impl From<JobFinished> for Message {
    fn from(m: JobFinished) -> Self {
        Self::JobFinished(m)
    }
}

#[derive(Serialize)]
struct WireOut<'a, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// A message that could not be understood. Carries the job id when one could be read, so the
/// worker can fail that job with the reason rather than leave it PENDING.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable message: {reason}")]
pub struct InvalidMessage {
    pub job_id: Option<JobId>,
    pub reason: String,
}

fn encode<K: MessageKind>(body: &K) -> String {
    let wire = WireOut { kind: K::TYPE, version: K::VERSION, body };
    // Every kind is strings, numbers and lists of them: serialising cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

fn decode<K: MessageKind>(body: &str, version: Option<u32>, job_id: Option<JobId>) -> Result<K, InvalidMessage> {
    let invalid = |reason: String| InvalidMessage { job_id, reason };
    if version != Some(K::VERSION) {
        return Err(invalid(format!("unsupported version {version:?} of {}", K::TYPE)));
    }
    // `type` and `version` are fields the kind's struct ignores.
    serde_json::from_str::<K>(body).map_err(|e| invalid(format!("malformed {} v{}: {e}", K::TYPE, K::VERSION)))
}

impl Message {
    /// The wire `type`, also carried as the `message_type` attribute.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ImageSubmitted(_) => ImageSubmitted::TYPE,
            Self::JobFinished(_) => JobFinished::TYPE,
        }
    }

    /// The attributes a subscription may filter on (SNS filter policies), beside the kind and
    /// the correlation id every message carries: a finished job's status and whether a callback
    /// waits for it.
    pub fn filter_attributes(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Self::ImageSubmitted(_) => Vec::new(),
            Self::JobFinished(m) => vec![
                (STATUS_ATTRIBUTE, m.outcome.status().as_str()),
                (CALLBACK_ATTRIBUTE, if m.callback { "true" } else { "false" }),
            ],
        }
    }

    /// The job the message is about.
    pub fn job_id(&self) -> JobId {
        match self {
            Self::ImageSubmitted(m) => m.job_id,
            Self::JobFinished(m) => m.job_id,
        }
    }

    pub fn to_json(&self) -> String {
        match self {
            Self::ImageSubmitted(m) => encode(m),
            Self::JobFinished(m) => encode(m),
        }
    }

    /// Reads any message; the one way a body becomes a [`Message`].
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
        match header.kind.as_deref() {
            Some(ImageSubmitted::TYPE) => decode(body, header.version, job_id).map(Self::ImageSubmitted),
            Some(JobFinished::TYPE) => decode(body, header.version, job_id).map(Self::JobFinished),
            kind => Err(InvalidMessage { job_id, reason: format!("unexpected message type {kind:?}") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::tests::pending_job;
    use crate::domain::{
        BoundingBox, Confidence, DominantColor, FailureCode, ImageProperties, ImageQuality, Label, TextDetection,
    };
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    fn submitted() -> ImageSubmitted {
        ImageSubmitted::for_job(&pending_job(NOW))
    }

    #[test]
    fn an_image_submitted_message_round_trips_with_type_and_version() {
        let msg = Message::from(submitted());
        let json = msg.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!((value["type"].as_str(), value["version"].as_u64()), (Some(IMAGE_SUBMITTED), Some(1)));
        assert_eq!(msg.kind(), IMAGE_SUBMITTED);
        assert_eq!(Message::parse(&json), Ok(msg));
    }

    #[test]
    fn a_job_finished_message_round_trips_with_its_outcome() {
        let label = Label {
            name: "Cat".into(),
            confidence: Confidence::new(93.0).unwrap(),
            parents: vec![],
            aliases: vec![],
            categories: vec![],
            instances: vec![],
        };
        let findings = Findings {
            labels: vec![label],
            text_detections: vec![TextDetection {
                detected_text: "NO PARKING".into(),
                confidence: Confidence::new(97.0).unwrap(),
                bounding_box: BoundingBox { width: 0.5, height: 0.1, left: 0.25, top: 0.4 },
            }],
            image_properties: Some(ImageProperties {
                quality: ImageQuality { brightness: 61.0, sharpness: 80.0, contrast: 40.0 },
                dominant_colors: vec![DominantColor::new(250, 220, 20, 48.0)],
            }),
        };
        let claimed = pending_job(NOW).claim(NOW, std::time::Duration::from_secs(60)).unwrap();
        for finished in [
            claimed.succeed(findings, NOW).unwrap(),
            claimed.fail(Failure::new(FailureCode::ImageUndecodable, "truncated"), NOW).unwrap(),
        ] {
            let event = JobFinished::of(&finished).expect("a final job has an event");
            assert_eq!(event.outcome.status(), finished.status());
            assert_eq!((event.attempts, event.finished_at), (1, NOW));
            let json = Message::from(event.clone()).to_json();
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["type"], JOB_FINISHED);
            assert_eq!(value["status"], finished.status().as_str());
            assert_eq!(Message::parse(&json), Ok(Message::JobFinished(event)));
        }
        assert_eq!(JobFinished::of(&claimed), None, "an unfinished job has no event");
    }

    #[test]
    fn a_finished_jobs_attributes_name_its_status_and_whether_a_callback_waits() {
        let claimed = pending_job(NOW).claim(NOW, std::time::Duration::from_secs(60)).unwrap();
        let failed = claimed.fail(Failure::new(FailureCode::ImageUndecodable, "truncated"), NOW).unwrap();
        let plain = Message::from(JobFinished::of(&failed).unwrap());
        assert_eq!(plain.filter_attributes(), vec![(STATUS_ATTRIBUTE, "FAILED"), (CALLBACK_ATTRIBUTE, "false")]);

        let url = crate::domain::CallbackUrl::parse("https://example.com/hook").unwrap();
        let waiting = failed.with_callback(crate::domain::Callback::new(url));
        let event = JobFinished::of(&waiting).unwrap();
        assert!(event.callback);
        assert_eq!(Message::from(event.clone()).filter_attributes()[1], (CALLBACK_ATTRIBUTE, "true"));
        // A message written before the field existed reads as "no callback waits".
        let old = Message::from(event).to_json().replace(",\"callback\":true", "");
        let Ok(Message::JobFinished(read)) = Message::parse(&old) else { panic!("{old}") };
        assert!(!read.callback);
        assert!(Message::from(submitted()).filter_attributes().is_empty());
    }

    #[test]
    fn an_unknown_version_is_refused_but_keeps_the_job_id() {
        let msg = submitted();
        let json = Message::from(msg.clone()).to_json().replace("\"version\":1", "\"version\":2");
        let err = Message::parse(&json).unwrap_err();
        assert_eq!(err.job_id, Some(msg.job_id));
        assert!(err.reason.contains("version"), "{}", err.reason);
    }

    #[test]
    fn an_unknown_type_is_refused_but_keeps_the_job_id() {
        let msg = submitted();
        let json = Message::from(msg.clone()).to_json().replace(IMAGE_SUBMITTED, "labelq.image.resized");
        let err = Message::parse(&json).unwrap_err();
        assert_eq!(err.job_id, Some(msg.job_id));
        assert!(err.reason.contains("labelq.image.resized"), "{}", err.reason);
    }

    #[test]
    fn garbage_is_refused_without_a_job_id() {
        for body in ["", "null", "[1,2]", "{\"type\":\"other\"}", "\u{0}", "{\"type\":7}"] {
            let err = Message::parse(body).unwrap_err();
            assert_eq!(err.job_id, None, "{body:?}");
        }
    }

    #[test]
    fn a_message_with_a_bad_field_is_refused_with_its_job_id() {
        let msg = submitted();
        let json = Message::from(msg.clone()).to_json().replace("image/png", "image/gif");
        let err = Message::parse(&json).unwrap_err();
        assert_eq!(err.job_id, Some(msg.job_id));
    }
}
