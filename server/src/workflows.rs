//! Operations that touch several domain services at once, kept together in one domain place so
//! that `api` only adapts them and no service has to know its neighbours:
//!
//! - deleting an image: the store removes it with its pairs, votes and labels in one transaction,
//!   then the labeling pool withdraws those pairs and their leases (ranking sees the store's
//!   gallery version change by itself);
//! - activating a model: guarded by a paired comparison with the active model on their shared
//!   labelled test pairs (`models::compare`); the registry records it and the decision is logged
//!   in the model's history, then ranking's indexer starts building its index;
//! - deleting a model: the registry checks it is free (not the active one, not what ranking still
//!   serves, not used by a running job) and removes it with its embeddings, then ranking forgets
//!   its index and graphs and training removes its weights.

use crate::dataset::{DatasetError, Datasets};
use crate::jobs::Jobs;
use crate::labeling::Labeling;
use crate::models::compare::{self, CompareError, Comparer};
use crate::models::{Deleted, Entry, Registry, RegistryError};
use crate::ranking::Indexes;
use crate::store::{now_millis, ActivationRecord, DeletedImage, StoreError};
use crate::training::Training;

/// Why a model was not activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("not activated: {0}; a model must be better than the active one (activate with force to override)")]
    NotBetter(String),
    #[error("not activated: {0} (activate with force to override)")]
    NotComparable(String),
    #[error(transparent)]
    Compare(CompareError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The services the workflows coordinate (cheap clones of the shared ones).
#[derive(Clone)]
pub struct Workflows {
    pub datasets: Datasets,
    pub labeling: Labeling,
    pub indexes: Indexes,
    pub registry: Registry,
    pub jobs: Jobs,
    pub training: Training,
    pub comparer: Comparer,
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

    /// Makes `model_id` the active model, if it is better than the active one on their shared
    /// labelled test pairs (the 95% interval of the ROC-AUC difference above zero) or `force` is
    /// set; activating the active model again changes nothing. The decision, refused or not, is
    /// recorded in the model's history with the comparison. Ranking then builds the model's index
    /// in the background and swaps it in when ready (the previous model answers until then).
    pub fn activate_model(&self, model_id: &str, force: bool, user: &str) -> Result<Entry, ActivationError> {
        let candidate = self.registry.get(model_id)?;
        let active = self.registry.active_id()?;
        if candidate.active {
            return Ok(candidate);
        }
        let comparison = match self.comparer.compare(model_id, &active) {
            Ok(record) => Some(record),
            Err(CompareError::NoSharedPairs(why)) if force => {
                tracing::warn!(model = model_id, reason = %why, "activation forced without a comparison");
                None
            }
            Err(CompareError::NoSharedPairs(why)) => return Err(ActivationError::NotComparable(why)),
            Err(CompareError::Registry(e)) => return Err(e.into()),
            Err(e) => return Err(ActivationError::Compare(e)),
        };
        let better = comparison.as_ref().is_some_and(compare::is_better);
        let event = |refused| ActivationRecord {
            millis: now_millis(),
            user: user.to_string(),
            forced: force && !better,
            refused,
            comparison: comparison.clone(),
        };
        if !better && !force {
            self.registry.store().append_activation(model_id, &event(true))?;
            let summary = comparison.as_ref().map(|c| c.summary.clone()).unwrap_or_default();
            tracing::info!(model = model_id, active = %active, %summary, "activation refused");
            return Err(ActivationError::NotBetter(summary));
        }
        self.registry.activate(model_id)?;
        self.registry.store().append_activation(model_id, &event(false))?;
        let activated = self.registry.get(model_id)?;
        tracing::info!(
            model = model_id,
            previous = %active,
            forced = force && !better,
            summary = comparison.as_ref().map(|c| c.summary.as_str()).unwrap_or("no comparison"),
            "model activated"
        );
        self.indexes.follow_active();
        Ok(activated)
    }

    /// Compares two models on their shared labelled test pairs (`reference` empty: the active
    /// model).
    pub fn compare_models(
        &self,
        candidate: &str,
        reference: &str,
    ) -> Result<crate::store::ComparisonRecord, CompareError> {
        self.comparer.compare(candidate, reference)
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
