//! A job's completion callback: the URL its owner asked to be called at when the job finishes,
//! and how the delivery of that call stands.
//!
//! ```text
//! PENDING ──2xx──▶ DELIVERED
//!    │ └──410───▶ DISABLED     (the receiver says the URL is gone: never called again)
//!    └──refused, or the retry schedule is spent──▶ FAILED
//! ```
//!
//! The URL is checked here for what can be known without the network (an absolute `https` URL,
//! or `http` where the server allows it; no credentials; at most 2048 characters). Whether its
//! host is an address labelq may call is the delivery's decision ([`crate::webhooks::target`]),
//! made again at every attempt, because a name can resolve elsewhere tomorrow.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The longest callback URL accepted.
pub const MAX_CALLBACK_URL_CHARS: usize = 2048;

/// A syntactically acceptable callback URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallbackUrl(url::Url);

/// Why a callback URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidCallbackUrl(pub String);

impl CallbackUrl {
    /// Parses an absolute `http` or `https` URL with a host and no credentials. (Whether plain
    /// `http` is allowed is the server's policy, checked with the address.)
    pub fn parse(s: &str) -> Result<Self, InvalidCallbackUrl> {
        let invalid = |reason: &str| Err(InvalidCallbackUrl(reason.to_owned()));
        if s.chars().count() > MAX_CALLBACK_URL_CHARS {
            return invalid("a callback URL has at most 2048 characters");
        }
        let Ok(url) = url::Url::parse(s) else {
            return invalid("not an absolute URL");
        };
        if !matches!(url.scheme(), "https" | "http") {
            return invalid("a callback URL is https (or http where the server allows it)");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return invalid("a callback URL must not carry credentials");
        }
        if url.host().is_none() {
            return invalid("a callback URL needs a host");
        }
        if url.fragment().is_some() {
            return invalid("a callback URL has no fragment");
        }
        // The parser percent-encodes what a URL cannot hold: the stored form is what must fit.
        if url.as_str().len() > MAX_CALLBACK_URL_CHARS {
            return invalid("a callback URL has at most 2048 characters, percent-encoded");
        }
        Ok(Self(url))
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl TryFrom<String> for CallbackUrl {
    type Error = InvalidCallbackUrl;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CallbackUrl> for String {
    fn from(u: CallbackUrl) -> Self {
        u.0.into()
    }
}

/// How the delivery of a job's callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallbackStatus {
    /// Not delivered yet: waiting for the job to finish, or for the next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// The receiver answered 410 Gone: it will not be called again.
    Disabled,
    /// Refused (the URL's address is not one labelq may call) or every attempt failed.
    Failed,
}

impl CallbackStatus {
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// A job's callback and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub url: CallbackUrl,
    pub status: CallbackStatus,
    /// Calls made so far.
    pub attempts: u32,
    /// The HTTP status of the last answer, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_code: Option<u16>,
    /// Why the last attempt did not deliver, when it did not (a timeout, a refused address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the schedule allows the next attempt: a delivery of the same job's event that comes
    /// sooner (a duplicate announcement) waits for it rather than calling early.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// What one attempt to call the receiver came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered with this status.
    Answered(u16),
    /// No answer: a timeout, a refused connection, a TLS failure. Worth trying again.
    NoAnswer(String),
    /// Not called: the URL's address is not one labelq may call. Trying again cannot help.
    Refused(String),
}

impl Callback {
    pub fn new(url: CallbackUrl) -> Self {
        Self {
            url,
            status: CallbackStatus::Pending,
            attempts: 0,
            last_code: None,
            last_error: None,
            next_attempt_at: None,
        }
    }

    /// The state after `attempt`; `more` says whether the retry schedule allows another one.
    pub fn after(&self, attempt: &Attempt, more: bool) -> Self {
        let mut next = Self {
            attempts: self.attempts + 1,
            last_code: None,
            last_error: None,
            next_attempt_at: None,
            ..self.clone()
        };
        let retry_or_fail = if more { CallbackStatus::Pending } else { CallbackStatus::Failed };
        next.status = match attempt {
            Attempt::Answered(code) => {
                next.last_code = Some(*code);
                match code {
                    200..=299 => CallbackStatus::Delivered,
                    410 => CallbackStatus::Disabled,
                    _ => retry_or_fail,
                }
            }
            Attempt::NoAnswer(why) => {
                next.last_error = Some(why.clone());
                retry_or_fail
            }
            Attempt::Refused(why) => {
                next.last_error = Some(why.clone());
                CallbackStatus::Failed
            }
        };
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_web_urls_without_credentials_are_callbacks() {
        for ok in ["https://example.com/hook", "http://127.0.0.1:8080/x?y=1", "https://[2001:db8::1]/"] {
            assert!(CallbackUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/relative",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "https://example.com/#frag",
            "javascript:alert(1)",
        ] {
            assert!(CallbackUrl::parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_CALLBACK_URL_CHARS));
        assert!(CallbackUrl::parse(&long).is_err());
        // Short as written, three times longer percent-encoded: refused, so what is stored reads back.
        let braces = format!("https://example.com/{}", "{".repeat(1000));
        assert!(CallbackUrl::parse(&braces).is_err());
        let spaced = CallbackUrl::parse("https://example.com/a b").unwrap();
        assert_eq!(CallbackUrl::parse(spaced.as_str()), Ok(spaced.clone()), "the stored form parses to itself");
    }

    #[test]
    fn a_delivery_settles_on_2xx_or_410_and_retries_anything_else_while_it_may() {
        let pending = Callback::new(CallbackUrl::parse("https://example.com/").unwrap());
        assert_eq!(pending.after(&Attempt::Answered(204), true).status, CallbackStatus::Delivered);
        assert_eq!(pending.after(&Attempt::Answered(410), true).status, CallbackStatus::Disabled);
        let retried = pending.after(&Attempt::Answered(500), true);
        assert_eq!((retried.status, retried.attempts, retried.last_code), (CallbackStatus::Pending, 1, Some(500)));
        assert_eq!(retried.after(&Attempt::Answered(500), false).status, CallbackStatus::Failed);
        let timed_out = retried.after(&Attempt::NoAnswer("timed out".into()), true);
        assert_eq!((timed_out.attempts, timed_out.last_code), (2, None));
        assert_eq!(timed_out.last_error.as_deref(), Some("timed out"));
        assert_eq!(pending.after(&Attempt::Refused("loopback".into()), true).status, CallbackStatus::Failed);
    }
}

/// An owner's default callback: called for each job the owner submits without a callback of
/// its own. A receiver answering 410 Gone to it disables it (jobs submitted from then on get no
/// callback) until the owner sets it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultCallback {
    pub url: CallbackUrl,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When a receiver answered 410 Gone for it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
}

impl DefaultCallback {
    pub fn new(url: CallbackUrl, now: OffsetDateTime) -> Self {
        Self { url, updated_at: now, disabled_at: None }
    }

    /// Whether new jobs get it.
    pub fn is_active(&self) -> bool {
        self.disabled_at.is_none()
    }
}
