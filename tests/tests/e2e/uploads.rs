//! Direct uploads on `labelq serve`: `POST /v1/uploads` reserves a job that awaits its image, the
//! client PUTs the bytes to the signed target on the server itself, and the job goes on as a
//! posted one; a target refuses other bytes, other headers, other signatures and late uploads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use labelq_e2e::{ALICE, AppOptions, BOB, StubDetector, TestApp, png};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn app() -> (TestApp, Arc<StubDetector>) {
    let detector = Arc::new(StubDetector::default());
    (TestApp::spawn(AppOptions::with_detector(detector.clone())).await, detector)
}

/// A valid PNG padded to `size` bytes: larger than a request body may be, as cheap to make as
/// a header (the stub detector never decodes it).
fn large_png(size: usize) -> Vec<u8> {
    let mut bytes = png(200, 150);
    bytes.resize(size, 0);
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn reserve(app: &TestApp, token: &str, declaration: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/uploads", app.base))
        .bearer_auth(token)
        .json(&declaration)
        .send()
        .await
        .expect("the POST reaches the server")
}

async fn reserve_ok(app: &TestApp, declaration: Value) -> Value {
    let response = reserve(app, ALICE, declaration).await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let reservation: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/v1/images/{}", reservation["job"]["id"].as_str().unwrap()));
    reservation
}

/// Sends `body` to the reservation's target with its headers, `tweak`ed.
async fn put(
    app: &TestApp,
    reservation: &Value,
    body: Vec<u8>,
    tweak: impl FnOnce(&mut Vec<(String, String)>),
) -> reqwest::Response {
    let target = &reservation["upload"];
    assert_eq!(target["method"], "PUT");
    let mut headers: Vec<(String, String)> = target["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    tweak(&mut headers);
    let mut request = app.http.put(target["url"].as_str().unwrap()).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.expect("the PUT reaches the server")
}

async fn problem_type(response: reqwest::Response) -> String {
    let problem: Value = response.json().await.unwrap();
    problem["type"].as_str().unwrap().trim_start_matches("https://labelq.dev/problems/").to_owned()
}

fn upload_files(app: &TestApp) -> usize {
    std::fs::read_dir(app.data_dir.path().join("uploads")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn an_image_over_the_body_limit_is_uploaded_to_its_target_and_labelled() {
    let (app, detector) = app().await;
    let image = large_png(8 * 1024 * 1024 + 123);
    let digest = sha256(&image);
    let reservation =
        reserve_ok(&app, json!({"content_type": "image/png", "length": image.len(), "sha256": digest})).await;
    let job = &reservation["job"];
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["status"], "AWAITING_UPLOAD");
    assert_eq!(job["image"], json!({"content_type": "image/png", "size": image.len()}), "nothing else is known yet");
    assert_eq!(job["upload"]["length"], image.len());
    assert_eq!(job["upload"]["sha256"], digest.as_str());
    let headers = &reservation["upload"]["headers"];
    assert_eq!(headers["Content-Type"], "image/png");
    assert_eq!(headers["Content-Length"], image.len().to_string());
    assert!(headers["x-amz-checksum-sha256"].is_string(), "{headers}");

    // Waiting, visible to its owner only, and findable by its status.
    let waiting: Value = app.get(ALICE, "/v1/images?status=AWAITING_UPLOAD").await.json().await.unwrap();
    assert_eq!(waiting["items"][0]["id"], id);
    assert_eq!(app.get(BOB, &format!("/v1/images/{id}")).await.status(), 404);

    let response = put(&app, &reservation, image.clone(), |_| {}).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let done = app.wait_finished(ALICE, id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["image"]["width"], 200);
    assert_eq!(done["image"]["height"], 150);
    assert_eq!(done["image"]["sha256"], digest.as_str());
    assert_eq!(detector.calls(), 1);

    // The target took its upload: another PUT to it is refused, and the job stays as it is.
    let again = put(&app, &reservation, image, |_| {}).await;
    assert_eq!(again.status(), 409);
    assert_eq!(problem_type(again).await, "upload-not-awaited");
    app.shutdown().await;
}

#[tokio::test]
async fn the_first_complete_upload_stays_and_other_bytes_never_replace_it() {
    let (app, _) = app().await;
    let first = large_png(200_000);
    let mut other = first.clone();
    other[150_000] ^= 0xff;
    // No digest declared: only the length binds the bytes, so replacing them would go unseen.
    let reservation = reserve_ok(&app, json!({"content_type": "image/png", "length": first.len()})).await;
    let id = reservation["job"]["id"].as_str().unwrap();
    assert_eq!(put(&app, &reservation, first.clone(), |_| {}).await.status(), 200);
    // Whether or not a worker has taken the job yet, other bytes are refused.
    let replaced = put(&app, &reservation, other, |_| {}).await;
    assert_eq!(replaced.status(), 409);
    assert_eq!(problem_type(replaced).await, "upload-not-awaited");
    let done = app.wait_finished(ALICE, id, Duration::from_secs(20)).await;
    assert_eq!(done["image"]["sha256"], sha256(&first).as_str(), "{done}");
    let stored = std::fs::read(app.data_dir.path().join("uploads").join(id)).unwrap();
    assert_eq!(stored, first);
    app.shutdown().await;
}

#[tokio::test]
async fn a_declaration_out_of_bounds_is_refused_before_anything_is_written() {
    let (app, _) = app().await;
    let cases = [
        (json!({"content_type": "image/png", "length": 0}), 400, "invalid-upload"),
        (json!({"content_type": "image/png", "length": 15 * 1024 * 1024 + 1}), 400, "invalid-upload"),
        (json!({"content_type": "image/png", "length": 1.5}), 400, "invalid-upload"),
        (json!({"content_type": "image/png", "length": 100, "expires_in": null}), 400, "invalid-upload"),
        (json!({"content_type": "image/gif", "length": 100}), 415, "unsupported-media-type"),
        (json!({"content_type": "image/png", "length": 100, "sha256": "abc"}), 400, "invalid-upload"),
        (json!({"content_type": "image/png", "length": 100, "expires_in": 0}), 400, "invalid-upload"),
        (json!({"content_type": "image/png", "length": 100, "expires_in": 901}), 400, "invalid-upload"),
        (json!({"content_type": "image/png", "length": -1}), 400, "invalid-upload"),
        (json!({"content_type": "image/png"}), 400, "invalid-upload"),
        (json!({"content_type": "image/png", "length": 100, "name": "cat.png"}), 400, "invalid-upload"),
    ];
    for (declaration, status, slug) in cases {
        let response = reserve(&app, ALICE, declaration.clone()).await;
        assert_eq!(response.status(), status, "{declaration}");
        assert_eq!(problem_type(response).await, slug, "{declaration}");
    }
    let not_json = app
        .http
        .post(format!("{}/v1/uploads", app.base))
        .bearer_auth(ALICE)
        .header("content-type", "text/plain")
        .body("length=100")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    let anonymous = app.http.post(format!("{}/v1/uploads", app.base)).json(&json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    app.assert_nothing_written().await;
    assert_eq!(upload_files(&app), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_target_refuses_other_bytes_headers_and_signatures_and_keeps_waiting() {
    let (app, detector) = app().await;
    let image = large_png(300_000);
    let reservation =
        reserve_ok(&app, json!({"content_type": "image/png", "length": image.len(), "sha256": sha256(&image)})).await;
    let id = reservation["job"]["id"].as_str().unwrap().to_owned();
    let url = reservation["upload"]["url"].as_str().unwrap().to_owned();

    let set = |name: &'static str, value: String| {
        move |headers: &mut Vec<(String, String)>| {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            headers.push((name.to_owned(), value));
        }
    };
    // Another type, another digest, other bytes of the same length.
    let response = put(&app, &reservation, image.clone(), set("Content-Type", "image/jpeg".into())).await;
    assert_eq!((response.status().as_u16(), problem_type(response).await.as_str()), (400, "upload-mismatch"));
    let other_digest = base64_of(&Sha256::digest(b"other"));
    let response = put(&app, &reservation, image.clone(), set("x-amz-checksum-sha256", other_digest)).await;
    assert_eq!((response.status().as_u16(), problem_type(response).await.as_str()), (400, "upload-mismatch"));
    let mut tampered = image.clone();
    tampered[1000] ^= 1;
    let response = put(&app, &reservation, tampered, |_| {}).await;
    assert_eq!((response.status().as_u16(), problem_type(response).await.as_str()), (400, "bad-digest"));
    // Another length: the body and its Content-Length agree, and differ from the declaration.
    let shorter = image[..image.len() - 1].to_vec();
    let response = put(&app, &reservation, shorter, |h| h.retain(|(n, _)| n != "Content-Length")).await;
    assert_eq!((response.status().as_u16(), problem_type(response).await.as_str()), (400, "upload-mismatch"));

    // Signatures: missing, altered, or moved to another job.
    let (base, signature) = url.split_once("?signature=").unwrap();
    let other_job = reserve_ok(&app, json!({"content_type": "image/png", "length": image.len()})).await;
    let other_id = other_job["job"]["id"].as_str().unwrap();
    let mut altered = signature.to_owned();
    altered.replace_range(0..1, if signature.starts_with('0') { "1" } else { "0" });
    for bad in [
        base.to_owned(),
        format!("{base}?signature={altered}"),
        format!("{}?signature={signature}", base.replace(&id, other_id)),
    ] {
        let response = app
            .http
            .put(&bad)
            .header("content-type", "image/png")
            .header("content-length", image.len())
            .body(image.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{bad}");
        assert_eq!(problem_type(response).await, "invalid-signature");
    }

    assert_eq!(upload_files(&app), 0, "no refused upload was kept");
    let job: Value = app.get(ALICE, &format!("/v1/images/{id}")).await.json().await.unwrap();
    assert_eq!(job["status"], "AWAITING_UPLOAD");
    assert_eq!(detector.calls(), 0);

    // The right bytes still go through after all of that.
    assert_eq!(put(&app, &reservation, image, |_| {}).await.status(), 200);
    assert_eq!(app.wait_finished(ALICE, &id, Duration::from_secs(20)).await["status"], "SUCCEEDED");
    app.shutdown().await;
}

fn base64_of(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

#[tokio::test]
async fn an_upload_that_never_comes_fails_once_its_target_expired_and_a_late_one_is_refused() {
    let (app, detector) = app().await;
    let image = png(100, 100);
    let started = Instant::now();
    let reservation =
        reserve_ok(&app, json!({"content_type": "image/png", "length": image.len(), "expires_in": 1})).await;
    let id = reservation["job"]["id"].as_str().unwrap();
    let failed = app.wait_finished(ALICE, id, Duration::from_secs(20)).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "not before the target expired");
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["error"]["code"], "upload_expired", "{failed}");

    let late = put(&app, &reservation, image, |_| {}).await;
    assert_eq!(late.status(), 403);
    assert_eq!(problem_type(late).await, "upload-expired");
    assert_eq!(detector.calls(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn uploaded_bytes_that_are_not_the_declared_image_fail_the_job_with_a_reason() {
    let (app, detector) = app().await;
    // Declared PNG, uploaded bytes of the right length that are no image; then a JPEG declared
    // as a PNG (S3 would store either: only the worker looks inside).
    let cases = [(vec![b'x'; 5000], "image_undecodable"), (labelq_e2e::jpeg(120, 120), "upload_mismatch")];
    for (bytes, code) in cases {
        let reservation = reserve_ok(&app, json!({"content_type": "image/png", "length": bytes.len()})).await;
        let id = reservation["job"]["id"].as_str().unwrap();
        assert_eq!(put(&app, &reservation, bytes, |_| {}).await.status(), 200);
        let failed = app.wait_finished(ALICE, id, Duration::from_secs(20)).await;
        assert_eq!(failed["status"], "FAILED");
        assert_eq!(failed["error"]["code"], code, "{failed}");
    }
    assert_eq!(detector.calls(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_retried_reservation_answers_the_same_job_and_another_declaration_is_a_conflict() {
    let (app, _) = app().await;
    let reserve_keyed = |length: usize| {
        app.http
            .post(format!("{}/v1/uploads", app.base))
            .bearer_auth(ALICE)
            .header("idempotency-key", "upload-1")
            .json(&json!({"content_type": "image/png", "length": length}))
            .send()
    };
    let first = reserve_keyed(1000).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = reserve_keyed(1000).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["job"]["id"], first["job"]["id"]);
    assert_eq!(again["upload"], first["upload"], "the same target, expiring when the first does");
    let other = reserve_keyed(1001).await.unwrap();
    assert_eq!(other.status(), 409);
    let list: Value = app.get(ALICE, "/v1/images").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    app.shutdown().await;
}
