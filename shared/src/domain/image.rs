//! What the API accepts as an image, checked from the bytes' header alone.
//!
//! The request path must refuse bad input before anything is written, and must stay cheap: it
//! reads the signature and the dimensions from the PNG `IHDR` chunk or the JPEG `SOFn` segment,
//! never decodes pixels. The limits mirror Rekognition DetectLabels (JPEG or PNG, 80..=10000 px per
//! side), so an accepted image is one the AWS detector can also take.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The image formats labelq accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum ContentType {
    #[serde(rename = "image/jpeg")]
    Jpeg,
    #[serde(rename = "image/png")]
    Png,
}

impl ContentType {
    pub fn as_mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }

    /// Parses a `Content-Type` header value, ignoring parameters and case.
    pub fn from_mime(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("image/jpeg") {
            Some(Self::Jpeg)
        } else if essence.eq_ignore_ascii_case("image/png") {
            Some(Self::Png)
        } else {
            None
        }
    }

    /// The format the bytes' signature says they are, if any we accept.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(PNG_SIGNATURE) {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else {
            None
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_mime())
    }
}

/// Size limits for an accepted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_bytes: usize,
    pub min_side: u32,
    pub max_side: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_bytes: 5 * 1024 * 1024, min_side: 80, max_side: 10_000 }
    }
}

/// What the header says about an accepted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub content_type: ContentType,
    pub width: u32,
    pub height: u32,
}

/// Why an upload was refused. Each variant is a client error with its own stable problem type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRejection {
    #[error("the request body is empty")]
    Empty,
    #[error("the image is {size} bytes; the limit is {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("the body is not a JPEG or PNG image")]
    NotAnImage,
    #[error("the body was declared as {declared} but its bytes are {actual}")]
    TypeMismatch { declared: ContentType, actual: ContentType },
    #[error("the {0} header is truncated or malformed")]
    MalformedHeader(ContentType),
    #[error("the image is {width}x{height} px; each side must be within {min}..={max} px")]
    Dimensions { width: u32, height: u32, min: u32, max: u32 },
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Checks an upload against its declared type and the limits, reading only the header.
pub fn inspect(bytes: &[u8], declared: ContentType, limits: &ImageLimits) -> Result<ImageInfo, ImageRejection> {
    if bytes.is_empty() {
        return Err(ImageRejection::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageRejection::TooLarge { size: bytes.len(), max: limits.max_bytes });
    }
    let actual = ContentType::sniff(bytes).ok_or(ImageRejection::NotAnImage)?;
    if actual != declared {
        return Err(ImageRejection::TypeMismatch { declared, actual });
    }
    let (width, height) = dimensions(bytes, actual).ok_or(ImageRejection::MalformedHeader(actual))?;
    let in_range = |side: u32| (limits.min_side..=limits.max_side).contains(&side);
    if !in_range(width) || !in_range(height) {
        return Err(ImageRejection::Dimensions { width, height, min: limits.min_side, max: limits.max_side });
    }
    Ok(ImageInfo { content_type: actual, width, height })
}

/// Width and height from the header of a PNG or JPEG, or `None` if the header is malformed.
pub fn dimensions(bytes: &[u8], content_type: ContentType) -> Option<(u32, u32)> {
    match content_type {
        ContentType::Png => png_dimensions(bytes),
        ContentType::Jpeg => jpeg_dimensions(bytes),
    }
}

fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The first chunk of a PNG must be `IHDR` (13 bytes: width, height, ...), right after the signature.
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let rest = bytes.strip_prefix(PNG_SIGNATURE)?;
    // length (4) + type (4) + 13 bytes of data + CRC (4): the whole chunk must be there.
    if rest.len() < 25 || be_u32(rest, 0)? != 13 || rest.get(4..8)? != b"IHDR" {
        return None;
    }
    Some((be_u32(rest, 8)?, be_u32(rest, 12)?))
}

/// Walks the JPEG marker segments up to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC),
/// whose payload is: precision (1), height (2), width (2).
fn jpeg_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2; // after SOI
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        while *bytes.get(at)? == 0xFF {
            at += 1;
        }
        let marker = *bytes.get(at)?;
        at += 1;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            // Start of scan or end of image before any frame header: malformed.
            0xD8 | 0xD9 | 0xDA | 0x00 => return None,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let len = usize::from(be_u16(bytes, at)?);
                if len < 8 || bytes.len() < at + len {
                    return None; // the frame header is cut short
                }
                let height = be_u16(bytes, at + 3)?;
                let width = be_u16(bytes, at + 5)?;
                // A zero height means "defined later by DNL", which no decoder we use supports.
                return (height != 0 && width != 0).then_some((u32::from(width), u32::from(height)));
            }
            _ => {
                let len = usize::from(be_u16(bytes, at)?);
                if len < 2 {
                    return None;
                }
                at = at.checked_add(len)?;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PNG header (signature + IHDR) with the given size; enough for inspection.
    pub(crate) fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut v = PNG_SIGNATURE.to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    /// A minimal JPEG header: SOI, an APP0 segment, then SOF0 with the given size.
    pub(crate) fn jpeg_header(width: u16, height: u16) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        v.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        v.extend_from_slice(&[0xFF, 0xFF, 0xC0, 0x00, 0x11, 0x08]);
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        v
    }

    #[test]
    fn reads_png_and_jpeg_dimensions_from_the_header() {
        let limits = ImageLimits::default();
        let png = inspect(&png_header(640, 480), ContentType::Png, &limits).unwrap();
        assert_eq!((png.width, png.height), (640, 480));
        let jpeg = inspect(&jpeg_header(800, 600), ContentType::Jpeg, &limits).unwrap();
        assert_eq!((jpeg.width, jpeg.height), (800, 600));
    }

    #[test]
    fn refuses_a_body_whose_bytes_are_not_the_declared_type() {
        let err = inspect(&png_header(100, 100), ContentType::Jpeg, &ImageLimits::default());
        assert_eq!(err, Err(ImageRejection::TypeMismatch { declared: ContentType::Jpeg, actual: ContentType::Png }));
    }

    #[test]
    fn refuses_sizes_outside_the_limits() {
        let limits = ImageLimits::default();
        for (w, h) in [(79, 100), (100, 79), (10_001, 100), (20_000, 20_000)] {
            let err = inspect(&png_header(w, h), ContentType::Png, &limits).unwrap_err();
            assert!(matches!(err, ImageRejection::Dimensions { .. }), "{w}x{h}: {err:?}");
        }
        assert!(inspect(&png_header(80, 10_000), ContentType::Png, &limits).is_ok());
    }

    #[test]
    fn refuses_empty_oversized_and_non_image_bodies() {
        let limits = ImageLimits { max_bytes: 64, ..ImageLimits::default() };
        assert_eq!(inspect(&[], ContentType::Png, &limits), Err(ImageRejection::Empty));
        assert_eq!(inspect(&[0u8; 65], ContentType::Png, &limits), Err(ImageRejection::TooLarge { size: 65, max: 64 }));
        assert_eq!(inspect(b"GIF89a....", ContentType::Png, &limits), Err(ImageRejection::NotAnImage));
    }

    #[test]
    fn every_truncation_of_a_header_is_refused_without_panicking() {
        let limits = ImageLimits::default();
        for (full, ty) in [(png_header(100, 100), ContentType::Png), (jpeg_header(100, 100), ContentType::Jpeg)] {
            for cut in 0..full.len() {
                let result = inspect(&full[..cut], ty, &limits);
                assert!(result.is_err(), "{ty} cut at {cut} was accepted");
            }
        }
    }

    #[test]
    fn jpeg_without_a_frame_header_is_malformed() {
        let sos_first = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
        assert_eq!(
            inspect(&sos_first, ContentType::Jpeg, &ImageLimits::default()),
            Err(ImageRejection::MalformedHeader(ContentType::Jpeg))
        );
    }

    #[test]
    fn content_type_header_parsing_ignores_parameters_and_case() {
        assert_eq!(ContentType::from_mime("Image/PNG; charset=binary"), Some(ContentType::Png));
        assert_eq!(ContentType::from_mime("image/jpeg"), Some(ContentType::Jpeg));
        assert_eq!(ContentType::from_mime("image/gif"), None);
    }
}
