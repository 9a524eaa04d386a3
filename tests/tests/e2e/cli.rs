//! The `labelq` binary's command line as a user meets it: exit statuses and pipes.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use labelq_e2e::{AppOptions, BOB, TestApp, large_photo, model_dir, onnx_detector, photos_dir, png};
use labelq_testkit::detectors::{Behaviour, ScriptedDetector};

const BINARY: &str = env!("CARGO_BIN_EXE_labelq-under-test");

fn labelq(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args).env("LABELQ_LOG", "warn").env_remove("LABELQ_TOKENS").env("LABELQ_MODEL_DIR", model_dir());
    command
}

/// Runs `labelq` off the async threads (a test server may be serving on them).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        labelq(&args).output().expect("running labelq")
    })
    .await
    .expect("the command ran")
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn photo_path(name: &str) -> String {
    photos_dir().join(name).to_string_lossy().into_owned()
}

fn file_with(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let path: PathBuf = dir.path().join(name);
    std::fs::write(&path, bytes).expect("writing a test file");
    path.to_string_lossy().into_owned()
}

fn status(output: &Output) -> Option<i32> {
    output.status.code()
}

/// More output than a pipe holds, read one line, then closed: what `| head -1` does.
#[test]
fn labelq_label_into_head_ends_without_a_panic() {
    let photos: Vec<String> =
        ["chelsea.png", "coffee.png", "bus.jpg", "rocket.jpg"].iter().map(|p| photo_path(p)).collect();
    let args: Vec<String> =
        std::iter::once("label".to_owned()).chain(photos.iter().cycle().take(120).cloned()).collect();
    let mut child = labelq(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting labelq label");
    let mut stdout = child.stdout.take().expect("piped");
    let mut first = String::new();
    {
        use std::io::{BufRead, BufReader};
        BufReader::new(&mut stdout).read_line(&mut first).expect("the first line");
    }
    drop(stdout);
    let output = child.wait_with_output().expect("labelq finished");

    let document: serde_json::Value = serde_json::from_str(&first).expect("the first line is one JSON document");
    assert!(document["labels"].is_array(), "{document}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status(&output), Some(0), "a closed pipe is a normal end: {stderr}");
}

#[tokio::test]
async fn labelq_label_features_choose_which_models_run() {
    let labels_of = |output: &Output| -> Vec<serde_json::Value> {
        let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
        document["labels"].as_array().cloned().unwrap_or_default()
    };
    let bus = photo_path("bus.jpg");
    let both = run(owned(&["label", &bus])).await;
    let objects = run(owned(&["label", "--features", "objects", &bus])).await;
    let scene = run(owned(&["label", "--features", "labels", "--min-confidence", "5", &bus])).await;
    for output in [&both, &objects, &scene] {
        assert_eq!(status(output), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let has_boxes =
        |labels: &[serde_json::Value]| labels.iter().any(|l| l["instances"].as_array().is_some_and(|i| !i.is_empty()));
    let names = |labels: &[serde_json::Value]| {
        labels.iter().filter_map(|l| l["name"].as_str().map(str::to_owned)).collect::<Vec<_>>()
    };
    assert!(names(&labels_of(&both)).contains(&"Person".to_owned()), "{:?}", names(&labels_of(&both)));
    assert!(has_boxes(&labels_of(&objects)), "{:?}", names(&labels_of(&objects)));
    // The classifier alone names the scene (a bus) but has no boxes and no people.
    let scene = labels_of(&scene);
    assert!(
        !scene.is_empty() && !has_boxes(&scene) && !names(&scene).contains(&"Person".to_owned()),
        "{:?}",
        names(&scene)
    );
}

#[tokio::test]
async fn labelq_label_exits_1_for_a_file_it_cannot_read_or_that_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let text = file_with(&dir, "notes.txt", b"not an image");
    let output = run(owned(&["label", &photo_path("coffee.png"), &text, "/nonexistent/photo.jpg"])).await;

    assert_eq!(status(&output), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "one document per file");
    assert!(lines[0]["labels"].is_array());
    assert_eq!(lines[1]["error"]["code"], "unsupported_image");
    assert_eq!(lines[2]["error"]["code"], "unreadable_file");
}

#[tokio::test]
async fn labelq_label_exits_5_when_an_image_cannot_be_labelled() {
    let dir = tempfile::tempdir().unwrap();
    // A PNG header with nothing behind it: accepted as a PNG, not decodable.
    let truncated = file_with(&dir, "truncated.png", &labelq_testkit::png_header(100, 100));
    let output = run(owned(&["label", &truncated])).await;
    assert_eq!(status(&output), Some(5), "{}", String::from_utf8_lossy(&output.stdout));
}

#[tokio::test]
async fn a_value_outside_its_rule_is_a_usage_error_naming_the_flag() {
    let output = run(owned(&["serve", "--max-receives", "0"])).await;
    assert_eq!(status(&output), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-receives"));

    // The same rule, reached through the variable the worker Lambda reads.
    let output = tokio::task::spawn_blocking(|| {
        labelq(&["serve"]).env("LABELQ_VISIBILITY_TIMEOUT", "0s").output().expect("running labelq")
    })
    .await
    .unwrap();
    assert_eq!(status(&output), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("must be within 1s..=12h"));
}

#[tokio::test]
async fn labelq_exits_3_when_it_cannot_start() {
    let data_file = tempfile::NamedTempFile::new().unwrap();
    let path = data_file.path().to_string_lossy().into_owned();
    let output = run(owned(&["serve", "--listen", "127.0.0.1:0", "--data-dir", &path])).await;
    assert_eq!(status(&output), Some(3), "a data directory that is a file");

    let unreachable = run(owned(&["submit", "--url", "http://127.0.0.1:9", &photo_path("coffee.png")])).await;
    assert_eq!(status(&unreachable), Some(3), "an API nobody answers");
}

#[tokio::test]
async fn labelq_submit_exits_5_for_a_failed_job_and_1_for_a_refused_file() {
    let app = TestApp::spawn(AppOptions::with_detector(onnx_detector())).await;
    let dir = tempfile::tempdir().unwrap();
    let undecodable = file_with(&dir, "truncated.png", &labelq_testkit::png_header(100, 100));
    let tiny = file_with(&dir, "tiny.png", &png(10, 10));
    let base = app.base.clone();

    let failed = run(owned(&["submit", "--url", &base, "--token", BOB, "--wait", &undecodable])).await;
    assert_eq!(status(&failed), Some(5), "{}", String::from_utf8_lossy(&failed.stdout));

    let refused = run(owned(&["submit", "--url", &base, "--token", BOB, &tiny])).await;
    assert_eq!(status(&refused), Some(1), "{}", String::from_utf8_lossy(&refused.stdout));

    let unauthorized = run(owned(&["submit", "--url", &base, "--token", "not-a-token-at-all", &tiny])).await;
    assert_eq!(status(&unauthorized), Some(3), "credentials the API refuses");
    app.shutdown().await;
}

#[tokio::test]
async fn labelq_submit_wait_exits_4_when_the_job_does_not_finish_in_time() {
    let held = ScriptedDetector::new(Behaviour::Block);
    let app = TestApp::spawn(AppOptions::with_detector(held.clone())).await;
    let base = app.base.clone();

    let output =
        run(owned(&["submit", "--url", &base, "--token", BOB, "--wait", "--timeout", "1s", &photo_path("coffee.png")]))
            .await;

    assert_eq!(status(&output), Some(4), "{}", String::from_utf8_lossy(&output.stdout));
    held.release.notify_waiters();
    tokio::time::timeout(Duration::from_secs(10), app.shutdown()).await.expect("the server stops");
}

#[tokio::test]
async fn labelq_submit_sends_a_photo_over_the_body_limit_by_direct_upload_and_waits_for_its_labels() {
    let app = TestApp::spawn(AppOptions::with_detector(onnx_detector())).await;
    let dir = tempfile::tempdir().unwrap();
    let photo = large_photo("bus.jpg", 2600);
    assert!(
        (labelq::client::INLINE_LIMIT + 1..=15 * 1024 * 1024).contains(&photo.len()),
        "{} bytes: between the inline limit and 15 MiB",
        photo.len()
    );
    let path = file_with(&dir, "bus-large.png", &photo);

    let output = run(owned(&["submit", "--url", &app.base, "--token", BOB, "--wait", &path])).await;
    assert_eq!(status(&output), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    let job = &line["job"];
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["upload"]["length"], photo.len(), "it went by direct upload: {job}");
    assert_eq!(job["image"]["width"], 2600);
    assert!(job["labels"].as_array().is_some_and(|l| !l.is_empty()), "{job}");
    app.shutdown().await;
}
