//! [`RekognitionDetector`]: Amazon Rekognition on the image where it already is (`S3Object`), so
//! the worker never downloads it. DetectLabels gives the labels and objects (`GENERAL_LABELS`)
//! and the image's properties (`IMAGE_PROPERTIES`), in one call; DetectText gives the lines of
//! text, in a second call made only when the text feature is on. `MaxLabels` and
//! `MinConfidence` come from the detect options. Both answers map into the same [`Findings`]
//! the built-in models give.
//!
//! Errors are sorted by what they say about the image: a format Rekognition cannot read, an image
//! too large, or an object it cannot find fail the job; everything else (throttling, service
//! errors, and an access denial, under the one policy of [`super`]) is a transient detection
//! failure, retried and on the last delivery dead-lettered.

use async_trait::async_trait;
use aws_sdk_rekognition::Client;
use aws_sdk_rekognition::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rekognition::types::{DetectLabelsFeatureName, DetectLabelsImageProperties, Image, S3Object, TextTypes};

use crate::detectors::ModelFeatures;
use crate::domain::{
    BoundingBox, Confidence, DetectOptions, DominantColor, FailureCode, Findings, ImageProperties, ImageQuality,
    Instance, Label, LabelName, TextDetection,
};
use crate::ports::{DetectError, ImageInput, InputKind, LabelDetector};

#[derive(Debug, Clone)]
pub struct RekognitionDetector {
    client: Client,
    bucket: String,
    features: ModelFeatures,
}

impl RekognitionDetector {
    /// `bucket` is the image bucket; Rekognition must be in its region.
    pub fn new(client: Client, bucket: impl Into<String>, features: ModelFeatures) -> Self {
        Self { client, bucket: bucket.into(), features }
    }

    fn image(&self, image: &ImageInput) -> Image {
        match image {
            ImageInput::Stored { key, .. } => {
                Image::builder().s3_object(S3Object::builder().bucket(&self.bucket).name(key.as_str()).build()).build()
            }
            ImageInput::Bytes { bytes, .. } => {
                Image::builder().bytes(aws_sdk_rekognition::primitives::Blob::new(bytes.to_vec())).build()
            }
        }
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
                Some(Instance { bounding_box: bounding_box(b), confidence: confidence(i.confidence()) })
            })
            .collect(),
    })
}

fn bounding_box(b: &aws_sdk_rekognition::types::BoundingBox) -> BoundingBox {
    BoundingBox {
        width: b.width().unwrap_or(0.0),
        height: b.height().unwrap_or(0.0),
        left: b.left().unwrap_or(0.0),
        top: b.top().unwrap_or(0.0),
    }
}

/// DetectText's lines (its words repeat them), in labelq's shape.
pub fn text_from_rekognition(detections: &[aws_sdk_rekognition::types::TextDetection]) -> Vec<TextDetection> {
    detections
        .iter()
        .filter(|d| d.r#type() == Some(&TextTypes::Line))
        .filter_map(|d| {
            Some(TextDetection {
                detected_text: d.detected_text()?.to_owned(),
                confidence: confidence(d.confidence()),
                bounding_box: bounding_box(d.geometry()?.bounding_box()?),
            })
        })
        .collect()
}

/// DetectLabels' `ImageProperties`, in labelq's shape (the foreground and background parts
/// have no built-in equivalent and are left out).
pub fn properties_from_rekognition(properties: &DetectLabelsImageProperties) -> Option<ImageProperties> {
    let quality = properties.quality()?;
    let channel = |v: Option<i32>| v.unwrap_or(0).clamp(0, 255) as u8;
    let percent = |v: Option<f32>| v.unwrap_or(0.0).clamp(0.0, 100.0);
    Some(ImageProperties {
        quality: ImageQuality {
            brightness: percent(quality.brightness()),
            sharpness: percent(quality.sharpness()),
            contrast: percent(quality.contrast()),
        },
        dominant_colors: properties
            .dominant_colors()
            .iter()
            .map(|c| {
                let mut color = DominantColor::new(
                    channel(c.red()),
                    channel(c.green()),
                    channel(c.blue()),
                    percent(c.pixel_percent()),
                );
                if let Some(name) = c.simplified_color() {
                    name.clone_into(&mut color.simplified_color);
                }
                color
            })
            .collect(),
    })
}

/// Sorts an error by what it says about the image. DetectLabels and DetectText name their
/// errors alike, so one function reads the code of either.
fn classify<E>(e: SdkError<E, aws_smithy_runtime_api::http::Response>) -> DetectError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let about_the_image = match &e {
        SdkError::ServiceError(se) => match se.err().code() {
            Some("InvalidImageFormatException") => {
                Some((FailureCode::UnsupportedImage, "Rekognition cannot read this image format"))
            }
            Some("ImageTooLargeException") => {
                Some((FailureCode::ImageTooLarge, "the image is larger than Rekognition accepts"))
            }
            Some("InvalidS3ObjectException") => {
                Some((FailureCode::ImageMissing, "Rekognition could not read the stored image"))
            }
            Some("InvalidParameterException") => {
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

    async fn detect(&self, image: ImageInput, options: &DetectOptions) -> Result<Findings, DetectError> {
        let features = self.features;
        let mut findings = Findings::default();
        let wants_labels = features.labels || features.objects;
        if wants_labels || features.properties {
            let mut request = self.client.detect_labels().image(self.image(&image));
            if wants_labels {
                request = request
                    .features(DetectLabelsFeatureName::GeneralLabels)
                    .max_labels(options.max_labels.min(1000) as i32)
                    .min_confidence(options.min_confidence.percent());
            }
            if features.properties {
                request = request.features(DetectLabelsFeatureName::ImageProperties);
            }
            let output = request.send().await.map_err(classify)?;
            findings.labels = options.apply(output.labels().iter().filter_map(from_rekognition).collect());
            findings.image_properties = output.image_properties().and_then(properties_from_rekognition);
        }
        if features.text {
            let output = self.client.detect_text().image(self.image(&image)).send().await.map_err(classify)?;
            findings.text_detections = text_from_rekognition(output.text_detections());
        }
        Ok(findings)
    }
}
