//! Standard Webhooks signatures: `webhook-signature` is one or more space-separated `v1,<base64>`
//! where each is HMAC-SHA256, under one secret, of `{webhook-id}.{webhook-timestamp}.{body}`.
//! A secret is written `whsec_` followed by the base64 of its key bytes.
//!
//! Rotation: the sender signs with every secret it holds (the new one first) and a receiver accepts
//! a message if any signature matches any secret it holds, so both can move to a new secret at
//! their own pace. Verification compares whole MACs in constant time: a bare `v1,`, a truncated or
//! padded signature never matches.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use rand::RngCore;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const PREFIX: &str = "whsec_";
/// How far a `webhook-timestamp` may be from the receiver's clock, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// One signing key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

impl WebhookSecret {
    /// A new random secret of 32 bytes.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// The secret as it is written and shared: `whsec_` and the base64 of the key.
    pub fn to_whsec(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        // HMAC takes a key of any length.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, &timestamp.to_string(), body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

impl FromStr for WebhookSecret {
    type Err = String;

    /// `whsec_<base64>` of 24 to 64 bytes, as the specification recommends. The prefix may be
    /// left out, as the specification's libraries allow: a secret Secrets Manager generated
    /// (44 letters and digits, 33 bytes) is used as it is.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let b64 = s.strip_prefix(PREFIX).unwrap_or(s);
        let key =
            STANDARD.decode(b64).map_err(|_| "a webhook secret is base64, after an optional whsec_".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!("a webhook secret holds 24 to 64 bytes, this one {}", key.len()));
        }
        Ok(Self(key))
    }
}

/// The secrets a sender signs with (the first is the newest) or a receiver accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSecrets(Vec<WebhookSecret>);

impl WebhookSecrets {
    pub fn new(first: WebhookSecret) -> Self {
        Self(vec![first])
    }

    pub fn all(&self) -> &[WebhookSecret] {
        &self.0
    }

    /// The `webhook-signature` header: one signature per secret.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
    }

    /// The secrets as they are written, one per line.
    pub fn to_lines(&self) -> String {
        self.0.iter().map(|s| s.to_whsec() + "\n").collect()
    }
}

impl FromStr for WebhookSecrets {
    type Err = String;

    /// One or more secrets, separated by spaces, commas or line breaks.
    fn from_str(s: &str) -> Result<Self, String> {
        let secrets = s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<WebhookSecret>, _>>()?;
        if secrets.is_empty() {
            return Err("no webhook secret given".into());
        }
        Ok(Self(secrets))
    }
}

/// Why a received webhook was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is {0} s away from now, beyond the tolerance")]
    Stale(i64),
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a received webhook: its timestamp within `tolerance` of `now` (unix seconds) and one
/// of the `v1` signatures in `signatures` made with one of `secrets` over exactly `body`.
pub fn verify(
    secrets: &WebhookSecrets,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let sent: i64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    let skew = now.saturating_sub(sent);
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::Stale(skew));
    }
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    for secret in secrets.all() {
        for tag in &candidates {
            // `verify_slice` is constant time and refuses a tag of any other length.
            if secret.mac(id, timestamp.trim(), body).verify_slice(tag).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's known answer (the reference libraries' tests).
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: i64 = 1_649_367_553;
    const BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn secrets() -> WebhookSecrets {
        SECRET.parse().unwrap()
    }

    fn check(signatures: &str, secrets: &WebhookSecrets, now: i64) -> Result<(), SignatureError> {
        verify(secrets, ID, &TIMESTAMP.to_string(), signatures, BODY.as_bytes(), now, DEFAULT_TOLERANCE)
    }

    #[test]
    fn signing_gives_the_specifications_known_answer() {
        assert_eq!(secrets().sign(ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        assert_eq!(check(SIGNATURE, &secrets(), TIMESTAMP), Ok(()));
    }

    #[test]
    fn a_bare_truncated_or_foreign_signature_fails() {
        let truncated = &SIGNATURE[..SIGNATURE.len() - 4];
        for bad in ["", "v1,", "v1", truncated, "v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=", "v1,AAAA"] {
            assert_eq!(check(bad, &secrets(), TIMESTAMP), Err(SignatureError::NoMatch), "{bad:?}");
        }
        let other = WebhookSecrets::new(WebhookSecret::generate());
        assert_eq!(check(SIGNATURE, &other, TIMESTAMP), Err(SignatureError::NoMatch), "another key");
        let tampered = verify(&secrets(), ID, "1649367553", SIGNATURE, b"{}", TIMESTAMP, DEFAULT_TOLERANCE);
        assert_eq!(tampered, Err(SignatureError::NoMatch), "another body");
    }

    #[test]
    fn a_stale_or_future_timestamp_fails_even_when_signed() {
        let tolerance = DEFAULT_TOLERANCE.as_secs() as i64;
        assert_eq!(check(SIGNATURE, &secrets(), TIMESTAMP + tolerance), Ok(()));
        assert_eq!(check(SIGNATURE, &secrets(), TIMESTAMP + tolerance + 1), Err(SignatureError::Stale(tolerance + 1)));
        assert!(matches!(check(SIGNATURE, &secrets(), TIMESTAMP - tolerance - 1), Err(SignatureError::Stale(_))));
        let garbled = verify(&secrets(), ID, "soon", SIGNATURE, BODY.as_bytes(), TIMESTAMP, DEFAULT_TOLERANCE);
        assert_eq!(garbled, Err(SignatureError::BadTimestamp));
    }

    #[test]
    fn a_rotation_signs_with_every_secret_and_either_verifies() {
        let new = WebhookSecret::generate();
        let both: WebhookSecrets = format!("{} {SECRET}", new.to_whsec()).parse().unwrap();
        let header = both.sign(ID, TIMESTAMP, BODY.as_bytes());
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.ends_with(SIGNATURE), "the old secret's signature is still there");
        assert_eq!(check(&header, &secrets(), TIMESTAMP), Ok(()), "a receiver with the old secret");
        assert_eq!(check(&header, &WebhookSecrets::new(new), TIMESTAMP), Ok(()), "a receiver with the new one");
    }

    #[test]
    fn secrets_are_whsec_base64_of_24_to_64_bytes_and_never_printed() {
        for bad in ["", "whsec_", "whsec_!!", "whsec_AAAA", "AAAA", "whsec_whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"] {
            assert!(bad.parse::<WebhookSecret>().is_err(), "{bad:?}");
        }
        // The prefix is optional, as in the specification's libraries.
        let bare = "C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse::<WebhookSecret>();
        assert_eq!(bare, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse::<WebhookSecret>());
        assert!(bare.is_ok());
        let secret = WebhookSecret::generate();
        assert_eq!(secret.to_whsec().parse::<WebhookSecret>(), Ok(secret.clone()));
        assert!(!format!("{:?}", WebhookSecrets::new(secret.clone())).contains(&secret.to_whsec()[6..]));
    }
}
