//! A model ready to embed faces: the pretrained descriptor, or a trained Siamese network with its
//! record, its metric and its decision threshold. Ranking, comparison and embedding all go through this one type, so a face is embedded
//! the same way whether it is stored, uploaded or part of a gallery.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::descriptor::{self, Descriptor, DescriptorError};
use super::siamese::input::{image_tensor, vectors_tensor};
use super::siamese::{self, nets::CNN_SIDE, Architecture, LoadError, LossKind, Siamese};
use crate::dataset::{DatasetError, Datasets};
use crate::store::{ModelRecord, Store, StoreError};
use crate::vectors::Metric;

/// Stored images embedded per forward pass when a gallery is filled in.
const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model {0} scores pairs with a learned head, which needs the faces themselves; compare images, not embeddings"
    )]
    HeadNeedsImages(String),
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Network {
    Descriptor,
    Trained { record: Box<ModelRecord>, net: Siamese },
}

/// A registered model loaded for inference (on the CPU for trained models).
pub struct LoadedModel {
    id: String,
    metric: Metric,
    dim: usize,
    descriptor: Arc<Descriptor>,
    network: Network,
}

impl LoadedModel {
    pub fn descriptor(descriptor: Arc<Descriptor>) -> Self {
        LoadedModel {
            id: descriptor::MODEL_ID.to_string(),
            metric: Metric::Euclidean,
            dim: descriptor::DIM,
            descriptor,
            network: Network::Descriptor,
        }
    }

    /// Loads a trained model's best weights.
    pub fn trained(record: &ModelRecord, descriptor: Arc<Descriptor>) -> Result<Self, ModelError> {
        let net = siamese::load(record, &Device::Cpu)?;
        let metric = Metric::from_number(record.metric).unwrap_or(Metric::Euclidean);
        Ok(LoadedModel {
            id: record.id.clone(),
            metric,
            dim: record.embedding_dim as usize,
            descriptor,
            network: Network::Trained { record: Box::new(record.clone()), net },
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The metric the model declares (what it was trained and thresholded with).
    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The decision threshold in the units of [`Self::metric`]: a distance for Euclidean models,
    /// a similarity for cosine ones.
    pub fn threshold(&self) -> f32 {
        match &self.network {
            Network::Descriptor => descriptor::THRESHOLD,
            Network::Trained { record, .. } => match self.metric {
                Metric::Euclidean => record.threshold,
                Metric::Cosine => 1.0 - record.threshold,
            },
        }
    }

    fn needs_images(&self) -> bool {
        matches!(&self.network, Network::Trained { record, .. } if record.architecture == Architecture::SiameseCnn as i32)
    }

    /// Whether the model scores pairs with a learned head (not by comparing embeddings).
    pub fn has_head(&self) -> bool {
        matches!(&self.network, Network::Trained { record, .. }
            if LossKind::from_number(record.loss).is_some_and(LossKind::has_head))
    }

    /// The network input of face crops: descriptor vectors for the descriptor-fed models (GAML),
    /// resized pixels for the CNN. `None` for the descriptor itself.
    fn input_of_faces(&self, faces: &[&RgbImage]) -> Result<Option<Tensor>, ModelError> {
        match &self.network {
            Network::Descriptor => Ok(None),
            Network::Trained { .. } if self.needs_images() => Ok(Some(image_tensor(faces, CNN_SIDE, &Device::Cpu)?)),
            Network::Trained { .. } => {
                let vectors = self.descriptor.embed(faces)?;
                Ok(Some(vectors_tensor(&vectors, &Device::Cpu)?))
            }
        }
    }

    /// Embeddings of face crops (150x150, as `dataset::face_crop` makes them).
    pub fn embed_faces(&self, faces: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        match (&self.network, self.input_of_faces(faces)?) {
            (Network::Trained { net, .. }, Some(input)) => Ok(net.embed(&input)?.to_vec2::<f32>()?),
            _ => Ok(self.descriptor.embed(faces)?),
        }
    }

    /// Embeds the stored images `ids` (those the caller found without an embedding under this
    /// model), stores the embeddings and returns them. A descriptor-fed model skips images whose
    /// descriptor is still missing (the embedding job adds it; the gallery is refreshed then).
    /// The descriptor itself is kept complete by its own job, so this does nothing for it.
    pub fn embed_stored(
        &self,
        store: &Store,
        datasets: &Datasets,
        ids: &[u64],
    ) -> Result<Vec<(u64, Vec<f32>)>, ModelError> {
        let Network::Trained { net, .. } = &self.network else { return Ok(Vec::new()) };
        let mut done = Vec::new();
        for chunk in ids.chunks(BATCH) {
            let (kept, input) = if self.needs_images() {
                let mut faces = Vec::with_capacity(chunk.len());
                let mut kept = Vec::with_capacity(chunk.len());
                for &id in chunk {
                    // An image deleted meanwhile is simply left out.
                    if let Ok(face) = datasets.face(id) {
                        faces.push(face);
                        kept.push(id);
                    }
                }
                let refs: Vec<&RgbImage> = faces.iter().collect();
                (kept, image_tensor(&refs, CNN_SIDE, &Device::Cpu)?)
            } else {
                let (kept, vectors) = stored_descriptors(store, chunk)?;
                (kept, vectors_tensor(&vectors, &Device::Cpu)?)
            };
            if kept.is_empty() {
                continue;
            }
            let embedded = net.embed(&input)?.to_vec2::<f32>()?;
            for (id, values) in kept.into_iter().zip(embedded) {
                store.put_embedding(&self.id, id, &values)?;
                done.push((id, values));
            }
        }
        Ok(done)
    }

    /// The model's own decision score for two face crops, as evaluation computed it, in the units
    /// of [`Self::metric`]. Head models score with their head; others compare embeddings.
    pub fn compare_faces(&self, a: &RgbImage, b: &RgbImage) -> Result<f32, ModelError> {
        match (&self.network, self.has_head()) {
            (Network::Trained { net, .. }, true) => {
                let input = self.input_of_faces(&[a, b])?.expect("trained models have inputs");
                let (xa, xb) = (input.narrow(0, 0, 1)?, input.narrow(0, 1, 1)?);
                let distance = net.distances(&xa, &xb)?.to_vec1::<f32>()?[0];
                Ok(1.0 - distance)
            }
            _ => {
                let e = self.embed_faces(&[a, b])?;
                Ok(self.metric.score(&e[0], &e[1]))
            }
        }
    }

    /// Distance-like scores (smaller means more alike) of pairs of stored images, as this model
    /// decides them: the Euclidean distance, 1 − the cosine similarity, or 1 − the head's
    /// probability of "similar". A pair with an image that is gone (or without the descriptor
    /// vector a descriptor-fed model needs) is `None`. Each image is embedded once; nothing is
    /// stored.
    pub fn pair_distances(
        &self,
        store: &Store,
        datasets: &Datasets,
        pairs: &[(u64, u64)],
    ) -> Result<Vec<Option<f64>>, ModelError> {
        let as_distance = |score: f32| match self.metric {
            Metric::Euclidean => f64::from(score),
            Metric::Cosine => 1.0 - f64::from(score),
        };
        if self.has_head() {
            let mut out = Vec::with_capacity(pairs.len());
            for &(a, b) in pairs {
                out.push(match (face_if_stored(datasets, a)?, face_if_stored(datasets, b)?) {
                    (Some(fa), Some(fb)) => Some(1.0 - f64::from(self.compare_faces(&fa, &fb)?)),
                    _ => None,
                });
            }
            return Ok(out);
        }
        let mut ids: Vec<u64> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        ids.sort_unstable();
        ids.dedup();
        let embedded = self.embeddings_of(store, datasets, &ids)?;
        Ok(pairs
            .iter()
            .map(|(a, b)| match (embedded.get(a), embedded.get(b)) {
                (Some(x), Some(y)) => Some(as_distance(self.metric.score(x, y))),
                _ => None,
            })
            .collect())
    }

    /// This model's embeddings of stored images: the stored ones where they exist, the others
    /// computed (not stored). Images that are gone are left out.
    fn embeddings_of(
        &self,
        store: &Store,
        datasets: &Datasets,
        ids: &[u64],
    ) -> Result<std::collections::HashMap<u64, Vec<f32>>, ModelError> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match store.embedding(&self.id, id)? {
                Some(v) if v.len() == self.dim => {
                    out.insert(id, v);
                }
                _ => missing.push(id),
            }
        }
        for chunk in missing.chunks(BATCH) {
            let (kept, input) = match &self.network {
                Network::Descriptor => {
                    let (kept, faces) = stored_faces(datasets, chunk)?;
                    let refs: Vec<&RgbImage> = faces.iter().collect();
                    out.extend(kept.into_iter().zip(self.descriptor.embed(&refs)?));
                    continue;
                }
                Network::Trained { .. } if self.needs_images() => {
                    let (kept, faces) = stored_faces(datasets, chunk)?;
                    let refs: Vec<&RgbImage> = faces.iter().collect();
                    (kept, image_tensor(&refs, CNN_SIDE, &Device::Cpu)?)
                }
                Network::Trained { .. } => {
                    let (kept, vectors) = stored_descriptors(store, chunk)?;
                    (kept, vectors_tensor(&vectors, &Device::Cpu)?)
                }
            };
            let Network::Trained { net, .. } = &self.network else { unreachable!("the descriptor continued") };
            if !kept.is_empty() {
                out.extend(kept.into_iter().zip(net.embed(&input)?.to_vec2::<f32>()?));
            }
        }
        Ok(out)
    }

    /// The score of two embeddings of this model. Head models cannot score embeddings alone.
    pub fn compare_embeddings(&self, a: &[f32], b: &[f32]) -> Result<f32, ModelError> {
        if self.has_head() {
            return Err(ModelError::HeadNeedsImages(self.id.clone()));
        }
        Ok(self.metric.score(a, b))
    }
}

/// The stored descriptor vectors among `ids`, with their ids (images without one, e.g. not yet
/// embedded or gone, are left out).
fn stored_descriptors(store: &Store, ids: &[u64]) -> Result<(Vec<u64>, Vec<Vec<f32>>), StoreError> {
    let (mut kept, mut vectors) = (Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()));
    for &id in ids {
        if let Some(v) = store.embedding(descriptor::MODEL_ID, id)? {
            kept.push(id);
            vectors.push(v);
        }
    }
    Ok((kept, vectors))
}

/// The face crops of the stored images among `ids`, with their ids (images that are gone are
/// left out).
fn stored_faces(datasets: &Datasets, ids: &[u64]) -> Result<(Vec<u64>, Vec<RgbImage>), DatasetError> {
    let (mut kept, mut faces) = (Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()));
    for &id in ids {
        if let Some(face) = face_if_stored(datasets, id)? {
            kept.push(id);
            faces.push(face);
        }
    }
    Ok((kept, faces))
}

/// A stored image's face crop, or `None` when the image is gone.
fn face_if_stored(datasets: &Datasets, id: u64) -> Result<Option<RgbImage>, DatasetError> {
    match datasets.face(id) {
        Ok(face) => Ok(Some(face)),
        Err(DatasetError::ImageNotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
