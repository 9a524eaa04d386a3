//! Who is calling. Every image belongs to an owner and every read is scoped to it.
//!
//! - On AWS, API Gateway's JWT authorizer has already verified the token; the owner is its `sub`
//!   claim (see the `lambda` feature's authenticator).
//! - Locally, `Authorization: Bearer <token>` is looked up in tokens configured at start.
//! - With no tokens on a loopback address, `labelq serve` runs open, with one local owner.

use std::collections::HashMap;
use std::fmt;

use http::header;
use http::request::Parts;
use sha2::{Digest, Sha256};

use crate::domain::OwnerId;

/// Why a request was not authenticated. The message goes to the client, so it names no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub &'static str);

pub trait Authenticator: Send + Sync + fmt::Debug {
    fn authenticate(&self, parts: &Parts) -> Result<OwnerId, AuthError>;

    /// Whether every caller is let in without credentials. A page on any web site could then
    /// act as the owner where the browser does not stop it (a WebSocket is not subject to CORS).
    fn is_open(&self) -> bool {
        false
    }
}

/// Everyone is the same owner. Only for a server nobody else can reach.
#[derive(Debug, Clone)]
pub struct OpenAccess {
    owner: OwnerId,
}

impl OpenAccess {
    pub fn new(owner: OwnerId) -> Self {
        Self { owner }
    }
}

impl Authenticator for OpenAccess {
    fn authenticate(&self, _: &Parts) -> Result<OwnerId, AuthError> {
        Ok(self.owner.clone())
    }

    fn is_open(&self) -> bool {
        true
    }
}

/// Bearer tokens mapped to owners. Tokens are kept only as SHA-256 digests, so a heap dump or a
/// debug print does not reveal them.
#[derive(Clone)]
pub struct BearerTokens {
    owners: HashMap<[u8; 32], OwnerId>,
}

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTokens").field("tokens", &self.owners.len()).finish()
    }
}

/// A token list that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token entry {entry}: {reason}")]
pub struct TokenParseError {
    pub entry: usize,
    pub reason: String,
}

impl BearerTokens {
    pub fn new(pairs: impl IntoIterator<Item = (String, OwnerId)>) -> Self {
        let owners = pairs.into_iter().map(|(token, owner)| (digest(&token), owner)).collect();
        Self { owners }
    }

    /// Parses `owner:token` entries separated by commas or newlines (the `LABELQ_TOKENS` variable,
    /// or a tokens file). Blank entries and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, TokenParseError> {
        let mut pairs = Vec::new();
        let entries = text.split([',', '\n']).map(str::trim).filter(|e| !e.is_empty() && !e.starts_with('#'));
        for (i, entry) in entries.enumerate() {
            let fail = |reason: &str| TokenParseError { entry: i + 1, reason: reason.to_owned() };
            let (owner, token) = entry.split_once(':').ok_or_else(|| fail("expected owner:token"))?;
            let owner = OwnerId::parse(owner.trim()).map_err(|e| fail(&e.to_string()))?;
            let token = token.trim();
            if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(fail("a token needs at least 16 visible ASCII characters"));
            }
            pairs.push((token.to_owned(), owner));
        }
        Ok(Self::new(pairs))
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Authenticator for BearerTokens {
    fn authenticate(&self, parts: &Parts) -> Result<OwnerId, AuthError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError("missing Authorization header"))?
            .to_str()
            .map_err(|_| AuthError("malformed Authorization header"))?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError("expected: Authorization: Bearer <token>"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError("expected: Authorization: Bearer <token>"));
        }
        self.owners.get(&digest(token.trim())).cloned().ok_or(AuthError("unknown token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut builder = http::Request::builder().uri("/v1/images");
        if let Some(a) = auth {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_known_token_authenticates_as_its_owner() {
        let tokens = BearerTokens::parse("alice:alice-token-0123456789, bob:bob-token-0123456789").unwrap();
        let owner = tokens.authenticate(&parts(Some("Bearer bob-token-0123456789"))).unwrap();
        assert_eq!(owner.as_str(), "bob");
        assert!(tokens.authenticate(&parts(Some("bearer alice-token-0123456789"))).is_ok());
    }

    #[test]
    fn missing_unknown_and_malformed_credentials_are_refused() {
        let tokens = BearerTokens::parse("alice:alice-token-0123456789").unwrap();
        for auth in [None, Some("Bearer nope-nope-nope-nope"), Some("Basic YWxpY2U6eA=="), Some("Bearer")] {
            assert!(tokens.authenticate(&parts(auth)).is_err(), "{auth:?}");
        }
    }

    #[test]
    fn token_lists_with_bad_entries_are_refused() {
        assert!(BearerTokens::parse("no-colon-here-at-all").is_err());
        assert!(BearerTokens::parse("alice:short").is_err());
        assert!(BearerTokens::parse(":token-without-owner-123").is_err());
        let ok = BearerTokens::parse("# comment\n\nalice:alice-token-0123456789\n").unwrap();
        assert!(!ok.is_empty());
    }
}
