//! The callback client: [`CallbackSender`] over reqwest, treating every receiver as hostile.
//!
//! - Where it connects: a literal address is judged by the [`TargetPolicy`] before anything is
//!   sent; a name is resolved by [`GuardedResolver`], which refuses the name if any address it
//!   resolves to is refused, and hands the client exactly the addresses it checked, so there is no
//!   second resolution to slip past the check (DNS rebinding).
//! - No redirects (a 302 is an answer like any other, and is retried), no proxy from the
//!   environment, no retries of its own.
//! - 15 s for the whole call, 5 s to connect; at most 4 KiB of an answer is read.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::ports::{CallError, CallbackAnswer, CallbackRequest, CallbackSender};
use crate::webhooks::{Refusal, TargetPolicy};

/// How long a call may take, from connecting to the last byte read.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An answer's body is read until this much has come (the chunk that passes it is the last);
/// the rest is dropped with the connection.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// Resolves names for the callback client and refuses those that lead somewhere refused.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    policy: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            for addr in &addrs {
                policy.check_resolved(&host, addr.ip())?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[derive(Debug, Clone)]
pub struct ReqwestCallbackSender {
    client: reqwest::Client,
    policy: TargetPolicy,
}

impl ReqwestCallbackSender {
    /// A client for callbacks under `policy`. Needs a rustls crypto provider installed as the
    /// process default (labelq installs ring's).
    pub fn new(policy: TargetPolicy) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("labelq-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { policy }))
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .no_proxy()
            .https_only(!policy.allow_private)
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self { client, policy })
    }
}

/// The refusal in an error's chain, if the guard was what stopped the call.
fn refusal_in(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.0.clone());
        }
        current = e.source();
    }
    None
}

/// The receiver's `Retry-After`, seconds or an HTTP-date, from the moment it answered.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    crate::retry_after::parse(value, std::time::SystemTime::now())
}

#[async_trait]
impl CallbackSender for ReqwestCallbackSender {
    async fn send(&self, request: &CallbackRequest) -> Result<CallbackAnswer, CallError> {
        // A literal address never reaches the resolver: `check_url` judges it (and the scheme).
        self.policy.check_url(&request.url).map_err(|r| CallError::Refused(r.0))?;
        let mut call = self.client.post(request.url.url().clone()).body(request.body.clone());
        for (name, value) in &request.headers {
            call = call.header(*name, value);
        }
        let mut response = call.send().await.map_err(|e| match refusal_in(&e) {
            Some(why) => CallError::Refused(why),
            None => CallError::NoAnswer(describe(&e)),
        })?;
        let answer =
            CallbackAnswer { status: response.status().as_u16(), retry_after: retry_after(response.headers()) };
        // Read a little of the body (some receivers only answer once it is read), then let go.
        let mut read = 0usize;
        while read < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(answer)
    }
}

/// A short reason for a call without an answer, for the job's `last_error`.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }
}
