//! [`RekognitionDetector`]: Amazon Rekognition DetectLabels on the image where it already is
//! (`S3Object`), so the worker never downloads it. `MaxLabels` and `MinConfidence` come from the
//! detect options.
//!
//! Errors are sorted by what they say about the image: a format Rekognition cannot read, an image
//! too large, or an object it cannot find fail the job; everything else (throttling, service
//! errors, and an access denial, under the one policy of [`super`]) is a transient detection
//! failure, retried and on the last delivery dead-lettered.

use async_trait::async_trait;
use aws_sdk_rekognition::Client;
use aws_sdk_rekognition::error::SdkError;
use aws_sdk_rekognition::operation::detect_labels::DetectLabelsError;
use aws_sdk_rekognition::types::{Image, S3Object};

use crate::domain::{BoundingBox, Confidence, DetectOptions, FailureCode, Instance, Label, LabelName};
use crate::ports::{DetectError, ImageInput, InputKind, LabelDetector};

#[derive(Debug, Clone)]
pub struct RekognitionDetector {
    client: Client,
    bucket: String,
}

impl RekognitionDetector {
    /// `bucket` is the image bucket; Rekognition must be in its region.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into() }
    }
}

fn confidence(value: Option<f32>) -> Confidence {
    Confidence::from_probability(value.unwrap_or(0.0) / 100.0)
}

fn names<'a>(names: impl Iterator<Item = Option<&'a str>>) -> Vec<LabelName> {
    names.flatten().map(LabelName::new).collect()
}

/// DetectLabels' label, in labelq's shape.
pub fn from_rekognition(label: &aws_sdk_rekognition::types::Label) -> Option<Label> {
    Some(Label {
        name: label.name()?.to_owned(),
        confidence: confidence(label.confidence()),
        parents: names(label.parents().iter().map(|p| p.name())),
        aliases: names(label.aliases().iter().map(|a| a.name())),
        categories: names(label.categories().iter().map(|c| c.name())),
        instances: label
            .instances()
            .iter()
            .filter_map(|i| {
                let b = i.bounding_box()?;
                Some(Instance {
                    bounding_box: BoundingBox {
                        width: b.width().unwrap_or(0.0),
                        height: b.height().unwrap_or(0.0),
                        left: b.left().unwrap_or(0.0),
                        top: b.top().unwrap_or(0.0),
                    },
                    confidence: confidence(i.confidence()),
                })
            })
            .collect(),
    })
}

fn classify(e: SdkError<DetectLabelsError, aws_smithy_runtime_api::http::Response>) -> DetectError {
    let about_the_image = match &e {
        SdkError::ServiceError(se) => match se.err() {
            DetectLabelsError::InvalidImageFormatException(_) => {
                Some((FailureCode::UnsupportedImage, "Rekognition cannot read this image format"))
            }
            DetectLabelsError::ImageTooLargeException(_) => {
                Some((FailureCode::ImageTooLarge, "the image is larger than Rekognition accepts"))
            }
            DetectLabelsError::InvalidS3ObjectException(_) => {
                Some((FailureCode::ImageMissing, "Rekognition could not read the stored image"))
            }
            DetectLabelsError::InvalidParameterException(_) => {
                Some((FailureCode::UnsupportedImage, "Rekognition refused the image's parameters"))
            }
            _ => None,
        },
        _ => None,
    };
    match about_the_image {
        Some((code, message)) => {
            DetectError::Permanent { code, message: message.to_owned(), source: Some(Box::new(e)) }
        }
        // Throttling, service errors, timeouts, and an access denial (a deployment fault, never
        // a reason about the image; see the policy in `super`).
        None => DetectError::Transient(Box::new(e)),
    }
}

#[async_trait]
impl LabelDetector for RekognitionDetector {
    fn input_kind(&self) -> InputKind {
        InputKind::Stored
    }

    async fn detect(&self, image: ImageInput, options: &DetectOptions) -> Result<Vec<Label>, DetectError> {
        let image = match image {
            ImageInput::Stored { key, .. } => {
                Image::builder().s3_object(S3Object::builder().bucket(&self.bucket).name(key.as_str()).build()).build()
            }
            ImageInput::Bytes { bytes, .. } => {
                Image::builder().bytes(aws_sdk_rekognition::primitives::Blob::new(bytes.to_vec())).build()
            }
        };
        let output = self
            .client
            .detect_labels()
            .image(image)
            .max_labels(options.max_labels.min(1000) as i32)
            .min_confidence(options.min_confidence.percent())
            .send()
            .await
            .map_err(classify)?;
        Ok(options.apply(output.labels().iter().filter_map(from_rekognition).collect()))
    }
}
