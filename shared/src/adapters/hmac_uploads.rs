//! [`HmacUploadTargets`]: upload targets on `labelq serve` itself, for one machine without S3. A
//! target is `PUT {base}/v1/uploads/{id}?signature=...`, where the signature is an HMAC-SHA256,
//! under a key kept in the data directory, of everything the upload is bound to: the job, the
//! declared type, length and digest, and the expiry. The receiving route
//! ([`crate::http::upload_receiver`]) recomputes it from the job's record, so a URL cannot be
//! bent to another job, another declaration or a later expiry.

use std::io;
use std::path::Path;

use async_trait::async_trait;
use hmac::{KeyInit, Mac};
use rand::RngCore;

use crate::domain::{DeclaredUpload, JobId, ObjectKey, UploadTarget};
use crate::ports::{BackendError, UploadTargets};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The signing key's file in the data directory (mode 0600), created on first use.
pub const KEY_FILE: &str = "upload-signing.key";
const KEY_BYTES: usize = 32;

#[derive(Clone)]
pub struct HmacUploadTargets {
    /// `http://host:port` of the server, as clients reach it.
    base: String,
    key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for HmacUploadTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacUploadTargets").field("base", &self.base).finish_non_exhaustive()
    }
}

impl HmacUploadTargets {
    pub fn new(base: impl Into<String>, key: [u8; KEY_BYTES]) -> Self {
        Self { base: base.into().trim_end_matches('/').to_owned(), key }
    }

    /// The key kept in `data_dir`, created (randomly, readable by its owner only) if there is none,
    /// so targets issued before a restart stay good after it.
    pub fn key_in(data_dir: &Path) -> io::Result<[u8; KEY_BYTES]> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => bytes.try_into().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a {KEY_BYTES}-byte key", path.display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_BYTES];
                rand::rng().fill_bytes(&mut key);
                match write_private(&path, &key) {
                    Ok(()) => Ok(key),
                    // Another process sharing the directory made one first: use it.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::key_in(data_dir),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn mac(&self, job: &JobId, upload: &DeclaredUpload) -> HmacSha256 {
        // Any key length suits HMAC.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        let message = format!(
            "labelq-upload-v1\n{job}\n{}\n{}\n{}\n{}",
            upload.content_type.as_mime(),
            upload.length,
            upload.sha256.as_deref().unwrap_or("-"),
            upload.expires_at.unix_timestamp(),
        );
        mac.update(message.as_bytes());
        mac
    }

    /// The signature of `job`'s target for `upload`, lower-case hex.
    pub fn signature(&self, job: &JobId, upload: &DeclaredUpload) -> String {
        hex::encode(self.mac(job, upload).finalize().into_bytes())
    }

    /// Whether `signature` is the one this key gives `job`'s target for `upload` (in constant time).
    pub fn verify(&self, job: &JobId, upload: &DeclaredUpload, signature: &str) -> bool {
        hex::decode(signature).is_ok_and(|bytes| self.mac(job, upload).verify_slice(&bytes).is_ok())
    }
}

#[async_trait]
impl UploadTargets for HmacUploadTargets {
    async fn target(&self, key: &ObjectKey, upload: &DeclaredUpload) -> Result<UploadTarget, BackendError> {
        let job = key
            .upload_job()
            .ok_or_else(|| BackendError::permanent("sign an upload target", format!("{key} is not an upload key")))?;
        Ok(UploadTarget {
            method: "PUT",
            url: format!("{}/v1/uploads/{job}?signature={}", self.base, self.signature(&job, upload)),
            headers: UploadTarget::required_headers(upload),
            expires_at: upload.expires_at,
        })
    }
}

/// Writes a file only its owner can read, whole or not at all: written beside it, then linked into
/// place (a link never replaces an existing file: `AlreadyExists` if another process won).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let staged = dir.join(format!(".{KEY_FILE}.{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&staged)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::hard_link(&staged, path)
    })();
    let _ = std::fs::remove_file(&staged);
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;
    use crate::domain::ContentType;

    #[tokio::test]
    async fn a_signature_binds_the_job_and_everything_declared() {
        let targets = HmacUploadTargets::new("http://127.0.0.1:8080/", [7; KEY_BYTES]);
        let now = datetime!(2026-12-03 12:00 UTC);
        let window = Duration::from_secs(600);
        let upload = DeclaredUpload::new(ContentType::Jpeg, 1000, None, window, now).unwrap();
        let job = JobId::new();
        let target = targets.target(&ObjectKey::for_upload(&job), &upload).await.unwrap();
        let signature = targets.signature(&job, &upload);
        assert_eq!(target.url, format!("http://127.0.0.1:8080/v1/uploads/{job}?signature={signature}"));
        assert!(targets.verify(&job, &upload, &signature));

        let other = |u: DeclaredUpload| !targets.verify(&job, &u, &signature);
        assert!(other(DeclaredUpload { length: 1001, ..upload.clone() }));
        assert!(other(DeclaredUpload { content_type: ContentType::Png, ..upload.clone() }));
        assert!(other(DeclaredUpload { sha256: Some("0".repeat(64)), ..upload.clone() }));
        assert!(other(DeclaredUpload { expires_at: upload.expires_at + Duration::from_secs(1), ..upload.clone() }));
        assert!(!targets.verify(&JobId::new(), &upload, &signature));
        assert!(!HmacUploadTargets::new("http://x", [8; KEY_BYTES]).verify(&job, &upload, &signature));
        assert!(!targets.verify(&job, &upload, ""));
        assert!(!targets.verify(&job, &upload, "zz"));
        assert!(targets.target(&ObjectKey::for_image(&job), &upload).await.is_err());
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = HmacUploadTargets::key_in(dir.path()).unwrap();
        assert_eq!(HmacUploadTargets::key_in(dir.path()).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(HmacUploadTargets::key_in(dir.path()).is_err());
    }
}
