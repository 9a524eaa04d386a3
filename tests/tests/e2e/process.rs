//! The real `labelq serve` binary as a process: crash recovery and graceful shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use labelq_e2e::{ServeProcess, submit_photos};
use serde_json::Value;

/// Far longer than any test waits: a job that resumes only when its lease runs out fails them.
const VISIBILITY: &str = "600s";

/// `labelq serve` with one worker over `data_dir`.
fn start(data_dir: &Path) -> ServeProcess {
    let dir = data_dir.to_str().expect("a UTF-8 path");
    ServeProcess::start(
        env!("CARGO_BIN_EXE_labelq-under-test"),
        &["--workers", "1", "--visibility-timeout", VISIBILITY, "--data-dir", dir],
        &[],
    )
}

async fn statuses(http: &reqwest::Client, base: &str, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let job: Value = http.get(format!("{base}/v1/images/{id}")).send().await.unwrap().json().await.unwrap();
        out.push(job["status"].as_str().unwrap_or_default().to_owned());
    }
    out
}

async fn wait_all_succeeded(http: &reqwest::Client, base: &str, ids: &[String], timeout: Duration) {
    let started = Instant::now();
    loop {
        let now = statuses(http, base, ids).await;
        if now.iter().all(|s| s == "SUCCEEDED") {
            return;
        }
        assert!(started.elapsed() < timeout, "not all SUCCEEDED after {timeout:?}: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job the killed process held, and its message, are given back when the next process opens
/// the data directory: the backlog resumes at once, not after the 600 s visibility timeout.
#[tokio::test]
async fn a_process_killed_in_the_middle_of_20_jobs_finishes_them_all_within_seconds_of_a_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let first = start(data_dir.path());
    let ids = submit_photos(&http, &first.base, 20).await;

    // Kill it once some, but not all, jobs are done.
    let started = Instant::now();
    let done_before_kill = loop {
        let done = statuses(&http, &first.base, &ids).await.iter().filter(|s| *s == "SUCCEEDED").count();
        if done >= 3 {
            break done;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    first.signal("KILL");
    drop(first);
    assert!(done_before_kill < 20, "the kill came too late to test anything");

    let second = start(data_dir.path());
    let restarted = Instant::now();
    let left: Vec<String> =
        statuses(&http, &second.base, &ids).await.into_iter().filter(|s| s != "SUCCEEDED").collect();
    assert!(!left.is_empty(), "jobs were left unfinished by the kill: {left:?}");
    wait_all_succeeded(&http, &second.base, &ids, Duration::from_secs(60)).await;
    eprintln!("{} jobs left by the kill finished {:?} after the restart", left.len(), restarted.elapsed());
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully_and_a_restart_finishes_the_backlog() {
    let data_dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut first = start(data_dir.path());
    let ids = submit_photos(&http, &first.base, 8).await;

    first.signal("TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "labelq did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    drop(first);

    let second = start(data_dir.path());
    wait_all_succeeded(&http, &second.base, &ids, Duration::from_secs(60)).await;
}

/// Callbacks are durable: a process killed while it delivers them leaves none undelivered once
/// it restarts (some may be delivered twice, with the same `webhook-id`: at least once).
#[tokio::test]
async fn a_process_killed_in_the_middle_of_callback_deliveries_loses_none() {
    let data_dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let receiver = labelq_e2e::receiver::Receiver::start_slow([200u16], Duration::from_millis(150)).await;
    let dir = data_dir.path().to_str().unwrap().to_owned();
    let serve = || {
        ServeProcess::start(
            env!("CARGO_BIN_EXE_labelq-under-test"),
            &["--workers", "2", "--visibility-timeout", VISIBILITY, "--data-dir", &dir, "--callback-allow-private"],
            &[("LABELQ_CALLBACK_RETRIES".to_owned(), "200ms,200ms,200ms".to_owned())],
        )
    };
    let first = serve();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let response = http
            .post(format!("{}/v1/images", first.base))
            .header("content-type", "image/png")
            .header("callback-url", receiver.url("/hook"))
            .body(labelq_e2e::png(120, 90))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    receiver.wait_for(3, Duration::from_secs(60)).await;
    first.signal("KILL");
    drop(first);
    let before_restart = receiver.calls().len();
    assert!(before_restart < 20, "the kill came too late to test anything");

    let second = serve();
    let started = Instant::now();
    for id in &ids {
        loop {
            let job: Value =
                http.get(format!("{}/v1/images/{id}", second.base)).send().await.unwrap().json().await.unwrap();
            if job["callback"]["status"] == "DELIVERED" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{id} not delivered after the restart: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let calls = receiver.calls();
    let delivered: std::collections::HashSet<&str> = calls.iter().map(|c| c.header("webhook-id")).collect();
    for id in &ids {
        assert!(delivered.contains(labelq_shared::webhooks::webhook_id(&id.parse().unwrap()).as_str()), "{id}");
    }
    eprintln!(
        "{before_restart} callbacks before the kill, {} calls in all for 20 jobs, all delivered {:?} after the restart",
        calls.len(),
        started.elapsed()
    );
}

/// Drops are taken once across a crash: a process killed while files are being dropped (some
/// taken, some labelled, some not yet seen) leaves, after a restart, every file labelled by
/// exactly one job with its result written.
#[tokio::test]
async fn a_process_killed_while_files_are_dropped_labels_each_once_after_a_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let (drops, results, staging) =
        (data_dir.path().join("drops"), data_dir.path().join("results"), data_dir.path().join("staging"));
    std::fs::create_dir_all(&drops).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    let args: Vec<String> = ["--workers", "1", "--visibility-timeout", VISIBILITY, "--watch-interval", "100ms"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--data-dir".into(), data_dir.path().to_str().unwrap().into()])
        .chain(["--watch".into(), drops.to_str().unwrap().into()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let serve = || ServeProcess::start(env!("CARGO_BIN_EXE_labelq-under-test"), &args, &[]);
    let photos = [labelq_e2e::photo("chelsea.png"), labelq_e2e::photo("coffee.png"), labelq_e2e::photo("bus.jpg")];
    let drop_one = |i: usize| {
        let staged = staging.join(format!("{i}"));
        std::fs::write(&staged, &photos[i % photos.len()]).unwrap();
        let extension = if i % photos.len() == 2 { "jpg" } else { "png" };
        std::fs::rename(&staged, drops.join(format!("photo {i:02}.{extension}"))).unwrap();
    };
    // Results only: a kill may leave a result's temporary file (a dot name) behind.
    let written = || {
        let names = std::fs::read_dir(&results).into_iter().flatten().flatten().map(|e| e.file_name());
        names.filter(|n| n.to_str().is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))).count()
    };

    let first = serve();
    for i in 0..10 {
        drop_one(i);
    }
    let started = Instant::now();
    while written() < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "no drop labelled before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // More arrive while it runs, and it dies mid-way.
    for i in 10..15 {
        drop_one(i);
    }
    first.signal("KILL");
    drop(first);
    let before_restart = written();
    assert!(before_restart < 15, "the kill came too late to test anything");
    for i in 15..20 {
        drop_one(i);
    }

    let second = serve();
    let started = Instant::now();
    while written() < 20 {
        assert!(started.elapsed() < Duration::from_secs(90), "only {} of 20 results after the restart", written());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::new();
    let page: Value =
        http.get(format!("{}/v1/images?limit=100", second.base)).send().await.unwrap().json().await.unwrap();
    let mut keys: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|j| j["source"]["key"].as_str().unwrap().to_owned()).collect();
    keys.sort();
    let expected: Vec<String> =
        (0..20).map(|i| format!("photo {i:02}.{}", if i % photos.len() == 2 { "jpg" } else { "png" })).collect();
    assert_eq!(keys, expected, "one job per dropped file");
    for key in &expected {
        let result: Value =
            serde_json::from_slice(&std::fs::read(results.join(format!("{key}.json"))).unwrap()).unwrap();
        assert_eq!(result["status"], "SUCCEEDED", "{key}: {result}");
    }
    eprintln!("{before_restart} of 20 drops had results before the kill; all 20 after {:?}", started.elapsed());
}
