//! Decoding an untrusted image into RGB pixels, or refusing it with a reason.
//!
//! JPEG (baseline, progressive, grayscale, CMYK) and PNG (8/16-bit, grayscale, alpha, palette) are
//! decoded by the `image` crate, EXIF orientation is applied, and everything ends up as 8-bit RGB.
//! The header's dimensions are checked before a single pixel is decoded, and the decoder's
//! allocations are capped, so a small file that claims to be huge (a decompression bomb) costs
//! nothing.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::domain::image::dimensions;
use crate::domain::{ContentType, FailureCode, ImageLimits};
use crate::ports::DetectError;

/// The most pixels the detector decodes: 40 MP (e.g. 8000 x 5000), about 120 MB as RGB.
pub const MAX_PIXELS: u64 = 40_000_000;

/// Decodes `bytes` as `content_type` into upright RGB.
pub fn decode_rgb(bytes: &[u8], content_type: ContentType, limits: &ImageLimits) -> Result<RgbImage, DetectError> {
    let format = match content_type {
        ContentType::Jpeg => ImageFormat::Jpeg,
        ContentType::Png => ImageFormat::Png,
    };
    if bytes.is_empty() {
        return Err(undecodable("the image is empty (0 bytes)"));
    }
    match ContentType::sniff(bytes) {
        Some(actual) if actual == content_type => {}
        Some(actual) => return Err(undecodable(format!("the data is {actual}, not {content_type}"))),
        None => return Err(undecodable(format!("the data is not a {content_type} image (wrong signature)"))),
    }
    // The header's own claim first: a decompression bomb is refused by its size alone.
    let (width, height) = dimensions(bytes, content_type)
        .ok_or_else(|| undecodable(format!("the {content_type} header is truncated or malformed")))?;
    check_dimensions(width, height, limits)?;
    if content_type == ContentType::Jpeg && !jpeg_is_complete(bytes) {
        // JPEG decoders fill a cut-off scan with grey and carry on; refuse it instead, rather
        // than label half an image.
        return Err(undecodable("the JPEG data is truncated (no end-of-image marker after the image data)"));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // Room for the largest accepted image at 16 bits x 4 channels, plus the decoder's own buffers.
    decoder_limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| classify(e, content_type))?;

    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    let orientation = decoder.orientation().map_err(|e| classify(e, content_type))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| classify(e, content_type))?;
    image.apply_orientation(orientation);
    Ok(to_rgb8(image))
}

/// To 8-bit RGB: grey replicated, alpha dropped (not blended), and 16-bit samples reduced to
/// their high byte, as the Python reference does.
fn to_rgb8(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => {
            let deep = image.to_rgb16();
            let (width, height) = deep.dimensions();
            let high: Vec<u8> = deep.into_raw().into_iter().map(|v| (v >> 8) as u8).collect();
            RgbImage::from_raw(width, height, high).unwrap_or_else(|| RgbImage::new(width, height))
        }
        other => other.to_rgb8(),
    }
}

/// Whether a JPEG's image data is followed by an end-of-image marker. Walks the marker segments
/// to the first start-of-scan (skipping APPn segments, which may hold a thumbnail with its own
/// EOI), then looks for EOI: inside scan data 0xFF is always stuffed, so `FF D9` there can only be
/// the real end. Data appended after the EOI (motion photos) is fine.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut at = 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return false;
        }
        let marker = bytes[at + 1];
        match marker {
            0xFF => at += 1,
            0x01 | 0xD0..=0xD7 => at += 2,
            0xDA => return bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
            0xD9 => return false,
            _ => {
                let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
                at += 2 + len;
            }
        }
    }
    false
}

fn check_dimensions(width: u32, height: u32, limits: &ImageLimits) -> Result<(), DetectError> {
    let too_small = width < limits.min_side || height < limits.min_side;
    if too_small {
        return Err(DetectError::permanent(
            FailureCode::UnsupportedImage,
            format!("the image is {width}x{height} px; each side must be at least {} px", limits.min_side),
        ));
    }
    if width > limits.max_side || height > limits.max_side || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(DetectError::permanent(
            FailureCode::ImageTooLarge,
            format!(
                "the image is {width}x{height} px; the limit is {} px per side and {} megapixels",
                limits.max_side,
                MAX_PIXELS / 1_000_000
            ),
        ));
    }
    Ok(())
}

fn undecodable(message: impl Into<String>) -> DetectError {
    DetectError::permanent(FailureCode::ImageUndecodable, message)
}

/// Every decode failure is about the image, so permanent; the code says which kind.
fn classify(e: image::ImageError, content_type: ContentType) -> DetectError {
    use image::ImageError as E;
    let (code, message) = match &e {
        E::Limits(_) => (FailureCode::ImageTooLarge, format!("the image exceeds the decoder's limits: {e}")),
        E::Unsupported(_) => (FailureCode::UnsupportedImage, format!("unsupported {content_type} variant: {e}")),
        E::Decoding(_) | E::IoError(_) | E::Parameter(_) | E::Encoding(_) => {
            (FailureCode::ImageUndecodable, format!("the {content_type} data is corrupt or truncated: {e}"))
        }
    };
    DetectError::Permanent { code, message, source: Some(Box::new(e)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]))
    }

    fn code_of(result: Result<RgbImage, DetectError>) -> FailureCode {
        match result {
            Err(DetectError::Permanent { code, .. }) => code,
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[test]
    fn decodes_png_variants_to_rgb() {
        let limits = ImageLimits::default();
        let variants = [
            DynamicImage::ImageRgb8(gradient(100, 90)),
            DynamicImage::ImageRgba8(ImageBuffer::from_pixel(100, 90, Rgba([10, 20, 30, 0]))),
            DynamicImage::ImageLuma8(ImageBuffer::from_pixel(100, 90, Luma([77]))),
            DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(100, 90, LumaA([77, 200]))),
            DynamicImage::ImageRgb16(ImageBuffer::from_pixel(100, 90, Rgb([65535, 0, 32896]))),
        ];
        for image in variants {
            let color = image.color();
            let rgb = decode_rgb(&encode(image, ImageFormat::Png), ContentType::Png, &limits).unwrap();
            assert_eq!(rgb.dimensions(), (100, 90), "{color:?}");
        }
        let gray = decode_rgb(
            &encode(DynamicImage::ImageLuma8(ImageBuffer::from_pixel(100, 90, Luma([77]))), ImageFormat::Png),
            ContentType::Png,
            &limits,
        )
        .unwrap();
        assert_eq!(gray.get_pixel(5, 5), &Rgb([77, 77, 77]), "grey is replicated");
        let deep = decode_rgb(
            &encode(
                DynamicImage::ImageRgb16(ImageBuffer::from_pixel(100, 90, Rgb([65535, 0, 32896]))),
                ImageFormat::Png,
            ),
            ContentType::Png,
            &limits,
        )
        .unwrap();
        assert_eq!(deep.get_pixel(0, 0), &Rgb([255, 0, 128]), "16-bit keeps the high byte");
    }

    #[test]
    fn truncated_and_corrupt_files_are_permanent_errors() {
        let limits = ImageLimits::default();
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let ct = if format == ImageFormat::Png { ContentType::Png } else { ContentType::Jpeg };
            let full = encode(DynamicImage::ImageRgb8(gradient(120, 100)), format);
            let truncated = &full[..full.len() / 2];
            assert_eq!(code_of(decode_rgb(truncated, ct, &limits)), FailureCode::ImageUndecodable, "{ct} truncated");
            let mut corrupt = full.clone();
            for b in corrupt.iter_mut().skip(40).step_by(7) {
                *b ^= 0x5A;
            }
            assert!(decode_rgb(&corrupt, ct, &limits).is_err(), "{ct} corrupt");
            assert_eq!(code_of(decode_rgb(&[], ct, &limits)), FailureCode::ImageUndecodable);
            assert!(decode_rgb(b"definitely not an image", ct, &limits).is_err());
        }
    }

    #[test]
    fn tiny_and_oversized_images_are_refused_before_decoding() {
        let limits = ImageLimits::default();
        let one = encode(DynamicImage::ImageRgb8(gradient(1, 1)), ImageFormat::Png);
        assert_eq!(code_of(decode_rgb(&one, ContentType::Png, &limits)), FailureCode::UnsupportedImage);

        // A valid PNG header claiming 20000 x 20000 px, with no pixel data behind it.
        let mut bomb = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        bomb.extend_from_slice(&20_000u32.to_be_bytes());
        bomb.extend_from_slice(&20_000u32.to_be_bytes());
        bomb.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32(&bomb[12..]);
        bomb.extend_from_slice(&crc.to_be_bytes());
        let code = code_of(decode_rgb(&bomb, ContentType::Png, &limits));
        assert_eq!(code, FailureCode::ImageTooLarge);
    }

    /// CRC-32 (IEEE) for hand-built PNG chunks.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
