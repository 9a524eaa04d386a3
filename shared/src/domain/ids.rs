//! Validated identifiers. Everything that crosses a boundary (a URL path, a header, a JWT claim,
//! a queue message) is parsed into one of these once, at the edge, so the rest of the code never
//! handles an unchecked string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// The id of an image and of the job that labels it (one job per image, so one id).
///
/// A UUIDv7: time-ordered, so ids sort roughly by submission and spread well as DynamoDB keys.
/// Only the canonical lower-case hyphenated form parses: a URL has exactly one spelling per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let invalid = |reason| InvalidId { kind: "image id", reason };
        if s.len() != 36 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("expected a lower-case hyphenated UUID"));
        }
        let uuid = Uuid::try_parse(s).map_err(|_| invalid("expected a lower-case hyphenated UUID"))?;
        Ok(Self(uuid))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Who an image belongs to: the JWT `sub` claim on AWS, the configured token's owner locally.
/// Every read is scoped to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(String);

impl OwnerId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let invalid = |reason| InvalidId { kind: "owner id", reason };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(invalid("longer than 256 bytes"));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid("contains control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen key that makes a submission safe to retry (the `Idempotency-Key` header).
/// Visible ASCII only, 1..=255 bytes, as the IETF idempotency-key draft and Stripe accept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let invalid = |reason| InvalidId { kind: "idempotency key", reason };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(invalid("longer than 255 bytes"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("only visible ASCII characters are allowed"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an image is stored: `images/{job id}` for an image the API stored, `uploads/{job id}`
/// for one a client uploads itself (the key its upload target names). Derived from the id, never
/// from client input, so a key can't escape its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    const IMAGE_PREFIX: &'static str = "images/";
    /// Where direct uploads land; bucket notifications for it announce their arrival.
    pub const UPLOAD_PREFIX: &'static str = "uploads/";

    pub fn for_image(id: &JobId) -> Self {
        Self(format!("{}{id}", Self::IMAGE_PREFIX))
    }

    pub fn for_upload(id: &JobId) -> Self {
        Self(format!("{}{id}", Self::UPLOAD_PREFIX))
    }

    /// Parses a key read back from a store or a message: only keys this code would produce.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let id = s
            .strip_prefix(Self::IMAGE_PREFIX)
            .or_else(|| s.strip_prefix(Self::UPLOAD_PREFIX))
            .ok_or(InvalidId { kind: "object key", reason: "expected images/{id} or uploads/{id}" })?;
        JobId::parse(id)?;
        Ok(Self(s.to_owned()))
    }

    /// The job an upload key belongs to: `Some` only for `uploads/{id}`.
    pub fn upload_job(&self) -> Option<JobId> {
        self.0.strip_prefix(Self::UPLOAD_PREFIX).and_then(|id| JobId::parse(id).ok())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ties the log lines of one submission together across the API, the queue and the worker
/// (X-Ray does not follow SNS -> SQS by itself). Taken from `X-Request-Id` when the client sends a
/// sane one, generated otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(String);

impl CorrelationId {
    pub fn new() -> Self {
        Self(Uuid::new_v4().simple().to_string())
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok =
            !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId { kind: "correlation id", reason: "expected 1..=128 of [A-Za-z0-9._:-]" })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serde for the validated ids: serialise as the plain string, and re-validate on the way in,
/// so a corrupt row or message can't smuggle an invalid id past the types.
macro_rules! string_serde {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$ty>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

string_serde!(JobId, OwnerId, IdempotencyKey, ObjectKey, CorrelationId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_round_trips_through_its_canonical_form() {
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn job_id_refuses_other_spellings() {
        let id = JobId::new().to_string();
        for bad in [
            id.to_uppercase(),
            id.replace('-', ""),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            String::new(),
            "../../etc/passwd".to_owned(),
        ] {
            assert!(JobId::parse(&bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn idempotency_key_accepts_visible_ascii_up_to_255_bytes() {
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("ünïcode").is_err());
        assert!(IdempotencyKey::parse("").is_err());
    }

    #[test]
    fn owner_id_refuses_empty_long_and_control_characters() {
        assert!(OwnerId::parse("a1b2-c3").is_ok());
        assert!(OwnerId::parse("").is_err());
        assert!(OwnerId::parse("a\nb").is_err());
        assert!(OwnerId::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn object_key_only_parses_image_and_upload_keys() {
        let id = JobId::new();
        let key = ObjectKey::for_image(&id);
        assert_eq!(ObjectKey::parse(key.as_str()), Ok(key.clone()));
        assert_eq!(key.upload_job(), None);
        let upload = ObjectKey::for_upload(&id);
        assert_eq!(ObjectKey::parse(upload.as_str()), Ok(upload.clone()));
        assert_eq!(upload.upload_job(), Some(id));
        assert!(ObjectKey::parse("uploads/../secrets").is_err());
        assert!(ObjectKey::parse("images/../secrets").is_err());
        assert!(ObjectKey::parse(&format!("results/{id}")).is_err());
    }

    #[test]
    fn deserialising_revalidates() {
        assert!(serde_json::from_str::<JobId>("\"not-a-uuid\"").is_err());
        assert!(serde_json::from_str::<OwnerId>("\"\"").is_err());
    }
}
