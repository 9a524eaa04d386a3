//! Which label detector runs, chosen by one setting and built in one place, for `labelq serve`
//! and the worker Lambda alike. A new detector is an adapter under [`crate::adapters`], a
//! [`DetectorKind`] and a [`DetectorConfig`] variant, and one arm in [`DetectorBuilder::build`].
//!
//! The built-in model loads while the process starts (once per Lambda execution environment,
//! not on its first batch); Rekognition needs only a client.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::config::Setting;
use crate::ports::{BoxError, LabelDetector};

/// The detector a deployment runs (`LABEL_DETECTOR`, `labelq serve --detector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    /// The built-in offline model, through ONNX Runtime.
    Onnx,
    /// Amazon Rekognition DetectLabels, reading the image from S3.
    Rekognition,
}

impl DetectorKind {
    pub const ALL: [Self; 2] = [Self::Onnx, Self::Rekognition];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Onnx => "onnx",
            Self::Rekognition => "rekognition",
        }
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DetectorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("must be one of {}", names.join(", "))
        })
    }
}

impl Setting for DetectorKind {
    const VARIABLE: &'static str = "LABEL_DETECTOR";
}

/// What a detector computes (`LABELQ_FEATURES`, `labelq serve --features`), as DetectLabels'
/// `Features` chooses what Rekognition computes: `labels` (the classifier, which names the
/// scene), `objects` (people and objects with their boxes), `text` (lines of text, read where
/// text was found) and `properties` (brightness, sharpness, contrast, dominant colours). A
/// comma-separated list of at least one. Rekognition computes `labels` and `objects` in one
/// DetectLabels call (either turns it on), `properties` as its IMAGE_PROPERTIES, and `text`
/// with DetectText.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFeatures {
    pub labels: bool,
    pub objects: bool,
    pub text: bool,
    pub properties: bool,
}

impl ModelFeatures {
    pub const ALL: Self = Self { labels: true, objects: true, text: true, properties: true };
    const NONE: Self = Self { labels: false, objects: false, text: false, properties: false };
    const NAMES: [&'static str; 4] = ["labels", "objects", "text", "properties"];

    fn flags(self) -> [bool; 4] {
        [self.labels, self.objects, self.text, self.properties]
    }
}

impl ModelFeatures {
    /// What a detector computes unless told: every feature for the built-in models (the
    /// default set measured in BENCHMARKS.md); for Rekognition the one DetectLabels call of
    /// labels and objects it always made, since properties and text each cost extra per image.
    pub fn default_for(kind: DetectorKind) -> Self {
        match kind {
            DetectorKind::Onnx => Self::ALL,
            DetectorKind::Rekognition => Self { labels: true, objects: true, ..Self::NONE },
        }
    }
}

impl fmt::Display for ModelFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES.iter().zip(self.flags()).filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for ModelFeatures {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut features = Self::NONE;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.to_ascii_lowercase().as_str() {
                "labels" => features.labels = true,
                "objects" => features.objects = true,
                "text" => features.text = true,
                "properties" => features.properties = true,
                _ => return Err(format!("{name:?} is not a feature: name some of {}", Self::NAMES.join(", "))),
            }
        }
        if features == Self::NONE {
            Err(format!("name at least one of {}", Self::NAMES.join(", ")))
        } else {
            Ok(features)
        }
    }
}

impl Setting for ModelFeatures {
    const VARIABLE: &'static str = "LABELQ_FEATURES";
}

/// What building a detector takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectorConfig {
    /// The built-in models from a prepared model directory, with one set of inference sessions
    /// per job run at once.
    Onnx { model_dir: PathBuf, sessions: usize, features: ModelFeatures },
    /// Rekognition on the images in `bucket` (in Rekognition's region).
    Rekognition { bucket: String, features: ModelFeatures },
}

impl DetectorConfig {
    pub fn kind(&self) -> DetectorKind {
        match self {
            Self::Onnx { .. } => DetectorKind::Onnx,
            Self::Rekognition { .. } => DetectorKind::Rekognition,
        }
    }
}

/// Why a detector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("this build has no {kind} detector: build it with the cargo feature `{feature}`")]
    NotBuiltIn { kind: DetectorKind, feature: &'static str },
    #[error("the rekognition detector reads images from S3: it needs the AWS backend")]
    NeedsAws,
    #[error("could not load the built-in label model")]
    Model(#[source] BoxError),
}

/// Builds the configured detector. The AWS SDK configuration is given where there is one.
#[derive(Debug, Clone)]
pub struct DetectorBuilder {
    config: DetectorConfig,
    #[cfg(feature = "aws")]
    sdk: Option<aws_config::SdkConfig>,
}

impl DetectorBuilder {
    pub fn new(config: DetectorConfig) -> Self {
        Self {
            config,
            #[cfg(feature = "aws")]
            sdk: None,
        }
    }

    /// The SDK configuration AWS detectors build their clients from.
    #[cfg(feature = "aws")]
    pub fn with_aws(self, sdk: &aws_config::SdkConfig) -> Self {
        Self { sdk: Some(sdk.clone()), ..self }
    }

    pub async fn build(self) -> Result<Arc<dyn LabelDetector>, BuildError> {
        match self.config {
            DetectorConfig::Onnx { model_dir, sessions, features } => onnx(model_dir, sessions, features).await,
            DetectorConfig::Rekognition { bucket, features } => {
                #[cfg(feature = "aws")]
                {
                    let sdk = self.sdk.ok_or(BuildError::NeedsAws)?;
                    let client = aws_sdk_rekognition::Client::new(&sdk);
                    Ok(Arc::new(crate::adapters::aws::RekognitionDetector::new(client, bucket, features)))
                }
                #[cfg(not(feature = "aws"))]
                {
                    let _ = (bucket, features);
                    Err(BuildError::NotBuiltIn { kind: DetectorKind::Rekognition, feature: "aws" })
                }
            }
        }
    }
}

#[cfg(feature = "onnx")]
async fn onnx(
    model_dir: PathBuf,
    sessions: usize,
    features: ModelFeatures,
) -> Result<Arc<dyn LabelDetector>, BuildError> {
    use crate::adapters::onnx::{OnnxConfig, OnnxDetector};
    // Reading the model and the runtime library is blocking work: off the async threads.
    let loaded = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let config = OnnxConfig {
            classifier: features.labels,
            objects: features.objects,
            text: features.text,
            properties: features.properties,
            ..OnnxConfig::new(&model_dir, sessions)
        };
        let detector = OnnxDetector::load(&config)?;
        let load_ms = started.elapsed().as_millis() as u64;
        tracing::info!(dir = %model_dir.display(), load_ms, sessions, %features, "label model loaded");
        Ok::<_, crate::adapters::onnx::ModelError>(detector)
    })
    .await
    .map_err(|e| BuildError::Model(e.into()))?;
    let detector = loaded.map_err(|e| BuildError::Model(e.into()))?;
    Ok(Arc::new(detector))
}

#[cfg(not(feature = "onnx"))]
async fn onnx(_: PathBuf, _: usize, _: ModelFeatures) -> Result<Arc<dyn LabelDetector>, BuildError> {
    Err(BuildError::NotBuiltIn { kind: DetectorKind::Onnx, feature: "onnx" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_names_parse_case_insensitively_and_others_are_refused() {
        assert_eq!("onnx".parse(), Ok(DetectorKind::Onnx));
        assert_eq!("Rekognition".parse(), Ok(DetectorKind::Rekognition));
        assert_eq!("yolo".parse::<DetectorKind>(), Err("must be one of onnx, rekognition".to_owned()));
    }

    #[test]
    fn features_parse_as_a_list_of_at_least_one_known_name() {
        let objects = ModelFeatures { objects: true, ..ModelFeatures::NONE };
        assert_eq!("labels,objects,text,properties".parse(), Ok(ModelFeatures::ALL));
        assert_eq!(" Objects ".parse(), Ok(objects));
        assert_eq!("labels,,labels".parse(), Ok(ModelFeatures { labels: true, ..ModelFeatures::NONE }));
        assert_eq!(ModelFeatures::ALL.to_string(), "labels,objects,text,properties");
        let some = ModelFeatures { text: true, ..objects };
        assert_eq!(some.to_string().parse(), Ok(some));
        assert!("".parse::<ModelFeatures>().unwrap_err().contains("at least one"));
        assert!("labels,faces".parse::<ModelFeatures>().unwrap_err().contains("\"faces\" is not a feature"));
    }

    /// The template's `LabelDetector` parameter offers exactly the detectors this code builds.
    #[test]
    fn the_templates_allowed_detectors_are_the_ones_built_here() {
        let template = include_str!("../../infra/template.yaml");
        let parameter = template.split("\n  LabelDetector:\n").nth(1).expect("the LabelDetector parameter");
        let line = parameter.lines().find(|l| l.trim_start().starts_with("AllowedValues:")).expect("AllowedValues");
        let listed = line.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(list, _)| list);
        let mut allowed: Vec<&str> = listed.expect("a [..] list").split(',').map(str::trim).collect();
        let mut built: Vec<&str> = DetectorKind::ALL.iter().map(|k| k.as_str()).collect();
        allowed.sort_unstable();
        built.sort_unstable();
        assert_eq!(allowed, built);
    }
}
