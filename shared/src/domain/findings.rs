//! Everything a detector found in one image: its labels, the lines of text it read, and the
//! image's properties. Shaped like Rekognition's answers (DetectLabels' labels and
//! `ImageProperties`, DetectText's `TextDetections`), so a client reads one structure whichever
//! detector ran and whichever features it was asked for; a feature that did not run leaves its
//! part empty.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::label::{BoundingBox, Confidence, Label};

/// A detector's answer for one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Findings {
    /// Most confident first.
    pub labels: Vec<Label>,
    /// Lines of text in reading order (top to bottom, then left to right). Empty when the text
    /// feature is off or the image holds no text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_detections: Vec<TextDetection>,
    /// Absent when the properties feature is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_properties: Option<ImageProperties>,
}

impl Findings {
    pub fn labels(labels: Vec<Label>) -> Self {
        Self { labels, ..Self::default() }
    }
}

/// One line of text, as DetectText's `TextDetection` of type `LINE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TextDetection {
    /// The line as read; words separated by single spaces.
    pub detected_text: String,
    pub confidence: Confidence,
    /// Where the line is, as ratios of the image's width and height.
    pub bounding_box: BoundingBox,
}

/// DetectLabels' `ImageProperties`: the image's quality and its dominant colours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageProperties {
    pub quality: ImageQuality,
    /// The most common colours, most common first.
    pub dominant_colors: Vec<DominantColor>,
}

/// Each measure from 0 (dark, blurred, flat) to 100 (bright, sharp, contrasted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageQuality {
    #[schema(minimum = 0, maximum = 100)]
    pub brightness: f32,
    #[schema(minimum = 0, maximum = 100)]
    pub sharpness: f32,
    #[schema(minimum = 0, maximum = 100)]
    pub contrast: f32,
}

/// One dominant colour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DominantColor {
    #[schema(maximum = 255)]
    pub red: u8,
    #[schema(maximum = 255)]
    pub green: u8,
    #[schema(maximum = 255)]
    pub blue: u8,
    /// `#rrggbb`, lower-case.
    #[schema(pattern = "^#[0-9a-f]{6}$")]
    pub hex_code: String,
    /// A plain colour name (`red`, `blue`, `white`, ...).
    pub simplified_color: String,
    /// The share of the image's pixels this colour stands for.
    #[schema(minimum = 0, maximum = 100)]
    pub pixel_percent: f32,
}

impl DominantColor {
    pub fn new(red: u8, green: u8, blue: u8, pixel_percent: f32) -> Self {
        Self {
            red,
            green,
            blue,
            hex_code: format!("#{red:02x}{green:02x}{blue:02x}"),
            simplified_color: simplified_color(red, green, blue).to_owned(),
            pixel_percent: pixel_percent.clamp(0.0, 100.0),
        }
    }
}

/// The nearest of a dozen plain colour names, judged by hue, saturation and lightness so that
/// a dark red is "red" and not "brown" or "black" unless it is near black.
pub fn simplified_color(red: u8, green: u8, blue: u8) -> &'static str {
    let (r, g, b) = (f32::from(red) / 255.0, f32::from(green) / 255.0, f32::from(blue) / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let lightness = (max + min) / 2.0;
    let chroma = max - min;
    if lightness < 0.12 {
        return "black";
    }
    if chroma < 0.10 || (chroma < 0.16 && !(0.25..=0.85).contains(&lightness)) {
        return if lightness > 0.85 {
            "white"
        } else if lightness < 0.2 {
            "black"
        } else {
            "grey"
        };
    }
    let hue = if max == r {
        60.0 * ((g - b) / chroma).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / chroma + 2.0)
    } else {
        60.0 * ((r - g) / chroma + 4.0)
    };
    match hue {
        h if !(15.0..345.0).contains(&h) => {
            if lightness > 0.7 {
                "pink"
            } else {
                "red"
            }
        }
        h if h < 45.0 => {
            if lightness < 0.4 {
                "brown"
            } else {
                "orange"
            }
        }
        h if h < 70.0 => {
            if lightness < 0.35 {
                "brown"
            } else {
                "yellow"
            }
        }
        h if h < 165.0 => "green",
        h if h < 200.0 => "teal",
        h if h < 255.0 => "blue",
        h if h < 290.0 => "purple",
        _ => "pink",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_colours_get_their_names() {
        for (rgb, name) in [
            ((0, 0, 0), "black"),
            ((255, 255, 255), "white"),
            ((128, 128, 128), "grey"),
            ((200, 20, 30), "red"),
            ((120, 10, 10), "red"),
            ((255, 150, 170), "pink"),
            ((240, 130, 20), "orange"),
            ((110, 70, 30), "brown"),
            ((240, 220, 30), "yellow"),
            ((30, 160, 50), "green"),
            ((20, 60, 200), "blue"),
            ((20, 150, 160), "teal"),
            ((120, 40, 160), "purple"),
        ] {
            assert_eq!(simplified_color(rgb.0, rgb.1, rgb.2), name, "{rgb:?}");
        }
    }

    #[test]
    fn a_colour_writes_its_hex_code() {
        let c = DominantColor::new(255, 8, 160, 12.5);
        assert_eq!((c.hex_code.as_str(), c.simplified_color.as_str()), ("#ff08a0", "pink"));
    }

    #[test]
    fn findings_with_labels_only_read_as_they_always_did() {
        let findings: Findings = serde_json::from_str(r#"{"labels":[]}"#).unwrap();
        assert_eq!(findings, Findings::default());
        assert_eq!(serde_json::to_string(&findings).unwrap(), r#"{"labels":[]}"#);
    }
}
