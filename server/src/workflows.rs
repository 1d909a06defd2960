//! Operations that touch several domain services at once, kept together in one domain place so
//! that `api` only adapts them and no service has to know its neighbours:
//!
//! - deleting an image: the store removes it with its pairs, votes and labels in one transaction,
//!   then the labeling pool withdraws those pairs and their leases (ranking sees the store's
//!   gallery version change by itself);
//! - activating a model: the registry records it, then ranking's indexer starts building its index;
//! - deleting a model: the registry checks it is free (not the active one, not what ranking still
//!   serves, not used by a running job) and removes it with its embeddings, then ranking forgets
//!   its index and graphs and training removes its weights.

use crate::dataset::{DatasetError, Datasets};
use crate::jobs::Jobs;
use crate::labeling::Labeling;
use crate::models::{Deleted, Entry, Registry, RegistryError};
use crate::ranking::Indexes;
use crate::store::DeletedImage;
use crate::training::Training;

/// The services the workflows coordinate (cheap clones of the shared ones).
#[derive(Clone)]
pub struct Workflows {
    pub datasets: Datasets,
    pub labeling: Labeling,
    pub indexes: Indexes,
    pub registry: Registry,
    pub jobs: Jobs,
    pub training: Training,
}

impl Workflows {
    /// Deletes an image with everything that refers to it, and withdraws its pairs from
    /// labeling at once: no annotator is handed, or keeps a lease on, a pair whose face is gone.
    /// Blocking (store writes); the caller flushes before acknowledging.
    pub fn delete_image(&self, image_id: u64) -> Result<DeletedImage, DatasetError> {
        let deleted = self.datasets.delete(image_id)?;
        self.labeling.forget_pairs(&deleted.removed_pairs);
        tracing::info!(
            image_id,
            pairs = deleted.removed_pairs.len(),
            embeddings = deleted.embeddings_removed,
            "image deleted"
        );
        Ok(deleted)
    }

    /// Makes `model_id` the active model; ranking builds its index in the background and swaps it
    /// in when ready (the previous model answers until then).
    pub fn activate_model(&self, model_id: &str) -> Result<Entry, RegistryError> {
        let activated = self.registry.activate(model_id)?;
        self.indexes.follow_active();
        Ok(activated)
    }

    /// Deletes a trained model: its record and embeddings, ranking's cached index and saved
    /// graphs, and its weights. Evaluations of it stay.
    pub fn delete_model(&self, model_id: &str) -> Result<Deleted, RegistryError> {
        let serving = self.indexes.serving_model();
        let deleted = self.registry.delete(model_id, &self.jobs, serving.as_deref())?;
        self.indexes.forget(model_id);
        self.training.remove_weights(&deleted.record);
        Ok(deleted)
    }
}
