//! Bilinear resizing of a region of an RGB image into planar B, G, R `f32` values (0..=255):
//! the input the object detector and both text models take before their own normalisation.
//! Half-pixel centres, taps clamped to the region's edge, the horizontal pass first; no
//! anti-aliasing, as `model/reference.py` computes it in numpy.

use image::RgbImage;

/// A rectangle of the image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub left: usize,
    pub top: usize,
    pub width: usize,
    pub height: usize,
}

impl Region {
    pub fn whole(image: &RgbImage) -> Self {
        Self { left: 0, top: 0, width: image.width() as usize, height: image.height() as usize }
    }
}

/// For each output coordinate of a 1-D resize of `src` samples starting at `offset`: the two
/// source taps and the second's weight.
fn taps(offset: usize, src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let scale = src as f32 / dst as f32;
    let last = src.saturating_sub(1) as f32;
    (0..dst)
        .map(|d| {
            let centre = ((d as f32 + 0.5) * scale - 0.5).clamp(0.0, last);
            let lo = centre.floor();
            let lo_index = lo as usize;
            (offset + lo_index, offset + (lo_index + 1).min(src.saturating_sub(1)), centre - lo)
        })
        .collect()
}

/// `region` of `image` resized to `width` x `height`, as three planes B, G, R, row-major.
/// The region must lie inside the image and not be empty (callers clamp it).
pub fn bgr_planes(image: &RgbImage, region: Region, width: usize, height: usize) -> Vec<f32> {
    let stride = image.width() as usize * 3;
    let pixels = image.as_raw();
    let across = taps(region.left, region.width, width);
    let down = taps(region.top, region.height, height);

    // Horizontal pass over the region's rows: region.height x width x 3, interleaved RGB.
    let mut rows = vec![0f32; region.height * width * 3];
    for y in 0..region.height {
        let row = &pixels[(region.top + y) * stride..(region.top + y + 1) * stride];
        for (x, &(lo, hi, t)) in across.iter().enumerate() {
            for c in 0..3 {
                let (a, b) = (f32::from(row[lo * 3 + c]), f32::from(row[hi * 3 + c]));
                rows[(y * width + x) * 3 + c] = a * (1.0 - t) + b * t;
            }
        }
    }

    // Vertical pass, writing planar B, G, R.
    let plane = width * height;
    let mut out = vec![0f32; 3 * plane];
    for (y, &(lo, hi, t)) in down.iter().enumerate() {
        let (lo, hi) = (lo - region.top, hi - region.top);
        for x in 0..width {
            for c in 0..3 {
                let (a, b) = (rows[(lo * width + x) * 3 + c], rows[(hi * width + x) * 3 + c]);
                out[(2 - c) * plane + y * width + x] = a * (1.0 - t) + b * t;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_taps_have_half_pixel_centres_and_clamp_at_the_edges() {
        // Upscaling 2 -> 4: centres at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        let t = taps(0, 2, 4);
        assert_eq!(t[0], (0, 1, 0.0));
        assert_eq!(t[1], (0, 1, 0.25));
        assert_eq!(t[2], (0, 1, 0.75));
        assert_eq!(t[3], (1, 1, 0.0));
        assert_eq!(taps(5, 2, 1)[0], (5, 6, 0.5), "offset by the region's start");
    }

    #[test]
    fn a_region_copied_at_its_own_size_is_its_pixels_in_bgr_order() {
        let image = RgbImage::from_fn(4, 3, |x, y| image::Rgb([(10 * x + y) as u8, 100, 200]));
        let region = Region { left: 1, top: 1, width: 2, height: 2 };
        let planes = bgr_planes(&image, region, 2, 2);
        assert_eq!(&planes[..4], [200.0; 4], "blue first");
        assert_eq!(&planes[8..], [11.0, 21.0, 12.0, 22.0], "red last, the region's own pixels");
    }

    #[test]
    fn halving_averages_neighbouring_pixels() {
        let image = RgbImage::from_fn(4, 1, |x, _| image::Rgb([(x * 10) as u8, 0, 0]));
        let planes = bgr_planes(&image, Region::whole(&image), 2, 1);
        assert_eq!(&planes[4..], [5.0, 25.0]);
    }
}
