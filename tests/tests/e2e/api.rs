//! The REST contract, end to end through a real server on 127.0.0.1:0.

use std::sync::Arc;
use std::time::Duration;

use labelq_e2e::{ALICE, AppOptions, BOB, StubDetector, TestApp, jpeg, onnx_detector, photo, png};
use serde_json::Value;

async fn stub_app() -> (TestApp, Arc<StubDetector>) {
    let detector = Arc::new(StubDetector::default());
    (TestApp::spawn(AppOptions::with_detector(detector.clone())).await, detector)
}

async fn problem(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["status"], status, "{body}");
    (status, body["type"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_owned(), body)
}

#[tokio::test]
async fn a_submitted_photo_is_accepted_then_labelled_by_the_real_model() {
    let app = TestApp::spawn(AppOptions::with_detector(onnx_detector())).await;

    let response = app.submit(ALICE, photo("coffee.png"), "image/png", None).await;

    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.headers().contains_key("retry-after"));
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/images/{id}"));
    assert_eq!(accepted["status"], "PENDING");
    assert_eq!(accepted["links"]["self"], location);

    let job = app.wait_finished(ALICE, id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    let labels = job["labels"].as_array().unwrap();
    let espresso = labels.iter().find(|l| l["name"] == "Espresso").unwrap_or_else(|| panic!("{job}"));
    assert!(espresso["confidence"].as_f64().unwrap() > 80.0, "{espresso}");
    assert!(espresso["parents"].as_array().unwrap().iter().any(|p| p["name"] == "Beverage"), "{espresso}");
    assert_eq!(job["image"]["width"], 600);
    assert_eq!(job["attempts"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_finished_job_has_no_retry_after_and_an_unfinished_one_has() {
    let (app, _) = stub_app().await;
    let id = app.submit_ok(ALICE, png(100, 100), "image/png").await;
    app.wait_finished(ALICE, id.as_str(), Duration::from_secs(10)).await;
    let response = app.get(ALICE, &format!("/v1/images/{id}")).await;
    assert!(!response.headers().contains_key("retry-after"));
    app.shutdown().await;
}

#[tokio::test]
async fn multipart_uploads_work_like_curl_dash_f() {
    let (app, _) = stub_app().await;
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(jpeg(120, 90)).file_name("x.jpg").mime_str("image/jpeg").unwrap(),
    );
    let response =
        app.http.post(format!("{}/v1/images", app.base)).bearer_auth(ALICE).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["image"]["content_type"], "image/jpeg");

    // An untyped part is sniffed.
    let form = reqwest::multipart::Form::new().part("image", reqwest::multipart::Part::bytes(png(100, 100)));
    let response =
        app.http.post(format!("{}/v1/images", app.base)).bearer_auth(ALICE).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 202);
    app.shutdown().await;
}

#[tokio::test]
async fn every_bad_upload_gets_its_problem_and_writes_nothing() {
    let (app, detector) = stub_app().await;
    let mut malformed_png = png(100, 100);
    malformed_png[12..16].copy_from_slice(b"XXXX");
    let six_mib = vec![0u8; 6 * 1024 * 1024];

    // (case, body, content type, idempotency key, expected status, expected problem type)
    type Case = (&'static str, Vec<u8>, &'static str, Option<&'static str>, u16, &'static str);
    let cases: Vec<Case> = vec![
        ("text body", b"hello world".to_vec(), "image/png", None, 400, "not-an-image"),
        ("empty body", vec![], "image/png", None, 400, "empty-body"),
        ("png declared as jpeg", png(100, 100), "image/jpeg", None, 400, "content-type-mismatch"),
        ("broken IHDR", malformed_png, "image/png", None, 400, "malformed-image"),
        ("too small", png(50, 120), "image/png", None, 400, "image-dimensions"),
        ("too wide", png(10_001, 80), "image/png", None, 400, "image-dimensions"),
        ("over 5 MiB", six_mib, "image/png", None, 413, "image-too-large"),
        ("gif", b"GIF89a".to_vec(), "image/gif", None, 415, "unsupported-media-type"),
        ("text/plain", b"x".to_vec(), "text/plain", None, 415, "unsupported-media-type"),
        ("bad key", png(100, 100), "image/png", Some("has space"), 400, "invalid-idempotency-key"),
    ];
    for (case, body, content_type, key, status, kind) in cases {
        let response = app.submit(ALICE, body, content_type, key).await;
        let (got_status, got_kind, body) = problem(response).await;
        assert_eq!((got_status, got_kind.as_str()), (status, kind), "{case}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{case}: a detail explains it");
    }

    // A form without an image field, one with a field besides the image, and one with a GIF part.
    let response = app.submit(ALICE, b"--B--\r\n".to_vec(), "multipart/form-data; boundary=B", None).await;
    let (_, kind, body) = problem(response).await;
    assert_eq!(kind, "missing-image-field", "{body}");
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(png(100, 100)).mime_str("image/png").unwrap())
        .text("note", "not part of the form");
    let response =
        app.http.post(format!("{}/v1/images", app.base)).bearer_auth(ALICE).multipart(form).send().await.unwrap();
    let (status, kind, body) = problem(response).await;
    assert_eq!((status, kind.as_str()), (400, "malformed-multipart"), "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("note")), "{body}");
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(b"GIF89a".to_vec()).mime_str("image/gif").unwrap());
    let response =
        app.http.post(format!("{}/v1/images", app.base)).bearer_auth(ALICE).multipart(form).send().await.unwrap();
    assert_eq!(problem(response).await.0, 415);

    // No credentials, unknown credentials.
    let response = app.http.post(format!("{}/v1/images", app.base)).body(png(100, 100)).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(problem(response).await.0, 401);
    let response = app.submit("not-a-known-token-at-all", png(100, 100), "image/png", None).await;
    assert_eq!(problem(response).await.0, 401);

    app.assert_nothing_written().await;
    assert_eq!(detector.calls(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_read() {
    let detector = Arc::new(StubDetector::default());
    let mut options = AppOptions::with_detector(detector);
    options.max_image_bytes = Some(1024);
    let app = TestApp::spawn(options).await;
    let response = app.submit(ALICE, png(300, 300), "image/png", None).await;
    assert_eq!(problem(response).await.0, 413);
    app.assert_nothing_written().await;
    app.shutdown().await;
}

#[tokio::test]
async fn reads_of_unknown_malformed_or_foreign_ids_are_404() {
    let (app, _) = stub_app().await;
    let id = app.submit_ok(ALICE, png(100, 100), "image/png").await;

    for path in [
        format!("/v1/images/{id}"),
        "/v1/images/0190f3c2-0000-7000-8000-000000000000".to_owned(),
        "/v1/images/not-an-id".to_owned(),
        format!("/v1/images/{}", id.to_uppercase()),
        "/v2/nothing".to_owned(),
    ] {
        let response = app.get(BOB, &path).await;
        let (status, kind, _) = problem(response).await;
        assert_eq!((status, kind.as_str()), (404, "not-found"), "{path}");
    }
    let delete = app.http.delete(format!("{}/v1/images/{id}", app.base)).bearer_auth(BOB).send().await.unwrap();
    assert_eq!(delete.status(), 404, "bob cannot delete alice's image");
    let list: Value = app.get(BOB, "/v1/images").await.json().await.unwrap();
    assert_eq!(list["items"], serde_json::json!([]), "bob sees none of alice's images");
    assert_eq!(app.get(ALICE, &format!("/v1/images/{id}")).await.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_same_image_and_a_different_body_conflicts() {
    let (app, _) = stub_app().await;
    let body = png(100, 100);

    let first = app.submit(ALICE, body.clone(), "image/png", Some("order-42")).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let retry = app.submit(ALICE, body.clone(), "image/png", Some("order-42")).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);

    let other_body = app.submit(ALICE, png(101, 100), "image/png", Some("order-42")).await;
    let (status, kind, _) = problem(other_body).await;
    assert_eq!((status, kind.as_str()), (409, "idempotency-key-reused"));

    // Keys are per owner: bob's "order-42" is a different image.
    let bobs = app.submit(BOB, body, "image/png", Some("order-42")).await;
    assert_eq!(bobs.status(), 202);
    let bobs: Value = bobs.json().await.unwrap();
    assert_ne!(bobs["id"], first["id"]);

    assert_eq!(app.image_files(), 2, "one image per distinct submission");
    app.shutdown().await;
}

#[tokio::test]
async fn listing_is_newest_first_paginated_and_filterable() {
    let (app, _) = stub_app().await;
    let mut ids = Vec::new();
    for side in 100..105 {
        ids.push(app.submit_ok(ALICE, png(side, 100), "image/png").await);
    }
    for id in &ids {
        app.wait_finished(ALICE, id, Duration::from_secs(10)).await;
    }
    app.submit_ok(BOB, png(100, 100), "image/png").await;

    let mut seen = Vec::new();
    let mut path = "/v1/images?limit=2".to_owned();
    loop {
        let page: Value = app.get(ALICE, &path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        match page["links"]["next"].as_str() {
            Some(next) => path = next.to_owned(),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let succeeded: Value = app.get(ALICE, "/v1/images?status=SUCCEEDED").await.json().await.unwrap();
    assert_eq!(succeeded["items"].as_array().unwrap().len(), 5);
    let pending: Value = app.get(ALICE, "/v1/images?status=PENDING").await.json().await.unwrap();
    assert_eq!(pending["items"].as_array().unwrap().len(), 0);
    let by_label: Value = app.get(ALICE, "/v1/images?label=sTuB").await.json().await.unwrap();
    assert_eq!(by_label["items"].as_array().unwrap().len(), 5, "label filter is case-insensitive");
    let no_label: Value = app.get(ALICE, "/v1/images?label=giraffe").await.json().await.unwrap();
    assert_eq!(no_label["items"].as_array().unwrap().len(), 0);

    for bad in ["?limit=0", "?limit=101", "?limit=x", "?status=DONE", "?status=succeeded", "?cursor=garbage", "?label="]
    {
        let (status, _, body) = problem(app.get(ALICE, &format!("/v1/images{bad}")).await).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn delete_removes_the_record_and_the_stored_image() {
    let (app, _) = stub_app().await;
    let id = app.submit_ok(ALICE, png(100, 100), "image/png").await;
    app.wait_finished(ALICE, &id, Duration::from_secs(10)).await;
    assert_eq!(app.image_files(), 1);

    let response = app.http.delete(format!("{}/v1/images/{id}", app.base)).bearer_auth(ALICE).send().await.unwrap();

    assert_eq!(response.status(), 204);
    assert_eq!(app.get(ALICE, &format!("/v1/images/{id}")).await.status(), 404);
    assert_eq!(app.image_files(), 0);
    let again = app.http.delete(format!("{}/v1/images/{id}", app.base)).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(again.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn health_needs_no_credentials_and_unknown_methods_are_405() {
    let (app, _) = stub_app().await;
    let health = app.http.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let put = app.http.put(format!("{}/v1/images", app.base)).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(problem(put).await.0, 405);
    app.shutdown().await;
}
