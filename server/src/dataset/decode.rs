//! Decoding untrusted image bytes under explicit limits, and the one preprocessing path from a
//! decoded image to the normalised face crop that every model sees.
//!
//! The face crop is the centred square of the image (side = the shorter side), resized to
//! [`FACE_SIZE`]² RGB with a Catmull-Rom filter. Face datasets such as LFW (deep-funneled) centre
//! the face, and the bundled demo faces are already cropped around it.

use std::io::Cursor;

use image::{imageops::FilterType, DynamicImage, ImageFormat, ImageReader, RgbImage};

use super::RejectReason;

/// Side of the normalised face crop in pixels (the descriptor's input size).
pub const FACE_SIZE: u32 = 150;
/// Images whose shorter side is below this are refused: a face crop from them is noise.
pub const MIN_SIDE: u32 = 32;

/// Limits for decoding one untrusted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded size in bytes.
    pub max_bytes: usize,
    /// Largest width or height in pixels.
    pub max_side: u32,
    /// Largest number of pixels (width × height), which bounds the memory a decode may take.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_bytes: 10 * 1024 * 1024, max_side: 8192, max_pixels: 40_000_000 }
    }
}

/// Supported encodings. The numbers match the API's `ImageFormat` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg = 1,
    Png = 2,
    Pnm = 3,
    Bmp = 4,
    WebP = 5,
}

impl Format {
    fn from_image(format: ImageFormat) -> Option<Format> {
        Some(match format {
            ImageFormat::Jpeg => Format::Jpeg,
            ImageFormat::Png => Format::Png,
            ImageFormat::Pnm => Format::Pnm,
            ImageFormat::Bmp => Format::Bmp,
            ImageFormat::WebP => Format::WebP,
            _ => return None,
        })
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    #[error("the file is empty")]
    Empty,
    #[error("the file has {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a supported image (JPEG, PNG, PGM/PPM/PBM, BMP or WebP)")]
    UnsupportedFormat,
    #[error(
        "the {format:?} image is {width}x{height}, over the limit of {max_side} pixels a side and {max_pixels} pixels"
    )]
    DimensionsTooLarge { format: Format, width: u32, height: u32, max_side: u32, max_pixels: u64 },
    #[error("the image is {width}x{height}; faces need at least {MIN_SIDE} pixels a side")]
    TooSmall { width: u32, height: u32 },
    #[error("the {format:?} data is corrupt or truncated: {detail}")]
    Corrupt { format: Format, detail: String },
}

impl DecodeError {
    pub fn reason(&self) -> RejectReason {
        match self {
            DecodeError::Empty => RejectReason::Empty,
            DecodeError::TooLarge { .. } => RejectReason::TooLarge,
            DecodeError::UnsupportedFormat => RejectReason::UnsupportedFormat,
            DecodeError::DimensionsTooLarge { .. } => RejectReason::DimensionsTooLarge,
            DecodeError::TooSmall { .. } => RejectReason::TooSmall,
            DecodeError::Corrupt { .. } => RejectReason::Corrupt,
        }
    }
}

/// A decoded image with what was learnt about it.
pub struct Decoded {
    pub image: DynamicImage,
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

/// Decodes `bytes`, refusing anything over `limits` before allocating pixel memory: the header is
/// read first, so a 50000x50000 PNG or a decompression bomb costs nothing.
pub fn decode_limited(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge { size: bytes.len(), limit: limits.max_bytes });
    }
    let guessed = image::guess_format(bytes).map_err(|_| DecodeError::UnsupportedFormat)?;
    let format = Format::from_image(guessed).ok_or(DecodeError::UnsupportedFormat)?;
    let corrupt = |e: image::ImageError| DecodeError::Corrupt { format, detail: e.to_string() };

    let header = ImageReader::with_format(Cursor::new(bytes), guessed);
    let (width, height) = header.into_dimensions().map_err(corrupt)?;
    if width > limits.max_side || height > limits.max_side || u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::DimensionsTooLarge {
            format,
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    if width.min(height) < MIN_SIDE {
        return Err(DecodeError::TooSmall { width, height });
    }
    if format == Format::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DecodeError::Corrupt { format, detail: "the data ends before the end-of-image marker".into() });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), guessed);
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    // Room for the widest pixel type (4 channels of f32) plus the decoder's own buffers.
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(16).saturating_add(64 << 20));
    reader.limits(image_limits);
    let image = reader.decode().map_err(corrupt)?;
    Ok(Decoded { image, format, width, height })
}

/// Whether a JPEG has its end-of-image marker (FF D9) after its last start-of-scan (FF DA).
/// The decoder fills a truncated scan with grey instead of failing, so truncation is caught
/// here. Entropy-coded data never contains FF D9 (an FF byte there is followed by 00 or a
/// restart marker), and an embedded EXIF thumbnail's markers all come before the main scan.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xff, 0xda]);
    let last_eoi = bytes.windows(2).rposition(|w| w == [0xff, 0xd9]);
    matches!((last_sos, last_eoi), (Some(sos), Some(eoi)) if eoi > sos)
}

/// The normalised face crop: centred square, resized to [`FACE_SIZE`]², RGB.
pub fn face_crop(image: &DynamicImage) -> RgbImage {
    let side = image.width().min(image.height());
    let x = (image.width() - side) / 2;
    let y = (image.height() - side) / 2;
    let square = image.crop_imm(x, y, side, side).to_rgb8();
    if side == FACE_SIZE {
        return square;
    }
    image::imageops::resize(&square, FACE_SIZE, FACE_SIZE, FilterType::CatmullRom)
}

/// Lossless PNG bytes of an RGB image.
pub fn encode_png(image: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).expect("encoding PNG into memory cannot fail");
    out.into_inner()
}

/// Decodes a face crop stored by [`encode_png`].
pub fn decode_face_png(face_png: &[u8]) -> Result<RgbImage, DecodeError> {
    image::load_from_memory_with_format(face_png, ImageFormat::Png)
        .map(|face| face.to_rgb8())
        .map_err(|e| DecodeError::Corrupt { format: Format::Png, detail: e.to_string() })
}

/// A `size`x`size` JPEG thumbnail of a (square) face crop.
pub fn thumbnail_jpeg(face: &RgbImage, size: u32) -> Vec<u8> {
    encode_jpeg(&image::imageops::resize(face, size, size, FilterType::Triangle), 85)
}

/// An RGB image as JPEG of the given quality (1-100).
pub fn encode_jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .expect("encoding JPEG into memory cannot fail");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: ImageFormat, w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 99])));
        let img = if format == ImageFormat::Pnm { DynamicImage::ImageLuma8(img.to_luma8()) } else { img };
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_each_supported_format() {
        for (format, expected) in [
            (ImageFormat::Jpeg, Format::Jpeg),
            (ImageFormat::Png, Format::Png),
            (ImageFormat::Pnm, Format::Pnm),
            (ImageFormat::Bmp, Format::Bmp),
        ] {
            let decoded = decode_limited(&encoded(format, 64, 48), &DecodeLimits::default()).unwrap();
            assert_eq!((decoded.format, decoded.width, decoded.height), (expected, 64, 48), "{format:?}");
        }
    }

    #[test]
    fn crop_is_centred_square() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(300, 150, |x, _| {
            image::Rgb(if (75..225).contains(&x) { [200, 10, 10] } else { [0, 0, 255] })
        }));
        let face = face_crop(&img);
        assert_eq!(face.dimensions(), (FACE_SIZE, FACE_SIZE));
        // The side bands (blue) are cut off: every pixel of the crop is red.
        assert!(face.pixels().all(|p| p.0 == [200, 10, 10]));
    }

    #[test]
    fn refuses_bad_input_with_reasons() {
        let limits = DecodeLimits { max_bytes: 100_000, max_side: 1000, max_pixels: 500_000 };
        assert!(matches!(decode_limited(b"", &limits), Err(DecodeError::Empty)));
        assert!(matches!(decode_limited(b"hello, I am text", &limits), Err(DecodeError::UnsupportedFormat)));
        assert!(matches!(decode_limited(&vec![0xff; 100_001], &limits), Err(DecodeError::TooLarge { .. })));
        assert!(matches!(
            decode_limited(&encoded(ImageFormat::Png, 20, 50), &limits),
            Err(DecodeError::TooSmall { .. })
        ));
        assert!(matches!(
            decode_limited(&encoded(ImageFormat::Png, 800, 800), &limits),
            Err(DecodeError::DimensionsTooLarge { width: 800, height: 800, .. })
        ));
        let jpeg = encoded(ImageFormat::Jpeg, 64, 64);
        for cut in [jpeg.len() / 2, jpeg.len() - 2] {
            let truncated = &jpeg[..cut];
            assert!(
                matches!(decode_limited(truncated, &limits), Err(DecodeError::Corrupt { format: Format::Jpeg, .. })),
                "{cut}"
            );
        }
        // Trailing bytes after a complete image (some cameras append data) are accepted.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0u8; 16]);
        assert!(decode_limited(&padded, &limits).is_ok());
    }
}
