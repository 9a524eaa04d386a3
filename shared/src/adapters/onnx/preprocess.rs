//! EfficientNet-Lite0's input, computed exactly as the Python reference does
//! (`model/reference.py`, specified in `model/README.md`):
//!
//! 1. centre crop: `s = floor(0.875 * min(h, w))`, `top = (h - s + 1) / 2`, `left = (w - s + 1) / 2`;
//! 2. resize the `s x s` crop to 224 x 224 with separable bicubic interpolation (Keys kernel,
//!    a = -0.5, i.e. Catmull-Rom), half-pixel centres, taps clamped to the edge, no antialiasing,
//!    horizontal pass first, in `f32`, neither rounded nor clamped;
//! 3. `x = (v - 127) / 128`, laid out NCHW.
//!
//! The crop-then-resize keeps the image's centre at the model's training aspect, as the original
//! EfficientNet-Lite evaluation does.

use image::RgbImage;

pub const SIDE: usize = 224;
const CHANNELS: usize = 3;

/// The 4-tap weights and first tap index for each output coordinate of a 1-D resize.
struct Taps {
    first: Vec<isize>,
    weights: Vec<[f32; 4]>,
}

fn keys(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

fn taps(src_len: usize, dst_len: usize) -> Taps {
    let scale = src_len as f32 / dst_len as f32;
    let (mut first, mut weights) = (Vec::with_capacity(dst_len), Vec::with_capacity(dst_len));
    for dst in 0..dst_len {
        let centre = (dst as f32 + 0.5) * scale - 0.5;
        let base = centre.floor();
        let t = centre - base;
        first.push(base as isize - 1);
        weights.push([keys(1.0 + t), keys(t), keys(1.0 - t), keys(2.0 - t)]);
    }
    Taps { first, weights }
}

fn clamp(i: isize, len: usize) -> usize {
    i.clamp(0, len as isize - 1) as usize
}

/// The square centre crop, as (left, top, side).
pub fn centre_crop(width: u32, height: u32) -> (usize, usize, usize) {
    let (w, h) = (width as usize, height as usize);
    let side = w.min(h) * 7 / 8;
    ((w - side).div_ceil(2), (h - side).div_ceil(2), side.max(1))
}

/// Turns an upright RGB image into the model's `[1, 3, 224, 224]` input, row-major.
pub fn to_input(image: &RgbImage) -> Vec<f32> {
    let (left, top, side) = centre_crop(image.width(), image.height());
    let taps = taps(side, SIDE);
    let pixels = image.as_raw();
    let stride = image.width() as usize * CHANNELS;

    // Horizontal pass over the crop's rows: side x 224 x 3, interleaved.
    let mut rows = vec![0f32; side * SIDE * CHANNELS];
    for y in 0..side {
        let row = &pixels[(top + y) * stride..(top + y + 1) * stride];
        for (x, (first, w)) in taps.first.iter().zip(&taps.weights).enumerate() {
            for c in 0..CHANNELS {
                let mut acc = 0f32;
                for (k, wk) in w.iter().enumerate() {
                    let sx = left + clamp(first + k as isize, side);
                    acc += wk * f32::from(row[sx * CHANNELS + c]);
                }
                rows[(y * SIDE + x) * CHANNELS + c] = acc;
            }
        }
    }

    // Vertical pass, normalising and writing planar (NCHW).
    let mut out = vec![0f32; CHANNELS * SIDE * SIDE];
    for (y, (first, w)) in taps.first.iter().zip(&taps.weights).enumerate() {
        for x in 0..SIDE {
            for c in 0..CHANNELS {
                let mut acc = 0f32;
                for (k, wk) in w.iter().enumerate() {
                    let sy = clamp(first + k as isize, side);
                    acc += wk * rows[(sy * SIDE + x) * CHANNELS + c];
                }
                out[c * SIDE * SIDE + y * SIDE + x] = (acc - 127.0) / 128.0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

    #[test]
    fn the_kernel_is_catmull_rom() {
        assert_eq!(keys(0.0), 1.0);
        assert_eq!(keys(1.0), 0.0);
        assert_eq!(keys(2.0), 0.0);
        assert!((keys(0.5) - 0.5625).abs() < 1e-6);
        assert!((keys(1.5) + 0.0625).abs() < 1e-6);
        // The four weights sum to one at any phase: a flat image stays flat.
        for t in [0.0, 0.1, 0.5, 0.9] {
            let sum = keys(1.0 + t) + keys(t) + keys(1.0 - t) + keys(2.0 - t);
            assert!((sum - 1.0).abs() < 1e-6, "{t}: {sum}");
        }
    }

    #[test]
    fn the_crop_is_the_centred_seven_eighths_square() {
        assert_eq!(centre_crop(451, 300), (95, 19, 262));
        assert_eq!(centre_crop(256, 256), (16, 16, 224));
        assert_eq!(centre_crop(300, 451), (19, 95, 262));
    }

    #[test]
    fn a_flat_image_maps_to_a_flat_normalised_tensor() {
        let image = ImageBuffer::from_pixel(300, 200, Rgb([255u8, 127, 0]));
        let input = to_input(&image);
        assert_eq!(input.len(), 3 * 224 * 224);
        let plane = |c: usize| &input[c * 224 * 224..(c + 1) * 224 * 224];
        assert!(plane(0).iter().all(|v| (v - 1.0).abs() < 1e-5));
        assert!(plane(1).iter().all(|v| v.abs() < 1e-5));
        assert!(plane(2).iter().all(|v| (v + 127.0 / 128.0).abs() < 1e-5));
    }

    #[test]
    fn an_exact_size_crop_is_copied_through_unchanged() {
        // 256 px -> a 224 px crop -> scale 1: every tap lands on a pixel with weight 1.
        let image = ImageBuffer::from_fn(256, 256, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let input = to_input(&image);
        let at = |c: usize, y: usize, x: usize| input[c * 224 * 224 + y * 224 + x] * 128.0 + 127.0;
        assert!((at(0, 10, 30) - 46.0).abs() < 1e-3);
        assert!((at(1, 10, 30) - 26.0).abs() < 1e-3);
        assert!((at(2, 100, 100) - 7.0).abs() < 1e-3);
    }
}
