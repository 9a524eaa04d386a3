//! The router driven without a socket (`tower::ServiceExt::oneshot`), over in-memory ports that
//! can be made to fail: how backend failures look to a client.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use labelq_shared::domain::OwnerId;
use labelq_shared::http::auth::OpenAccess;
use labelq_shared::http::events::LiveConfig;
use labelq_shared::http::{ApiState, Uploads, router};
use labelq_shared::service::{JobChanges, Stores, SubmitConfig};
use labelq_testkit::memory::{MemoryImages, MemoryJobs, MemoryPublisher};
use labelq_testkit::{ManualClock, png_header};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Api {
    images: Arc<MemoryImages>,
    jobs: Arc<MemoryJobs>,
    publisher: Arc<MemoryPublisher>,
    app: axum::Router,
}

fn api(with_submit: bool) -> Api {
    let images = Arc::new(MemoryImages::default());
    let jobs = Arc::new(MemoryJobs::default());
    let publisher = Arc::new(MemoryPublisher::default());
    let stores = Stores { images: images.clone(), jobs: jobs.clone() };
    let uploads =
        with_submit.then(|| Uploads { publisher: publisher.clone(), config: SubmitConfig::default(), targets: None });
    let auth = Arc::new(OpenAccess::new(OwnerId::parse("me").unwrap()));
    let state = ApiState::new(stores, uploads, Arc::new(ManualClock::default()), auth).with_live(
        JobChanges::new(),
        LiveConfig::default(),
        CancellationToken::new(),
    );
    Api { images, jobs, publisher, app: router(state) }
}

fn post(body: Vec<u8>) -> Request<Body> {
    Request::post("/v1/images").header(header::CONTENT_TYPE, "image/png").body(Body::from(body)).unwrap()
}

async fn json(response: axum::response::Response) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn an_unavailable_topic_is_a_retryable_503_and_leaves_no_job() {
    let api = api(true);
    api.publisher.fail.store(true, Ordering::SeqCst);

    let response = api.app.clone().oneshot(post(png_header(100, 100).to_vec())).await.unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let problem = json(response).await;
    assert_eq!(problem["type"], "https://labelq.dev/problems/service-unavailable");
    assert_eq!(api.jobs.len(), 0);
    assert_eq!(api.images.len(), 0);
}

#[tokio::test]
async fn a_server_error_body_reveals_nothing_about_its_cause() {
    let api = api(true);
    api.jobs.down.store(true, Ordering::SeqCst);
    let response = api.app.clone().oneshot(Request::get("/v1/images").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem = json(response).await;
    assert!(problem.get("detail").is_none(), "{problem}");
    assert!(!problem.to_string().contains("outage"), "{problem}");
}

#[tokio::test]
async fn a_read_only_deployment_has_no_upload_route() {
    let api = api(false);
    let response = api.app.clone().oneshot(post(png_header(100, 100).to_vec())).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let list = api.app.clone().oneshot(Request::get("/v1/images").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(list.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_request_id_is_echoed_and_carried_with_the_job() {
    let api = api(true);
    let mut request = post(png_header(100, 100).to_vec());
    request.headers_mut().insert("x-request-id", "trace-abc-123".parse().unwrap());
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    assert_eq!(api.publisher.published()[0].correlation_id.as_str(), "trace-abc-123");
}

#[tokio::test]
async fn the_openapi_document_is_served_without_authentication() {
    let tokens = labelq_shared::http::auth::BearerTokens::parse("me:me-token-0123456789abcdef").unwrap();
    let stores = Stores { images: Arc::new(MemoryImages::default()), jobs: Arc::new(MemoryJobs::default()) };
    let app = router(ApiState::new(stores, None, Arc::new(ManualClock::default()), Arc::new(tokens)));

    let response = app.oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap()).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let document = json(response).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/v1/images"]["get"].is_object());
    assert!(document["paths"]["/v1/images"].get("post").is_none(), "a read-only deployment documents no upload");
}

#[tokio::test]
async fn a_method_a_route_does_not_take_is_405_with_allow() {
    let api = api(true);
    for (method, path, allowed) in [
        ("PUT", "/v1/images", "GET,HEAD,POST"),
        ("PATCH", "/v1/images/0193b7a2-0000-7000-8000-000000000000", "GET,HEAD,DELETE"),
        ("POST", "/openapi.json", "GET,HEAD"),
    ] {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let response = api.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let mut allow: Vec<&str> =
            response.headers()[header::ALLOW].to_str().unwrap().split(',').map(str::trim).collect();
        let mut expected: Vec<&str> = allowed.split(',').collect();
        allow.sort_unstable();
        expected.sort_unstable();
        assert_eq!(allow, expected, "{method} {path}");
        assert_eq!(json(response).await["type"], "https://labelq.dev/problems/method-not-allowed");
    }
}

#[tokio::test]
async fn a_server_without_tokens_refuses_a_websocket_from_another_origin() {
    let api = api(true);
    let upgrade = |origin: Option<&str>| {
        let mut request = Request::get("/v1/live")
            .header(header::HOST, "127.0.0.1:3000")
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request.body(Body::empty()).unwrap()
    };
    for foreign in ["https://evil.example", "http://localhost:3000", "http://127.0.0.1:8080", "null"] {
        let response = api.app.clone().oneshot(upgrade(Some(foreign))).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{foreign}");
        assert_eq!(json(response).await["type"], "https://labelq.dev/problems/cross-origin");
    }
    // The server's own pages, and clients that are not browsers, pass the check; without a
    // socket to upgrade, the router then answers 426.
    for own in [Some("http://127.0.0.1:3000"), Some("HTTP://127.0.0.1:3000"), None] {
        let response = api.app.clone().oneshot(upgrade(own)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED, "{own:?}");
    }
}
