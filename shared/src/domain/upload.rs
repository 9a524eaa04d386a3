//! Direct uploads: a client declares the image it will send (type, exact length, optionally its
//! SHA-256), gets a job that waits for the bytes and a signed target to send them to, and the job
//! goes on like a posted one once the bytes are there and are what was declared.
//!
//! ```text
//! AWAITING_UPLOAD ──arrived──▶ PENDING ──▶ ... (as a posted image)
//!        └──────fail (upload_expired, or not what was declared)──▶ FAILED
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::image::{ContentType, ImageInfo, ImageLimits, ImageRejection, inspect};
use super::job::{Failure, FailureCode};

/// The largest image a client may upload directly: what Rekognition takes from S3.
pub const MAX_UPLOAD_BYTES: u64 = 15 * 1024 * 1024;
/// The longest an upload target stays valid; also the default.
pub const MAX_UPLOAD_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The image a client promised to upload, and until when it may.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeclaredUpload {
    pub content_type: ContentType,
    /// Exact length in bytes.
    pub length: u64,
    /// Lower-case hex SHA-256 of the bytes, when the client gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^[0-9a-f]{64}$")]
    pub sha256: Option<String>,
    /// When the upload target expires; a job still without its image then fails (`upload_expired`).
    #[serde(with = "crate::domain::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// When the bytes were stored at the target (where the server sees that itself: `labelq
    /// serve`'s own target).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::domain::timestamp::option")]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub received_at: Option<OffsetDateTime>,
}

/// Why a declaration was refused; each is a client error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclarationRefused {
    #[error("length must be within 1..={max} bytes; got {length}")]
    Length { length: u64, max: u64 },
    #[error("sha256 must be 64 hexadecimal digits")]
    Sha256,
    #[error("expires_in must be within 1..={max} seconds; got {got}")]
    Window { got: u64, max: u64 },
}

impl DeclaredUpload {
    /// A declaration made at `now`, valid for `window` (at most [`MAX_UPLOAD_WINDOW`]).
    pub fn new(
        content_type: ContentType,
        length: u64,
        sha256: Option<&str>,
        window: Duration,
        now: OffsetDateTime,
    ) -> Result<Self, DeclarationRefused> {
        if !(1..=MAX_UPLOAD_BYTES).contains(&length) {
            return Err(DeclarationRefused::Length { length, max: MAX_UPLOAD_BYTES });
        }
        let sha256 = sha256
            .map(|h| {
                let ok = h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
                if ok { Ok(h.to_ascii_lowercase()) } else { Err(DeclarationRefused::Sha256) }
            })
            .transpose()?;
        if window.is_zero() || window > MAX_UPLOAD_WINDOW {
            return Err(DeclarationRefused::Window { got: window.as_secs(), max: MAX_UPLOAD_WINDOW.as_secs() });
        }
        Ok(Self { content_type, length, sha256, expires_at: now + window, received_at: None })
    }

    /// Whether `other` declares the same bytes (a retry with the same idempotency key).
    pub fn same_bytes(&self, other: &Self) -> bool {
        (self.content_type, self.length, &self.sha256) == (other.content_type, other.length, &other.sha256)
    }

    /// The SHA-256 as S3 carries it in `x-amz-checksum-sha256`: base64 of the digest.
    pub fn checksum_base64(&self) -> Option<String> {
        let hex = self.sha256.as_deref()?;
        hex::decode(hex).ok().map(|digest| STANDARD.encode(digest))
    }

    /// Whether the target has expired at `now`.
    pub fn has_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at <= now
    }

    /// Checks the bytes that arrived against the declaration and the limits: the length, the
    /// digest, the signature of the declared type and the dimensions. A refusal is the job's
    /// failure.
    pub fn check(&self, bytes: &[u8], limits: &ImageLimits) -> Result<(ImageInfo, String), Failure> {
        let mismatch = |message: String| Failure::new(FailureCode::UploadMismatch, message);
        let size = bytes.len() as u64;
        if size > MAX_UPLOAD_BYTES {
            return Err(Failure::new(
                FailureCode::ImageTooLarge,
                // (Reading stops one byte past the limit: the size is "more than".)
                format!("the uploaded object is over the limit of {MAX_UPLOAD_BYTES} bytes"),
            ));
        }
        if size != self.length {
            return Err(mismatch(format!("the uploaded object is {size} bytes; {} were declared", self.length)));
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(declared) = &self.sha256
            && *declared != sha256
        {
            return Err(mismatch("the uploaded object's SHA-256 is not the one declared".into()));
        }
        let limits = ImageLimits { max_bytes: MAX_UPLOAD_BYTES as usize, ..*limits };
        let info = inspect(bytes, self.content_type, &limits).map_err(|rejection| {
            let code = match rejection {
                ImageRejection::TypeMismatch { .. } => FailureCode::UploadMismatch,
                ImageRejection::TooLarge { .. } => FailureCode::ImageTooLarge,
                ImageRejection::Dimensions { .. } => FailureCode::UnsupportedImage,
                ImageRejection::Empty | ImageRejection::NotAnImage | ImageRejection::MalformedHeader(_) => {
                    FailureCode::ImageUndecodable
                }
            };
            Failure::new(code, format!("the uploaded object: {rejection}"))
        })?;
        Ok((info, sha256))
    }
}

/// Where and how a client sends an upload's bytes: one request, exactly as described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = UploadTarget)]
pub struct UploadTarget {
    /// Always `PUT`.
    #[schema(value_type = String, example = "PUT")]
    pub method: &'static str,
    /// Where to send the bytes, signed; use it as given.
    #[schema(format = "uri")]
    pub url: String,
    /// Headers the request must carry, exactly these values (`Content-Type`, `Content-Length`,
    /// `x-amz-checksum-sha256` when a digest was declared, and on S3 `if-none-match: *`).
    pub headers: BTreeMap<String, String>,
    /// After this the target is refused and the job fails with `upload_expired`.
    #[serde(with = "crate::domain::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

impl UploadTarget {
    /// The headers every target names: the declared type and length, and the digest if declared.
    pub fn required_headers(upload: &DeclaredUpload) -> BTreeMap<String, String> {
        let mut headers = BTreeMap::from([
            ("Content-Type".to_owned(), upload.content_type.as_mime().to_owned()),
            ("Content-Length".to_owned(), upload.length.to_string()),
        ]);
        if let Some(checksum) = upload.checksum_base64() {
            headers.insert(CHECKSUM_HEADER.to_owned(), checksum);
        }
        headers
    }
}

/// The header carrying the declared digest, as S3 names it; the local target takes the same one.
pub const CHECKSUM_HEADER: &str = "x-amz-checksum-sha256";

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-03 12:00 UTC);
    const WINDOW: Duration = Duration::from_secs(600);

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        bytes.extend(width.to_be_bytes());
        bytes.extend(height.to_be_bytes());
        bytes.extend([8, 2, 0, 0, 0]);
        bytes.resize(200, 0);
        bytes
    }

    #[test]
    fn a_declaration_is_bounded() {
        let new = |length, sha: Option<&str>, window| DeclaredUpload::new(ContentType::Png, length, sha, window, NOW);
        assert!(new(1, None, WINDOW).is_ok());
        assert!(new(MAX_UPLOAD_BYTES, None, MAX_UPLOAD_WINDOW).is_ok());
        assert!(matches!(new(0, None, WINDOW), Err(DeclarationRefused::Length { .. })));
        assert!(matches!(new(MAX_UPLOAD_BYTES + 1, None, WINDOW), Err(DeclarationRefused::Length { .. })));
        assert_eq!(new(1, Some("abc"), WINDOW), Err(DeclarationRefused::Sha256));
        assert_eq!(new(1, Some(&"g".repeat(64)), WINDOW), Err(DeclarationRefused::Sha256));
        assert!(matches!(new(1, None, Duration::ZERO), Err(DeclarationRefused::Window { .. })));
        assert!(matches!(
            new(1, None, MAX_UPLOAD_WINDOW + Duration::from_secs(1)),
            Err(DeclarationRefused::Window { .. })
        ));
        let upper = new(1, Some(&"AB".repeat(32)), WINDOW).unwrap();
        assert_eq!(upper.sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(upper.expires_at, NOW + WINDOW);
    }

    #[test]
    fn the_checksum_header_is_the_digest_in_base64() {
        // SHA-256 of the empty string, as S3 documents it in both forms.
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let upload = DeclaredUpload::new(ContentType::Jpeg, 1, Some(hex), WINDOW, NOW).unwrap();
        assert_eq!(upload.checksum_base64().as_deref(), Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
    }

    #[test]
    fn arrived_bytes_must_be_what_was_declared() {
        let bytes = png(100, 100);
        let sha = hex::encode(Sha256::digest(&bytes));
        let limits = ImageLimits::default();
        let declared =
            |length, sha: Option<&str>| DeclaredUpload::new(ContentType::Png, length, sha, WINDOW, NOW).unwrap();

        let (info, digest) = declared(200, Some(&sha)).check(&bytes, &limits).unwrap();
        assert_eq!((info.width, info.height, digest), (100, 100, sha.clone()));
        assert_eq!(declared(201, None).check(&bytes, &limits).unwrap_err().code, FailureCode::UploadMismatch);
        let other = "0".repeat(64);
        assert_eq!(declared(200, Some(&other)).check(&bytes, &limits).unwrap_err().code, FailureCode::UploadMismatch);
        let jpeg = DeclaredUpload::new(ContentType::Jpeg, 200, None, WINDOW, NOW).unwrap();
        assert_eq!(jpeg.check(&bytes, &limits).unwrap_err().code, FailureCode::UploadMismatch);
        assert_eq!(declared(200, None).check(&[b'x'; 200], &limits).unwrap_err().code, FailureCode::ImageUndecodable);
        assert_eq!(declared(200, None).check(&png(20, 20), &limits).unwrap_err().code, FailureCode::UnsupportedImage);
        let huge = vec![0u8; MAX_UPLOAD_BYTES as usize + 1];
        assert_eq!(declared(200, None).check(&huge, &limits).unwrap_err().code, FailureCode::ImageTooLarge);
    }
}
