//! Benchmark: each Lambda's stripped binary and zip size, and its init time (process start until
//! it asks the Runtime API for its first event), against a minimal hello-world Rust Lambda built
//! the same way and measured in the same run: as the template writes it (multi-thread runtime),
//! and on one thread, as labelq's functions run (so the second ratio is the cost of what they do
//! at init beyond the runtime).
//!
//! The Runtime API here is a stub that notes the moment `GET .../invocation/next` arrives and
//! never answers; each sample is a fresh process, killed after. Runs are interleaved so drift in
//! the machine's load affects every function alike.
//!
//! Run: `make bench-lambda` (builds the zips, then `cargo bench -p labelq-e2e --bench lambda`) (prints its figures;
//! asserts nothing). The zips come from `cargo lambda build --release --x86-64`, every one linked
//! the same way: at a fixed address, or position-independent with `LABELQ_LAMBDA_PIE=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use labelq_e2e::{model_dir, repo_root};
use tokio::sync::Notify;

const SAMPLES: usize = 30;

struct Function {
    name: &'static str,
    label: &'static str,
    env: Vec<(&'static str, String)>,
}

/// The stub Runtime API: signals each `next` request.
struct RuntimeApi {
    addr: String,
    asked: Arc<Notify>,
}

async fn runtime_api() -> RuntimeApi {
    let asked = Arc::new(Notify::new());
    let signal = asked.clone();
    let app = Router::new().route(
        "/2018-06-01/runtime/invocation/next",
        get(move || {
            let signal = signal.clone();
            async move {
                signal.notify_one();
                // Never answer: the process is killed once the moment is noted.
                std::future::pending::<()>().await;
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    RuntimeApi { addr, asked }
}

fn zip_path(name: &str) -> PathBuf {
    repo_root().join("target/lambda").join(name).join("bootstrap.zip")
}

/// The bootstrap as shipped: unpacked from its zip into `dir`.
fn unpack(name: &str, dir: &Path) -> PathBuf {
    let zip = zip_path(name);
    assert!(zip.is_file(), "{} is missing: run `make lambda-zips` first", zip.display());
    let out = dir.join(name);
    let status = Command::new("python3").args(["-m", "zipfile", "-e"]).arg(&zip).arg(&out).status().expect("unzip");
    assert!(status.success(), "unpacking {}", zip.display());
    let bootstrap = out.join("bootstrap");
    let _ = Command::new("chmod").arg("+x").arg(&bootstrap).status();
    bootstrap
}

/// How the bootstrap was linked, from its ELF header's type: `EXEC` at a fixed address (our build
/// script's default), `DYN` position-independent.
fn linking(path: &Path) -> &'static str {
    let header = std::fs::read(path).unwrap_or_default();
    match header.get(16..18) {
        Some([2, 0]) => "fixed-address",
        Some([3, 0]) => "position-independent",
        _ => "unknown",
    }
}

fn size_mb(path: &Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len() as f64 / 1e6).unwrap_or(f64::NAN)
}

async fn init_once(api: &RuntimeApi, function: &Function, bootstrap: &Path) -> Duration {
    let mut command = Command::new(bootstrap);
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", function.name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_SESSION_TOKEN", "bench")
        .envs(function.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let asked = api.asked.notified();
    tokio::pin!(asked);
    asked.as_mut().enable();
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn the bootstrap");
    tokio::select! {
        () = &mut asked => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => panic!("{} never asked for an event", function.label),
    }
    let init = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    init
}

fn median_p90(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[(v.len() * 9) / 10]))
}

#[tokio::main]
async fn main() {
    // As the SAM template deploys them in the aws partition: trusting the Amazon roots only.
    let resources = |trust: &str, extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("LABELQ_TLS_TRUST", trust.to_owned()),
            ("LABELQ_TABLE", "labelq-jobs".to_owned()),
            ("LABELQ_BUCKET", "labelq-images".to_owned()),
        ];
        env.extend(extra);
        env
    };
    let topic = || vec![("LABELQ_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:labelq".to_owned())];
    let worker = |detector: &str| {
        vec![
            ("LABELQ_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/labelq".to_owned()),
            ("LABELQ_MAX_RECEIVE_COUNT", "5".to_owned()),
            ("LABEL_DETECTOR", detector.to_owned()),
            ("LABELQ_MODEL_DIR", model_dir().display().to_string()),
            ("LABELQ_WORKER_CONCURRENCY", "1".to_owned()),
        ]
    };
    // The system's store as this machine keeps it (a bundle plus one file per CA), and as a single
    // bundle file, the way Amazon Linux keeps it.
    let mut single_bundle = resources("native", topic());
    single_bundle.extend([
        ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt".to_owned()),
        ("SSL_CERT_DIR", "/nonexistent".to_owned()),
    ]);
    let functions = [
        Function { name: "hello-lambda", label: "hello-world (baseline)", env: vec![] },
        Function { name: "hello-current-thread", label: "hello-world, one thread", env: vec![] },
        Function { name: "request-handler", label: "request-handler", env: resources("amazon", topic()) },
        Function { name: "status-api", label: "status-api", env: resources("amazon", vec![]) },
        Function { name: "worker", label: "worker (Rekognition)", env: resources("amazon", worker("rekognition")) },
        Function { name: "worker", label: "worker (built-in model)", env: resources("amazon", worker("onnx")) },
        Function { name: "request-handler", label: "  ..native trust", env: resources("native", topic()) },
        Function { name: "request-handler", label: "  ..native, one bundle", env: single_bundle },
    ];

    let dir = tempfile::tempdir().expect("a temporary directory");
    let bootstraps: Vec<PathBuf> = functions.iter().map(|f| unpack(f.name, dir.path())).collect();
    let api = runtime_api().await;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); functions.len()];
    for (function, bootstrap) in functions.iter().zip(&bootstraps) {
        init_once(&api, function, bootstrap).await; // warm the page cache
    }
    for _ in 0..SAMPLES {
        for (i, (function, bootstrap)) in functions.iter().zip(&bootstraps).enumerate() {
            samples[i].push(init_once(&api, function, bootstrap).await);
        }
    }

    let (hello, _) = median_p90(samples[0].clone());
    let (hello_one_thread, _) = median_p90(samples[1].clone());
    let zip = |name: &str| size_mb(&zip_path(name));
    println!(
        "{SAMPLES} cold starts each (interleaved), x86_64, release profile, {} executables; init = spawn -> GET invocation/next",
        linking(&bootstraps[0])
    );
    println!(
        "{:<26} {:>10} {:>9} {:>12} {:>10} {:>9} {:>11}",
        "function", "binary MB", "zip MB", "init p50 ms", "p90 ms", "vs hello", "vs 1-thread"
    );
    for ((function, samples), bootstrap) in functions.iter().zip(samples).zip(&bootstraps) {
        let (p50, p90) = median_p90(samples);
        println!(
            "{:<26} {:>10.2} {:>9.2} {:>12.2} {:>10.2} {:>8.2}x {:>10.2}x",
            function.label,
            size_mb(bootstrap),
            zip(function.name),
            p50,
            p90,
            p50 / hello,
            p50 / hello_one_thread
        );
    }
}
