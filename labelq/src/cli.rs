//! The `labelq` command line: `serve`, `label`, `submit`.
//!
//! Settings the Lambda functions share (labels, confidence, deliveries, visibility, TTL,
//! concurrency, detector) are parsed by the same rules ([`labelq_shared::config`]): each flag
//! falls back to the function's environment variable, and a bad value is refused naming the flag,
//! never clamped.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use labelq_shared::config::{
    Concurrency, JobTtl, MaxLabels, MaxReceives, MinConfidence, Setting, VisibilityTimeout, parse_duration,
};
use labelq_shared::detectors::{DetectorBuilder, DetectorConfig, DetectorKind, ModelFeatures};
use labelq_shared::domain::{ContentType, DetectOptions, DropOwner, OwnerId, SystemClock};
use labelq_shared::http::auth::{Authenticator, BearerTokens, OpenAccess};
use labelq_shared::http::events::LiveConfig;
use labelq_shared::ports::{DetectError, ImageInput, LabelDetector};
use labelq_shared::service::{Backoff, CallbackConfig, SubmitConfig, WorkerConfig};
use labelq_shared::webhooks::{RetrySchedule, TargetPolicy, WebhookSecret, WebhookSecrets};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::client::{self, SubmitOptions};
use crate::drop_dir::DropConfig;
use crate::embedded::Embedded;
use crate::model;
use crate::output::Lines;
use crate::server::{Backends, ServeOptions, Server};

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  every file labelled (label, submit --wait) or accepted (submit); serve stopped on a signal
  1  a file failed: unreadable, not a JPEG or PNG, or refused by the API
  2  usage: an unknown flag, or a value outside its setting's rule
  3  could not start: configuration, the model, the data directory, the address, or the API
     unreachable
  4  timed out waiting for a job (submit --wait --timeout)
  5  a job failed: the image could not be labelled
When files end differently, the status is the first of 3, 4, 5, 1 that applies.";

#[derive(Debug, Parser)]
#[command(
    name = "labelq",
    version,
    about = "Asynchronous image labelling: submit an image, get 202, poll for labels.",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API and the workers in one process, with embedded backends and the built-in model.
    #[command(after_help = EXIT_STATUS_HELP)]
    Serve(Box<ServeArgs>),
    /// Label local image files now, without a server; one JSON document per file and line.
    #[command(after_help = EXIT_STATUS_HELP)]
    Label(LabelArgs),
    /// Submit image files to a running labelq API; one JSON document per file and line. Files
    /// over 4 MiB go by direct upload (POST /v1/uploads, then a PUT of the bytes) where the API
    /// takes them.
    #[command(after_help = EXIT_STATUS_HELP)]
    Submit(SubmitArgs),
}

/// How `labelq` ends; see [`EXIT_STATUS_HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    InputFailed,
    CouldNotStart,
    TimedOut,
    JobFailed,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::InputFailed => 1,
            Self::CouldNotStart => 3,
            Self::TimedOut => 4,
            Self::JobFailed => 5,
        }
    }

    /// Which of two outcomes the whole run reports: 3, then 4, then 5, then 1, then 0.
    pub fn worst(self, other: Self) -> Self {
        let rank = |e: Self| match e {
            Self::Ok => 0,
            Self::InputFailed => 1,
            Self::JobFailed => 2,
            Self::TimedOut => 3,
            Self::CouldNotStart => 4,
        };
        if rank(other) > rank(self) { other } else { self }
    }
}

#[derive(Debug, Args)]
struct DetectArgs {
    /// The model directory [default: $LABELQ_CACHE_DIR/model, else ~/.cache/labelq/model].
    /// Prepared on first use if missing.
    #[arg(long, env = "LABELQ_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// At most this many labels per image (1..=1000).
    #[arg(long, env = MaxLabels::VARIABLE, default_value_t = MaxLabels::DEFAULT)]
    max_labels: MaxLabels,
    /// Only labels at least this confident, in percent (0..=100).
    #[arg(long, env = MinConfidence::VARIABLE, default_value = "55")]
    min_confidence: MinConfidence,
    /// What the detector computes, comma-separated: labels (the classifier, which names the
    /// scene), objects (people and objects with their boxes), text (lines of text), properties
    /// (brightness, sharpness, contrast, dominant colours) [default: all four for the built-in
    /// models; labels,objects for rekognition].
    #[arg(long, env = ModelFeatures::VARIABLE)]
    features: Option<ModelFeatures>,
}

impl DetectArgs {
    fn options(&self) -> DetectOptions {
        DetectOptions { max_labels: self.max_labels.get(), min_confidence: self.min_confidence.get() }
    }
}

/// Where jobs, images and messages live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// A directory and SQLite files under --data-dir.
    Embedded,
    /// S3, DynamoDB, SNS and SQS (or LocalStack, with AWS_ENDPOINT_URL), named by LABELQ_TABLE,
    /// LABELQ_BUCKET, LABELQ_TOPIC_ARN and LABELQ_QUEUE_URL; the worker polls SQS like Lambda's
    /// event source mapping and runs the worker Lambda's handler. Needs a build with the cargo
    /// feature `aws`.
    Aws,
}

/// A duration that is more than zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).and_then(|d| if d.is_zero() { Err("must be more than 0".into()) } else { Ok(d) })
}

/// At most an hour: the job's message waits that long past the expiry, within every queue's limits.
fn upload_grace(s: &str) -> Result<Duration, String> {
    parse_duration(s).and_then(|d| if d > Duration::from_secs(3600) { Err("must be at most 1h".into()) } else { Ok(d) })
}

/// `http://host[:port]` or `https://...`, without a path: where clients reach the server.
fn public_url(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| e.to_string())?;
    let bare = matches!(url.scheme(), "http" | "https") && url.host().is_some() && url.path() == "/";
    if bare && url.query().is_none() && url.username().is_empty() {
        Ok(s.trim_end_matches('/').to_owned())
    } else {
        Err("must be http(s)://host[:port], without a path".into())
    }
}

fn parse_owner(s: &str) -> Result<OwnerId, String> {
    OwnerId::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where jobs, images and the queue live.
    #[arg(long, value_enum, default_value = "embedded", env = "LABELQ_BACKEND")]
    backend: Backend,
    /// The label detector: onnx (the built-in model) or rekognition (with --backend aws).
    #[arg(long, default_value = "onnx", env = DetectorKind::VARIABLE)]
    detector: DetectorKind,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000", env = "LABELQ_LISTEN")]
    listen: SocketAddr,
    /// Where images, jobs and the queue are kept.
    #[arg(long, default_value = ".labelq", env = "LABELQ_DATA_DIR")]
    data_dir: PathBuf,
    /// Jobs processed at once, 1..=256 (each uses one core for inference) [default: one per core].
    #[arg(long, env = Concurrency::VARIABLE)]
    workers: Option<Concurrency>,
    /// A file of `owner:token` lines; clients send `Authorization: Bearer <token>`. The variable
    /// LABELQ_TOKENS may hold the same entries, comma-separated.
    #[arg(long, env = "LABELQ_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address (one shared owner).
    #[arg(long)]
    open: bool,
    #[command(flatten)]
    detect: DetectArgs,
    /// How long jobs and images are kept (1m..=365d).
    #[arg(long, default_value = "24h", env = JobTtl::VARIABLE)]
    ttl: JobTtl,
    /// Deliveries of one message before it is dead-lettered (2..=1000: a direct upload's message
    /// comes back once its target expired).
    #[arg(long, default_value_t = MaxReceives::DEFAULT, env = MaxReceives::VARIABLE)]
    max_receives: MaxReceives,
    /// How long a delivered message stays hidden, and its job leased, before it is redelivered
    /// (1s..=12h).
    #[arg(long, default_value = "60s", env = VisibilityTimeout::VARIABLE)]
    visibility_timeout: VisibilityTimeout,
    /// First retry delay after a transient failure; doubles per attempt.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    retry_base: Duration,
    /// On SIGINT/SIGTERM, how long in-flight jobs may finish before they are given back.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    grace: Duration,
    /// How long after a direct upload's target expired its job still waits for the bytes (an
    /// upload that began in time may still be arriving) before it fails with upload_expired.
    #[arg(long, default_value = "2m", value_parser = upload_grace, env = "LABELQ_UPLOAD_GRACE")]
    upload_grace: Duration,
    /// Where clients reach this server, `http(s)://host[:port]`, for the upload targets it issues
    /// (behind a proxy, or listening on every interface) [default: the listening address].
    #[arg(long, value_parser = public_url, env = "LABELQ_PUBLIC_URL")]
    public_url: Option<String>,
    /// How often expired jobs are removed.
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    sweep_interval: Duration,
    /// The completion callbacks' signing secrets, `whsec_...`, one per line, the newest first
    /// (each signs, so receivers can move to a new one at their own pace); LABELQ_CALLBACK_SECRETS
    /// may hold them instead [default: DATA_DIR/callback-secrets, created on first start].
    #[arg(long, env = "LABELQ_CALLBACK_SECRETS_FILE")]
    callback_secrets_file: Option<PathBuf>,
    /// Let callbacks reach loopback and private addresses, and go over plain http (local
    /// development and tests). Link-local and metadata addresses stay refused.
    #[arg(long, env = "LABELQ_CALLBACK_ALLOW_PRIVATE")]
    callback_allow_private: bool,
    /// Delays before each retry of a callback that did not deliver, comma-separated (at most 20,
    /// each at most 12h).
    #[arg(long, default_value = "5s,5m,30m,2h,5h,10h", env = RetrySchedule::VARIABLE)]
    callback_retries: RetrySchedule,
    /// Label every JPEG or PNG file that appears under this directory (fire-and-forget): write it
    /// elsewhere and rename it in, and its result appears under --results as `<its path>.json`.
    #[arg(long, env = "LABELQ_WATCH")]
    watch: Option<PathBuf>,
    /// Where the results of dropped files are written; not inside --watch [default: DATA_DIR/results].
    #[arg(long, env = "LABELQ_RESULTS", requires = "watch")]
    results: Option<PathBuf>,
    /// The owner of dropped files' jobs (the owner of open access, without --tokens-file, is `local`).
    #[arg(long, default_value = "local", env = "LABELQ_DROP_OWNER", value_parser = parse_owner, requires = "watch")]
    drop_owner: OwnerId,
    /// The first directory under --watch names the owner of the files in it (`alice/cat.jpg` is
    /// alice's); files outside an owner's directory are refused. Overrides --drop-owner.
    #[arg(long, env = "LABELQ_DROP_OWNER_FROM_PATH", requires = "watch")]
    drop_owner_from_path: bool,
    /// How often --watch is scanned; a file is taken once it has not changed for this long.
    #[arg(long, default_value = "1s", value_parser = positive_duration, requires = "watch")]
    watch_interval: Duration,
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
    #[arg(long, default_value = "5m", value_parser = positive_duration)]
    timeout: Duration,
}

/// Entry point of the `labelq` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `submit`'s HTTPS client: ring, installed once (an error only says one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    init_tracing(default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "labelq: could not start the async runtime: {e}");
            return ExitCode::from(Exit::CouldNotStart.code());
        }
    };
    let exit = match runtime.block_on(run(cli)) {
        Ok(exit) => exit,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "labelq: {e:#}");
            Exit::CouldNotStart
        }
    };
    ExitCode::from(exit.code())
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LABELQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// `Err` is anything that stops the command before it could do its work (exit status 3).
async fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Serve(args) => serve(*args).await.map(|()| Exit::Ok),
        Command::Label(args) => label(args).await,
        Command::Submit(args) => {
            let options = SubmitOptions { url: args.url, token: args.token, wait: args.wait, timeout: args.timeout };
            Ok(client::submit_files(&args.files, &options, &mut Lines::stdout()).await)
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

/// The callbacks' signing secrets: LABELQ_CALLBACK_SECRETS, else --callback-secrets-file, else
/// the backend's own (`from_backend`: the AWS stack's Secrets Manager secret), else the data
/// directory's (embedded backends).
fn callback_secrets(args: &ServeArgs, from_backend: Option<WebhookSecrets>) -> anyhow::Result<WebhookSecrets> {
    let given = labelq_shared::config::optional::<WebhookSecrets>("LABELQ_CALLBACK_SECRETS")?;
    if from_backend.is_some() && (given.is_some() || args.callback_secrets_file.is_some()) {
        tracing::warn!("signing callbacks with the secrets given here, not the stack's: receivers must know them");
    }
    if let Some(secrets) = given {
        return Ok(secrets);
    }
    if let Some(path) = &args.callback_secrets_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return text.parse().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    if let Some(secrets) = from_backend {
        return Ok(secrets);
    }
    match args.backend {
        Backend::Embedded => Embedded::callback_secrets(&args.data_dir)
            .with_context(|| format!("the callback secrets in {}", args.data_dir.display())),
        // Nothing is delivered, so nothing is signed.
        Backend::Aws => Ok(WebhookSecrets::new(WebhookSecret::generate())),
    }
}

/// The built-in model's configuration, preparing the model directory first if it is missing.
async fn onnx_config(args: &DetectArgs, sessions: usize) -> anyhow::Result<DetectorConfig> {
    let model_dir = args.model_dir.clone();
    let model_dir = tokio::task::spawn_blocking(move || model::ensure(model_dir)).await??;
    let features = args.features.unwrap_or(ModelFeatures::default_for(DetectorKind::Onnx));
    Ok(DetectorConfig::Onnx { model_dir, sessions, features })
}

#[cfg(feature = "aws")]
mod aws {
    //! The AWS backends of `labelq serve --backend aws`, named by the environment.

    use anyhow::Context;
    use labelq_shared::adapters::aws::{
        AwsStores, Resources, S3UploadTargets, TlsTrust, sdk_config, sns_publisher, sqs_queue, webhook_secrets,
    };
    use labelq_shared::config;
    use labelq_shared::domain::SystemClock;
    use labelq_shared::service::Announce;
    use labelq_shared::webhooks::WebhookSecrets;
    use std::sync::Arc;
    use tracing::info;

    use crate::server::{Backends, CallbackQueue, Consumer};

    /// The backends, and the callbacks' signing secrets when the stack delivers callbacks: with
    /// `LABELQ_COMPLETION_TOPIC_ARN`, `LABELQ_CALLBACK_QUEUE_URL` and `LABELQ_CALLBACK_SECRET_ARN`
    /// set (as `localstack/provision.sh` exports them), the worker announces every finished job
    /// on the topic and the deliverers consume the queue, as the Lambda functions do.
    pub async fn backends() -> anyhow::Result<(Backends, aws_config::SdkConfig, Resources, Option<WebhookSecrets>)> {
        let resources = Resources::from_env()?;
        let topic_arn = config::required("LABELQ_TOPIC_ARN")?;
        let queue_url = config::required("LABELQ_QUEUE_URL")?;
        let completions = config::optional::<String>("LABELQ_COMPLETION_TOPIC_ARN")?;
        let callback_queue = config::optional::<String>("LABELQ_CALLBACK_QUEUE_URL")?;
        let secret = config::optional::<String>("LABELQ_CALLBACK_SECRET_ARN")?;
        let sdk = sdk_config(TlsTrust::from_env()?).await;
        let stores = AwsStores::new(&sdk, &resources);
        info!(table = %resources.table, bucket = %resources.bucket, queue = %queue_url, "using the AWS backends");
        let (callbacks, secrets) = match (completions, callback_queue, secret) {
            (Some(topic), Some(queue), Some(secret)) => {
                let client = aws_sdk_secretsmanager::Client::new(&sdk);
                let secrets = webhook_secrets(&client, &secret).await.context("the callbacks' signing secret")?;
                info!(completion_topic = %topic, callback_queue = %queue, "delivering callbacks");
                let callbacks = CallbackQueue {
                    publisher: sns_publisher(&sdk, &topic),
                    announce: Announce::Every,
                    queue: sqs_queue(&sdk, &queue),
                };
                (Some(callbacks), Some(secrets))
            }
            (None, None, None) => (None, None),
            _ => anyhow::bail!(
                "callbacks need LABELQ_COMPLETION_TOPIC_ARN, LABELQ_CALLBACK_QUEUE_URL and LABELQ_CALLBACK_SECRET_ARN together"
            ),
        };
        let backends = Backends {
            stores: stores.stores(),
            publisher: sns_publisher(&sdk, &topic_arn),
            consumer: Consumer::Sqs {
                queue: sqs_queue(&sdk, &queue_url),
                batch_size: 10,
                bucket: resources.bucket.clone(),
            },
            embedded: None,
            callbacks,
            defaults: Some(stores.defaults.clone()),
            // Direct uploads are presigned S3 PUTs, with this process's credentials.
            upload_targets: Some(Arc::new(S3UploadTargets::new(&sdk, &resources.bucket, Arc::new(SystemClock)))),
        };
        Ok((backends, sdk, resources, secrets))
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let auth = authenticator(&args)?;
    let workers = args.workers.unwrap_or_else(Concurrency::per_core).get();
    let clock = Arc::new(SystemClock);
    let (backends, detector, backend_secrets) = match args.backend {
        Backend::Embedded => {
            let embedded = Embedded::open(&args.data_dir, args.max_receives, clock.clone()).await?;
            let detector = match args.detector {
                DetectorKind::Onnx => DetectorBuilder::new(onnx_config(&args.detect, workers).await?).build().await?,
                DetectorKind::Rekognition => {
                    bail!("--detector rekognition reads images from S3: use it with --backend aws")
                }
            };
            (Backends::from(embedded), detector, None)
        }
        #[cfg(feature = "aws")]
        Backend::Aws => {
            let (backends, sdk, resources, secrets) = aws::backends().await?;
            let config = match args.detector {
                DetectorKind::Onnx => onnx_config(&args.detect, workers).await?,
                DetectorKind::Rekognition => DetectorConfig::Rekognition {
                    bucket: resources.bucket,
                    features: args.detect.features.unwrap_or(ModelFeatures::default_for(DetectorKind::Rekognition)),
                },
            };
            (backends, DetectorBuilder::new(config).with_aws(&sdk).build().await?, secrets)
        }
        #[cfg(not(feature = "aws"))]
        Backend::Aws => {
            bail!("this labelq was built without the AWS backend: build it with `cargo build -p labelq --features aws`")
        }
    };
    let options = ServeOptions {
        listen: args.listen,
        workers,
        auth,
        submit: SubmitConfig { ttl: args.ttl.get(), ..SubmitConfig::default() },
        worker: WorkerConfig {
            max_receives: args.max_receives,
            lease: args.visibility_timeout.get(),
            backoff: Backoff { base: args.retry_base, max: Duration::from_secs(300).max(args.retry_base) },
            detect: args.detect.options(),
            upload_grace: args.upload_grace,
        },
        poll_wait: Duration::from_secs(20),
        grace: args.grace,
        sweep_interval: args.sweep_interval,
        callbacks: CallbackConfig {
            secrets: callback_secrets(&args, backend_secrets)?,
            policy: TargetPolicy { allow_private: args.callback_allow_private },
            schedule: args.callback_retries.clone(),
        },
        deliverers: 4,
        live: LiveConfig::default(),
        drops: args.watch.as_ref().map(|dir| DropConfig {
            dir: dir.clone(),
            results: args.results.clone().unwrap_or_else(|| args.data_dir.join("results")),
            owner: if args.drop_owner_from_path {
                DropOwner::FirstSegment
            } else {
                DropOwner::Fixed(args.drop_owner.clone())
            },
            interval: args.watch_interval,
            data_dir: Some(args.data_dir.clone()),
        }),
        public_url: args.public_url.clone(),
    };
    let server = Server::start(backends, detector, clock, options)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    Lines::stdout().line(&format!("labelq listening on http://{}", server.addr()));
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

/// Labels each file in turn and prints its document as soon as it is done; stops early, without
/// an error, if the reader of the output goes away.
async fn label(args: LabelArgs) -> anyhow::Result<Exit> {
    let options = args.detect.options();
    let detector = DetectorBuilder::new(onnx_config(&args.detect, 1).await?).build().await?;
    let mut out = Lines::stdout();
    let mut exit = Exit::Ok;
    for file in &args.files {
        let (outcome, document) = label_one(&*detector, file, &options).await;
        exit = exit.worst(outcome);
        if !out.json(&document) {
            break;
        }
    }
    Ok(exit)
}

async fn label_one(detector: &dyn LabelDetector, file: &PathBuf, options: &DetectOptions) -> (Exit, Value) {
    let refused = |code: &str, message: String| {
        (Exit::InputFailed, json!({ "file": file, "error": { "code": code, "message": message } }))
    };
    let bytes = match tokio::fs::read(file).await {
        Ok(bytes) => bytes,
        Err(e) => return refused("unreadable_file", e.to_string()),
    };
    let Some(content_type) = ContentType::sniff(&bytes) else {
        return refused("unsupported_image", "not a JPEG or PNG file".into());
    };
    let image = ImageInput::Bytes { bytes: bytes.into(), content_type };
    match detector.detect(image, options).await {
        Ok(findings) => {
            // The file, then what was found in it as a job's findings read (labels, and text
            // and properties where those features ran).
            let mut document = json!({ "file": file });
            if let (Value::Object(fields), Ok(Value::Object(found))) = (&mut document, serde_json::to_value(&findings))
            {
                fields.extend(found);
            }
            (Exit::Ok, document)
        }
        Err(DetectError::Permanent { code, message, .. }) => {
            (Exit::JobFailed, json!({ "file": file, "error": { "code": code, "message": message } }))
        }
        Err(DetectError::Transient(e)) => {
            (Exit::JobFailed, json!({ "file": file, "error": { "code": "internal", "message": e.to_string() } }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn out_of_range_values_are_usage_errors_naming_the_flag() {
        for (flag, value) in [
            ("--max-labels", "0"),
            ("--workers", "0"),
            ("--max-receives", "0"),
            ("--visibility-timeout", "0s"),
            ("--min-confidence", "101"),
            ("--ttl", "10s"),
            ("--retry-base", "0s"),
            ("--detector", "yolo"),
            ("--features", "faces"),
            ("--features", ""),
        ] {
            let err = Cli::try_parse_from(["labelq", "serve", flag, value]).expect_err(flag);
            assert_eq!(err.exit_code(), 2, "{flag} {value}");
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
        assert!(Cli::try_parse_from(["labelq", "serve", "--max-labels", "1", "--visibility-timeout", "1s"]).is_ok());
    }

    #[test]
    fn the_worst_outcome_decides_the_exit_status() {
        assert_eq!(Exit::Ok.worst(Exit::InputFailed), Exit::InputFailed);
        assert_eq!(Exit::InputFailed.worst(Exit::JobFailed), Exit::JobFailed);
        assert_eq!(Exit::TimedOut.worst(Exit::JobFailed), Exit::TimedOut);
        assert_eq!(Exit::CouldNotStart.worst(Exit::TimedOut), Exit::CouldNotStart);
        let codes: Vec<u8> = [Exit::Ok, Exit::InputFailed, Exit::CouldNotStart, Exit::TimedOut, Exit::JobFailed]
            .map(Exit::code)
            .to_vec();
        assert_eq!(codes, [0, 1, 3, 4, 5], "2 is clap's, for usage errors");
    }
}
