//! Finding faces in photos: face-api's TinyFaceDetector (boxes and scores), FaceLandmark68Net
//! (68 points per face) and AgeGenderNet (apparent age and gender of a face), ported to Candle
//! from the npm package `@vladmandic/face-api` 1.7.15 and checked against it
//! (`server/tests/faces_reference.rs`); then dlib's alignment of a face to the 150x150 chip the
//! descriptor was trained on (`align`).
//!
//! `FaceFinder::find` does decode-free work on an RGB image: detect → landmarks per face;
//! `FaceFinder::traits` estimates age and gender of a face crop;
//! `FaceFinder::chip` aligns one found face. The weights (TensorFlow.js format, uint8-quantised,
//! 1 MB together) are compiled into the binary.

pub mod align;
mod detector;
mod landmarks;
mod ops;
mod traits;

use candle_core::Device;
use image::RgbImage;

pub use align::{CHIP_PADDING, CHIP_SIZE};
pub use detector::{Detection, Detections};
pub use landmarks::POINTS;
use ops::Planes;
pub use traits::Traits;

use crate::tfjs;

const DETECTOR_MANIFEST: &str = include_str!("../../../models/face-api/tiny_face_detector_model-weights_manifest.json");
const DETECTOR_WEIGHTS: &[u8] = include_bytes!("../../../models/face-api/tiny_face_detector_model.bin");
const LANDMARKS_MANIFEST: &str = include_str!("../../../models/face-api/face_landmark_68_model-weights_manifest.json");
const LANDMARKS_WEIGHTS: &[u8] = include_bytes!("../../../models/face-api/face_landmark_68_model.bin");
const TRAITS_MANIFEST: &str = include_str!("../../../models/face-api/age_gender_model-weights_manifest.json");
const TRAITS_WEIGHTS: &[u8] = include_bytes!("../../../models/face-api/age_gender_model.bin");

/// The detector's input side: 320 finds a face in more LFW photos than face-api's default of
/// 416 (97.8% against 84.8% of a 400-image sample at score 0.5, BENCHMARKS.md), and is faster.
pub const DEFAULT_INPUT_SIZE: usize = 320;
/// face-api's score threshold.
pub const DEFAULT_MIN_SCORE: f32 = 0.5;
/// Input sizes tried, in order, when the first finds no face.
pub const RETRY_SIZES: [usize; 3] = [224, 416, 608];

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error("bad face model weights: {0}")]
    Weights(String),
    #[error(transparent)]
    Tfjs(#[from] tfjs::TfjsError),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("the face box lies outside the image")]
    EmptyBox,
    #[error("detector input size {0} must be a positive multiple of 32")]
    InputSize(usize),
    #[error("the landmarks cannot be aligned (all points coincide)")]
    Degenerate,
}

/// A point in image pixels (x right, y down; pixel centres at integers, as in dlib and TF).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// A box in pixels: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BoxF {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl BoxF {
    fn scaled(&self, s: f64) -> BoxF {
        BoxF { x: self.x * s, y: self.y * s, width: self.width * s, height: self.height * s }
    }

    pub fn area(&self) -> f64 {
        self.width * self.height
    }

    fn iou(&self, other: &BoxF) -> f64 {
        let w = ((self.x + self.width).min(other.x + other.width) - self.x.max(other.x)).max(0.0);
        let h = ((self.y + self.height).min(other.y + other.height) - self.y.max(other.y)).max(0.0);
        let inter = w * h;
        inter / (self.area() + other.area() - inter)
    }

    /// face-api's `clipAtImageBorders` then `floor`: (x, y, width, height) in whole pixels, or
    /// `None` when nothing of the box is inside.
    fn clipped_floor(&self, width: usize, height: usize) -> Option<(usize, usize, usize, usize)> {
        let (x, y) = (self.x.max(0.0), self.y.max(0.0));
        let w = (self.x + self.width - x).min(width as f64 - x);
        let h = (self.y + self.height - y).min(height as f64 - y);
        let (x, y, w, h) = (x.floor(), y.floor(), w.floor(), h.floor());
        (w > 0.0 && h > 0.0 && x < width as f64 && y < height as f64)
            .then_some((x as usize, y as usize, w as usize, h as usize))
    }
}

/// One face found in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    pub bbox: BoxF,
    pub score: f32,
    /// The 68 landmarks in image pixels.
    pub landmarks: Vec<Point>,
}

/// Every face found in one image, largest box first.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub faces: Vec<Face>,
    /// The best detector score of any box, kept or not: what a "no face" answer reports.
    pub best_score: f32,
}

/// Detection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectSettings {
    /// The detector's input side (a multiple of 32): larger finds smaller faces, slower.
    pub input_size: usize,
    /// Boxes scoring at or below this are not faces.
    pub min_score: f32,
    /// Whether [`FaceFinder::find`] tries [`RETRY_SIZES`] when nothing is found.
    pub retry: bool,
}

impl Default for DetectSettings {
    fn default() -> Self {
        DetectSettings { input_size: DEFAULT_INPUT_SIZE, min_score: DEFAULT_MIN_SCORE, retry: true }
    }
}

/// The detector, the landmark net and the age and gender net, loaded once and shared.
pub struct FaceFinder {
    detector: detector::Detector,
    landmarks: landmarks::LandmarkNet,
    traits: traits::TraitsNet,
}

impl FaceFinder {
    /// Loads the bundled weights onto `device`.
    pub fn load(device: &Device) -> Result<Self, FaceError> {
        let detector = detector::Detector::load(&tfjs::decode(DETECTOR_MANIFEST, DETECTOR_WEIGHTS)?, device)?;
        let landmarks = landmarks::LandmarkNet::load(&tfjs::decode(LANDMARKS_MANIFEST, LANDMARKS_WEIGHTS)?, device)?;
        let traits = traits::TraitsNet::load(&tfjs::decode(TRAITS_MANIFEST, TRAITS_WEIGHTS)?, device)?;
        Ok(FaceFinder { detector, landmarks, traits })
    }

    /// The faces of `image` with their landmarks, in face-api's order (best score first).
    pub fn find_in_detector_order(&self, image: &RgbImage, settings: DetectSettings) -> Result<Found, FaceError> {
        if settings.input_size == 0 || !settings.input_size.is_multiple_of(32) {
            return Err(FaceError::InputSize(settings.input_size));
        }
        let planes = Planes::from_rgb(image);
        let detections = self.detector.detect(&planes, settings.input_size, settings.min_score)?;
        let mut faces = Vec::with_capacity(detections.faces.len());
        for detection in detections.faces {
            // A box wholly outside the image has no face to read: face-api drops it too.
            match self.landmarks.landmarks(&planes, &detection.bbox) {
                Ok(landmarks) => faces.push(Face { bbox: detection.bbox, score: detection.score, landmarks }),
                Err(FaceError::EmptyBox) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Found { faces, best_score: detections.best_score })
    }

    /// The faces of `image`, largest box first (the face a photo is "of"). The detector sees
    /// faces of some sizes relative to its input better than others, so when nothing is found at
    /// `settings.input_size` the other sizes of [`RETRY_SIZES`] are tried in turn (a photo with
    /// a face pays for one pass, almost always).
    pub fn find(&self, image: &RgbImage, settings: DetectSettings) -> Result<Found, FaceError> {
        let mut found = self.find_in_detector_order(image, settings)?;
        for size in RETRY_SIZES.into_iter().filter(|&s| s != settings.input_size) {
            if !found.faces.is_empty() || !settings.retry {
                break;
            }
            let again = self.find_in_detector_order(image, DetectSettings { input_size: size, ..settings })?;
            found = Found { best_score: found.best_score.max(again.best_score), faces: again.faces };
        }
        found.faces.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        Ok(found)
    }

    /// face-api's age and gender estimates for a face image (a stored crop, or any picture
    /// that is mostly one face).
    pub fn traits(&self, face: &RgbImage) -> Result<Traits, FaceError> {
        self.traits.estimate(face)
    }

    /// The aligned 150x150 chip of `face` for the descriptor.
    pub fn chip(&self, image: &RgbImage, face: &Face) -> Result<RgbImage, FaceError> {
        align::extract_chip(image, &face.landmarks, CHIP_SIZE, CHIP_PADDING).ok_or(FaceError::Degenerate)
    }
}
