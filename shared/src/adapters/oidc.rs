//! [`OidcTokenVerifier`]: checks a bearer token (a JWT) the way API Gateway's JWT authorizer does
//! for the HTTP API, for the one place API Gateway cannot: a WebSocket API's `$connect`, which
//! only takes IAM or a Lambda authorizer.
//!
//! The same rules as the HTTP API's authorizer, so one token opens both: signed with RS256 by a key
//! of the issuer's JWKS (found through its OpenID discovery document), `iss` the configured issuer,
//! not expired nor not yet valid (`exp`, `nbf`, a minute's leeway for clocks), and its `aud` among
//! the configured audiences or, only if it has no `aud`, its `client_id` (Cognito's access tokens
//! carry `client_id`, its ID tokens `aud`). The owner is `sub`.
//!
//! The keys are fetched on first use and kept for the life of the process; a token signed by a
//! key not among them (the issuer rotated its keys) fetches them again, at most once a minute, so
//! a stream of forged `kid`s cannot turn into a stream of requests to the issuer. Fetching is
//! bounded: 5 s, 64 KiB per document, no redirects, no proxy, https only (http only for a loopback
//! issuer and its keys, for tests and local development).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;
use tracing::{info, warn};

use crate::domain::OwnerId;
use crate::ports::{BackendError, TokenError, TokenVerifier};

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// The least time between two fetches of the keys.
const REFETCH_AFTER: Duration = Duration::from_secs(60);
const LEEWAY_SECONDS: u64 = 60;

#[derive(Debug)]
pub struct OidcTokenVerifier {
    /// As configured: `iss` must equal it exactly, as for API Gateway's authorizer.
    issuer: String,
    /// Whether the issuer is on a loopback address, and so may be fetched over http.
    local: bool,
    audiences: Vec<String>,
    http: reqwest::Client,
    keys: RwLock<Keys>,
}

#[derive(Debug, Default)]
struct Keys {
    set: Option<JwkSet>,
    fetched_at: Option<Instant>,
}

/// Why a verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("the issuer {0:?} is not an https URL (http only on a loopback address)")]
    Issuer(String),
    #[error("at least one audience is needed")]
    NoAudience,
    #[error("could not build the HTTP client")]
    Client(#[from] reqwest::Error),
}

#[derive(Debug, Deserialize)]
struct Discovery {
    jwks_uri: String,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    aud: Audience,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains_any(&self, accepted: &[String]) -> bool {
        match self {
            Self::None => false,
            Self::One(aud) => accepted.contains(aud),
            Self::Many(auds) => auds.iter().any(|aud| accepted.contains(aud)),
        }
    }
}

/// Whether `url` may be fetched: https, or (with `local`) http to a loopback host.
fn fetchable(url: &str, local: bool) -> bool {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => u.host_str().is_some(),
        Ok(u) if u.scheme() == "http" && local => is_loopback(&u),
        _ => false,
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl OidcTokenVerifier {
    /// A verifier for tokens of `issuer` (e.g. `https://cognito-idp.{region}.amazonaws.com/{pool}`)
    /// meant for one of `audiences`. Needs a rustls crypto provider installed as the process default.
    pub fn new(issuer: &str, audiences: Vec<String>) -> Result<Self, VerifierError> {
        let issuer = issuer.to_owned();
        let local = url::Url::parse(&issuer).is_ok_and(|u| u.scheme() == "http" && is_loopback(&u));
        if !fetchable(&issuer, local) {
            return Err(VerifierError::Issuer(issuer));
        }
        if audiences.is_empty() {
            return Err(VerifierError::NoAudience);
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self { issuer, local, audiences, http, keys: RwLock::new(Keys::default()) })
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, BackendError> {
        let failed = |e: crate::ports::BoxError| BackendError::transient("fetch the token issuer's keys", e);
        if !fetchable(url, self.local) {
            return Err(BackendError::permanent("fetch the token issuer's keys", format!("refused to fetch {url}")));
        }
        let mut response = self.http.get(url).send().await.map_err(|e| failed(e.into()))?;
        if !response.status().is_success() {
            return Err(failed(format!("{url} answered {}", response.status()).into()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.into()))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(failed(format!("{url} is larger than {MAX_DOCUMENT_BYTES} bytes").into()));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| failed(e.into()))
    }

    /// Fetches the keys again, unless they were fetched less than a minute ago.
    async fn refresh(&self) -> Result<(), BackendError> {
        let mut keys = self.keys.write().await;
        if keys.fetched_at.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return Ok(());
        }
        // A failed fetch also waits its turn: an unreachable issuer is not asked on every connect.
        keys.fetched_at = Some(Instant::now());
        let discovery: Discovery =
            self.fetch_json(&format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'))).await?;
        let set: JwkSet = self.fetch_json(&discovery.jwks_uri).await?;
        info!(issuer = %self.issuer, keys = set.keys.len(), "fetched the token issuer's keys");
        keys.set = Some(set);
        Ok(())
    }

    async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, BackendError> {
        let find = |keys: &Keys| keys.set.as_ref().and_then(|set| set.find(kid)).map(DecodingKey::from_jwk);
        if let Some(key) = find(&*self.keys.read().await) {
            return Ok(key.ok());
        }
        if let Err(e) = self.refresh().await {
            warn!(error = %e, cause = ?e, "could not fetch the issuer's keys");
        }
        let keys = self.keys.read().await;
        if keys.set.is_none() {
            // Without any keys nothing can be checked: that is the service's fault, not the token's
            // (also while a failed first fetch waits its turn to be tried again).
            return Err(BackendError::transient("fetch the token issuer's keys", "the issuer's keys are not at hand"));
        }
        Ok(find(&keys).and_then(Result::ok))
    }
}

#[async_trait]
impl TokenVerifier for OidcTokenVerifier {
    async fn verify(&self, token: &str) -> Result<OwnerId, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("not a JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Invalid("not signed with RS256"));
        }
        let kid = header.kid.ok_or(TokenError::Invalid("the token names no key (kid)"))?;
        let key = self.key(&kid).await?.ok_or(TokenError::Invalid("signed by a key the issuer does not list"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        // Checked below: either `aud` or Cognito's `client_id`, as the HTTP API's authorizer does.
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|_| TokenError::Invalid("the token is expired, not the issuer's, or its signature is wrong"))?
            .claims;
        // As API Gateway: `client_id` counts only for a token without `aud`.
        let audience_ok = match &claims.aud {
            Audience::None => claims.client_id.as_ref().is_some_and(|c| self.audiences.contains(c)),
            aud => aud.contains_any(&self.audiences),
        };
        if !audience_ok {
            return Err(TokenError::Invalid("the token is not meant for this API (aud, client_id)"));
        }
        OwnerId::parse(&claims.sub).map_err(|_| TokenError::Invalid("the token's sub claim is not a valid owner"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_issuers_or_loopback_http_are_fetched() {
        assert!(fetchable("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc", false));
        assert!(fetchable("http://127.0.0.1:8080/issuer", true));
        assert!(fetchable("http://localhost:1/", true));
        assert!(fetchable("http://[::1]:9/", true));
        // An https issuer's discovery document cannot send us to plain http, loopback or not.
        assert!(!fetchable("http://127.0.0.1:9001/2018-06-01/runtime/invocation/next", false));
        for refused in ["http://example.com/", "http://10.0.0.1/", "ftp://example.com/", "file:///etc/passwd", "nope"] {
            assert!(!fetchable(refused, true), "{refused}");
        }
    }

    #[test]
    fn a_verifier_needs_a_fetchable_issuer_and_an_audience() {
        assert!(matches!(
            OidcTokenVerifier::new("http://issuer.example", vec!["a".into()]),
            Err(VerifierError::Issuer(_))
        ));
        assert!(matches!(OidcTokenVerifier::new("https://issuer.example", vec![]), Err(VerifierError::NoAudience)));
    }
}
