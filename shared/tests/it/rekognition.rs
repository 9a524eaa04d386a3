//! The Rekognition adapter against recorded DetectLabels responses (success and errors), replayed
//! through the SDK's own HTTP test client, so the real request serialisation and response parsing
//! run.

use aws_sdk_rekognition::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use labelq_shared::adapters::aws::RekognitionDetector;
use labelq_shared::domain::{Confidence, ContentType, DetectOptions, FailureCode, JobId, ObjectKey};
use labelq_shared::ports::{DetectError, ImageInput, LabelDetector};

/// A DetectLabels response as the service sends it (awsJson1.1), for a photo of a cat on a sofa.
const CAT_RESPONSE: &str = r#"{
  "Labels": [
    {"Name": "Cat", "Confidence": 99.41, "Instances": [
        {"BoundingBox": {"Width": 0.52, "Height": 0.61, "Left": 0.21, "Top": 0.18}, "Confidence": 97.3}],
     "Parents": [{"Name": "Mammal"}, {"Name": "Animal"}, {"Name": "Pet"}],
     "Aliases": [{"Name": "Kitty"}],
     "Categories": [{"Name": "Animals and Pets"}]},
    {"Name": "Animal", "Confidence": 99.41, "Instances": [], "Parents": [],
     "Categories": [{"Name": "Animals and Pets"}]},
    {"Name": "Couch", "Confidence": 71.2, "Instances": [], "Parents": [{"Name": "Furniture"}],
     "Categories": [{"Name": "Home and Indoors"}]}
  ],
  "LabelModelVersion": "3.0"
}"#;

fn replay(status: u16, body: &str) -> StaticReplayClient {
    let request = http::Request::builder()
        .uri("https://rekognition.us-east-1.amazonaws.com/")
        .body(String::new().into())
        .unwrap();
    let response = http::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_owned().into())
        .unwrap();
    StaticReplayClient::new(vec![ReplayEvent::new(request, response)])
}

fn detector(http: &StaticReplayClient) -> RekognitionDetector {
    let config = aws_sdk_rekognition::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"))
        .http_client(http.clone())
        .build();
    RekognitionDetector::new(aws_sdk_rekognition::Client::from_conf(config), "labelq-images")
}

fn stored() -> (ImageInput, ObjectKey) {
    let key = ObjectKey::for_image(&JobId::new());
    (ImageInput::Stored { key: key.clone(), content_type: ContentType::Jpeg }, key)
}

fn options() -> DetectOptions {
    DetectOptions { max_labels: 10, min_confidence: Confidence::new(55.0).unwrap() }
}

#[tokio::test]
async fn labels_come_back_in_labelqs_shape_and_the_request_names_the_s3_object() {
    let http = replay(200, CAT_RESPONSE);
    let (input, key) = stored();

    let labels = detector(&http).detect(input, &options()).await.unwrap();

    let names: Vec<_> = labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["Cat", "Animal", "Couch"]);
    let cat = &labels[0];
    assert!((cat.confidence.percent() - 99.41).abs() < 1e-3);
    assert_eq!(cat.parents.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["Mammal", "Animal", "Pet"]);
    assert_eq!(cat.aliases[0].name, "Kitty");
    assert_eq!(cat.categories[0].name, "Animals and Pets");
    assert!((cat.instances[0].bounding_box.left - 0.21).abs() < 1e-6);

    let requests = http.actual_requests().collect::<Vec<_>>();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].headers().get("x-amz-target"), Some("RekognitionService.DetectLabels"));
    let body: serde_json::Value = serde_json::from_slice(requests[0].body().bytes().unwrap()).unwrap();
    assert_eq!(body["Image"]["S3Object"]["Bucket"], "labelq-images");
    assert_eq!(body["Image"]["S3Object"]["Name"], key.as_str());
    assert_eq!(body["MaxLabels"], 10);
    assert_eq!(body["MinConfidence"], 55.0);
}

async fn error_for(status: u16, kind: &str) -> DetectError {
    let body = format!(r#"{{"__type":"{kind}","Message":"recorded error"}}"#);
    let http = replay(status, &body);
    detector(&http).detect(stored().0, &options()).await.unwrap_err()
}

#[tokio::test]
async fn image_errors_are_permanent_with_their_failure_code() {
    for (kind, expected) in [
        ("InvalidImageFormatException", FailureCode::UnsupportedImage),
        ("ImageTooLargeException", FailureCode::ImageTooLarge),
        ("InvalidS3ObjectException", FailureCode::ImageMissing),
        ("InvalidParameterException", FailureCode::UnsupportedImage),
    ] {
        match error_for(400, kind).await {
            DetectError::Permanent { code, .. } => assert_eq!(code, expected, "{kind}"),
            other => panic!("{kind}: expected permanent, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn throttling_service_errors_and_access_denial_are_transient() {
    for (status, kind) in [
        (400, "ThrottlingException"),
        (400, "ProvisionedThroughputExceededException"),
        (500, "InternalServerError"),
        (400, "AccessDeniedException"),
    ] {
        let err = error_for(status, kind).await;
        assert!(matches!(err, DetectError::Transient(_)), "{kind}: {err:?}");
    }
}
