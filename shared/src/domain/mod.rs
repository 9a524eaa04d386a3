//! The domain: what a job is and how it may change. Knows nothing of HTTP, AWS or SQLite.

pub mod callback;
pub mod drop;
pub mod findings;
pub mod ids;
pub mod image;
pub mod job;
pub mod label;
pub mod live;
pub mod message;
pub mod upload;

pub use callback::{Attempt, Callback, CallbackStatus, CallbackUrl, DefaultCallback, InvalidCallbackUrl};
pub use drop::{DropKey, DropOwner, JobSource, MAX_DROP_BYTES, drop_idempotency_key};
pub use findings::{DominantColor, Findings, ImageProperties, ImageQuality, TextDetection};
pub use ids::{CorrelationId, IdempotencyKey, InvalidId, JobId, ObjectKey, OwnerId};
pub use image::{ContentType, ImageInfo, ImageLimits, ImageRejection};
pub use job::{Failure, FailureCode, ImageMeta, Job, JobState, JobStatus, NewJob, Refused};
pub use label::{BoundingBox, Confidence, DetectOptions, Instance, Label, LabelName};
pub use live::{ConnectionId, Following, LiveConnection};
pub use message::{
    CALLBACK_ATTRIBUTE, IMAGE_SUBMITTED, ImageSubmitted, InvalidMessage, JOB_FINISHED, JobFinished, Message,
    MessageKind, Outcome, STATUS_ATTRIBUTE,
};
pub use upload::{
    CHECKSUM_HEADER, DeclarationRefused, DeclaredUpload, MAX_UPLOAD_BYTES, MAX_UPLOAD_WINDOW, UploadTarget,
};

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

/// Serde for timestamps: RFC 3339 in UTC with exactly three fractional digits
/// (`2026-11-23T12:00:00.120Z`), so every timestamp the API writes has the same width and sorts as
/// text. Any RFC 3339 timestamp is accepted on the way in.
pub mod timestamp {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    use time::{OffsetDateTime, UtcOffset};

    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

    pub fn format(t: OffsetDateTime) -> String {
        t.to_offset(UtcOffset::UTC).format(FORMAT).unwrap_or_else(|_| t.to_string())
    }

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        OffsetDateTime::parse(&s, &Rfc3339).map_err(serde::de::Error::custom)
    }

    /// The same for an optional timestamp (with `default` and `skip_serializing_if`).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] OffsetDateTime);
            Option::<Wrapped>::deserialize(d).map(|w| w.map(|Wrapped(t)| t))
        }
    }

    #[cfg(test)]
    mod tests {
        use time::macros::datetime;

        #[test]
        fn timestamps_have_three_fractional_digits_in_utc() {
            assert_eq!(super::format(datetime!(2026-11-23 12:00:09.54 UTC)), "2026-11-23T12:00:09.540Z");
            assert_eq!(super::format(datetime!(2026-11-23 13:00 +01:00)), "2026-11-23T12:00:00.000Z");
        }
    }
}
