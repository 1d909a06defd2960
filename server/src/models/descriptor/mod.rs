//! The pretrained face descriptor ("descriptor/v1"): face-api's FaceRecognitionNet, a port of
//! dlib's ResNet face recognition model, run with Candle. It maps a normalised 150x150 RGB face
//! crop (see `dataset::face_crop`) to 128 numbers; faces of one person lie within about 0.6 of
//! each other in Euclidean distance.
//!
//! Input normalisation, as in the original: `(pixel − [122.782, 117.001, 104.298]) / 255` per
//! RGB channel. The weights (TensorFlow.js format, uint8-quantised) are compiled into the binary.

mod dlib_dat;
mod embedder;
mod net;

pub use embedder::{EmbedJobError, Embedder};

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::dataset::FACE_SIZE;
use crate::tfjs;

/// The model id of the pretrained descriptor in the registry and the embeddings tree.
pub const MODEL_ID: &str = "descriptor/v1";
/// Length of a descriptor.
pub const DIM: usize = 128;
/// The descriptor's decision threshold on Euclidean distance. dlib documents 0.6 for faces
/// aligned by its landmark pipeline; facesim's centre-crop preprocessing measured its best
/// threshold at 0.533 ± 0.0007 over the 10 folds of LFW (BENCHMARKS.md), so that is used.
pub const THRESHOLD: f32 = 0.53;
/// Per-channel means subtracted before dividing by 255.
pub const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

const MANIFEST: &str = include_str!("../../../../models/face-api/face_recognition_model-weights_manifest.json");
const WEIGHTS: &[u8] = include_bytes!("../../../../models/face-api/face_recognition_model.bin");

/// Errors of the descriptor.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("bad descriptor weights: {0}")]
    Weights(String),
    #[error(transparent)]
    Tfjs(#[from] tfjs::TfjsError),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("face crops must be {FACE_SIZE}x{FACE_SIZE}, got {0}x{1}")]
    BadInput(u32, u32),
}

/// A loaded descriptor network on one device.
pub struct Descriptor {
    net: net::Net,
    device: Device,
}

/// The device to compute on: the first CUDA GPU when built with the `cuda` feature and one is
/// present, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(device) = Device::new_cuda(0) {
        return device;
    }
    Device::Cpu
}

/// A device's name as jobs report it.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda:0".into(),
        Device::Metal(_) => "metal:0".into(),
    }
}

impl Descriptor {
    /// Loads the bundled weights onto `device`.
    pub fn load(device: Device) -> Result<Self, DescriptorError> {
        Self::load_faceapi(device)
    }

    /// face-api's 8-bit copy of dlib's weights (bundled), as face-api computes it (pixels / 255).
    pub fn load_faceapi(device: Device) -> Result<Self, DescriptorError> {
        let weights = tfjs::decode(MANIFEST, WEIGHTS)?;
        Self::new(net::NetParams::from_tfjs(&weights)?, device)
    }

    /// dlib's own full-precision weights from the bytes of a
    /// `dlib_face_recognition_resnet_model_v1.dat`, computed as dlib does (pixels / 256).
    pub fn from_dlib_dat(bytes: &[u8], device: Device) -> Result<Self, DescriptorError> {
        Self::new(dlib_dat::read(bytes)?, device)
    }

    fn new(params: net::NetParams, device: Device) -> Result<Self, DescriptorError> {
        Ok(Descriptor { net: net::Net::new(params, &device)?, device })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The normalised input tensor (N, 3, 150, 150) of a batch of face crops.
    pub fn input_tensor(&self, faces: &[&RgbImage]) -> Result<Tensor, DescriptorError> {
        let side = FACE_SIZE as usize;
        let mut data = Vec::with_capacity(faces.len() * 3 * side * side);
        for face in faces {
            if face.dimensions() != (FACE_SIZE, FACE_SIZE) {
                return Err(DescriptorError::BadInput(face.width(), face.height()));
            }
            let scale = self.net.input_scale();
            for (c, mean) in MEAN_RGB.iter().enumerate() {
                data.extend(face.pixels().map(|p| (f32::from(p.0[c]) - mean) / scale));
            }
        }
        Ok(Tensor::from_vec(data, (faces.len(), 3, side, side), &self.device)?)
    }

    /// Descriptors of a batch of 150x150 face crops, in order.
    pub fn embed(&self, faces: &[&RgbImage]) -> Result<Vec<Vec<f32>>, DescriptorError> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.net.forward(&self.input_tensor(faces)?)?;
        Ok(out.to_vec2::<f32>()?)
    }

    /// Runs the network on an already normalised (N, 3, 150, 150) tensor.
    pub fn forward(&self, input: &Tensor) -> Result<Vec<Vec<f32>>, DescriptorError> {
        Ok(self.net.forward(input)?.to_vec2::<f32>()?)
    }
}
