//! Benchmark: the memory a direct upload costs `labelq serve`.
//!
//! The real binary is started on a fresh data directory; its resident set is read from
//! `/proc/<pid>/status` when idle, then every 5 ms while a 15 MiB upload is sent to its upload
//! target in 256 KiB pieces (paced, so the upload lasts about a second and the samples see it
//! whole). The worker does not take the job until the PUT is answered, so the samples are the
//! upload path's alone. For comparison, the same while a 5 MiB image is posted in a request body
//! (`POST /v1/images`, which holds the body whole, as it must to check it before answering 202).
//!
//! Run: `cargo bench -p labelq-e2e --bench upload` (prints its figures; asserts nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use labelq_e2e::{ServeProcess, png};
use serde_json::{Value, json};

const UPLOAD: usize = 15 * 1024 * 1024;
const INLINE: usize = 5 * 1024 * 1024;
const PIECE: usize = 256 * 1024;

/// The process's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the resident set every 5 ms while `work` runs; the highest sample, in KiB.
async fn peak_during<F: std::future::Future<Output = ()>>(pid: u32, work: F) -> u64 {
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    work.await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    peak.load(Ordering::Relaxed)
}

/// A valid PNG header padded to `size` bytes (the worker refuses it later; that is not measured).
fn padded_png(size: usize) -> Vec<u8> {
    let mut bytes = png(200, 150);
    bytes.resize(size, 0);
    bytes
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("a data directory");
    let data_dir = dir.path().to_str().expect("a UTF-8 path");
    let server = ServeProcess::start(env!("CARGO_BIN_EXE_labelq-under-test"), &["--data-dir", data_dir], &[]);
    let pid = server.child.id();
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);

    let image = padded_png(UPLOAD);
    let reservation: Value = http
        .post(format!("{}/v1/uploads", server.base))
        .json(&json!({"content_type": "image/png", "length": image.len()}))
        .send()
        .await
        .expect("the reservation")
        .json()
        .await
        .expect("a JSON reservation");
    let url = reservation["upload"]["url"].as_str().expect("a target").to_owned();
    let started = Instant::now();
    let upload_peak = peak_during(pid, async {
        let pieces: Vec<bytes::Bytes> = image.chunks(PIECE).map(bytes::Bytes::copy_from_slice).collect();
        let body = futures::stream::unfold(pieces.into_iter(), |mut rest| async move {
            let piece = rest.next()?;
            tokio::time::sleep(Duration::from_millis(15)).await;
            Some((Ok::<_, std::io::Error>(piece), rest))
        });
        let response = http
            .put(&url)
            .header("content-type", "image/png")
            .header("content-length", UPLOAD)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .expect("the PUT");
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    })
    .await;
    let upload_time = started.elapsed();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_inline = rss_kib(pid);
    let inline = padded_png(INLINE);
    let inline_peak = peak_during(pid, async {
        let response = http
            .post(format!("{}/v1/images", server.base))
            .header("content-type", "image/png")
            .body(inline.clone())
            .send()
            .await
            .expect("the POST");
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
    })
    .await;

    println!("labelq serve idle: {:.1} MiB resident", mib(idle));
    println!(
        "15 MiB direct upload ({:.1} s, {} KiB pieces): peak {:.1} MiB, {:+.1} MiB over idle",
        upload_time.as_secs_f64(),
        PIECE / 1024,
        mib(upload_peak),
        mib(upload_peak) - mib(idle)
    );
    println!(
        "5 MiB POST /v1/images for comparison: peak {:.1} MiB, {:+.1} MiB over the {:.1} MiB before it",
        mib(inline_peak),
        mib(inline_peak) - mib(before_inline),
        mib(before_inline)
    );
}
