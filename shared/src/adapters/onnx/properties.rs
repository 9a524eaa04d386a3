//! Image properties, computed from the decoded pixels without a model, as DetectLabels'
//! IMAGE_PROPERTIES feature reports them. Measured on a copy at most [`SIDE`] pixels on its
//! longer side (every n-th pixel), which keeps the cost under a millisecond and the figures
//! independent of the resolution a photo was saved at:
//!
//! - brightness: the mean luma (Rec. 601), 0 black to 100 white;
//! - contrast: the luma's standard deviation as a share of the largest possible (half the range);
//! - sharpness: the variance of the luma's Laplacian, `100 * (1 - e^(-variance / 500))`, so a
//!   blurred photo scores near 0 and a crisp one near 100 (the scale is ours: Rekognition does
//!   not publish its own);
//! - dominant colours: pixels counted in bins of 8 levels per channel; the most filled bins,
//!   each reported as the mean colour of its pixels, while each holds at least 2 % of them.

use image::RgbImage;

use crate::domain::{DominantColor, ImageProperties, ImageQuality};

/// The longer side of the copy measured.
pub const SIDE: u32 = 256;
const SHARPNESS_SCALE: f32 = 500.0;
const MAX_COLOURS: usize = 5;
const MIN_COLOUR_SHARE: f32 = 0.02;

pub fn measure(image: &RgbImage) -> ImageProperties {
    let step = image.width().max(image.height()).div_ceil(SIDE).max(1);
    let (width, height) = (image.width().div_ceil(step), image.height().div_ceil(step));
    let mut luma = Vec::with_capacity((width * height) as usize);
    let mut bins = vec![(0u32, [0u64; 3]); 512];
    for y in 0..height {
        for x in 0..width {
            let [r, g, b] = image.get_pixel(x * step, y * step).0;
            luma.push(0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b));
            let bin = &mut bins[(usize::from(r >> 5) << 6) | (usize::from(g >> 5) << 3) | usize::from(b >> 5)];
            bin.0 += 1;
            for (sum, v) in bin.1.iter_mut().zip([r, g, b]) {
                *sum += u64::from(v);
            }
        }
    }
    let count = luma.len().max(1) as f32;
    let mean = luma.iter().sum::<f32>() / count;
    let deviation = (luma.iter().map(|l| (l - mean).powi(2)).sum::<f32>() / count).sqrt();
    ImageProperties {
        quality: ImageQuality {
            brightness: (mean / 255.0 * 100.0).clamp(0.0, 100.0),
            sharpness: sharpness(&luma, width as usize, height as usize),
            contrast: (deviation / 127.5 * 100.0).clamp(0.0, 100.0),
        },
        dominant_colors: dominant_colours(bins, count),
    }
}

fn sharpness(luma: &[f32], width: usize, height: usize) -> f32 {
    if width < 3 || height < 3 {
        return 0.0;
    }
    let mut responses = Vec::with_capacity((width - 2) * (height - 2));
    for y in 1..height - 1 {
        for x in 1..width - 1 {
            let at = |dx: isize, dy: isize| luma[(y as isize + dy) as usize * width + (x as isize + dx) as usize];
            responses.push(at(-1, 0) + at(1, 0) + at(0, -1) + at(0, 1) - 4.0 * at(0, 0));
        }
    }
    let n = responses.len() as f32;
    let mean = responses.iter().sum::<f32>() / n;
    let variance = responses.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / n;
    (100.0 * (1.0 - (-variance / SHARPNESS_SCALE).exp())).clamp(0.0, 100.0)
}

fn dominant_colours(mut bins: Vec<(u32, [u64; 3])>, count: f32) -> Vec<DominantColor> {
    bins.sort_by_key(|b| std::cmp::Reverse(b.0));
    bins.into_iter()
        .take(MAX_COLOURS)
        .take_while(|(n, _)| *n as f32 / count >= MIN_COLOUR_SHARE)
        .map(|(n, sums)| {
            let [r, g, b] = sums.map(|s| (s / u64::from(n)) as u8);
            DominantColor::new(r, g, b, n as f32 / count * 100.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_grey_image_is_mid_bright_flat_and_blurred() {
        let image = RgbImage::from_pixel(300, 200, image::Rgb([128, 128, 128]));
        let p = measure(&image);
        assert!((p.quality.brightness - 50.2).abs() < 0.1, "{p:?}");
        assert_eq!((p.quality.contrast, p.quality.sharpness), (0.0, 0.0));
        assert_eq!(p.dominant_colors.len(), 1);
        let grey = &p.dominant_colors[0];
        assert_eq!(
            (grey.hex_code.as_str(), grey.simplified_color.as_str(), grey.pixel_percent),
            ("#808080", "grey", 100.0)
        );
    }

    #[test]
    fn a_fine_checkerboard_is_sharp_and_contrasted_in_black_and_white() {
        let image = RgbImage::from_fn(512, 512, |x, y| {
            // Squares of 2 pixels, so that the half-size copy still alternates.
            if (x / 2 + y / 2) % 2 == 0 { image::Rgb([0, 0, 0]) } else { image::Rgb([255, 255, 255]) }
        });
        let p = measure(&image);
        assert!(p.quality.contrast > 99.0 && p.quality.sharpness > 99.0, "{p:?}");
        let names: Vec<&str> = p.dominant_colors.iter().map(|c| c.simplified_color.as_str()).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"black") && names.contains(&"white"), "{names:?}");
    }

    #[test]
    fn a_mostly_red_image_names_red_first_with_its_share() {
        let image =
            RgbImage::from_fn(
                100,
                100,
                |x, _| if x < 70 { image::Rgb([220, 20, 30]) } else { image::Rgb([20, 40, 200]) },
            );
        let colours = measure(&image).dominant_colors;
        assert_eq!(colours[0].simplified_color, "red");
        assert!((colours[0].pixel_percent - 70.0).abs() < 1.0, "{colours:?}");
        assert_eq!(colours[1].simplified_color, "blue");
    }
}
