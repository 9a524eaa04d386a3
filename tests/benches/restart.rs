//! Benchmark: how a backlog drains when `labelq serve` is killed in the middle of it.
//!
//! The real binary (real model, one worker per core, the default 60 s visibility timeout) is
//! given a backlog of real photos; while it drains, the process is killed with SIGKILL and at
//! once restarted on the same data directory, `KILLS` times. The figure is the wall time from the
//! first submission until every job is SUCCEEDED, beside the same backlog drained without a kill.
//! Before a restart could give back what the killed process held, each kill cost the visibility
//! timeout.
//!
//! Run: `cargo bench -p labelq-e2e --bench restart` (prints its figures; asserts nothing).

use std::time::{Duration, Instant};

use labelq_e2e::{ServeProcess, submit_photos};
use serde_json::Value;

const JOBS: usize = 400;
const KILLS: usize = 2;

fn start(data_dir: &std::path::Path) -> ServeProcess {
    let dir = data_dir.to_str().expect("a UTF-8 path");
    ServeProcess::start(env!("CARGO_BIN_EXE_labelq-under-test"), &["--data-dir", dir], &[])
}

/// How many jobs have succeeded, counted a page of 100 at a time.
async fn succeeded(http: &reqwest::Client, base: &str) -> usize {
    let mut count = 0;
    let mut path = "/v1/images?status=SUCCEEDED&limit=100".to_owned();
    loop {
        let Ok(response) = http.get(format!("{base}{path}")).send().await else { return count };
        let Ok(page) = response.json::<Value>().await else { return count };
        count += page["items"].as_array().map_or(0, Vec::len);
        match page["links"]["next"].as_str() {
            Some(next) => path = next.to_owned(),
            None => return count,
        }
    }
}

async fn drain(kills: usize) -> (Duration, Vec<Duration>) {
    let dir = tempfile::tempdir().expect("a data directory");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut server = start(dir.path());
    submit_photos(&http, &server.base, JOBS).await;
    let mut resumed = Vec::new();
    let mut killed = 0;
    loop {
        let done = succeeded(&http, &server.base).await;
        if done == JOBS {
            return (started.elapsed(), resumed);
        }
        if killed < kills && done >= JOBS * (killed + 1) / (kills + 1) {
            server.signal("KILL");
            drop(server);
            killed += 1;
            let restarted = Instant::now();
            server = start(dir.path());
            // Until the first job after the restart finishes: the dead process's leases are back.
            while succeeded(&http, &server.base).await <= done {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            resumed.push(restarted.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let (calm, _) = drain(0).await;
    println!("{JOBS} jobs, no kill: {:.1} s ({:.0} jobs/s)", calm.as_secs_f64(), JOBS as f64 / calm.as_secs_f64());
    let (killed, resumed) = drain(KILLS).await;
    let resumed: Vec<String> = resumed.iter().map(|d| format!("{:.2} s", d.as_secs_f64())).collect();
    println!(
        "{JOBS} jobs, {KILLS} SIGKILLs and restarts: {:.1} s end to end; first job done after each restart in {}",
        killed.as_secs_f64(),
        resumed.join(", ")
    );
}
