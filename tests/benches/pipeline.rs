//! Benchmark: the cost of the pipeline itself, with a zero-cost detector.
//!
//! 1. Submit latency: sequential `POST /v1/images` of a ~100 KB PNG over loopback against
//!    `labelq serve`'s stack (durable: image fsync'd, job and message committed), p50/p99.
//! 2. Pipeline overhead per job beyond detection: a backlog of jobs is queued first, then the
//!    worker pool drains it; CPU time (user + system, from getrusage) per job and wall time, at 1
//!    and N workers.
//!
//! 3. The same with completion callbacks: every job asks for one, the worker announces it on the
//!    callback queue and the deliverers POST it, signed, to a receiver on 127.0.0.1 (in this
//!    process, so its own work is in the CPU figure too), until every job's callback is delivered.
//!
//! Run: `cargo bench -p labelq-e2e --bench pipeline` (prints its figures; asserts nothing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use labelq::embedded::Embedded;
use labelq::pool::{self, PoolConfig};
use labelq::server::Server;
use labelq_e2e::StubDetector;
use labelq_e2e::bench::{cpu_time, ms, percentile};
use labelq_e2e::receiver::Receiver;
use labelq_shared::adapters::reqwest::ReqwestCallbackSender;
use labelq_shared::config::MaxReceives;
use labelq_shared::domain::CallbackUrl;
use labelq_shared::domain::{ContentType, CorrelationId, OwnerId, SystemClock};
use labelq_shared::service::{
    Announce, CallbackConfig, CallbackService, SubmitConfig, SubmitRequest, SubmitService, Upload, WorkerConfig,
    WorkerService,
};
use labelq_shared::webhooks::{RetrySchedule, TargetPolicy, WebhookSecret, WebhookSecrets};
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// A PNG of noise, so it does not compress: about 100 KB.
fn noise_png() -> Vec<u8> {
    let mut rng = rand::rng();
    let image = image::RgbImage::from_fn(190, 176, |_, _| image::Rgb([rng.random(), rng.random(), rng.random()]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image).write_to(&mut out, image::ImageFormat::Png).expect("encode");
    out.into_inner()
}

async fn submit_latency(body: &[u8], requests: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path(), MaxReceives::DEFAULT, Arc::new(SystemClock)).await.expect("open");
    let options = labelq_e2e::bench::serve_options(1);
    let server = Server::start(embedded.into(), Arc::new(StubDetector::default()), Arc::new(SystemClock), options)
        .await
        .expect("server");
    let url = format!("http://{}/v1/images", server.addr());
    let http = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(requests);
    for i in 0..requests + 50 {
        let started = Instant::now();
        let response =
            http.post(&url).header("content-type", "image/png").body(body.to_vec()).send().await.expect("post");
        assert_eq!(response.status(), 202);
        let _ = response.bytes().await;
        if i >= 50 {
            latencies.push(started.elapsed());
        }
    }
    latencies.sort();
    println!(
        "submit latency, {} KB PNG, {requests} sequential requests over loopback (workers running): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        body.len() / 1024,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("samples")),
    );
    server.shutdown().await;
}

async fn pipeline_overhead(body: &[u8], jobs: usize, workers: usize, callbacks: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SystemClock);
    let embedded = Embedded::open(dir.path(), MaxReceives::DEFAULT, clock.clone()).await.expect("open");
    let receiver = Receiver::start([204u16]).await;
    let policy = TargetPolicy { allow_private: true };
    let submit_config = SubmitConfig { callbacks: Some(policy), ..SubmitConfig::default() };
    let submit = SubmitService::new(embedded.stores(), embedded.queue.clone(), clock.clone(), submit_config);
    let owner = OwnerId::parse("bench").expect("owner");
    let callback = CallbackUrl::parse(&receiver.url("/hook")).expect("a callback URL");
    for _ in 0..jobs {
        let request = SubmitRequest {
            owner: owner.clone(),
            upload: Upload { bytes: body.to_vec().into(), declared: ContentType::Png },
            idempotency_key: None,
            correlation_id: CorrelationId::new(),
            callback: callbacks.then(|| callback.clone()),
            source: None,
        };
        submit.submit(request).await.expect("submit");
    }

    let detector = Arc::new(StubDetector::default());
    let mut worker = WorkerService::new(embedded.stores(), detector.clone(), clock.clone(), WorkerConfig::default());
    let stop = CancellationToken::new();
    let mut deliverers = None;
    if callbacks {
        worker = worker.with_completions(embedded.callbacks.clone(), Announce::WithCallback);
        let config = CallbackConfig {
            secrets: WebhookSecrets::new(WebhookSecret::generate()),
            policy,
            schedule: RetrySchedule::default(),
        };
        let sender = Arc::new(ReqwestCallbackSender::new(policy).expect("the callback client"));
        let service = Arc::new(CallbackService::new(embedded.jobs.clone(), sender, clock, config));
        let queue = embedded.callbacks.clone();
        deliverers = Some(labelq::callbacks::spawn(queue, service, 4, Duration::from_millis(200), stop.clone()));
    }
    let config = PoolConfig {
        workers,
        visibility: Duration::from_secs(60),
        poll_wait: Duration::from_millis(200),
        grace: Duration::from_secs(5),
    };
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut pool = pool::spawn(embedded.queue.clone(), Arc::new(worker), config, stop.clone());
    while detector.calls() < jobs {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    while embedded.queue.counts().await.expect("counts") != Default::default() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if callbacks {
        while receiver.call_count() < jobs || embedded.callbacks.counts().await.expect("counts") != Default::default() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    stop.cancel();
    while pool.join_next().await.is_some() {}
    if let Some(mut deliverers) = deliverers {
        while deliverers.join_next().await.is_some() {}
    }
    let with = if callbacks { ", each with a callback delivered to 127.0.0.1" } else { "" };
    println!(
        "pipeline overhead, zero-cost detector, {jobs} queued jobs{with}, {workers} worker(s): CPU {:.3} ms/job, wall {:.3} ms/job ({:.0} jobs/s)",
        ms(cpu) / jobs as f64,
        ms(wall) / jobs as f64,
        jobs as f64 / wall.as_secs_f64(),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let body = noise_png();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores; a job = receive + claim + read image + record labels (fsync) + ack");
    runtime.block_on(async {
        submit_latency(&body, 1000).await;
        pipeline_overhead(&body, 1000, 1, false).await;
        pipeline_overhead(&body, 1000, cores, false).await;
        pipeline_overhead(&body, 1000, 1, true).await;
        pipeline_overhead(&body, 1000, cores, true).await;
    });
}
