//! One confidence scale for two models. The classifier's (summed) probabilities and the object
//! detector's scores mean different things: NanoDet's scores are trained to track box quality
//! (IoU) and run far lower than a classifier's probabilities (a clearly visible person scores
//! 0.5-0.8). Each model has an operating point, the raw score from which its findings are worth
//! showing, chosen by the evaluation (`cargo bench -p labelq-e2e --bench evaluation`, figures in
//! BENCHMARKS.md). A raw score is mapped linearly in two pieces so that the operating point lands
//! on 55 %, Rekognition's default `MinConfidence`, 0 on 0 and 1 on 1: a default request shows
//! each model's findings from its operating point up, a stricter `MinConfidence` keeps only the
//! stronger ones, a looser one admits weaker ones, and the order of each model's scores is kept.

/// The confidence an operating point maps to: Rekognition's default `MinConfidence`.
pub const AT_OPERATING_POINT: f32 = 0.55;

/// The lowest detector score decoded at all: what a `MinConfidence` near 0 could still show.
pub const OBJECT_FLOOR: f32 = 0.2;

/// Each model's operating point, as a raw score in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// The classifier's summed class probability at which a label counts.
    pub labels: f32,
    /// The detector's score at which an object counts.
    pub objects: f32,
}

impl Calibration {
    /// Chosen by the evaluation (83 photos; BENCHMARKS.md): the most recall with at least 80 % of
    /// the labels shown accepted and a boxed "Person" on every photo with a person clearly visible.
    pub const DEFAULT: Self = Self { labels: 0.60, objects: 0.45 };
}

impl Default for Calibration {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A raw score (0..=1) as a confidence (0..=1), given its model's operating point.
pub fn confidence(score: f32, operating_point: f32) -> f32 {
    let score = if score.is_nan() { 0.0 } else { score.clamp(0.0, 1.0) };
    let point = operating_point.clamp(f32::EPSILON, 1.0 - f32::EPSILON);
    if score >= point {
        AT_OPERATING_POINT + (1.0 - AT_OPERATING_POINT) * (score - point) / (1.0 - point)
    } else {
        AT_OPERATING_POINT * score / point
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operating_point_maps_to_55_percent_and_the_order_is_kept() {
        assert!((confidence(0.35, 0.35) - 0.55).abs() < 1e-6);
        assert!((confidence(1.0, 0.35) - 1.0).abs() < 1e-6);
        assert_eq!(confidence(0.0, 0.35), 0.0);
        assert_eq!(confidence(f32::NAN, 0.35), 0.0);
        let mut last = -1.0;
        for step in 0..=100 {
            let c = confidence(step as f32 / 100.0, 0.35);
            assert!(c > last && (0.0..=1.0).contains(&c));
            last = c;
        }
    }

    #[test]
    fn an_operating_point_of_55_percent_leaves_scores_as_they_are() {
        for s in [0.0, 0.1, 0.3, 0.55, 0.8, 1.0] {
            assert!((confidence(s, 0.55) - s).abs() < 1e-6, "{s}");
        }
    }
}
