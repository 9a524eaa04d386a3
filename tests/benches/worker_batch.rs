//! Benchmark: one SQS batch through the worker function's handler with the built-in model, on the
//! current-thread runtime the Lambda functions use and on tokio's multi-thread runtime (one worker
//! thread per core), interleaved in one run.
//!
//! A batch is ten records (SQS's default batch size) of the real photos, handled by
//! `handle_sqs_batch`, the code the worker function runs, with the function's default bound of four
//! records at once and one model session per record in flight, as `worker` builds them. The jobs
//! live in SQLite and the images in a directory, so the figures are the model's and the handler's,
//! not a network's. Prints ms per batch (median and spread over the rounds) and images per second
//! for each runtime; asserts only that every batch succeeded.
//!
//! Run: `cargo bench -p labelq-e2e --bench worker_batch` (or `make bench`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use labelq_e2e::bench::ms;
use labelq_e2e::{model_dir, photo};
use labelq_shared::adapters::fs::FsImageStore;
use labelq_shared::adapters::onnx::{OnnxConfig, OnnxDetector};
use labelq_shared::adapters::sqlite::{SqliteJobStore, SqliteQueue};
use labelq_shared::config::MaxReceives;
use labelq_shared::domain::{ContentType, CorrelationId, OwnerId, SystemClock};
use labelq_shared::lambda::{handle_sqs_batch, record_from_sdk};
use labelq_shared::ports::Envelope;
use labelq_shared::service::{Stores, SubmitConfig, SubmitRequest, SubmitService, Upload, WorkerConfig, WorkerService};
use tokio::runtime::{Builder, Runtime};

const PHOTOS: [&str; 7] =
    ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png", "bus.jpg", "zidane.jpg"];
const BATCH: usize = 10;
/// The worker function's default `LABELQ_WORKER_CONCURRENCY`.
const BOUND: usize = 4;
const ROUNDS: usize = 15;

struct Pipeline {
    submit: SubmitService,
    worker: WorkerService,
    queue: SqliteQueue,
    photos: Vec<(bytes::Bytes, ContentType)>,
}

impl Pipeline {
    /// Ten PENDING jobs, as the request-handler leaves them, and the SQS event that delivers them.
    async fn batch(&self, round: usize) -> SqsEvent {
        let mut records = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            let (bytes, content_type) = self.photos[(round * BATCH + i) % self.photos.len()].clone();
            let request = SubmitRequest {
                owner: OwnerId::parse("bench").expect("an owner"),
                upload: Upload { bytes, declared: content_type },
                idempotency_key: None,
                correlation_id: CorrelationId::new(),
                callback: None,
                source: None,
            };
            let job = self.submit.submit(request).await.expect("submitted").job;
            let message = Message::builder()
                .message_id(format!("m-{round}-{i}"))
                .receipt_handle(format!("r-{round}-{i}"))
                .body(Envelope::for_job(&job).message.to_json())
                .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
                .build();
            records.push(record_from_sdk(message));
        }
        let mut event = SqsEvent::default();
        event.records = records;
        event
    }

    /// Wall time of one batch through the handler on `runtime`.
    fn run(&self, runtime: &Runtime, round: usize) -> Duration {
        runtime.block_on(async {
            let event = self.batch(round).await;
            let started = Instant::now();
            let response = handle_sqs_batch(&self.worker, &self.queue, event, BOUND, None).await;
            let elapsed = started.elapsed();
            assert!(response.batch_item_failures.is_empty(), "a record failed: {response:?}");
            elapsed
        })
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let images = Arc::new(FsImageStore::open(dir.path().join("images")).expect("image store"));
    let jobs = Arc::new(SqliteJobStore::open(&dir.path().join("jobs.db")).expect("job store"));
    let clock = Arc::new(SystemClock);
    let queue = SqliteQueue::open(&dir.path().join("queue.db"), MaxReceives::DEFAULT, clock.clone()).expect("queue");
    let detector = Arc::new(OnnxDetector::load(&OnnxConfig::new(model_dir(), BOUND)).expect("model"));
    let stores = Stores { images, jobs };
    let pipeline = Pipeline {
        submit: SubmitService::new(stores.clone(), Arc::new(queue.clone()), clock.clone(), SubmitConfig::default()),
        worker: WorkerService::new(stores, detector, clock, WorkerConfig::default()),
        queue,
        photos: PHOTOS
            .iter()
            .map(|name| {
                let bytes = photo(name);
                let content_type = ContentType::sniff(&bytes).expect("jpeg or png");
                (bytes.into(), content_type)
            })
            .collect(),
    };

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let current = Builder::new_current_thread().enable_all().build().expect("a runtime");
    let multi = Builder::new_multi_thread().worker_threads(cores).enable_all().build().expect("a runtime");
    let runtimes = [("current-thread (the functions')", &current), ("multi-thread", &multi)];

    // A warm-up batch on each: the model's sessions and the blocking pool's threads start here.
    for (_, runtime) in runtimes {
        pipeline.run(runtime, 0);
    }
    let mut times = [Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS)];
    for round in 1..=ROUNDS {
        for (i, (_, runtime)) in runtimes.iter().enumerate() {
            times[i].push(pipeline.run(runtime, round * runtimes.len() + i));
        }
    }

    println!(
        "worker batch: {BATCH} records, bound {BOUND}, {BOUND} model sessions, {cores} cores, {ROUNDS} rounds interleaved"
    );
    println!("{:<34} {:>10} {:>10} {:>10} {:>10}", "runtime", "p50 ms", "min ms", "max ms", "images/s");
    for ((name, _), mut t) in runtimes.iter().zip(times) {
        t.sort();
        let p50 = t[t.len() / 2];
        let rate = BATCH as f64 / p50.as_secs_f64();
        println!("{name:<34} {:>10.1} {:>10.1} {:>10.1} {rate:>10.1}", ms(p50), ms(t[0]), ms(t[t.len() - 1]));
    }
}
