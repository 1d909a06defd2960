//! Similarity questions about faces: the embedding of a face, and whether two faces look alike.
//! Today the only model is the pretrained descriptor ("descriptor/v1", Euclidean distance);
//! ranking over a gallery comes later.

use std::sync::Arc;

use crate::dataset::{decode_limited, face_crop, DatasetError, Datasets, DecodeError};
use crate::descriptor::{self, Descriptor, DescriptorError};
use crate::store::{Store, StoreError};

/// The descriptor's decision threshold on Euclidean distance. dlib documents 0.6 for faces
/// aligned by its landmark pipeline; facesim's centre-crop preprocessing measured its best
/// threshold at 0.533 ± 0.0007 over the 10 folds of LFW (BENCHMARKS.md), so that is used.
pub const DESCRIPTOR_THRESHOLD: f32 = 0.53;

/// A face given to a question.
#[derive(Debug, Clone)]
pub enum FaceRef {
    ImageId(u64),
    ImageBytes(Vec<u8>),
    Embedding(Vec<f32>),
}

/// How alike two faces are under a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub model_id: String,
    pub distance: f32,
    pub threshold: f32,
    pub similar: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RankingError {
    #[error(transparent)]
    UnknownModel(#[from] crate::models::UnknownModel),
    #[error("no image with id {0}")]
    ImageNotFound(u64),
    #[error("the uploaded image cannot be used: {0}")]
    BadImage(#[from] DecodeError),
    #[error("an embedding of {model} has {expected} finite values, got {got} values")]
    BadEmbedding { model: String, expected: usize, got: usize },
    #[error("a face must be given as an image id, image bytes or an embedding")]
    MissingFace,
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
    #[error(transparent)]
    Dataset(DatasetError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DatasetError> for RankingError {
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::ImageNotFound(id) => RankingError::ImageNotFound(id),
            other => RankingError::Dataset(other),
        }
    }
}

#[derive(Clone)]
pub struct Ranking {
    store: Store,
    datasets: Datasets,
    descriptor: Arc<Descriptor>,
}

impl Ranking {
    pub fn new(store: Store, datasets: Datasets, descriptor: Arc<Descriptor>) -> Self {
        Ranking { store, datasets, descriptor }
    }

    /// The model to use: empty means the default, the descriptor.
    pub fn model_id(&self, requested: &str) -> Result<String, RankingError> {
        Ok(crate::models::resolve(requested)?)
    }

    /// The embedding of a face. CPU-heavy for uploaded images: call from a blocking thread.
    pub fn embed(&self, model: &str, face: FaceRef) -> Result<Vec<f32>, RankingError> {
        let model = self.model_id(model)?;
        match face {
            FaceRef::ImageId(id) => {
                if let Some(values) = self.store.embedding(&model, id)? {
                    return Ok(values);
                }
                // Not embedded yet (the job may still be running): compute it now.
                let values = self.embed_faces(&[self.datasets.face(id)?])?.remove(0);
                self.store.put_embedding(&model, id, &values)?;
                Ok(values)
            }
            FaceRef::ImageBytes(bytes) => {
                let decoded = decode_limited(&bytes, self.datasets.limits())?;
                Ok(self.embed_faces(&[face_crop(&decoded.image)])?.remove(0))
            }
            FaceRef::Embedding(values) => {
                if values.len() != descriptor::DIM || values.iter().any(|v| !v.is_finite()) {
                    return Err(RankingError::BadEmbedding { model, expected: descriptor::DIM, got: values.len() });
                }
                Ok(values)
            }
        }
    }

    fn embed_faces(&self, faces: &[image::RgbImage]) -> Result<Vec<Vec<f32>>, RankingError> {
        let refs: Vec<_> = faces.iter().collect();
        Ok(self.descriptor.embed(&refs)?)
    }

    /// Compares two faces under a model.
    pub fn compare(&self, model: &str, a: FaceRef, b: FaceRef) -> Result<Comparison, RankingError> {
        let model_id = self.model_id(model)?;
        let (ea, eb) = (self.embed(&model_id, a)?, self.embed(&model_id, b)?);
        let distance = descriptor::euclidean(&ea, &eb);
        Ok(Comparison { model_id, distance, threshold: DESCRIPTOR_THRESHOLD, similar: distance < DESCRIPTOR_THRESHOLD })
    }
}
