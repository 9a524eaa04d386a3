//! Fire-and-forget submissions: an image dropped where labelq watches (a directory of
//! `labelq serve --watch`; a prefix of the bucket on AWS) becomes a job without an API call.
//!
//! What both ways share is here: the dropped object's key, who owns its job, and the idempotency
//! key that makes the same drop seen twice (a rescan after a restart, a duplicated S3 event) one
//! job. The watching itself is the adapters'.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::ids::{IdempotencyKey, InvalidId, OwnerId};

/// The largest drop taken: what Rekognition takes from S3 (15 MB there; 15 MiB here).
pub const MAX_DROP_BYTES: usize = 15 * 1024 * 1024;

/// Where a job's image came from, when it did not come in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSource {
    /// Dropped into the watched directory or bucket prefix, under `key` (relative to it, `/` between
    /// segments).
    Drop {
        #[schema(value_type = String, min_length = 1, max_length = 1024)]
        key: DropKey,
        /// Which version of the object under `key` this is: its size and modification time in a
        /// directory, its version id or ETag in a bucket.
        #[serde(default)]
        #[schema(min_length = 1, max_length = 1024)]
        version: String,
    },
}

impl JobSource {
    /// The drop that is the source of a job: its key and version.
    pub fn drop(key: DropKey, version: impl Into<String>) -> Self {
        Self::Drop { key, version: version.into() }
    }
}

/// The key of a dropped object relative to where drops are watched: `/`-separated segments, each
/// non-empty and neither `.` nor `..`, no control characters, at most 1024 bytes (S3's key limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DropKey(String);

impl DropKey {
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(key: &str) -> Result<Self, InvalidId> {
        let invalid = |reason| InvalidId { kind: "drop key", reason };
        if key.is_empty() || key.len() > Self::MAX_BYTES {
            return Err(invalid("must be 1..=1024 bytes"));
        }
        if key.chars().any(char::is_control) {
            return Err(invalid("has a control character"));
        }
        if key.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
            return Err(invalid("has an empty, `.` or `..` segment"));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's segments, first to last; the last is the file name.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for DropKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DropKey {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<DropKey> for String {
    fn from(key: DropKey) -> Self {
        key.0
    }
}

/// Who owns the jobs of dropped images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropOwner {
    /// Every drop belongs to this owner.
    Fixed(OwnerId),
    /// The key's first segment names the owner (`alice/holiday.jpg` is alice's); a drop that is
    /// not under a valid owner's segment is refused.
    FirstSegment,
}

impl DropOwner {
    pub fn owner_of(&self, key: &DropKey) -> Result<OwnerId, InvalidId> {
        match self {
            Self::Fixed(owner) => Ok(owner.clone()),
            Self::FirstSegment => {
                let mut segments = key.segments();
                match (segments.next(), segments.next()) {
                    (Some(first), Some(_)) => OwnerId::parse(first),
                    _ => Err(InvalidId { kind: "drop key", reason: "is not under an owner's directory" }),
                }
            }
        }
    }
}

/// The idempotency key of one version of a dropped object: the same key and `version` (an S3
/// version id or ETag; a file's size and modification time) always give the same one, so a drop
/// seen twice makes one job, and an object replaced under the same key makes a new one.
pub fn drop_idempotency_key(key: &DropKey, version: &str) -> IdempotencyKey {
    let mut hash = Sha256::new();
    hash.update(key.as_str().as_bytes());
    hash.update([0]);
    hash.update(version.as_bytes());
    let digest = hex::encode(hash.finalize());
    // 64 hex characters after a fixed prefix: well inside the key's 255 visible ASCII bytes.
    IdempotencyKey::parse(&format!("drop-{digest}")).expect("a hex digest is a valid idempotency key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_relative_paths_without_dot_segments() {
        for good in ["a.jpg", "alice/holiday photo (1).jpg", "x/y/z+é.png"] {
            assert_eq!(DropKey::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "/a.jpg", "a//b.jpg", "a/", "../a.jpg", "a/./b.jpg", "a\nb.jpg", &"x".repeat(1025)] {
            assert!(DropKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_owner_is_fixed_or_the_first_segment() {
        let key = DropKey::parse("alice/cat.jpg").unwrap();
        let bob = OwnerId::parse("bob").unwrap();
        assert_eq!(DropOwner::Fixed(bob.clone()).owner_of(&key).unwrap(), bob);
        assert_eq!(DropOwner::FirstSegment.owner_of(&key).unwrap().as_str(), "alice");
        assert!(DropOwner::FirstSegment.owner_of(&DropKey::parse("cat.jpg").unwrap()).is_err());
    }

    #[test]
    fn the_same_version_of_a_key_gives_the_same_idempotency_key_and_any_change_another() {
        let key = DropKey::parse("a/b.jpg").unwrap();
        let once = drop_idempotency_key(&key, "v1");
        assert_eq!(once, drop_idempotency_key(&key, "v1"));
        assert_ne!(once, drop_idempotency_key(&key, "v2"));
        assert_ne!(once, drop_idempotency_key(&DropKey::parse("a/c.jpg").unwrap(), "v1"));
        // The separator keeps the key and the version apart.
        assert_ne!(
            drop_idempotency_key(&DropKey::parse("ab").unwrap(), "c"),
            drop_idempotency_key(&DropKey::parse("a").unwrap(), "bc")
        );
    }
}
