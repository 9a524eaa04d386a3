//! The object detector's side of the built-in model: NanoDet (COCO-80) converted to ONNX by
//! `model/prepare.py` as `nanodet.onnx`, input `input` `[1, 3, 416, 416]`, outputs `scores`
//! `[1, N, 80]` (sigmoid already applied) and `distances` `[1, N, 44]`, one row per anchor
//! point: the 52 x 52 points of stride 8, then 26 x 26 of stride 16, then 13 x 13 of stride 32,
//! each row-major.
//!
//! Input: the whole image resized (not cropped: a person at the edge must still be found) to
//! 416 x 416 with bilinear interpolation (half-pixel centres, taps clamped to the edge, horizontal
//! pass first, in `f32`), channels in B, G, R order, each `(v - mean) / std` with NanoDet's
//! training statistics. `model/reference.py --objects` computes the same in numpy.
//!
//! Output: each point's distances to the box's left, top, right and bottom edges are four
//! distributions over 11 bins (softmax, expectation, times the stride) measured from the point's
//! centre `((x + 0.5) * stride, (y + 0.5) * stride)`. A point whose best class scores at least the
//! threshold is a candidate; candidates are reduced per class by non-maximum suppression.
//! Because the image was resized without keeping its aspect, a box's ratios of the 416-pixel
//! square are its ratios of the original image.

use image::RgbImage;

use super::resize::{self, Region};
use crate::domain::BoundingBox;

pub const SIDE: usize = 416;
pub const CLASSES: usize = 80;
const BINS: usize = 11;
const STRIDES: [usize; 3] = [8, 16, 32];
const MEAN_BGR: [f32; 3] = [103.53, 116.28, 123.675];
const STD_BGR: [f32; 3] = [57.375, 57.12, 58.395];
/// Boxes of one class overlapping more than this are one object.
const NMS_IOU: f32 = 0.5;
/// The most candidates kept before suppression: the most confident, enough for any photo.
const MAX_CANDIDATES: usize = 200;

/// The anchor points of all strides, in output order.
pub fn positions() -> usize {
    STRIDES.iter().map(|s| SIDE.div_ceil(*s).pow(2)).sum()
}

/// One detected object: a COCO class index, the model's score (0..=1) and its box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub score: f32,
    pub bounding_box: BoundingBox,
}

/// Turns an upright RGB image into the detector's `[1, 3, 416, 416]` input, row-major.
pub fn to_input(image: &RgbImage) -> Vec<f32> {
    let mut planes = resize::bgr_planes(image, Region::whole(image), SIDE, SIDE);
    for (bgr, plane) in planes.chunks_exact_mut(SIDE * SIDE).enumerate() {
        for v in plane {
            *v = (*v - MEAN_BGR[bgr]) / STD_BGR[bgr];
        }
    }
    planes
}

/// The expected distance of one side, in bins: softmax over the bins, then its mean.
fn expected_bin(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut total, mut weighted) = (0f32, 0f32);
    for (bin, &logit) in logits.iter().enumerate() {
        let e = (logit - max).exp();
        total += e;
        weighted += e * bin as f32;
    }
    if total > 0.0 && total.is_finite() { weighted / total } else { 0.0 }
}

/// Decodes the two outputs into the objects scoring at least `threshold`, most confident first.
/// Returns `None` if the outputs do not have the sizes the graph contract gives.
pub fn decode(scores: &[f32], distances: &[f32], threshold: f32) -> Option<Vec<Detection>> {
    let n = positions();
    if scores.len() != n * CLASSES || distances.len() != n * 4 * BINS {
        return None;
    }
    let mut candidates = Vec::new();
    let mut point = 0;
    for stride in STRIDES {
        let cells = SIDE.div_ceil(stride);
        for cy in 0..cells {
            for cx in 0..cells {
                let row = &scores[point * CLASSES..(point + 1) * CLASSES];
                let (class, score) = row
                    .iter()
                    .copied()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (c, s)| if s > best.1 { (c, s) } else { best });
                if score >= threshold {
                    let d = &distances[point * 4 * BINS..(point + 1) * 4 * BINS];
                    let side = |k: usize| expected_bin(&d[k * BINS..(k + 1) * BINS]) * stride as f32;
                    let (x, y) = ((cx as f32 + 0.5) * stride as f32, (cy as f32 + 0.5) * stride as f32);
                    let limit = SIDE as f32;
                    let (x0, y0) = ((x - side(0)).max(0.0), (y - side(1)).max(0.0));
                    let (x1, y1) = ((x + side(2)).min(limit), (y + side(3)).min(limit));
                    if x1 > x0 && y1 > y0 {
                        let bounding_box = BoundingBox {
                            left: x0 / limit,
                            top: y0 / limit,
                            width: (x1 - x0) / limit,
                            height: (y1 - y0) / limit,
                        };
                        candidates.push(Detection { class, score: score.min(1.0), bounding_box });
                    }
                }
                point += 1;
            }
        }
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.truncate(MAX_CANDIDATES);
    let mut kept: Vec<Detection> = Vec::new();
    for candidate in candidates {
        let overlaps =
            kept.iter().any(|k| k.class == candidate.class && iou(&k.bounding_box, &candidate.bounding_box) > NMS_IOU);
        if !overlaps {
            kept.push(candidate);
        }
    }
    Some(kept)
}

/// Intersection over union of two boxes.
pub fn iou(a: &BoundingBox, b: &BoundingBox) -> f32 {
    let ix = ((a.left + a.width).min(b.left + b.width) - a.left.max(b.left)).max(0.0);
    let iy = ((a.top + a.height).min(b.top + b.height) - a.top.max(b.top)).max(0.0);
    let inter = ix * iy;
    let union = a.width * a.height + b.width * b.height - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

    fn bbox(left: f32, top: f32, width: f32, height: f32) -> BoundingBox {
        BoundingBox { left, top, width, height }
    }

    #[test]
    fn there_are_3549_anchor_points() {
        assert_eq!(positions(), 52 * 52 + 26 * 26 + 13 * 13);
    }

    #[test]
    fn a_flat_image_maps_to_flat_bgr_planes() {
        let image = ImageBuffer::from_pixel(300, 200, Rgb([200u8, 100, 50]));
        let input = to_input(&image);
        assert_eq!(input.len(), 3 * SIDE * SIDE);
        let plane = |c: usize| &input[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
        // Plane 0 is blue, plane 2 red.
        assert!(plane(0).iter().all(|v| (v - (50.0 - 103.53) / 57.375).abs() < 1e-5));
        assert!(plane(2).iter().all(|v| (v - (200.0 - 123.675) / 58.395).abs() < 1e-5));
    }

    #[test]
    fn one_confident_point_decodes_to_its_box() {
        let n = positions();
        let mut scores = vec![0f32; n * CLASSES];
        let mut distances = vec![0f32; n * 4 * BINS];
        // Stride 8, cell (x 10, y 20): centre (84, 164). Class 5 (bus) at 0.9.
        let point = 20 * 52 + 10;
        scores[point * CLASSES + 5] = 0.9;
        // Every side's distribution puts all its weight on bin 2: 2 x 8 = 16 pixels.
        for side in 0..4 {
            distances[point * 44 + side * BINS + 2] = 50.0;
        }
        let found = decode(&scores, &distances, 0.35).unwrap();
        assert_eq!(found.len(), 1);
        let d = found[0];
        assert_eq!((d.class, d.score), (5, 0.9));
        let expected = bbox(68.0 / 416.0, 148.0 / 416.0, 32.0 / 416.0, 32.0 / 416.0);
        assert!(iou(&d.bounding_box, &expected) > 0.999, "{:?}", d.bounding_box);
    }

    #[test]
    fn overlapping_boxes_of_one_class_are_one_object_but_other_classes_stay() {
        let n = positions();
        let mut scores = vec![0f32; n * CLASSES];
        let distances = vec![0f32; n * 4 * BINS];
        // Two neighbouring points with uniform distances (5 bins each side: 40 px) overlap.
        for (point, class, score) in [(1000, 0, 0.8), (1001, 0, 0.6), (52 * 52 + 300, 2, 0.5)] {
            scores[point * CLASSES + class] = score;
        }
        let found = decode(&scores, &distances, 0.35).unwrap();
        let got: Vec<(usize, f32)> = found.iter().map(|d| (d.class, d.score)).collect();
        assert_eq!(got, [(0, 0.8), (2, 0.5)]);
    }

    #[test]
    fn outputs_of_the_wrong_size_are_refused() {
        assert!(decode(&[0.0; 10], &[0.0; 44], 0.35).is_none());
    }

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = bbox(0.0, 0.0, 0.5, 0.5);
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(iou(&a, &bbox(0.6, 0.6, 0.2, 0.2)), 0.0);
        assert!((iou(&a, &bbox(0.25, 0.0, 0.5, 0.5)) - 1.0 / 3.0).abs() < 1e-6);
    }
}
