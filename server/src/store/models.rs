//! The model registry's records, evaluations, and the lookups training needs.

use super::images::identity_name_key;
use super::{decode_id, id_key, ActivationRecord, EvaluationRecord, ImageRecord, ModelRecord, Store, StoreError};

const ACTIVE_MODEL_KEY: &[u8] = b"active_model";

impl Store {
    pub fn model(&self, id: &str) -> Result<Option<ModelRecord>, StoreError> {
        self.models.get(id.as_bytes())
    }

    /// Trained models, oldest first.
    pub fn models_by_creation(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let mut models = Vec::new();
        for item in self.models.tree.iter().values() {
            models.push(super::decode::<ModelRecord>("models", &item?)?);
        }
        models.sort_by_key(|m| (m.create_millis, m.id.clone()));
        Ok(models)
    }

    /// Stores a model and its evaluation together, flushed.
    pub fn insert_model(&self, model: &ModelRecord, evaluation: &EvaluationRecord) -> Result<(), StoreError> {
        self.evaluations.put(&id_key(evaluation.id), evaluation)?;
        self.models.put(model.id.as_bytes(), model)?;
        self.flush_blocking()
    }

    /// Removes a model's record, flushed; its evaluations stay. `None` when there was none.
    pub fn delete_model(&self, id: &str) -> Result<Option<ModelRecord>, StoreError> {
        let Some(bytes) = self.models.tree.remove(id.as_bytes())? else { return Ok(None) };
        self.flush_blocking()?;
        Ok(Some(super::decode::<ModelRecord>("models", &bytes)?))
    }

    /// Appends an activation (or refused one) to a trained model's record, flushed. Nothing is
    /// written for a model without a record (the descriptor); `false` then. Callers serialise
    /// changes of one model (the registry's activation lock).
    pub fn append_activation(&self, id: &str, event: &ActivationRecord) -> Result<bool, StoreError> {
        let Some(mut record) = self.model(id)? else { return Ok(false) };
        record.activations.push(event.clone());
        self.models.put(id.as_bytes(), &record)?;
        self.flush_blocking()?;
        Ok(true)
    }

    /// The id of the model ranking uses, when one was activated.
    pub fn active_model(&self) -> Result<Option<String>, StoreError> {
        Ok(self.meta.get_raw(ACTIVE_MODEL_KEY)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_active_model(&self, id: &str) -> Result<(), StoreError> {
        self.meta.put_raw(ACTIVE_MODEL_KEY, id.as_bytes())?;
        self.flush_blocking()
    }

    pub fn insert_evaluation(&self, evaluation: &EvaluationRecord) -> Result<(), StoreError> {
        self.evaluations.put(&id_key(evaluation.id), evaluation)?;
        self.flush_blocking()
    }

    pub fn evaluation(&self, id: u64) -> Result<Option<EvaluationRecord>, StoreError> {
        self.evaluations.get(&id_key(id))
    }

    /// Evaluations in id order from `start`, optionally of one model.
    pub fn evaluations_page(
        &self,
        model_id: &str,
        start: u64,
        limit: usize,
    ) -> Result<(Vec<EvaluationRecord>, Option<u64>), StoreError> {
        let mut out = Vec::new();
        for item in self.evaluations.scan_from::<EvaluationRecord>(&id_key(start)) {
            let (_, evaluation) = item?;
            if !model_id.is_empty() && evaluation.model_id != model_id {
                continue;
            }
            if out.len() == limit {
                return Ok((out, Some(evaluation.id)));
            }
            out.push(evaluation);
        }
        Ok((out, None))
    }

    /// The images of the identity `name` in `dataset`, in id order; `None` when no such identity.
    pub fn images_of_identity(&self, dataset: &str, name: &str) -> Result<Option<Vec<ImageRecord>>, StoreError> {
        let Some(identity_id) = self.identity_names.get_id(&identity_name_key(dataset, name))? else {
            return Ok(None);
        };
        let prefix = id_key(identity_id);
        let mut out = Vec::new();
        for key in self.identity_images.keys_with_prefix_from(&prefix, &prefix) {
            let image_id = decode_id("identity_images", &key?[8..])?;
            if let Some(image) = self.images.get::<ImageRecord>(&id_key(image_id))? {
                out.push(image);
            }
        }
        Ok(Some(out))
    }
}
