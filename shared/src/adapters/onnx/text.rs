//! The text side of the built-in model: PP-OCRv4's detector and recogniser (Apache-2.0, the
//! ONNX files of the PyPI wheel `rapidocr-onnxruntime`, copied unchanged by `model/prepare.py`).
//!
//! Detection: the image, its longer side brought down to at most [`SIDE`] and both sides to
//! multiples of 32, goes in as planar B, G, R scaled to -1..1; out comes a map, one probability
//! per input pixel that the pixel is inside text. Where the lines found are small print (their
//! median height under [`SMALL_PRINT`] map pixels, as on a page of text), detection runs again at
//! [`FINE_SIDE`], which finds the lines a reader can then read: a page costs more than a photo,
//! in proportion to what it holds. Pixels above [`PIXEL_THRESHOLD`] are joined
//! into 8-connected regions; a region whose mean probability is at least [`BOX_THRESHOLD`] is a
//! line. The detector was trained to mark a shrunken core of each line (DB's "shrink"), so the
//! region's box grows on every side by `area * UNCLIP_RATIO / perimeter`, as the published
//! post-processing does, before it is mapped back onto the image. Boxes are upright: text at
//! a slant gets a box around it, and is read less well.
//!
//! Recognition, only where detection found lines: each line's box, cut from the full-resolution
//! image, resized to [`LINE_HEIGHT`] pixels high (its width to keep the aspect), scaled to -1..1
//! as above; out comes a distribution over the character list per column step, read greedily
//! (CTC: the best character of each step, repeats merged, blanks dropped). A line's confidence
//! is the mean probability of the characters it kept. `model/reference.py --text` computes the
//! same in numpy.

use image::RgbImage;

use super::resize::{self, Region};
use crate::domain::{BoundingBox, Confidence, TextDetection};

pub const DETECTOR_FILE: &str = "text-detector.onnx";
pub const RECOGNISER_FILE: &str = "text-recogniser.onnx";
/// The recogniser's characters, one per line, as its ONNX metadata key `character` lists them.
pub const CHARACTERS_FILE: &str = "text-characters.txt";
pub const INPUT: &str = "x";
pub const DETECTOR_OUTPUT: &str = "sigmoid_0.tmp_0";
pub const RECOGNISER_OUTPUT: &str = "softmax_11.tmp_0";

/// The longest side the detector sees first. Larger finds smaller print but costs time in
/// proportion to the pixels (see BENCHMARKS.md).
pub const SIDE: usize = 640;
/// The longest side of the second look, for small print.
pub const FINE_SIDE: usize = 1280;
/// Lines this many map pixels high or less (the median, grown boxes) are small print at [`SIDE`].
pub const SMALL_PRINT: f32 = 18.0;
const PIXEL_THRESHOLD: f32 = 0.3;
const BOX_THRESHOLD: f32 = 0.5;
const UNCLIP_RATIO: f32 = 1.6;
/// Regions thinner than this many map pixels are specks, not lines.
const MIN_REGION_SIDE: usize = 3;
pub const LINE_HEIGHT: usize = 48;
/// The widest line image the recogniser gets (30 times its height); wider lines are squeezed.
const MAX_LINE_WIDTH: usize = LINE_HEIGHT * 30;
/// The most lines read per image: the largest, since reading costs time per line.
pub const MAX_LINES: usize = 50;
/// Lines read less confidently than this are noise (texture the detector took for print).
/// RapidOCR keeps lines from 0.5; on our test photos that let a single "O" read at 0.58 off a
/// cup's rim through, while every real line, single letters included, read at 0.8 or more.
/// Chosen by eye on those photos, not yet by the evaluation set.
pub const LINE_FLOOR: f32 = 0.7;

/// The recogniser's classes: the CTC blank, the characters of [`CHARACTERS_FILE`], a space.
#[derive(Debug, Clone)]
pub struct Characters(Vec<String>);

impl Characters {
    pub fn parse(list: &str) -> Self {
        let mut classes = vec![String::new()];
        classes.extend(list.lines().map(str::to_owned));
        classes.push(" ".to_owned());
        Self(classes)
    }

    /// How many classes the recogniser's output must have.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() <= 2
    }
}

/// The detector's input size for an image seen with its longer side at most `side`:
/// `(width, height)`, each a multiple of 32.
pub fn detector_size(width: u32, height: u32, side: usize) -> (usize, usize) {
    let longer = width.max(height).max(1) as f32;
    let scale = (side as f32 / longer).min(1.0);
    let side = |v: u32| (((v as f32 * scale) / 32.0).round() as usize).max(1) * 32;
    (side(width), side(height))
}

/// Planar B, G, R values scaled from 0..=255 to -1..=1, as both models take them.
fn to_unit(mut planes: Vec<f32>) -> Vec<f32> {
    for v in &mut planes {
        *v = *v / 127.5 - 1.0;
    }
    planes
}

/// The detector's `[1, 3, height, width]` input for an upright image seen at `side`, with its size.
pub fn detector_input(image: &RgbImage, side: usize) -> (Vec<f32>, usize, usize) {
    let (width, height) = detector_size(image.width(), image.height(), side);
    (to_unit(resize::bgr_planes(image, Region::whole(image), width, height)), width, height)
}

/// Whether lines found at [`SIDE`] are small print worth a second look at [`FINE_SIDE`]: some
/// were found, their median height is small, and the image has the pixels to show more.
pub fn needs_closer_look(lines: &[Candidate], image: (u32, u32)) -> bool {
    let mut heights: Vec<f32> = lines.iter().map(|c| c.bottom - c.top).collect();
    heights.sort_by(f32::total_cmp);
    let larger = detector_size(image.0, image.1, FINE_SIDE) != detector_size(image.0, image.1, SIDE);
    larger && heights.get(heights.len() / 2).is_some_and(|&median| median <= SMALL_PRINT)
}

/// A line the detector found: its box in map pixels (grown), and its mean probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
    pub score: f32,
}

/// The lines in a `width` x `height` probability map. `None` if the map is not that size.
pub fn find_lines(map: &[f32], width: usize, height: usize) -> Option<Vec<Candidate>> {
    if map.len() != width * height {
        return None;
    }
    let mut seen = vec![false; map.len()];
    let mut stack = Vec::new();
    let mut found = Vec::new();
    for start in 0..map.len() {
        if seen[start] || map[start] <= PIXEL_THRESHOLD {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut left, mut right, mut top, mut bottom) = (usize::MAX, 0, usize::MAX, 0);
        let (mut total, mut count) = (0f32, 0usize);
        while let Some(at) = stack.pop() {
            let (x, y) = (at % width, at / width);
            left = left.min(x);
            right = right.max(x);
            top = top.min(y);
            bottom = bottom.max(y);
            total += map[at];
            count += 1;
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let next = ny * width + nx;
                    if !seen[next] && map[next] > PIXEL_THRESHOLD {
                        seen[next] = true;
                        stack.push(next);
                    }
                }
            }
        }
        let (w, h) = (right + 1 - left, bottom + 1 - top);
        let score = total / count as f32;
        if w.min(h) < MIN_REGION_SIDE || score < BOX_THRESHOLD {
            continue;
        }
        let (w, h) = (w as f32, h as f32);
        let grow = w * h * UNCLIP_RATIO / (2.0 * (w + h));
        found.push(Candidate {
            left: (left as f32 - grow).max(0.0),
            top: (top as f32 - grow).max(0.0),
            right: (right as f32 + 1.0 + grow).min(width as f32),
            bottom: (bottom as f32 + 1.0 + grow).min(height as f32),
            score,
        });
    }
    Some(found)
}

/// The largest [`MAX_LINES`] candidates, mapped from a `map` of the given size onto the image,
/// as pixel regions (never empty) in reading order: top to bottom, and left to right along a line.
pub fn line_regions(mut lines: Vec<Candidate>, map: (usize, usize), image: (u32, u32)) -> Vec<Region> {
    let area = |c: &Candidate| (c.right - c.left) * (c.bottom - c.top);
    lines.sort_by(|a, b| area(b).total_cmp(&area(a)));
    lines.truncate(MAX_LINES);
    let (sx, sy) = (image.0 as f32 / map.0 as f32, image.1 as f32 / map.1 as f32);
    let mut regions: Vec<Region> = lines
        .iter()
        .filter_map(|c| {
            let left = ((c.left * sx).floor() as usize).min(image.0 as usize - 1);
            let top = ((c.top * sy).floor() as usize).min(image.1 as usize - 1);
            let right = ((c.right * sx).ceil() as usize).clamp(left + 1, image.0 as usize);
            let bottom = ((c.bottom * sy).ceil() as usize).clamp(top + 1, image.1 as usize);
            (right > left && bottom > top).then_some(Region { left, top, width: right - left, height: bottom - top })
        })
        .collect();
    regions.sort_by_key(|r| (r.top, r.left));
    // Lines side by side (columns, or a line broken by a gap) start at slightly different
    // heights: within half a line's height of each other, the one further left comes first.
    for i in 1..regions.len() {
        let mut j = i;
        while j > 0 {
            let (a, b) = (regions[j - 1], regions[j]);
            let near = b.top.abs_diff(a.top) * 2 < a.height.min(b.height);
            if near && b.left < a.left {
                regions.swap(j - 1, j);
                j -= 1;
            } else {
                break;
            }
        }
    }
    regions
}

/// The recogniser's `[1, 3, LINE_HEIGHT, width]` input for one line, with its width.
pub fn recogniser_input(image: &RgbImage, line: Region) -> (Vec<f32>, usize) {
    let aspect = line.width as f32 / line.height as f32;
    let width = ((LINE_HEIGHT as f32 * aspect).ceil() as usize).clamp(8, MAX_LINE_WIDTH);
    (to_unit(resize::bgr_planes(image, line, width, LINE_HEIGHT)), width)
}

/// Reads one line from the recogniser's `[1, steps, classes]` output: its text (spaces
/// collapsed, trimmed) and confidence, or `None` if it read nothing, or nothing but marks: a
/// "line" without a letter or a digit ("**", "·", "--") is texture the detector took for print
/// far more often than it is text.
pub fn read_line(probabilities: &[f32], characters: &Characters) -> Option<(String, f32)> {
    let classes = characters.len();
    if classes == 0 || !probabilities.len().is_multiple_of(classes) {
        return None;
    }
    let (mut text, mut total, mut kept, mut previous) = (String::new(), 0f32, 0usize, 0usize);
    for step in probabilities.chunks_exact(classes) {
        let (best, p) = step
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, p)| if p > best.1 { (i, p) } else { best });
        if best != 0 && best != previous {
            text.push_str(&characters.0[best]);
            total += p;
            kept += 1;
        }
        previous = best;
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let legible = text.chars().any(char::is_alphanumeric);
    (legible && kept > 0).then(|| (text, total / kept as f32))
}

/// A line read from `line` of an image of the given size, as the job shows it.
pub fn detection(text: String, confidence: f32, line: Region, image: (u32, u32)) -> TextDetection {
    let (w, h) = (image.0 as f32, image.1 as f32);
    TextDetection {
        detected_text: text,
        confidence: Confidence::from_probability(confidence),
        bounding_box: BoundingBox {
            width: line.width as f32 / w,
            height: line.height as f32 / h,
            left: line.left as f32 / w,
            top: line.top as f32 / h,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detector_sees_the_longer_side_at_most_640_in_multiples_of_32() {
        assert_eq!(detector_size(4000, 3000, SIDE), (640, 480));
        assert_eq!(detector_size(810, 1080, SIDE), (480, 640));
        assert_eq!(detector_size(100, 50, SIDE), (96, 64), "small images are not enlarged");
        assert_eq!(detector_size(10, 10, SIDE), (32, 32));
        assert_eq!(detector_size(2550, 3300, FINE_SIDE), (992, 1280));
    }

    #[test]
    fn small_print_on_a_large_image_gets_a_second_look() {
        let line = |height: f32| Candidate { left: 0.0, top: 0.0, right: 100.0, bottom: height, score: 0.9 };
        let page = [line(12.0), line(15.0), line(40.0)];
        assert!(needs_closer_look(&page, (2550, 3300)));
        assert!(!needs_closer_look(&page, (500, 600)), "no more pixels to see");
        assert!(!needs_closer_look(&[line(26.0), line(38.0)], (810, 1080)), "a sign is read at once");
        assert!(!needs_closer_look(&[], (2550, 3300)), "no text, no second look");
    }

    #[test]
    fn a_blob_of_confident_pixels_is_one_grown_line_and_specks_are_not() {
        let (w, h) = (40, 20);
        let mut map = vec![0f32; w * h];
        for y in 8..12 {
            for x in 5..25 {
                map[y * w + x] = 0.9;
            }
        }
        map[2 * w + 35] = 0.9; // a speck
        let lines = find_lines(&map, w, h).unwrap();
        assert_eq!(lines.len(), 1);
        let line = lines[0];
        // 20 x 4: grows by 80 * 1.6 / 48 = 2.67 on each side.
        assert!((line.left - 2.333).abs() < 1e-3 && (line.right - 27.667).abs() < 1e-3, "{line:?}");
        assert!((line.top - 5.333).abs() < 1e-3 && (line.bottom - 14.667).abs() < 1e-3, "{line:?}");
        assert!((line.score - 0.9).abs() < 1e-6);
        assert!(find_lines(&map, w, h + 1).is_none(), "a map of the wrong size");
    }

    #[test]
    fn a_faint_region_is_not_a_line() {
        let map = vec![0.4f32; 100];
        assert!(find_lines(&map, 10, 10).unwrap().is_empty());
    }

    #[test]
    fn lines_come_in_reading_order_in_image_pixels() {
        let c = |left: f32, top: f32, right: f32, bottom: f32| Candidate { left, top, right, bottom, score: 0.9 };
        // A second column a pixel higher than the first, and a line below both.
        let lines = vec![c(50.0, 9.0, 90.0, 19.0), c(0.0, 30.0, 40.0, 40.0), c(0.0, 10.0, 40.0, 20.0)];
        let regions = line_regions(lines, (100, 50), (200, 100));
        let tops: Vec<(usize, usize)> = regions.iter().map(|r| (r.left, r.top)).collect();
        assert_eq!(tops, [(0, 20), (100, 18), (0, 60)]);
        assert_eq!((regions[0].width, regions[0].height), (80, 20));
    }

    #[test]
    fn greedy_decoding_merges_repeats_and_drops_blanks() {
        let characters = Characters::parse("a\nb");
        assert_eq!(characters.len(), 4, "blank, a, b, space");
        let step = |class: usize, p: f32| {
            let mut row = vec![(1.0 - p) / 3.0; 4];
            row[class] = p;
            row
        };
        // a a blank a b space space b -> "aab b"
        let steps = [step(1, 0.9), step(1, 0.9), step(0, 0.9), step(1, 0.7), step(2, 0.8), step(3, 0.9)];
        let steps = [&steps[..], &[step(3, 0.9), step(2, 0.6)]].concat();
        let (text, confidence) = read_line(&steps.concat(), &characters).unwrap();
        assert_eq!(text, "aab b");
        assert!((confidence - (0.9 + 0.7 + 0.8 + 0.9 + 0.6) / 5.0).abs() < 1e-6);
        assert_eq!(read_line(&[step(0, 0.9), step(3, 0.9)].concat(), &characters), None, "only a space");
        let marks = Characters::parse("*\n·");
        assert_eq!(read_line(&[step(1, 0.9), step(0, 0.9), step(1, 0.9), step(2, 0.9)].concat(), &marks), None);
        assert_eq!(read_line(&[0.5; 5], &characters), None, "not a whole number of steps");
    }
}
