//! `labelq submit`: a client that behaves the way the API asks clients to.
//!
//! - every upload carries an `Idempotency-Key`, so it is retried safely (the same key) on a
//!   connection error, a 5xx or a 429, with exponential backoff that honours `Retry-After`;
//! - it follows the job's event stream where the server has one (`labelq serve`), and otherwise
//!   polls the `Location` it was given, waiting as long as `Retry-After` says;
//! - 4xx answers are final and printed with the problem's detail;
//! - a file over [`INLINE_LIMIT`] goes by direct upload: declared (`POST /v1/uploads`, with its
//!   SHA-256), then sent in one PUT to the target the server names, with a progress line; a server
//!   without that route gets it in the body.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use labelq_shared::domain::ContentType;
use reqwest::{Client, Response, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::cli::Exit;
use crate::output::Lines;

#[derive(Debug, Clone)]
pub struct SubmitOptions {
    pub url: String,
    pub token: Option<String>,
    pub wait: bool,
    pub timeout: Duration,
}

impl SubmitOptions {
    /// `request` with the bearer token, if there is one.
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
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
    let sniffed = ContentType::sniff(&bytes);
    let base = options.url.trim_end_matches('/');
    let key = uuid::Uuid::new_v4().to_string();
    let (location, mut job) = match sniffed {
        Some(content_type) if bytes.len() > INLINE_LIMIT => {
            match upload_directly(client, base, &bytes, content_type, &key, options, file, progress).await {
                // A server without direct uploads: the body is the only way in (and it says if the
                // image is too large for it).
                Err(ClientError::Refused {
                    status: StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED, ..
                }) => post_inline(client, base, bytes, content_type.as_mime(), &key, options, file, progress).await?,
                other => other?,
            }
        }
        _ => {
            let content_type = sniffed.map(ContentType::as_mime).unwrap_or("application/octet-stream");
            post_inline(client, base, bytes, content_type, &key, options, file, progress).await?
        }
    };
    if !options.wait {
        return Ok(job);
    }

    let status_url = if location.starts_with("http") { location } else { format!("{base}{location}") };
    let started = Instant::now();
    // Where the server streams the job's changes, they arrive as they happen; otherwise (the
    // route is not there, or the stream broke off), poll.
    if let Some(finished) = follow(client, &status_url, options, file, progress, started).await {
        return Ok(finished);
    }
    loop {
        let status = job["status"].as_str().unwrap_or("UNKNOWN").to_owned();
        if status == "SUCCEEDED" || status == "FAILED" {
            return Ok(job);
        }
        if started.elapsed() > options.timeout {
            return Err(ClientError::Timeout { status, waited: started.elapsed() });
        }
        progress.show(file, &format!("{status} ({:.1}s)", started.elapsed().as_secs_f32()));
        let (next, wait) = get_job(client, &status_url, options).await?;
        job = next;
        if !matches!(job["status"].as_str(), Some("SUCCEEDED" | "FAILED")) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Files larger than this go by direct upload (`POST /v1/uploads`, then a PUT to the target):
/// under both servers' body limits (5 MiB on `labelq serve`, about 4.3 MB through API Gateway).
pub const INLINE_LIMIT: usize = 4 * 1024 * 1024;

/// The `Location` of a submission's job, and the job as the server answered.
type Submitted = (String, Value);

/// `POST /v1/images` with the image as the body.
#[allow(clippy::too_many_arguments)]
async fn post_inline(
    client: &Client,
    base: &str,
    bytes: Vec<u8>,
    content_type: &str,
    key: &str,
    options: &SubmitOptions,
    file: &Path,
    progress: &Progress,
) -> Result<Submitted, ClientError> {
    let url = format!("{base}/v1/images");
    progress.show(file, "uploading");
    let response = with_retries(
        || {
            let request = client
                .post(&url)
                .header(header::CONTENT_TYPE, content_type)
                .header("Idempotency-Key", key)
                .body(bytes.clone());
            options.authorize(request).send()
        },
        &url,
    )
    .await?;
    let location = location_of(&response)?;
    let job: Value = response.json().await.map_err(|source| ClientError::Http { url: url.clone(), source })?;
    Ok((location, job))
}

fn location_of(response: &Response) -> Result<String, ClientError> {
    response
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned)
        .ok_or(ClientError::NoLocation)
}

/// Reserves a direct upload (declaring the type, length and SHA-256, under the idempotency key,
/// so a retry answers the same job), then PUTs the bytes to its target with the headers it names,
/// showing how much has gone.
#[allow(clippy::too_many_arguments)]
async fn upload_directly(
    client: &Client,
    base: &str,
    bytes: &[u8],
    content_type: ContentType,
    key: &str,
    options: &SubmitOptions,
    file: &Path,
    progress: &Progress,
) -> Result<Submitted, ClientError> {
    let url = format!("{base}/v1/uploads");
    let sha256 = hex::encode(Sha256::digest(bytes));
    let declaration = json!({"content_type": content_type.as_mime(), "length": bytes.len(), "sha256": sha256});
    progress.show(file, "reserving an upload");
    let response = with_retries(
        || options.authorize(client.post(&url).header("Idempotency-Key", key).json(&declaration)).send(),
        &url,
    )
    .await?;
    let location = location_of(&response)?;
    let reservation: Value = response.json().await.map_err(|source| ClientError::Http { url: url.clone(), source })?;
    let target = &reservation["upload"];
    let (Some(put_url), Some(headers)) = (target["url"].as_str(), target["headers"].as_object()) else {
        return Err(ClientError::Refused {
            status: StatusCode::BAD_GATEWAY,
            detail: "the server's upload target has no url or headers".into(),
        });
    };
    let bytes = bytes::Bytes::copy_from_slice(bytes);
    let total = bytes.len();
    let sent = with_retries(
        || {
            let mut request = client.put(put_url);
            for (name, value) in headers {
                if let Some(value) = value.as_str() {
                    request = request.header(name.as_str(), value);
                }
            }
            // In chunks, so the progress line moves as they go.
            let chunks: Vec<bytes::Bytes> =
                (0..total).step_by(UPLOAD_CHUNK).map(|at| bytes.slice(at..(at + UPLOAD_CHUNK).min(total))).collect();
            let (enabled, file) = (progress.enabled, file.to_owned());
            let mut sent = 0;
            let stream = futures::stream::iter(chunks).map(move |chunk| {
                sent += chunk.len();
                if enabled {
                    let (percent, mib) = (sent * 100 / total, total as f64 / 1048576.0);
                    eprint!("\r\x1b[2K{}: uploading {percent:>3}% of {mib:.1} MiB", file.display());
                }
                Ok::<_, std::io::Error>(chunk)
            });
            request.body(reqwest::Body::wrap_stream(stream)).send()
        },
        put_url,
    )
    .await;
    match sent {
        // A retry of a PUT whose answer was lost, after the job moved on: its bytes are in (the
        // job says how it went).
        Ok(_) | Err(ClientError::Refused { status: StatusCode::CONFLICT, .. }) => {}
        Err(e) => return Err(e),
    }
    // The bytes are stored: the job as it stands now (no longer awaiting them).
    let status_url = if location.starts_with("http") { location.clone() } else { format!("{base}{location}") };
    let (job, _) = get_job(client, &status_url, options).await?;
    Ok((location, job))
}

/// The job at `status_url`, and how long the server asks to wait before asking again.
async fn get_job(client: &Client, status_url: &str, options: &SubmitOptions) -> Result<(Value, Duration), ClientError> {
    let response = with_retries(|| options.authorize(client.get(status_url)).send(), status_url).await?;
    let wait = retry_after(&response).unwrap_or(Duration::from_secs(1));
    let job = response.json().await.map_err(|source| ClientError::Http { url: status_url.to_owned(), source })?;
    Ok((job, wait))
}

/// How much of a direct upload is sent between two updates of the progress line.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Follows the job's event stream (`{status_url}/events`) until a finished state, within what
/// is left of the timeout: the finished job, or `None` when there is no stream to follow or it
/// ended before the job did (the caller polls then).
async fn follow(
    client: &Client,
    status_url: &str,
    options: &SubmitOptions,
    file: &Path,
    progress: &Progress,
    started: Instant,
) -> Option<Value> {
    let events_url = format!("{status_url}/events");
    let request = options.authorize(client.get(&events_url).header(header::ACCEPT, "text/event-stream"));
    let left = options.timeout.saturating_sub(started.elapsed());
    let stream = async {
        let mut response = request.send().await.ok()?;
        let is_stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if response.status() != StatusCode::OK || !is_stream {
            return None;
        }
        let mut events = EventStream::default();
        while let Ok(Some(chunk)) = response.chunk().await {
            for job in events.push(&chunk) {
                let status = job["status"].as_str().unwrap_or("UNKNOWN");
                if matches!(status, "SUCCEEDED" | "FAILED") {
                    return Some(job);
                }
                progress.show(file, &format!("{status} ({:.1}s)", started.elapsed().as_secs_f32()));
            }
        }
        None
    };
    tokio::time::timeout(left, stream).await.ok().flatten()
}

/// The `data` of Server-Sent Events as JSON, from the stream's bytes as they come (events split
/// across chunks included); comments and anything that is not JSON are skipped.
#[derive(Debug, Default)]
struct EventStream {
    buffer: Vec<u8>,
}

impl EventStream {
    /// The events completed by `chunk`.
    fn push(&mut self, chunk: &[u8]) -> Vec<Value> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty()
                && let Ok(value) = serde_json::from_str(&data.join("\n"))
            {
                events.push(value);
            }
        }
        events
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_as_they_complete_across_chunks_and_comments_are_skipped() {
        let mut events = EventStream::default();
        assert!(events.push(b": keep-alive\n\n").is_empty());
        assert!(events.push(b"id: 3\nretry: 1000\ndata: {\"status\":").is_empty(), "not complete yet");
        let done = events.push(b"\"PROCESSING\"}\n\nid: 4\ndata:{\"status\":\"SUCCEEDED\"}\n\ndata: {\"x\"");
        assert_eq!(done, [json!({"status": "PROCESSING"}), json!({"status": "SUCCEEDED"})]);
        assert_eq!(events.push(b":1}\n\n"), [json!({"x": 1})]);
    }

    #[test]
    fn an_event_over_several_data_lines_is_one_document_and_junk_is_skipped() {
        let mut events = EventStream::default();
        assert_eq!(events.push(b"data: {\"a\":\ndata: 2}\n\n"), [json!({"a": 2})]);
        assert!(events.push(b"data: not json\n\nevent: x\n\n").is_empty());
    }
}
