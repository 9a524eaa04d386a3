//! Labels, shaped like Rekognition DetectLabels' output so a client reads the same structure
//! whichever detector produced it: a name, a confidence in percent, the label's ancestors
//! (`parents`), broad `categories`, and `instances` with bounding boxes where the detector
//! localises objects.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A confidence in percent, within 0..=100 and never NaN.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = f32, minimum = 0, maximum = 100)]
pub struct Confidence(f32);

impl Confidence {
    pub fn new(percent: f32) -> Option<Self> {
        (0.0..=100.0).contains(&percent).then_some(Self(percent))
    }

    /// From a probability in 0..=1, clamping the rounding error a sum of probabilities can carry.
    pub fn from_probability(p: f32) -> Self {
        if p.is_nan() { Self(0.0) } else { Self((p * 100.0).clamp(0.0, 100.0)) }
    }

    pub fn percent(self) -> f32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Confidence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f32::deserialize(d)?;
        Self::new(v).ok_or_else(|| serde::de::Error::custom("confidence must be within 0..=100"))
    }
}

/// A name in Rekognition's `{ "Name": ... }` shape, used for parents, aliases and categories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LabelName {
    pub name: String,
}

impl LabelName {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// A box as ratios of the image's width and height (0..=1), like Rekognition's `BoundingBox`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BoundingBox {
    pub width: f32,
    pub height: f32,
    pub left: f32,
    pub top: f32,
}

/// One occurrence of a label in the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub bounding_box: BoundingBox,
    pub confidence: Confidence,
}

/// One detected label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Label {
    pub name: String,
    pub confidence: Confidence,
    #[serde(default)]
    pub parents: Vec<LabelName>,
    #[serde(default)]
    pub aliases: Vec<LabelName>,
    #[serde(default)]
    pub categories: Vec<LabelName>,
    #[serde(default)]
    pub instances: Vec<Instance>,
}

/// What a caller asks of a detector, as in DetectLabels' `MaxLabels` and `MinConfidence`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectOptions {
    pub max_labels: usize,
    pub min_confidence: Confidence,
}

impl Default for DetectOptions {
    /// Rekognition's default `MinConfidence` is 55; ten labels is enough to describe a photo.
    fn default() -> Self {
        Self { max_labels: 10, min_confidence: Confidence(55.0) }
    }
}

impl DetectOptions {
    /// Applies the options to a detector's raw output: drops labels under the threshold and keeps
    /// the `max_labels` most confident, most confident first; equals keep the detector's order.
    pub fn apply(&self, mut labels: Vec<Label>) -> Vec<Label> {
        labels.retain(|l| l.confidence >= self.min_confidence);
        labels.sort_by(|a, b| b.confidence.0.total_cmp(&a.confidence.0));
        labels.truncate(self.max_labels);
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, confidence: f32) -> Label {
        Label {
            name: name.into(),
            confidence: Confidence::new(confidence).unwrap(),
            parents: vec![],
            aliases: vec![],
            categories: vec![],
            instances: vec![],
        }
    }

    #[test]
    fn confidence_refuses_values_outside_percent_range() {
        assert!(Confidence::new(-0.1).is_none());
        assert!(Confidence::new(100.1).is_none());
        assert!(Confidence::new(f32::NAN).is_none());
        assert_eq!(Confidence::from_probability(1.000_001).percent(), 100.0);
        assert!(serde_json::from_str::<Confidence>("101").is_err());
    }

    #[test]
    fn options_keep_the_most_confident_labels_above_the_threshold() {
        let opts = DetectOptions { max_labels: 2, min_confidence: Confidence::new(50.0).unwrap() };
        let kept = opts.apply(vec![label("a", 40.0), label("b", 90.0), label("c", 60.0), label("d", 70.0)]);
        let names: Vec<_> = kept.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["b", "d"]);
    }
}
