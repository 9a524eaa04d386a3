//! The Rekognition adapter against recorded DetectLabels and DetectText responses (success and
//! errors), replayed through the SDK's own HTTP test client, so the real request serialisation
//! and response parsing run. (LocalStack's free edition has no Rekognition.)

use aws_sdk_rekognition::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use labelq_shared::adapters::aws::RekognitionDetector;
use labelq_shared::detectors::{DetectorKind, ModelFeatures};
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

/// DetectLabels' answer when only IMAGE_PROPERTIES was asked for.
const PROPERTIES_RESPONSE: &str = r##"{
  "Labels": [],
  "ImageProperties": {
    "Quality": {"Brightness": 71.5, "Sharpness": 88.1, "Contrast": 64.0},
    "DominantColors": [
      {"Red": 250, "Green": 212, "Blue": 30, "HexCode": "#FAD41E", "CSSColor": "gold",
       "SimplifiedColor": "yellow", "PixelPercent": 41.2},
      {"Red": 20, "Green": 20, "Blue": 24, "HexCode": "#141418", "CSSColor": "black",
       "SimplifiedColor": "black", "PixelPercent": 22.0}
    ]
  }
}"##;

/// DetectText's answer for a sign: one line and its two words.
const TEXT_RESPONSE: &str = r#"{
  "TextDetections": [
    {"DetectedText": "NO PARKING", "Type": "LINE", "Id": 0, "Confidence": 99.2,
     "Geometry": {"BoundingBox": {"Width": 0.5, "Height": 0.1, "Left": 0.25, "Top": 0.4}, "Polygon": []}},
    {"DetectedText": "NO", "Type": "WORD", "Id": 1, "ParentId": 0, "Confidence": 99.5,
     "Geometry": {"BoundingBox": {"Width": 0.15, "Height": 0.1, "Left": 0.25, "Top": 0.4}, "Polygon": []}},
    {"DetectedText": "PARKING", "Type": "WORD", "Id": 2, "ParentId": 0, "Confidence": 98.9,
     "Geometry": {"BoundingBox": {"Width": 0.3, "Height": 0.1, "Left": 0.45, "Top": 0.4}, "Polygon": []}}
  ],
  "TextModelVersion": "3.0"
}"#;

fn replay(status: u16, body: &str) -> StaticReplayClient {
    replay_all(&[(status, body)])
}

fn replay_all(answers: &[(u16, &str)]) -> StaticReplayClient {
    let events = answers
        .iter()
        .map(|(status, body)| {
            let request = http::Request::builder()
                .uri("https://rekognition.us-east-1.amazonaws.com/")
                .body(String::new().into())
                .unwrap();
            let response = http::Response::builder()
                .status(*status)
                .header("content-type", "application/x-amz-json-1.1")
                .body(body.to_string().into())
                .unwrap();
            ReplayEvent::new(request, response)
        })
        .collect();
    StaticReplayClient::new(events)
}

fn detector(http: &StaticReplayClient) -> RekognitionDetector {
    detector_with(http, ModelFeatures::default_for(DetectorKind::Rekognition))
}

fn detector_with(http: &StaticReplayClient, features: ModelFeatures) -> RekognitionDetector {
    let config = aws_sdk_rekognition::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"))
        .http_client(http.clone())
        .build();
    RekognitionDetector::new(aws_sdk_rekognition::Client::from_conf(config), "labelq-images", features)
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

    let findings = detector(&http).detect(input, &options()).await.unwrap();

    let labels = &findings.labels;
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
    assert_eq!(body["Features"], serde_json::json!(["GENERAL_LABELS"]), "no paid extras by default");
    assert!(findings.text_detections.is_empty() && findings.image_properties.is_none());
}

#[tokio::test]
async fn text_and_properties_map_into_the_same_findings_the_built_in_models_give() {
    let http = replay_all(&[(200, PROPERTIES_RESPONSE), (200, TEXT_RESPONSE)]);
    let features: ModelFeatures = "text,properties".parse().unwrap();

    let findings = detector_with(&http, features).detect(stored().0, &options()).await.unwrap();

    let lines: Vec<_> = findings.text_detections.iter().map(|l| l.detected_text.as_str()).collect();
    assert_eq!(lines, ["NO PARKING"], "lines only: the words repeat them");
    let line = &findings.text_detections[0];
    assert!((line.confidence.percent() - 99.2).abs() < 1e-3);
    assert!((line.bounding_box.width - 0.5).abs() < 1e-6 && (line.bounding_box.top - 0.4).abs() < 1e-6);
    let properties = findings.image_properties.expect("properties");
    assert!((properties.quality.sharpness - 88.1).abs() < 1e-3);
    let gold = &properties.dominant_colors[0];
    assert_eq!((gold.red, gold.green, gold.blue), (250, 212, 30));
    assert_eq!((gold.hex_code.as_str(), gold.simplified_color.as_str()), ("#fad41e", "yellow"));
    assert!(findings.labels.is_empty());

    let requests = http.actual_requests().collect::<Vec<_>>();
    let targets: Vec<_> = requests.iter().map(|r| r.headers().get("x-amz-target").unwrap_or_default()).collect();
    assert_eq!(targets, ["RekognitionService.DetectLabels", "RekognitionService.DetectText"]);
    let labels_body: serde_json::Value = serde_json::from_slice(requests[0].body().bytes().unwrap()).unwrap();
    assert_eq!(labels_body["Features"], serde_json::json!(["IMAGE_PROPERTIES"]));
    assert!(labels_body.get("MaxLabels").is_none(), "no labels asked for");
    let text_body: serde_json::Value = serde_json::from_slice(requests[1].body().bytes().unwrap()).unwrap();
    assert_eq!(text_body["Image"]["S3Object"]["Bucket"], "labelq-images");
}

#[tokio::test]
async fn a_detect_text_error_about_the_image_fails_the_job_like_detect_labels_does() {
    let body = r#"{"__type":"InvalidImageFormatException","Message":"recorded error"}"#;
    let http = replay(400, body);
    let features: ModelFeatures = "text".parse().unwrap();
    match detector_with(&http, features).detect(stored().0, &options()).await.unwrap_err() {
        DetectError::Permanent { code, .. } => assert_eq!(code, FailureCode::UnsupportedImage),
        other => panic!("expected permanent, got {other:?}"),
    }
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
