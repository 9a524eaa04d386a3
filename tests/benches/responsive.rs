//! Benchmark: does the API stay responsive while the built-in models keep every core busy?
//!
//! `labelq serve`'s stack (embedded backends, one worker per core) with 16 clients submitting real
//! photos (the test photos, 20 KB to 600 KB) over loopback for a fixed time, each every 200 ms
//! (80 submissions a second in all: far more than the models label, so the backlog grows and the
//! models keep every core busy, and far less than the API alone can take, so what the latency
//! shows is the models' competition for the cores, not the API's own saturation). Printed for
//! each configuration: submit latency p50/p90/p99/max, submissions per second, and images
//! labelled per second while the clients ran.
//!
//! Configurations: a zero-cost detector (the API's own cost under this load, nothing to compete
//! with), the default model set on threads at the process's priority, and the same on threads at
//! nice 10, as `labelq serve` runs them ([`OnnxConfig::nice`]). Last, the peak RSS of this process
//! (the server, its models and the clients).
//!
//! Run: `cargo bench -p labelq-e2e --bench responsive` (prints its figures; asserts nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use labelq::embedded::Embedded;
use labelq::server::Server;
use labelq_e2e::bench::{ms, peak_rss_mb, percentile};
use labelq_e2e::{StubDetector, model_dir, photo};
use labelq_shared::adapters::onnx::{OnnxConfig, OnnxDetector};
use labelq_shared::config::MaxReceives;
use labelq_shared::domain::{DetectOptions, Findings, SystemClock};
use labelq_shared::ports::{DetectError, ImageInput, InputKind, LabelDetector};

const CLIENTS: usize = 16;
const RUN: Duration = Duration::from_secs(20);
/// Each client's pace: 16 clients every 200 ms are 80 submissions a second.
const EVERY: Duration = Duration::from_millis(200);
const PHOTOS: [&str; 7] =
    ["bus.jpg", "zidane.jpg", "chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png", "rocket.jpg"];

/// Counts the images another detector has labelled.
#[derive(Debug)]
struct Counting<D> {
    inner: D,
    done: AtomicUsize,
}

#[async_trait]
impl<D: LabelDetector> LabelDetector for Counting<D> {
    fn input_kind(&self) -> InputKind {
        self.inner.input_kind()
    }

    async fn detect(&self, image: ImageInput, options: &DetectOptions) -> Result<Findings, DetectError> {
        let findings = self.inner.detect(image, options).await;
        self.done.fetch_add(1, Ordering::SeqCst);
        findings
    }
}

async fn run<D: LabelDetector + 'static>(name: &str, detector: D, workers: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path(), MaxReceives::DEFAULT, Arc::new(SystemClock)).await.expect("open");
    let detector = Arc::new(Counting { inner: detector, done: AtomicUsize::new(0) });
    let options = labelq_e2e::bench::serve_options(workers);
    let server =
        Server::start(embedded.into(), detector.clone(), Arc::new(SystemClock), options).await.expect("server");
    let url = format!("http://{}/v1/images", server.addr());
    let photos: Arc<Vec<(Vec<u8>, &str)>> = Arc::new(
        PHOTOS.iter().map(|n| (photo(n), if n.ends_with(".png") { "image/png" } else { "image/jpeg" })).collect(),
    );

    let started = Instant::now();
    let labelled_before = detector.done.load(Ordering::SeqCst);
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (url, photos) = (url.clone(), photos.clone());
        clients.spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut i = client;
            let mut pace = tokio::time::interval(EVERY);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Spread the clients over one period rather than all at once.
            tokio::time::sleep(EVERY * client as u32 / CLIENTS as u32).await;
            while started.elapsed() < RUN {
                pace.tick().await;
                let (body, content_type) = &photos[i % photos.len()];
                i += 1;
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .header("content-type", *content_type)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("post");
                assert_eq!(response.status(), 202);
                let _ = response.bytes().await;
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = clients.join_next().await {
        latencies.extend(done.expect("a client"));
    }
    let elapsed = started.elapsed();
    let labelled = detector.done.load(Ordering::SeqCst) - labelled_before;
    latencies.sort();
    println!(
        "{name:<44} submit p50 {:6.2} ms  p90 {:6.2} ms  p99 {:6.2} ms  max {:7.2} ms  ({:.0} submits/s); labelled {:.1} images/s",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("samples")),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        labelled as f64 / elapsed.as_secs_f64(),
    );
    server.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{cores} cores, {CLIENTS} clients submitting real photos for {} s, {cores} workers", RUN.as_secs());
    runtime.block_on(async {
        run("zero-cost detector (the API alone)", StubDetector::default(), cores).await;
        for (name, nice) in
            [("default set, inference at the API's priority", 0), ("default set, inference at nice 10", 10)]
        {
            let config = OnnxConfig { nice, ..OnnxConfig::new(model_dir(), cores) };
            let detector = OnnxDetector::load(&config).expect("the built-in models");
            run(name, detector, cores).await;
        }
    });
    println!("peak RSS of this process (server, models, clients): {:.1} MB", peak_rss_mb());
}
