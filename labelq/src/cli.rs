//! The `labelq` command line: `serve`, `label`, `submit`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use clap::{Args, Parser, Subcommand};
use labelq_shared::adapters::aws::{RekognitionDetector, TlsTrust, sdk_config};
use labelq_shared::adapters::onnx::{OnnxConfig, OnnxDetector};
use labelq_shared::config;
use labelq_shared::domain::{Confidence, ContentType, DetectOptions, OwnerId, SystemClock};
use labelq_shared::http::auth::{Authenticator, BearerTokens, OpenAccess};
use labelq_shared::lambda::{Adapters, Resources};
use labelq_shared::ports::{DetectError, LabelDetector};
use labelq_shared::service::{Backoff, SubmitConfig, WorkerConfig};
use serde_json::json;
use tracing::{info, warn};

use crate::client::{self, SubmitOptions};
use crate::duration;
use crate::model;
use crate::server::{Backends, Consumer, Embedded, ServeOptions, Server};

#[derive(Debug, Parser)]
#[command(name = "labelq", version, about = "Asynchronous image labelling: submit an image, get 202, poll for labels.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API and the workers in one process, with embedded backends and the built-in model.
    Serve(Box<ServeArgs>),
    /// Label local image files now, without a server, and print JSON.
    Label(LabelArgs),
    /// Submit image files to a running labelq API, optionally waiting for their labels.
    Submit(SubmitArgs),
}

#[derive(Debug, Args)]
struct DetectArgs {
    /// The model directory [default: $LABELQ_MODEL_DIR, else ~/.cache/labelq/model]. Prepared on
    /// first use if missing.
    #[arg(long, env = "LABELQ_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// At most this many labels per image.
    #[arg(long, default_value_t = 10, env = "LABELQ_MAX_LABELS")]
    max_labels: usize,
    /// Only labels at least this confident (percent).
    #[arg(long, default_value_t = 55.0, env = "LABELQ_MIN_CONFIDENCE")]
    min_confidence: f32,
}

impl DetectArgs {
    fn options(&self) -> anyhow::Result<DetectOptions> {
        let min_confidence = Confidence::new(self.min_confidence).context("--min-confidence must be within 0..=100")?;
        Ok(DetectOptions { max_labels: self.max_labels.max(1), min_confidence })
    }
}

/// Where jobs, images and messages live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// A directory and SQLite files under --data-dir.
    Embedded,
    /// S3, DynamoDB, SNS and SQS (or LocalStack, with AWS_ENDPOINT_URL), named by LABELQ_TABLE,
    /// LABELQ_BUCKET, LABELQ_TOPIC_ARN and LABELQ_QUEUE_URL; the worker polls SQS like Lambda's
    /// event source mapping and runs the worker Lambda's handler.
    Aws,
}

/// Which label detector the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Detector {
    /// The built-in offline model.
    Onnx,
    /// Amazon Rekognition DetectLabels (with --backend aws; reads the image from S3).
    Rekognition,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where jobs, images and the queue live.
    #[arg(long, value_enum, default_value = "embedded", env = "LABELQ_BACKEND")]
    backend: Backend,
    /// The label detector.
    #[arg(long, value_enum, default_value = "onnx", env = "LABEL_DETECTOR")]
    detector: Detector,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000", env = "LABELQ_LISTEN")]
    listen: SocketAddr,
    /// Where images, jobs and the queue are kept.
    #[arg(long, default_value = ".labelq", env = "LABELQ_DATA_DIR")]
    data_dir: PathBuf,
    /// Jobs processed at once (each uses one core for inference).
    #[arg(long, default_value_t = default_workers(), env = "LABELQ_WORKERS")]
    workers: usize,
    /// A file of `owner:token` lines; clients send `Authorization: Bearer <token>`. The variable
    /// LABELQ_TOKENS may hold the same entries, comma-separated.
    #[arg(long, env = "LABELQ_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address (one shared owner).
    #[arg(long)]
    open: bool,
    #[command(flatten)]
    detect: DetectArgs,
    /// How long jobs and images are kept.
    #[arg(long, default_value = "24h", value_parser = duration::parse)]
    ttl: Duration,
    /// Deliveries of one message before it is dead-lettered.
    #[arg(long, default_value_t = 5)]
    max_receives: u32,
    /// How long a delivered message stays hidden (and its job leased) before it is redelivered.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    visibility_timeout: Duration,
    /// First retry delay after a transient failure; doubles per attempt.
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    retry_base: Duration,
    /// On SIGINT/SIGTERM, how long in-flight jobs may finish before they are given back.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    grace: Duration,
    /// How often expired jobs are removed.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    sweep_interval: Duration,
}

#[derive(Debug, Args)]
struct LabelArgs {
    /// JPEG or PNG files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    detect: DetectArgs,
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// JPEG or PNG files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:3000", env = "LABELQ_URL")]
    url: String,
    /// Bearer token (local tokens, or a JWT for the API on AWS).
    #[arg(long, env = "LABELQ_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Poll until each image is labelled, then print its labels.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "5m", value_parser = duration::parse)]
    timeout: Duration,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Entry point of the `labelq` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    init_tracing(default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("labelq: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("labelq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LABELQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(*args).await.map(|()| ExitCode::SUCCESS),
        Command::Label(args) => label(args).await,
        Command::Submit(args) => {
            let options = SubmitOptions { url: args.url, token: args.token, wait: args.wait, timeout: args.timeout };
            let ok = client::submit_files(&args.files, &options).await;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Tokens from `--tokens-file` and `LABELQ_TOKENS`; with none, open access on loopback only.
fn authenticator(args: &ServeArgs) -> anyhow::Result<Arc<dyn Authenticator>> {
    let mut text = std::env::var("LABELQ_TOKENS").unwrap_or_default();
    if let Some(path) = &args.tokens_file {
        let file = std::fs::read_to_string(path).with_context(|| format!("reading tokens from {}", path.display()))?;
        text.push('\n');
        text.push_str(&file);
    }
    let tokens = BearerTokens::parse(&text).context("invalid token list")?;
    if !tokens.is_empty() {
        return Ok(Arc::new(tokens));
    }
    let owner = OwnerId::parse("local").context("the local owner id")?;
    if args.listen.ip().is_loopback() {
        info!("no tokens configured: open access for one local owner (loopback only)");
    } else if args.open {
        warn!(listen = %args.listen, "--open: serving WITHOUT authentication on a non-loopback address");
    } else {
        bail!(
            "refusing to serve on {} without authentication: configure tokens (--tokens-file or LABELQ_TOKENS) or pass --open",
            args.listen
        );
    }
    Ok(Arc::new(OpenAccess::new(owner)))
}

async fn load_detector(model_dir: Option<PathBuf>, sessions: usize) -> anyhow::Result<OnnxDetector> {
    tokio::task::spawn_blocking(move || {
        let dir = model::ensure(model_dir)?;
        let started = std::time::Instant::now();
        let detector = OnnxDetector::load(&OnnxConfig::new(&dir, sessions))?;
        info!(dir = %dir.display(), load_ms = started.elapsed().as_millis() as u64, sessions, "label model loaded");
        anyhow::Ok(detector)
    })
    .await?
}

/// The AWS backends, named by the environment.
async fn aws_backends() -> anyhow::Result<(Backends, SdkConfig, Resources)> {
    let resources = Resources::from_env()?;
    let topic_arn = config::required("LABELQ_TOPIC_ARN")?;
    let queue_url = config::required("LABELQ_QUEUE_URL")?;
    let sdk = sdk_config(TlsTrust::from_env()?).await;
    let adapters = Adapters::new(&sdk, &resources);
    info!(table = %resources.table, bucket = %resources.bucket, queue = %queue_url, "using the AWS backends");
    let backends = Backends {
        images: adapters.images,
        jobs: adapters.jobs,
        publisher: Adapters::publisher(&sdk, &topic_arn),
        consumer: Consumer::Sqs { queue: Adapters::queue(&sdk, &queue_url), batch_size: 10 },
        embedded: None,
    };
    Ok((backends, sdk, resources))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let auth = authenticator(&args)?;
    let detect = args.detect.options()?;
    let workers = args.workers.max(1);
    let (backends, aws) = match args.backend {
        Backend::Embedded => (Embedded::open(&args.data_dir, args.max_receives)?.into(), None),
        Backend::Aws => {
            let (backends, sdk, resources) = aws_backends().await?;
            (backends, Some((sdk, resources)))
        }
    };
    let detector: Arc<dyn LabelDetector> = match (args.detector, &aws) {
        (Detector::Onnx, _) => Arc::new(load_detector(args.detect.model_dir.clone(), workers).await?),
        (Detector::Rekognition, Some((sdk, resources))) => {
            Arc::new(RekognitionDetector::new(aws_sdk_rekognition::Client::new(sdk), &resources.bucket))
        }
        (Detector::Rekognition, None) => {
            bail!("--detector rekognition reads images from S3: use it with --backend aws")
        }
    };
    let options = ServeOptions {
        listen: args.listen,
        workers,
        auth,
        submit: SubmitConfig { ttl: args.ttl, ..SubmitConfig::default() },
        worker: WorkerConfig {
            max_receives: args.max_receives,
            lease: args.visibility_timeout,
            backoff: Backoff { base: args.retry_base, max: Duration::from_secs(300).max(args.retry_base) },
            detect,
        },
        poll_wait: Duration::from_secs(20),
        grace: args.grace,
        sweep_interval: args.sweep_interval,
    };
    let server = Server::start(backends, detector, Arc::new(SystemClock), options)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!("labelq listening on http://{}", server.addr());
    let stop = server.stop_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down: finishing in-flight work");
        stop.cancel();
    });
    server.run().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn label(args: LabelArgs) -> anyhow::Result<ExitCode> {
    let options = args.detect.options()?;
    let detector = load_detector(args.detect.model_dir.clone(), 1).await?;
    let files = args.files;
    let results = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|file| {
                let outcome = std::fs::read(file)
                    .map_err(|e| json!({ "code": "unreadable_file", "message": e.to_string() }))
                    .and_then(|bytes| {
                        let content_type = ContentType::sniff(&bytes).ok_or_else(
                            || json!({ "code": "unsupported_image", "message": "not a JPEG or PNG file" }),
                        )?;
                        detector.labels_blocking(&bytes, content_type, &options).map_err(|e| match e {
                            DetectError::Permanent { code, message, .. } => json!({ "code": code, "message": message }),
                            DetectError::Transient(e) => json!({ "code": "internal", "message": e.to_string() }),
                        })
                    });
                match outcome {
                    Ok(labels) => (true, json!({ "file": file, "labels": labels })),
                    Err(error) => (false, json!({ "file": file, "error": error })),
                }
            })
            .collect::<Vec<_>>()
    })
    .await?;
    let ok = results.iter().all(|(ok, _)| *ok);
    let documents: Vec<_> = results.into_iter().map(|(_, doc)| doc).collect();
    println!("{}", serde_json::to_string_pretty(&documents)?);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
