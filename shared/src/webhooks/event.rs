//! The body a callback receiver gets: `job.succeeded` or `job.failed`, as Standard Webhooks
//! shape events (`type`, `timestamp`, `data`).
//!
//! ```json
//! {"type":"job.succeeded","timestamp":"2026-12-02T10:00:00.000Z",
//!  "data":{"id":"…","status":"SUCCEEDED","correlation_id":"…","attempts":1,
//!          "created_at":"…","finished_at":"…","links":{"self":"/v1/images/…"},"labels":[…]}}
//! ```

use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::{Failure, Findings, JobFinished, JobId, JobStatus, Outcome};

/// `webhook-id`: one per job, since a job finishes once; the same on every retry, so a receiver
/// can drop a repeat.
pub fn webhook_id(job: &JobId) -> String {
    format!("msg_{}", job.to_string().replace('-', ""))
}

#[derive(Debug, Serialize)]
pub struct WebhookEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(with = "crate::domain::timestamp")]
    pub timestamp: OffsetDateTime,
    pub data: EventData<'a>,
}

#[derive(Debug, Serialize)]
pub struct EventData<'a> {
    pub id: JobId,
    pub status: JobStatus,
    pub correlation_id: &'a str,
    pub attempts: u32,
    #[serde(with = "crate::domain::timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::domain::timestamp")]
    pub finished_at: OffsetDateTime,
    pub links: EventLinks,
    /// The labels, and the text and image properties where they were asked for.
    #[serde(flatten)]
    pub findings: Option<&'a Findings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a Failure>,
}

#[derive(Debug, Serialize)]
pub struct EventLinks {
    /// The job's status resource, relative to the API's base URL.
    #[serde(rename = "self")]
    pub self_: String,
}

impl<'a> WebhookEvent<'a> {
    pub fn of(finished: &'a JobFinished, timestamp: OffsetDateTime) -> Self {
        let (kind, findings, error) = match &finished.outcome {
            Outcome::Succeeded(findings) => ("job.succeeded", Some(findings), None),
            Outcome::Failed { error } => ("job.failed", None, Some(error)),
        };
        Self {
            kind,
            timestamp,
            data: EventData {
                id: finished.job_id,
                status: finished.outcome.status(),
                correlation_id: finished.correlation_id.as_str(),
                attempts: finished.attempts,
                created_at: finished.created_at,
                finished_at: finished.finished_at,
                links: EventLinks { self_: crate::http::views::image_path(&finished.job_id) },
                findings,
                error,
            },
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, numbers and lists of them: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
