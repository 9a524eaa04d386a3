//! The live-push protocol: the JSON text messages of a WebSocket, the same on `labelq serve`
//! (`GET /v1/live`, [`super::websocket`]) and on AWS (the API Gateway WebSocket API, [`super::relay`]).
//! A client sends [`LiveRequest`]s (`action`: `subscribe`, `unsubscribe`); the server sends
//! [`LiveMessage`]s (`type`), a job's state in exactly the shape `GET /v1/images/{id}` answers.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::problem::ApiError;
use super::views::JobView;
use crate::domain::{Job, JobId};

/// A message from the client.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LiveRequest {
    /// Follow one job (`id`) or, without `id`, all of the caller's jobs from now on.
    Subscribe {
        #[schema(format = "uuid", nullable = false)]
        id: Option<String>,
        /// With `id`: the last `version` received; only newer states are sent.
        #[schema(nullable = false)]
        last_version: Option<u64>,
    },
    /// Stop following one job (`id`) or, without `id`, all jobs.
    Unsubscribe {
        #[schema(format = "uuid", nullable = false)]
        id: Option<String>,
    },
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The job reached a finished state, which was sent.
    Finished,
    /// The job was deleted or expired.
    Gone,
    /// The client unsubscribed.
    Requested,
}

/// A message from the server.
// Built, serialised and dropped one at a time, never held in bulk: the size of the job variant
// (a view of borrowed fields) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveMessage<'a> {
    /// A subscription started: to job `id`, or without `id` to all of the caller's jobs.
    Subscribed {
        #[schema(value_type = Option<String>, format = "uuid", nullable = false)]
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<JobId>,
    },
    /// A job's state: `job` as `GET /v1/images/{id}` answers it, and its `version`.
    Job { version: u64, job: JobView<'a> },
    /// One of the caller's jobs was deleted (all-jobs subscriptions).
    Deleted {
        #[schema(value_type = String, format = "uuid")]
        id: JobId,
    },
    /// A subscription ended.
    Unsubscribed {
        #[schema(value_type = Option<String>, format = "uuid", nullable = false)]
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<JobId>,
        reason: EndReason,
    },
    /// The all-jobs subscription fell behind and missed this many changes (anyone's, not only
    /// the caller's): list the jobs to catch up.
    Lagged { missed: u64 },
    /// A message could not be acted on; `code` is a problem `type`'s slug.
    Error {
        #[schema(minimum = 400, maximum = 599)]
        status: u16,
        code: &'static str,
        detail: String,
        /// The job the failed message named, if any.
        #[schema(value_type = Option<String>, format = "uuid", nullable = false)]
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<JobId>,
    },
}

impl LiveMessage<'_> {
    pub(crate) fn text(&self) -> Utf8Bytes {
        // Strings, numbers and maps always serialise.
        serde_json::to_string(self).unwrap_or_default().into()
    }

    pub(crate) fn job(job: &Job) -> Utf8Bytes {
        LiveMessage::Job { version: job.version, job: JobView::from(job) }.text()
    }

    pub(crate) fn error(id: Option<JobId>, error: &ApiError) -> Utf8Bytes {
        let (status, code) = error.status_and_slug();
        let detail =
            if status.is_server_error() { "the request could not be served".to_owned() } else { error.to_string() };
        LiveMessage::Error { status: status.as_u16(), code, detail, id }.text()
    }
}
