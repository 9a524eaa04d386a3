//! Benchmark: labelq's built-in detector against ONNX Runtime in Python, side by side, in one run,
//! on the same graphs and the same real photos.
//!
//! Prints ms/image (median) for the classifier: Python (`model/reference.py --bench`, 1 thread),
//! labelq on one thread (one session with one intra-op thread), and labelq with all cores (one
//! single-threaded session per core, images in parallel, as `labelq serve` runs them); the same
//! for the object detector against `reference.py --objects --bench`; then the default set (decode,
//! both models, labels) per image on one thread; plus model load times and the peak RSS of this
//! process.
//!
//! Run: `cargo bench -p labelq-e2e --bench detector` (prints its figures; asserts nothing).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use labelq_e2e::bench::peak_rss_mb;
use labelq_e2e::{model_dir, photos_dir, repo_root};
use labelq_shared::adapters::onnx::{OnnxConfig, OnnxDetector, Timings};
use labelq_shared::domain::ContentType;
use serde_json::Value;

const PHOTOS: [&str; 7] =
    ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png", "bus.jpg", "zidane.jpg"];
const ROUNDS: usize = 20;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn python_reference(paths: &[PathBuf], threads: usize) -> Value {
    python_bench(paths, threads, &[])
}

fn python_bench(paths: &[PathBuf], threads: usize, extra: &[&str]) -> Value {
    let output = Command::new("python3")
        .arg(repo_root().join("model/reference.py"))
        .arg("--model-dir")
        .arg(model_dir())
        .args(["--threads", &threads.to_string(), "--bench", &ROUNDS.to_string()])
        .args(extra)
        .args(paths)
        .output()
        .expect("running model/reference.py");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("reference.py prints one JSON object")
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let paths: Vec<PathBuf> = PHOTOS.iter().map(|p| photos_dir().join(p)).collect();
    let images: Vec<(Vec<u8>, ContentType)> = paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).expect("photo");
            let ct = ContentType::sniff(&bytes).expect("jpeg or png");
            (bytes, ct)
        })
        .collect();

    let python_1 = python_reference(&paths, 1);
    let python_n = python_reference(&paths, cores);

    let load_started = Instant::now();
    let single = OnnxDetector::load(&OnnxConfig::new(model_dir(), 1)).expect("model");
    let load_ms = load_started.elapsed().as_secs_f64() * 1e3;

    // One thread: every image ROUNDS times, after one warm-up each.
    let (mut decode, mut prep, mut infer, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (bytes, ct) in &images {
        single.classify_blocking(bytes, *ct).expect("classify");
        for _ in 0..ROUNDS {
            let (_, t): (_, Timings) = single.classify_blocking(bytes, *ct).expect("classify");
            decode.push(t.decode);
            prep.push(t.preprocess);
            infer.push(t.inference);
            total.push(t.preprocess + t.inference);
        }
    }
    let rss_single = peak_rss_mb();
    drop(single);

    // All cores: one session per core, each thread labelling the whole set ROUNDS times.
    let parallel = OnnxDetector::load(&OnnxConfig::new(model_dir(), cores)).expect("model");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..cores {
            let (parallel, images) = (&parallel, &images);
            scope.spawn(move || {
                for _ in 0..ROUNDS {
                    for (bytes, ct) in images {
                        parallel.classify_blocking(bytes, *ct).expect("classify");
                    }
                }
            });
        }
    });
    let per_image_all_cores = started.elapsed().as_secs_f64() * 1e3 / (cores * ROUNDS * images.len()) as f64;

    let py = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let ours_1 = median(total);
    let theirs_1 = py(&python_1, "preprocess_plus_inference_ms");
    let theirs_n = py(&python_n, "preprocess_plus_inference_ms");
    println!(
        "{} photos x {ROUNDS} rounds, {cores} cores; medians in ms per image (decode excluded unless stated)",
        images.len()
    );
    println!(
        "onnxruntime (Python), 1 thread      : preprocess {:.2} + inference {:.2} = {:.2}; decode {:.2}; model load {:.1} ms",
        py(&python_1, "preprocess_ms"),
        py(&python_1, "inference_ms"),
        theirs_1,
        py(&python_1, "decode_ms"),
        py(&python_1, "model_load_ms")
    );
    println!(
        "onnxruntime (Python), {cores} threads     : preprocess {:.2} + inference {:.2} = {:.2}",
        py(&python_n, "preprocess_ms"),
        py(&python_n, "inference_ms"),
        theirs_n
    );
    println!(
        "labelq, 1 thread                    : preprocess {:.2} + inference {:.2} = {:.2}; decode {:.2}; ratio to Python 1 thread {:.2}x",
        median(prep),
        median(infer),
        ours_1,
        median(decode),
        ours_1 / theirs_1
    );
    println!(
        "labelq, all {cores} cores (throughput)    : {per_image_all_cores:.2} ms/image incl. decode; vs Python 1 thread {:.2}x, vs Python {cores} threads {:.2}x",
        per_image_all_cores / (theirs_1 + py(&python_1, "decode_ms")),
        per_image_all_cores / (theirs_n + py(&python_1, "decode_ms"))
    );
    println!("labelq model load (1 session)       : {load_ms:.1} ms");
    println!(
        "labelq peak RSS (this process)      : {rss_single:.1} MB after the 1-thread run, {:.1} MB after the {cores}-session run",
        peak_rss_mb()
    );
    drop(parallel);

    objects_and_default_set(&paths, &images);
}

/// The text models against Python on the same photos: detection (the first look, and the
/// second where small print asks for it) and reading the lines found.
fn text(paths: &[PathBuf], images: &[(Vec<u8>, ContentType)]) {
    let python = python_bench(paths, 1, &["--text"]);
    let text_only = OnnxDetector::load(&OnnxConfig {
        classifier: false,
        objects: false,
        properties: false,
        ..OnnxConfig::new(model_dir(), 1)
    })
    .expect("the text models");
    let (mut prep, mut detect, mut read) = (Vec::new(), Vec::new(), Vec::new());
    for (bytes, ct) in images {
        text_only.analyse_blocking(bytes, *ct).expect("text");
        for _ in 0..ROUNDS {
            let a = text_only.analyse_blocking(bytes, *ct).expect("text");
            prep.push(a.detect_text.preprocess);
            detect.push(a.detect_text.inference);
            read.push(a.read_text);
        }
    }
    let py = |k: &str| python[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "text, onnxruntime (Python), 1 thread: preprocess {:.2} + detect {:.2}, read lines {:.2} (medians per image)",
        py("preprocess"),
        py("detect"),
        py("recognise")
    );
    let (ours_detect, ours_read) = (median(detect), median(read));
    println!(
        "text, labelq, 1 thread              : preprocess {:.2} + detect {ours_detect:.2}, read lines {ours_read:.2}; detect ratio to Python {:.2}x",
        median(prep),
        ours_detect / py("detect")
    );
}

/// The object detector against Python, then the default set (every feature) on one thread.
fn objects_and_default_set(paths: &[PathBuf], images: &[(Vec<u8>, ContentType)]) {
    let python = python_bench(paths, 1, &["--objects"]);
    let load_started = Instant::now();
    let objects_only = OnnxDetector::load(&OnnxConfig { classifier: false, ..OnnxConfig::new(model_dir(), 1) })
        .expect("the object detector");
    let load_ms = load_started.elapsed().as_secs_f64() * 1e3;
    let (mut prep, mut infer) = (Vec::new(), Vec::new());
    let mut total = Vec::new();
    for (bytes, ct) in images {
        objects_only.analyse_blocking(bytes, *ct).expect("objects");
        for _ in 0..ROUNDS {
            let t = objects_only.analyse_blocking(bytes, *ct).expect("objects").detect_objects;
            prep.push(t.preprocess);
            infer.push(t.inference);
            total.push(t.preprocess + t.inference);
        }
    }
    drop(objects_only);
    let py = |k: &str| python[k].as_f64().unwrap_or(f64::NAN);
    let (ours, theirs) = (median(total), py("preprocess_plus_inference_ms"));
    println!(
        "objects, onnxruntime (Python), 1 thread: preprocess {:.2} + inference {:.2} = {theirs:.2}",
        py("preprocess_ms"),
        py("inference_ms")
    );
    println!(
        "objects, labelq, 1 thread              : preprocess {:.2} + inference {:.2} = {ours:.2}; ratio to Python {:.2}x; load {load_ms:.1} ms",
        median(prep),
        median(infer),
        ours / theirs
    );

    text(paths, images);

    // The default set as a job meets it: decode, classifier, detector, text, properties, merged labels.
    let all = OnnxDetector::load(&OnnxConfig::new(model_dir(), 1)).expect("the default set");
    let options = labelq_shared::domain::DetectOptions::default();
    let mut per_image = Vec::new();
    for (bytes, ct) in images {
        all.findings_blocking(bytes, *ct, &options).expect("findings");
        for _ in 0..ROUNDS {
            let started = Instant::now();
            all.findings_blocking(bytes, *ct, &options).expect("findings");
            per_image.push(started.elapsed());
        }
    }
    println!(
        "default set (labels,objects,text,properties), 1 thread: {:.2} ms/image incl. decode (median); peak RSS so far {:.1} MB",
        median(per_image),
        peak_rss_mb()
    );
}
