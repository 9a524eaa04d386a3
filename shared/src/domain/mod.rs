//! The domain: what a job is and how it may change. Knows nothing of HTTP, AWS or SQLite.

pub mod ids;
pub mod image;
pub mod job;
pub mod label;
pub mod message;

pub use ids::{CorrelationId, IdempotencyKey, InvalidId, JobId, ObjectKey, OwnerId};
pub use image::{ContentType, ImageInfo, ImageLimits, ImageRejection};
pub use job::{Failure, FailureCode, ImageMeta, Job, JobState, JobStatus, NewJob, Refused};
pub use label::{BoundingBox, Confidence, DetectOptions, Instance, Label, LabelName};
pub use message::{IMAGE_SUBMITTED, ImageSubmitted, InvalidMessage};

use std::fmt::Debug;

use time::OffsetDateTime;

/// The time source. Injected so expiry and leases can be tested without waiting.
pub trait Clock: Send + Sync + Debug {
    /// Now, truncated to milliseconds: the precision every store keeps, so a record reads back
    /// equal to what was written.
    fn now(&self) -> OffsetDateTime;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        truncate_to_millis(OffsetDateTime::now_utc())
    }
}

pub fn truncate_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    let millis = t.millisecond();
    t.replace_millisecond(millis).unwrap_or(t)
}
