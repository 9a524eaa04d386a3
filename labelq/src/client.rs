//! `labelq submit`: a client that behaves the way the API asks clients to.
//!
//! - every upload carries an `Idempotency-Key`, so it is retried safely (the same key) on a
//!   connection error, a 5xx or a 429, with exponential backoff that honours `Retry-After`;
//! - it polls the `Location` it was given, waiting as long as `Retry-After` says;
//! - 4xx answers are final and printed with the problem's detail.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labelq_shared::domain::ContentType;
use reqwest::{Client, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::cli::Exit;
use crate::output::Lines;

#[derive(Debug, Clone)]
pub struct SubmitOptions {
    pub url: String,
    pub token: Option<String>,
    pub wait: bool,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{status}: {detail}")]
    Refused { status: StatusCode, detail: String },
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("the server answered without a Location header")]
    NoLocation,
    #[error("still {status} after {waited:?}")]
    Timeout { status: String, waited: Duration },
}

const ATTEMPTS: u32 = 5;

/// Submits each file, optionally waits for each result, prints one JSON document per file and
/// line as each is done, and returns how the run ends (see the exit status in `--help`).
pub async fn submit_files<W: std::io::Write>(files: &[PathBuf], options: &SubmitOptions, out: &mut Lines<W>) -> Exit {
    let client = Client::new();
    let progress = Progress::new();
    let mut exit = Exit::Ok;
    for file in files {
        let result = submit_one(&client, file, options, &progress).await;
        progress.clear();
        let (outcome, document) = match result {
            Ok(job) => {
                let outcome = match job["status"].as_str() {
                    Some("SUCCEEDED") => Exit::Ok,
                    Some("FAILED") => Exit::JobFailed,
                    _ if options.wait => Exit::TimedOut,
                    _ => Exit::Ok,
                };
                (outcome, json!({ "file": file, "job": job }))
            }
            Err(e) => (e.exit(), json!({ "file": file, "error": error_chain(&e) })),
        };
        exit = exit.worst(outcome);
        if !out.json(&document) {
            break;
        }
    }
    exit
}

impl ClientError {
    /// What this failure means for the run: a problem with the file, a service that cannot be
    /// used at all (unreachable, or refusing the credentials), or a wait that ran out.
    fn exit(&self) -> Exit {
        match self {
            Self::Read { .. } => Exit::InputFailed,
            Self::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN => {
                Exit::CouldNotStart
            }
            Self::Refused { .. } => Exit::InputFailed,
            Self::Http { .. } | Self::Exhausted { .. } | Self::NoLocation => Exit::CouldNotStart,
            Self::Timeout { .. } => Exit::TimedOut,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn submit_one(
    client: &Client,
    file: &Path,
    options: &SubmitOptions,
    progress: &Progress,
) -> Result<Value, ClientError> {
    let bytes = tokio::fs::read(file).await.map_err(|source| ClientError::Read { path: file.to_owned(), source })?;
    let content_type = ContentType::sniff(&bytes).map(ContentType::as_mime).unwrap_or("application/octet-stream");
    let base = options.url.trim_end_matches('/');
    let url = format!("{base}/v1/images");
    let key = uuid::Uuid::new_v4().to_string();
    progress.show(file, "uploading");

    let response = with_retries(
        || {
            let mut request = client
                .post(&url)
                .header(header::CONTENT_TYPE, content_type)
                .header("Idempotency-Key", &key)
                .body(bytes.clone());
            if let Some(token) = &options.token {
                request = request.bearer_auth(token);
            }
            request.send()
        },
        &url,
    )
    .await?;
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned)
        .ok_or(ClientError::NoLocation)?;
    let mut job: Value = response.json().await.map_err(|source| ClientError::Http { url: url.clone(), source })?;
    if !options.wait {
        return Ok(job);
    }

    let status_url = if location.starts_with("http") { location } else { format!("{base}{location}") };
    let started = Instant::now();
    loop {
        let status = job["status"].as_str().unwrap_or("UNKNOWN").to_owned();
        if status == "SUCCEEDED" || status == "FAILED" {
            return Ok(job);
        }
        if started.elapsed() > options.timeout {
            return Err(ClientError::Timeout { status, waited: started.elapsed() });
        }
        progress.show(file, &format!("{status} ({:.1}s)", started.elapsed().as_secs_f32()));
        let response = with_retries(
            || {
                let mut request = client.get(&status_url);
                if let Some(token) = &options.token {
                    request = request.bearer_auth(token);
                }
                request.send()
            },
            &status_url,
        )
        .await?;
        let wait = retry_after(&response).unwrap_or(Duration::from_secs(1));
        job = response.json().await.map_err(|source| ClientError::Http { url: status_url.clone(), source })?;
        if !matches!(job["status"].as_str(), Some("SUCCEEDED" | "FAILED")) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The server's `Retry-After` (seconds or an HTTP-date), at most a minute.
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    labelq_shared::retry_after::parse(value, std::time::SystemTime::now()).map(|d| d.min(Duration::from_secs(60)))
}

/// Sends with retries on connection errors, 5xx and 429; returns the first 2xx, or the problem
/// of a final 4xx.
async fn with_retries<F, Fut>(send: F, url: &str) -> Result<Response, ClientError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<Response>>,
{
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let backoff = Duration::from_millis(250 * 2u64.pow(attempt - 1));
        match send().await {
            Ok(r) if r.status().is_success() => return Ok(r),
            Ok(r) if r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS => {
                last = format!("{}", r.status());
                tokio::time::sleep(retry_after(&r).unwrap_or(backoff)).await;
            }
            Ok(r) => {
                let status = r.status();
                let body: Value = r.json().await.unwrap_or_default();
                let detail = body["detail"].as_str().or(body["title"].as_str()).unwrap_or("").to_owned();
                return Err(ClientError::Refused { status, detail });
            }
            Err(e) if attempt == ATTEMPTS => return Err(ClientError::Http { url: url.to_owned(), source: e }),
            Err(e) => {
                last = error_chain(&e);
                tokio::time::sleep(backoff).await;
            }
        }
    }
    Err(ClientError::Exhausted { attempts: ATTEMPTS, last })
}

/// A one-line status on stderr, only when stderr is a terminal.
struct Progress {
    enabled: bool,
    frame: std::cell::Cell<usize>,
}

impl Progress {
    fn new() -> Self {
        Self { enabled: std::io::stderr().is_terminal(), frame: std::cell::Cell::new(0) }
    }

    fn show(&self, file: &Path, what: &str) {
        if self.enabled {
            const SPIN: [char; 4] = ['|', '/', '-', '\\'];
            let n = self.frame.get();
            self.frame.set(n.wrapping_add(1));
            let frame = SPIN[n % SPIN.len()];
            eprint!("\r\x1b[2K{frame} {}: {what}", file.display());
        }
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
    }
}
