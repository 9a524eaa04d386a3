//! Benchmark: whether subscribers that stop reading slow anyone else down.
//!
//! `labelq serve`'s stack with a zero-cost detector; a client submits jobs over HTTP at a steady
//! rate below what the server can take, and one WebSocket subscriber that reads (all jobs) notes
//! when each job's SUCCEEDED reaches it. Three runs: no other subscriber; 50 more that read
//! everything; 50 that stop reading (subscribed to all jobs, over sockets with a 4 KiB receive
//! buffer, never reading a byte after subscribing, so once the kernel's buffers are full the
//! server's writes to them wait). Prints, for each run, the throughput, CPU time per job, submit
//! latency and the latency from submission to the reader hearing of the finished job (p50 / p99),
//! and, for the stalled run, what one stalled connection got once it read again.
//!
//! Run: `cargo bench -p labelq-e2e --bench live` (prints its figures; asserts nothing). The same
//! with the debug build the tests use: `cargo test -p labelq-e2e --bench live`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use labelq::embedded::Embedded;
use labelq::server::Server;
use labelq_e2e::bench::{cpu_time, ms, percentile};
use labelq_e2e::{StubDetector, png};
use labelq_shared::config::MaxReceives;
use labelq_shared::domain::SystemClock;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const JOBS: usize = 4000;
/// Submissions per second: enough that a stalled subscriber's share (about 2 KB per job) overflows
/// the kernel's buffers within the run.
const RATE: u64 = 150;
const SUBSCRIBERS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Others {
    None,
    Reading,
    Stalled,
}

/// Reads a subscriber's messages until it goes quiet: (job messages, lagged notices, changes missed).
async fn drain(ws: &mut Ws, quiet: Duration) -> (usize, usize, u64) {
    let (mut jobs, mut lagged, mut missed) = (0, 0, 0);
    while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, ws.next()).await {
        let Message::Text(text) = message else { continue };
        let value: Value = serde_json::from_str(&text).expect("JSON");
        match value["type"].as_str() {
            Some("job") => jobs += 1,
            Some("lagged") => {
                lagged += 1;
                missed += value["missed"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    }
    (jobs, lagged, missed)
}

async fn connect(addr: std::net::SocketAddr, receive_buffer: Option<u32>) -> Ws {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).expect("receive buffer");
    }
    let stream = socket.connect(addr).await.expect("connect");
    let request = format!("ws://{addr}/v1/live").into_client_request().expect("request");
    let (mut ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await.expect("upgrade");
    ws.send(Message::text(json!({"action": "subscribe"}).to_string())).await.expect("subscribe");
    ws
}

async fn run(others: Others) {
    let data = tempfile::tempdir().expect("data dir");
    let embedded = Embedded::open(data.path(), MaxReceives::DEFAULT, Arc::new(SystemClock)).await.expect("embedded");
    let options = labelq_e2e::bench::serve_options(2);
    let server = Server::start(embedded.into(), Arc::new(StubDetector::default()), Arc::new(SystemClock), options)
        .await
        .expect("server");
    let addr = server.addr();
    let mut stalled_sockets = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..if others == Others::None { 0 } else { SUBSCRIBERS } {
        match others {
            Others::Stalled => stalled_sockets.push(connect(addr, Some(4096)).await),
            _ => {
                let mut ws = connect(addr, None).await;
                readers.push(tokio::spawn(async move { drain(&mut ws, Duration::from_secs(600)).await }));
            }
        }
    }
    let mut reader = connect(addr, None).await;

    // The reader notes when each job's SUCCEEDED reaches it.
    let heard = tokio::spawn(async move {
        let mut finished = HashMap::new();
        while finished.len() < JOBS {
            let Some(Ok(message)) = reader.next().await else { break };
            let Message::Text(text) = message else { continue };
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if value["type"] == "job" && value["job"]["status"] == "SUCCEEDED" {
                let id = value["job"]["id"].as_str().expect("id").to_owned();
                finished.entry(id).or_insert_with(Instant::now);
            }
        }
        finished
    });

    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v1/images");
    let body = png(320, 240);
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let cpu = cpu_time();
    let started = Instant::now();
    let mut submissions = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        pace.tick().await;
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        submissions.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = http.post(&url).header("content-type", "image/png").body(body).send().await.expect("post");
            assert_eq!(response.status(), 202);
            let job: Value = response.json().await.expect("job");
            (job["id"].as_str().expect("id").to_owned(), sent, sent.elapsed())
        }));
    }
    let mut sent = HashMap::new();
    let mut submit_latency = Vec::with_capacity(JOBS);
    for submission in submissions {
        let (id, at, latency) = submission.await.expect("submitted");
        sent.insert(id, at);
        submit_latency.push(latency);
    }
    let heard = tokio::time::timeout(Duration::from_secs(300), heard).await.expect("all heard").expect("reader");
    let elapsed = heard.values().max().copied().unwrap_or_else(Instant::now) - started;
    let cpu = cpu_time() - cpu;
    let mut to_heard: Vec<Duration> = heard.iter().map(|(id, at)| *at - sent[id]).collect();
    to_heard.sort();
    submit_latency.sort();
    println!(
        "{:<28} {JOBS} jobs in {:.2} s ({:.0} jobs/s), {:.2} ms CPU per job (client included); submit p50 {:.2} ms, \
         p99 {:.2} ms; submitted -> reader heard SUCCEEDED p50 {:.2} ms, p99 {:.2} ms ({} of {JOBS} heard)",
        match others {
            Others::None => "no other subscriber:".to_owned(),
            Others::Reading => format!("{SUBSCRIBERS} more reading:"),
            Others::Stalled => format!("{SUBSCRIBERS} stalled:"),
        },
        elapsed.as_secs_f64(),
        heard.len() as f64 / elapsed.as_secs_f64(),
        ms(cpu) / JOBS as f64,
        ms(percentile(&submit_latency, 0.5)),
        ms(percentile(&submit_latency, 0.99)),
        ms(percentile(&to_heard, 0.5)),
        ms(percentile(&to_heard, 0.99)),
        heard.len(),
    );

    // How far behind the stalled ones were: what one reads now, until it goes quiet.
    if let Some(ws) = stalled_sockets.first_mut() {
        let (jobs, lagged, missed) = drain(ws, Duration::from_millis(500)).await;
        println!(
            "    one stalled subscriber, reading afterwards: {jobs} job messages, {lagged} lagged notices ({missed} changes missed)"
        );
    }
    for reader in readers {
        reader.abort();
    }
    drop(stalled_sockets);
    server.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores; {JOBS} jobs of a 320x240 PNG submitted at {RATE}/s, 2 workers");
    runtime.block_on(async {
        for others in std::env::var("LIVE_BENCH_ORDER").as_deref().unwrap_or("none,reading,stalled").split(',') {
            match others {
                "none" => run(Others::None).await,
                "reading" => run(Others::Reading).await,
                "stalled" => run(Others::Stalled).await,
                other => panic!("LIVE_BENCH_ORDER: unknown run {other}"),
            }
        }
    });
}
