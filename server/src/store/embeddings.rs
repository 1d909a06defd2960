//! Embeddings keyed by `(model id, image id)`, stored as little-endian f32.

use super::{id_key, Store, StoreError};

/// `model id \0 image id`: model ids never contain a NUL byte.
fn key(model_id: &str, image_id: u64) -> Vec<u8> {
    let mut key = model_id.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&id_key(image_id));
    key
}

impl Store {
    pub fn put_embedding(&self, model_id: &str, image_id: u64, values: &[f32]) -> Result<(), StoreError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.embeddings.put_raw(&key(model_id, image_id), &bytes)?;
        self.gallery_changed();
        Ok(())
    }

    pub fn embedding(&self, model_id: &str, image_id: u64) -> Result<Option<Vec<f32>>, StoreError> {
        Ok(self
            .embeddings
            .get_raw(&key(model_id, image_id))?
            .map(|bytes| bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
    }

    pub fn has_embedding(&self, model_id: &str, image_id: u64) -> Result<bool, StoreError> {
        Ok(self.embeddings.get_raw(&key(model_id, image_id))?.is_some())
    }

    /// Removes the embeddings of an image under every model, also models that are not in the
    /// registry (such as the pretrained descriptor). Returns how many there were.
    pub(super) fn remove_embeddings_of(&self, image_id: u64) -> Result<usize, StoreError> {
        let suffix = id_key(image_id);
        let mut removed = 0;
        for item in self.embeddings.tree.iter().keys() {
            let key = item?;
            let n = key.len();
            if n > 8 && key[n - 9] == 0 && key[n - 8..] == suffix {
                self.embeddings.tree.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every embedding stored under `model_id`; returns how many there were.
    pub fn remove_embeddings_of_model(&self, model_id: &str) -> Result<usize, StoreError> {
        let mut prefix = model_id.as_bytes().to_vec();
        prefix.push(0);
        let mut removed = 0;
        for item in self.embeddings.tree.scan_prefix(&prefix).keys() {
            self.embeddings.tree.remove(item?)?;
            removed += 1;
        }
        self.flush_blocking()?;
        Ok(removed)
    }

    /// Ids of every stored image that has no embedding under `model_id`, in id order.
    pub fn images_without_embedding(&self, model_id: &str) -> Result<Vec<u64>, StoreError> {
        let mut missing = Vec::new();
        for item in self.images.tree.iter().keys() {
            let image_id = super::decode_id("images", &item?)?;
            if !self.has_embedding(model_id, image_id)? {
                missing.push(image_id);
            }
        }
        Ok(missing)
    }
}
