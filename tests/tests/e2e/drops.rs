//! The drop directory of `labelq serve --watch`: files dropped in become jobs, labelled like any
//! other and visible to their owner, with their results written beside as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use labelq::drop_dir::{DropConfig, DropConfigError};
use labelq_e2e::{ALICE, AppOptions, BOB, DROPS, RESULTS, StubDetector, TestApp, png};
use labelq_shared::domain::{DropOwner, OwnerId};
use serde_json::Value;

fn alice() -> DropOwner {
    DropOwner::Fixed(OwnerId::parse("alice").unwrap())
}

async fn app_with_drops(owner: DropOwner) -> (TestApp, Arc<StubDetector>) {
    let detector = Arc::new(StubDetector::default());
    let mut options = AppOptions::with_detector(detector.clone());
    options.drop_owner = Some(owner);
    (TestApp::spawn(options).await, detector)
}

/// Writes `bytes` as `key` under the drop directory the way a careful writer does: elsewhere
/// first, then renamed in whole.
fn drop_file(app: &TestApp, key: &str, bytes: &[u8]) {
    let target = app.data_dir.path().join(DROPS).join(key);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let staging = app.data_dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let mut temporary = tempfile::NamedTempFile::new_in(&staging).unwrap();
    std::io::Write::write_all(&mut temporary, bytes).unwrap();
    temporary.persist(&target).unwrap();
}

fn result_path(results: &Path, key: &str) -> PathBuf {
    results.join(format!("{key}.json"))
}

/// Waits for the result of `key` to say the job finished (or was refused).
async fn wait_result(results: &Path, key: &str, timeout: Duration) -> Value {
    let path = result_path(results, key);
    let started = Instant::now();
    loop {
        if let Ok(bytes) = std::fs::read(&path) {
            return serde_json::from_slice(&bytes).expect("a result is whole JSON");
        }
        assert!(started.elapsed() < timeout, "no result for {key:?} after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the result of `key` to be another job's than `earlier`'s (fails after 20 s).
async fn wait_another_result(results: &Path, key: &str, earlier: &Value) -> Value {
    let started = Instant::now();
    loop {
        let now = wait_result(results, key, Duration::from_secs(20)).await;
        if now["id"] != earlier["id"] {
            return now;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{key:?} was not labelled again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn jobs_of(app: &TestApp, token: &str) -> Vec<Value> {
    let page: Value = app.get(token, "/v1/images?limit=100").await.json().await.unwrap();
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn dropped_files_with_awkward_names_are_labelled_once_and_their_results_written_beside() {
    let (app, detector) = app_with_drops(alice()).await;
    let results = app.data_dir.path().join(RESULTS);
    let keys = ["a b.png", "a+b.png", "photo (1).png", "été/東京 café.png", "deep/er/x.png"];
    for (i, key) in keys.iter().enumerate() {
        drop_file(&app, key, &png(100 + i as u32, 100));
    }

    for key in keys {
        let result = wait_result(&results, key, Duration::from_secs(20)).await;
        assert_eq!(result["status"], "SUCCEEDED", "{key}: {result}");
        assert_eq!((result["source"]["kind"].as_str(), result["source"]["key"].as_str()), (Some("drop"), Some(key)));
        assert!(!result["labels"].as_array().unwrap().is_empty(), "{key}: {result}");
        // The same job through the API, for its owner.
        let job: Value = app.get(ALICE, result["links"]["self"].as_str().unwrap()).await.json().await.unwrap();
        assert_eq!((job["id"].clone(), job["source"]["key"].clone()), (result["id"].clone(), key.into()));
    }
    // More scans change nothing: one job per file, each labelled once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs = jobs_of(&app, ALICE).await;
    let mut seen: Vec<&str> = jobs.iter().map(|j| j["source"]["key"].as_str().unwrap()).collect();
    seen.sort();
    let mut expected = keys.to_vec();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(detector.calls(), keys.len());
    assert!(jobs_of(&app, BOB).await.is_empty(), "another owner sees alice's drops");
    app.shutdown().await;
}

#[tokio::test]
async fn partial_and_hidden_files_wait_until_they_are_renamed_in() {
    let (app, _) = app_with_drops(alice()).await;
    let (drops, results) = (app.data_dir.path().join(DROPS), app.data_dir.path().join(RESULTS));
    let image = png(120, 90);
    for name in [".incoming.png", "download.png.part", "copy.png.tmp", "edit.png~", "x.png.crdownload"] {
        std::fs::write(drops.join(name), &image).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(jobs_of(&app, ALICE).await.is_empty(), "a partial file was taken");
    assert!(std::fs::read_dir(&results).unwrap().next().is_none(), "a partial file got a result");

    std::fs::rename(drops.join("download.png.part"), drops.join("download.png")).unwrap();
    let result = wait_result(&results, "download.png", Duration::from_secs(20)).await;
    assert_eq!(result["status"], "SUCCEEDED");
    assert_eq!(jobs_of(&app, ALICE).await.len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_drop_that_cannot_be_a_job_gets_a_result_that_says_why_and_no_job() {
    let (app, _) = app_with_drops(DropOwner::FirstSegment).await;
    let results = app.data_dir.path().join(RESULTS);
    drop_file(&app, "alice/notes.png", b"not an image at all");
    drop_file(&app, "alice/tiny.png", &png(10, 10));
    drop_file(&app, "stray.png", &png(100, 100));
    drop_file(&app, "bob/cat.png", &png(100, 100));

    for (key, problem) in [
        ("alice/notes.png", "not-an-image"),
        ("alice/tiny.png", "image-dimensions"),
        ("stray.png", "drop-without-owner"),
    ] {
        let result = wait_result(&results, key, Duration::from_secs(20)).await;
        assert_eq!(result["status"], "REFUSED", "{key}: {result}");
        assert_eq!(result["problem"]["type"], format!("https://labelq.dev/problems/{problem}"), "{key}");
        assert!(result["problem"]["detail"].as_str().is_some_and(|d| !d.is_empty()), "{key}: {result}");
    }
    // The owner named by the path owns its job; nobody else sees it.
    let result = wait_result(&results, "bob/cat.png", Duration::from_secs(20)).await;
    assert_eq!(result["status"], "SUCCEEDED");
    assert_eq!(jobs_of(&app, BOB).await.len(), 1);
    assert!(jobs_of(&app, ALICE).await.is_empty(), "a refused drop made a job");
    app.shutdown().await;
}

#[tokio::test]
async fn a_file_replaced_under_the_same_name_is_labelled_again_as_a_new_job_whatever_its_mtime() {
    let (app, detector) = app_with_drops(alice()).await;
    let results = app.data_dir.path().join(RESULTS);
    drop_file(&app, "cat.png", &png(100, 100));
    let first = wait_result(&results, "cat.png", Duration::from_secs(20)).await;

    // A file system's modification times can be coarse: make sure the replacement's differs.
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop_file(&app, "cat.png", &png(200, 100));
    let second = wait_another_result(&results, "cat.png", &first).await;
    assert_eq!((second["status"].as_str(), second["image"]["width"].as_u64()), (Some("SUCCEEDED"), Some(200)));

    // Another file renamed over it keeps its own modification time, here older than the result:
    // still another version, so another job.
    let staged = app.data_dir.path().join("old.png");
    std::fs::write(&staged, png(300, 100)).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&staged).unwrap().set_modified(an_hour_ago).unwrap();
    std::fs::rename(&staged, app.data_dir.path().join(DROPS).join("cat.png")).unwrap();
    let third = wait_another_result(&results, "cat.png", &second).await;
    assert_eq!(third["image"]["width"], 300);
    assert_ne!(third["source"]["version"], second["source"]["version"]);
    assert_eq!(jobs_of(&app, ALICE).await.len(), 3);
    assert_eq!(detector.calls(), 3);
    app.shutdown().await;
}

#[test]
fn directories_that_overlap_the_drop_directory_are_refused_before_anything_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let config = |drops: &str, results: &str, data: &str| DropConfig {
        dir: dir.path().join(drops),
        results: dir.path().join(results),
        owner: alice(),
        interval: Duration::from_secs(1),
        data_dir: Some(dir.path().join(data)),
    };
    let overlap = |c: DropConfig| matches!(c.prepare(), Err(DropConfigError::ResultsOverlap { .. }));
    assert!(overlap(config("drops", "drops/results", "data")), "results inside the drops");
    assert!(overlap(config("drops", "drops", "data")), "results in the drops");
    assert!(overlap(config("results/in", "results", "data")), "drops inside the results");
    let data_inside = config("all", "results", "all/data").prepare();
    assert!(matches!(data_inside, Err(DropConfigError::DataInside { .. })), "{data_inside:?}");
    assert!(matches!(config("all", "results", "all").prepare(), Err(DropConfigError::DataInside { .. })));
    // Drops and results inside the data directory are fine: its images are elsewhere in it.
    assert!(config("data/drops", "data/results", "data").prepare().is_ok());
}
