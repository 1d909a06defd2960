//! The one face pipeline from a decoded image to the 150x150 crop every model sees, used by
//! import, by uploads to the ranking RPCs and (through them) by LFW evaluation:
//!
//! - detect mode: detect → take the largest face → 68 landmarks → align onto dlib's chip
//!   (`faces`); an image without a face scoring above the threshold is refused, with the best
//!   score in the reason;
//! - center mode: the centred square, resized ([`super::face_crop`]), for images that already
//!   are face crops.

use std::str::FromStr;
use std::sync::Arc;

use candle_core::Device;
use image::{DynamicImage, RgbImage};

use super::face_crop;
use crate::faces::{DetectSettings, Face, FaceError, FaceFinder, Found, Traits, DEFAULT_MIN_SCORE};

/// How the face is cut from an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaceMode {
    /// Find the faces, take the largest, align it.
    #[default]
    Detect,
    /// The centred square: for images that are already face crops.
    Center,
}

impl FaceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FaceMode::Detect => "detect",
            FaceMode::Center => "center",
        }
    }
}

impl FromStr for FaceMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "detect" => Ok(FaceMode::Detect),
            "center" | "centre" => Ok(FaceMode::Center),
            other => Err(format!("face mode must be detect or center, got {other:?}")),
        }
    }
}

/// What a request may override; `None` takes the server's default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaceRequest {
    pub mode: Option<FaceMode>,
    pub min_score: Option<f32>,
}

/// The server's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceDefaults {
    pub mode: FaceMode,
    pub min_score: f32,
}

impl Default for FaceDefaults {
    fn default() -> Self {
        FaceDefaults { mode: FaceMode::Detect, min_score: DEFAULT_MIN_SCORE }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaceCropError {
    #[error("no face found; best score {best:.2} < {min_score:.2}")]
    NoFace { best: f32, min_score: f32 },
    #[error("min_face_score must be between 0 and 1, got {0}")]
    BadMinScore(f32),
    #[error("face detection failed: {0}")]
    Faces(#[from] FaceError),
}

/// The face a crop was cut from, and how many faces the image held.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundFace {
    pub face: Face,
    pub count: usize,
}

/// A normalised face: the crop, and the detected face it came from (detect mode).
#[derive(Debug, Clone)]
pub struct FaceCrop {
    pub crop: RgbImage,
    pub found: Option<FoundFace>,
}

/// The detector, landmark net and defaults, shared by every caller.
#[derive(Clone)]
pub struct FacePipeline {
    finder: Arc<FaceFinder>,
    defaults: FaceDefaults,
}

impl FacePipeline {
    /// Loads the bundled face networks (CPU: they are small, and run per request).
    pub fn load(defaults: FaceDefaults) -> Result<Self, FaceError> {
        Ok(FacePipeline { finder: Arc::new(FaceFinder::load(&Device::Cpu)?), defaults })
    }

    pub fn defaults(&self) -> FaceDefaults {
        self.defaults
    }

    fn settings(&self, min_score: Option<f32>) -> Result<DetectSettings, FaceCropError> {
        let min_score = min_score.unwrap_or(self.defaults.min_score);
        if !(0.0..1.0).contains(&min_score) {
            return Err(FaceCropError::BadMinScore(min_score));
        }
        Ok(DetectSettings { min_score, ..DetectSettings::default() })
    }

    /// Every face of `image` above the threshold, largest first. CPU-heavy.
    pub fn detect(&self, image: &RgbImage, min_score: Option<f32>) -> Result<Found, FaceCropError> {
        Ok(self.finder.find(image, self.settings(min_score)?)?)
    }

    /// Apparent age and gender of a face crop. CPU: a few milliseconds.
    pub fn traits(&self, crop: &RgbImage) -> Result<Traits, FaceCropError> {
        Ok(self.finder.traits(crop)?)
    }

    /// The crop of `image` as `request` (or the defaults) asks: in detect mode, of its largest
    /// face. CPU-heavy.
    pub fn crop(&self, image: &DynamicImage, request: FaceRequest) -> Result<FaceCrop, FaceCropError> {
        let mut crops = self.crops(image, request, false)?;
        Ok(crops.swap_remove(0))
    }

    /// The crops of `image`: of its largest face, or with `all` of every face (largest first);
    /// in center mode, the one centred crop. Never empty. CPU-heavy.
    pub fn crops(&self, image: &DynamicImage, request: FaceRequest, all: bool) -> Result<Vec<FaceCrop>, FaceCropError> {
        let settings = self.settings(request.min_score)?;
        match request.mode.unwrap_or(self.defaults.mode) {
            FaceMode::Center => Ok(vec![FaceCrop { crop: face_crop(image), found: None }]),
            FaceMode::Detect => {
                let rgb = image.to_rgb8();
                let found = self.finder.find(&rgb, settings)?;
                let count = found.faces.len();
                if count == 0 {
                    return Err(FaceCropError::NoFace { best: found.best_score, min_score: settings.min_score });
                }
                let keep = if all { count } else { 1 };
                found
                    .faces
                    .into_iter()
                    .take(keep)
                    .map(|face| {
                        let crop = self.finder.chip(&rgb, &face)?;
                        Ok(FaceCrop { crop, found: Some(FoundFace { face, count }) })
                    })
                    .collect()
            }
        }
    }
}
