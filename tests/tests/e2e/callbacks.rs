//! Completion callbacks end to end: a real `labelq serve` (in process) calling a real receiver on
//! 127.0.0.1, private targets allowed as the tests' setting; and the SSRF guard with them refused.

use std::sync::Arc;
use std::time::Duration;

use labelq_e2e::receiver::{Answer, Receiver};
use labelq_e2e::{ALICE, AppOptions, StubDetector, TestApp};
use labelq_shared::webhooks::webhook_id;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

async fn app(allow_private: bool) -> TestApp {
    let mut options = AppOptions::with_detector(Arc::new(StubDetector::default()));
    options.callbacks_allow_private = allow_private;
    TestApp::spawn(options).await
}

async fn accepted(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.expect("the job");
    job["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn a_callback_is_signed_and_retried_with_the_same_id_until_it_is_delivered() {
    let app = app(true).await;
    let receiver = Receiver::start([500u16, 500, 200]).await;

    let id = accepted(app.submit_with_callback(ALICE, &receiver.url("/hooks/labelq")).await).await;
    let job = app.wait_callback_settled(ALICE, &id, SETTLE).await;

    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["callback"]["status"], "DELIVERED", "{job}");
    assert_eq!((job["callback"]["attempts"].as_u64(), job["callback"]["last_code"].as_u64()), (Some(3), Some(200)));
    let calls = receiver.calls();
    assert_eq!(calls.len(), 3, "three attempts, then no more");
    for call in &calls {
        assert_eq!(call.header("webhook-id"), webhook_id(&id.parse().unwrap()), "the same id on every retry");
        assert_eq!(call.header("content-type"), "application/json");
        call.assert_signed(&app.callback_secrets);
        let event = call.json();
        assert_eq!((event["type"].as_str(), event["data"]["id"].as_str()), (Some("job.succeeded"), Some(id.as_str())));
        assert_eq!(event["data"]["labels"], job["labels"], "the event carries the labels");
        assert_eq!(event["data"]["links"]["self"], format!("/v1/images/{id}"));
    }
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(70), "retried after the schedule's delay");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.calls().len(), 3, "a delivered callback is not called again");
    app.shutdown().await;
}

#[tokio::test]
async fn a_receivers_retry_after_is_honoured_as_seconds_and_as_a_date() {
    let app = app(true).await;
    // The schedule alone would retry after 100 ms.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
    // The date has whole seconds: when it falls, as an instant of the test's clock.
    let due = httpdate::parse_http_date(&date).expect("an HTTP date");
    let due = std::time::Instant::now() + due.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    let busy = |retry_after: &str| Answer { status: 503, location: None, retry_after: Some(retry_after.to_owned()) };
    let receiver = Receiver::start([busy("1"), busy(&date), 200.into()]).await;

    let id = accepted(app.submit_with_callback(ALICE, &receiver.url("/busy")).await).await;
    let job = app.wait_callback_settled(ALICE, &id, SETTLE).await;
    assert_eq!(job["callback"]["status"], "DELIVERED", "{job}");
    let calls = receiver.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(950), "after 1 s: {:?}", calls[1].at - calls[0].at);
    // Not before the date (a slow run may reach the second call late, so the gap between the
    // calls says nothing); 50 ms for the two clocks' readings.
    assert!(calls[2].at + Duration::from_millis(50) >= due, "before the date: {:?}", due - calls[2].at);
    app.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_answers_410_is_never_called_again() {
    let app = app(true).await;
    let receiver = Receiver::start([410u16]).await;
    let id = accepted(app.submit_with_callback(ALICE, &receiver.url("/gone")).await).await;
    let job = app.wait_callback_settled(ALICE, &id, SETTLE).await;
    assert_eq!(job["callback"]["status"], "DISABLED", "{job}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.calls().len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_never_delivers_fails_the_callback_after_the_schedule() {
    let app = app(true).await;
    let receiver = Receiver::start([503u16]).await;
    let id = accepted(app.submit_with_callback(ALICE, &receiver.url("/down")).await).await;
    let job = app.wait_callback_settled(ALICE, &id, SETTLE).await;
    assert_eq!(job["callback"]["status"], "FAILED", "{job}");
    assert_eq!(receiver.calls().len(), 4, "the first attempt and the schedule's three retries");
    assert_eq!(app.embedded.callbacks.dead_letters().await.unwrap().len(), 1, "kept for an operator");
    app.shutdown().await;
}

#[tokio::test]
async fn a_redirect_is_an_answer_and_never_followed() {
    let app = app(true).await;
    let inside = Receiver::start([200u16]).await;
    let redirecting =
        Receiver::start([Answer { status: 302, location: Some(inside.url("/metadata")), retry_after: None }]).await;
    let id = accepted(app.submit_with_callback(ALICE, &redirecting.url("/hook")).await).await;
    let job = app.wait_callback_settled(ALICE, &id, SETTLE).await;
    assert_eq!(
        (job["callback"]["status"].as_str(), job["callback"]["last_code"].as_u64()),
        (Some("FAILED"), Some(302))
    );
    assert!(inside.calls().is_empty(), "the redirect's target was called");
    app.shutdown().await;
}

#[tokio::test]
async fn without_private_targets_internal_addresses_are_refused_before_and_after_resolution() {
    let app = app(false).await;
    let receiver = Receiver::start([200u16]).await;

    // What can be judged at once is refused at submission, and nothing is written.
    for url in [
        receiver.url("/plain-http"),
        format!("https://127.0.0.1:{}/", receiver.addr.port()),
        "https://[::ffff:169.254.169.254]/".into(),
        "https://2852039166/".into(),
        "https://0x7f.1/".into(),
        "https://user:secret@example.com/".into(),
    ] {
        let response = app.submit_with_callback(ALICE, &url).await;
        assert_eq!(response.status(), 400, "{url}");
        let problem: Value = response.json().await.unwrap();
        let slug = problem["type"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        assert!(["callback-refused", "invalid-callback-url"].contains(&slug.as_str()), "{url}: {problem}");
    }
    app.assert_nothing_written().await;

    // A name is judged by what it resolves to, when the call is made: localhost is loopback.
    let id =
        accepted(app.submit_with_callback(ALICE, &format!("https://localhost:{}/", receiver.addr.port())).await).await;
    let job = app.wait_callback_settled(ALICE, &id, SETTLE).await;
    assert_eq!(job["callback"]["status"], "FAILED", "{job}");
    let why = job["callback"]["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("loopback"), "{job}");
    assert!(receiver.calls().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn a_job_without_a_callback_shows_none_and_queues_nothing_for_delivery() {
    let app = app(true).await;
    let id = app.submit_ok(ALICE, labelq_e2e::png(100, 100), "image/png").await;
    let job = app.wait_finished(ALICE, &id, SETTLE).await;
    assert!(job.get("callback").is_none(), "{job}");
    assert_eq!(app.embedded.callbacks.counts().await.unwrap(), Default::default());
    app.shutdown().await;
}

#[tokio::test]
async fn an_owners_default_callback_is_called_for_jobs_without_their_own_until_it_answers_410() {
    let app = app(true).await;
    let default = Receiver::start([200u16, 410, 200]).await;
    let own = Receiver::start([200u16]).await;
    let endpoint = format!("{}/v1/callback", app.base);
    let set = |url: String| app.http.put(&endpoint).bearer_auth(ALICE).json(&serde_json::json!({ "url": url })).send();
    let current = || async {
        let response = app.http.get(&endpoint).bearer_auth(ALICE).send().await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    let plain = || app.submit_ok(ALICE, labelq_e2e::png(100, 100), "image/png");

    let (status, none) = current().await;
    assert_eq!((status, none["detail"].as_str()), (404, Some("no default callback is set")), "none set yet");
    let response = set(default.url("/default")).await.unwrap();
    assert_eq!(response.status(), 200);
    let shown: Value = response.json().await.unwrap();
    assert_eq!(
        (shown["url"].as_str(), shown["status"].as_str()),
        (Some(default.url("/default").as_str()), Some("ACTIVE"))
    );
    assert_eq!(current().await, (200, shown));

    // A job without a callback of its own gets the default; one with its own keeps it.
    let first = plain().await;
    assert_eq!(app.wait_callback_settled(ALICE, &first, SETTLE).await["callback"]["status"], "DELIVERED");
    let named = accepted(app.submit_with_callback(ALICE, &own.url("/own")).await).await;
    assert_eq!(app.wait_callback_settled(ALICE, &named, SETTLE).await["callback"]["url"], own.url("/own"));
    // Bob has no default: his job has no callback.
    let bobs = app.submit_ok(labelq_e2e::BOB, labelq_e2e::png(100, 100), "image/png").await;
    assert!(app.wait_finished(labelq_e2e::BOB, &bobs, SETTLE).await.get("callback").is_none());

    // The receiver answers 410: that job's callback and the default are disabled.
    let gone = plain().await;
    assert_eq!(app.wait_callback_settled(ALICE, &gone, SETTLE).await["callback"]["status"], "DISABLED");
    let (status, disabled) = current().await;
    assert_eq!((status, disabled["status"].as_str()), (200, Some("DISABLED")), "{disabled}");
    assert!(disabled["disabled_at"].is_string());
    let after = plain().await;
    assert!(app.wait_finished(ALICE, &after, SETTLE).await.get("callback").is_none(), "no callback once disabled");

    // Setting it again enables it; removing it stops it.
    assert_eq!(set(default.url("/default")).await.unwrap().status(), 200);
    let again = plain().await;
    assert_eq!(app.wait_callback_settled(ALICE, &again, SETTLE).await["callback"]["status"], "DELIVERED");
    let calls: Vec<String> =
        default.calls().iter().map(|c| c.json()["data"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(calls, [first, gone, again], "the default receiver got exactly the jobs without their own");
    assert_eq!(own.calls().len(), 1);
    assert_eq!(app.http.delete(&endpoint).bearer_auth(ALICE).send().await.unwrap().status(), 204);
    assert_eq!(app.http.delete(&endpoint).bearer_auth(ALICE).send().await.unwrap().status(), 404);
    let last = plain().await;
    assert!(app.wait_finished(ALICE, &last, SETTLE).await.get("callback").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn a_default_callback_is_refused_as_a_callback_url_would_be() {
    let app = app(false).await;
    let endpoint = format!("{}/v1/callback", app.base);
    let put = |body: &str, content_type: &str| {
        app.http.put(&endpoint).bearer_auth(ALICE).header("content-type", content_type).body(body.to_owned()).send()
    };
    for (body, content_type, status, slug) in [
        (r#"{"url":"https://hooks.example.com/x"}"#, "text/plain", 415, "unsupported-media-type"),
        (r#"{"url":"ftp://hooks.example.com/x"}"#, "application/json", 400, "invalid-callback-url"),
        (r#"{"url":"https://user:pw@hooks.example.com/x"}"#, "application/json", 400, "invalid-callback-url"),
        (r#"{"url":"https://169.254.169.254/latest"}"#, "application/json", 400, "callback-refused"),
        (r#"{"url":"http://hooks.example.com/x"}"#, "application/json", 400, "callback-refused"),
        (r#"{"url":"https://hooks.example.com/x","extra":1}"#, "application/json", 400, "unreadable-body"),
        ("not json", "application/json", 400, "unreadable-body"),
    ] {
        let response = put(body, content_type).await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], format!("https://labelq.dev/problems/{slug}"), "{body}");
    }
    assert_eq!(app.http.get(&endpoint).bearer_auth(ALICE).send().await.unwrap().status(), 404, "nothing was set");
    let ok = put(r#"{"url":"https://hooks.example.com/x"}"#, "application/json; charset=utf-8").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(app.http.get(&endpoint).send().await.unwrap().status(), 401, "no token");
    app.shutdown().await;
}
