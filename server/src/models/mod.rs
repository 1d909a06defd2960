//! Everything that is "a model": the pretrained descriptor (`descriptor`, built in), the Siamese
//! networks training produces (`siamese`), a model loaded for inference with its metric and
//! threshold (`loaded`), two models side by side on shared labelled pairs (`compare`), and the
//! registry of stored models and which one is active for ranking (here).

pub mod compare;
pub mod descriptor;
mod loaded;
pub mod siamese;

pub use loaded::{LoadedModel, ModelError};

use std::sync::{Arc, Mutex};

use crate::jobs::Jobs;
use crate::store::{ModelRecord, Store, StoreError};
use descriptor::Descriptor;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no model {0:?}; `facesim models list` shows the registered ones")]
pub struct UnknownModel(pub String);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no model {0:?}")]
    NotFound(String),
    #[error("{0} is the built-in pretrained descriptor; it cannot be deleted")]
    BuiltIn(String),
    #[error("{0} is the active model; activate another model before deleting it")]
    Active(String),
    #[error("job {job} is using model {id}; wait for it to end or cancel it, then delete the model")]
    InUse { id: String, job: u64 },
    #[error("ranking still answers with {0} until the newly activated model's index is ready; try again then")]
    Serving(String),
    #[error("model {id} cannot be loaded: {source}")]
    Load { id: String, source: Box<ModelError> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`Registry::delete`] removed.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub record: ModelRecord,
    pub embeddings_removed: usize,
}

/// A registry entry: a trained model's record, or `None` for the built-in descriptor.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub record: Option<ModelRecord>,
    pub active: bool,
}

#[derive(Clone)]
pub struct Registry {
    store: Store,
    /// Serialises activation and deletion, so a model cannot be deleted while it is being
    /// activated (leaving ranking pointed at nothing).
    changing: Arc<Mutex<()>>,
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Registry { store, changing: Arc::new(Mutex::new(())) }
    }

    /// The store the registry keeps its records in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The active model's id: the descriptor until another model is activated.
    pub fn active_id(&self) -> Result<String, RegistryError> {
        Ok(self.store.active_model()?.unwrap_or_else(|| descriptor::MODEL_ID.to_string()))
    }

    pub fn get(&self, id: &str) -> Result<Entry, RegistryError> {
        let active = self.active_id()? == id;
        if id == descriptor::MODEL_ID {
            return Ok(Entry { id: id.to_string(), record: None, active });
        }
        let record = self.store.model(id)?.ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        Ok(Entry { id: id.to_string(), record: Some(record), active })
    }

    /// The descriptor, then trained models oldest first.
    pub fn list(&self) -> Result<Vec<Entry>, RegistryError> {
        let active = self.active_id()?;
        let mut out =
            vec![Entry { id: descriptor::MODEL_ID.into(), record: None, active: active == descriptor::MODEL_ID }];
        for record in self.store.models_by_creation()? {
            out.push(Entry { id: record.id.clone(), active: active == record.id, record: Some(record) });
        }
        Ok(out)
    }

    /// Loads a registered model for inference.
    pub fn load(&self, id: &str, descriptor: &Arc<Descriptor>) -> Result<LoadedModel, RegistryError> {
        match self.get(id)?.record {
            None => Ok(LoadedModel::descriptor(descriptor.clone())),
            Some(record) => LoadedModel::trained(&record, descriptor.clone())
                .map_err(|e| RegistryError::Load { id: id.to_string(), source: Box::new(e) }),
        }
    }

    /// Makes `id` the active model (kept on disk). Ranking's index follows it.
    pub fn activate(&self, id: &str) -> Result<Entry, RegistryError> {
        let _changing = self.changing.lock().expect("not poisoned");
        self.get(id)?;
        self.store.set_active_model(id)?;
        tracing::info!(model = id, "model activated");
        self.get(id)
    }

    /// Removes a trained model's record and its stored embeddings (flushed). Its weights files
    /// and search graphs are the caller's to remove (training and ranking own them). Neither the
    /// descriptor, nor the active model, nor a model a running job uses, nor the one ranking
    /// still serves (`serving`) while a newer activation's index is being built can be deleted.
    pub fn delete(&self, id: &str, jobs: &Jobs, serving: Option<&str>) -> Result<Deleted, RegistryError> {
        let _changing = self.changing.lock().expect("not poisoned");
        let entry = self.get(id)?;
        if entry.record.is_none() {
            return Err(RegistryError::BuiltIn(id.to_string()));
        }
        if entry.active {
            return Err(RegistryError::Active(id.to_string()));
        }
        if let Some(job) = jobs.running_with_model(id) {
            return Err(RegistryError::InUse { id: id.to_string(), job });
        }
        if serving == Some(id) {
            return Err(RegistryError::Serving(id.to_string()));
        }
        let record = self.store.delete_model(id)?.ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        let embeddings_removed = self.store.remove_embeddings_of_model(id)?;
        tracing::info!(model = id, embeddings_removed, "model deleted");
        Ok(Deleted { record, embeddings_removed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobKind;

    fn registered(store: &Store, id: &str) {
        let model = ModelRecord { id: id.into(), name: id.into(), ..Default::default() };
        let evaluation = crate::store::EvaluationRecord { id: 1, model_id: id.into(), ..Default::default() };
        store.insert_model(&model, &evaluation).unwrap();
    }

    #[test]
    fn a_model_in_use_by_a_job_stays_and_a_deleted_one_takes_its_embeddings_along() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (registry, jobs) = (Registry::new(store.clone()), Jobs::new(store.clone()));
        registered(&store, "gaml/1");
        registered(&store, "gaml/10");
        for image in 1..=3 {
            store.put_embedding("gaml/1", image, &[image as f32; 4]).unwrap();
            store.put_embedding("gaml/10", image, &[1.0; 4]).unwrap();
            store.put_embedding(descriptor::MODEL_ID, image, &[2.0; 4]).unwrap();
        }

        let job = jobs.start(JobKind::Evaluation, 1, "gaml/1", "cpu").unwrap();
        match registry.delete("gaml/1", &jobs, None) {
            Err(RegistryError::InUse { id, job: j }) => assert_eq!((id.as_str(), j), ("gaml/1", job.id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        job.stopped("done").unwrap();

        let deleted = registry.delete("gaml/1", &jobs, None).unwrap();
        assert_eq!((deleted.record.id.as_str(), deleted.embeddings_removed), ("gaml/1", 3));
        assert!(matches!(registry.get("gaml/1"), Err(RegistryError::NotFound(_))));
        assert!(store.embedding("gaml/1", 2).unwrap().is_none());
        // Other models' embeddings (gaml/10's key starts like gaml/1's), the descriptor's, stay.
        assert_eq!(store.embedding("gaml/10", 2).unwrap(), Some(vec![1.0; 4]));
        assert_eq!(store.embedding(descriptor::MODEL_ID, 3).unwrap(), Some(vec![2.0; 4]));
        assert_eq!(registry.list().unwrap().len(), 2, "the descriptor and gaml/10");
        assert!(store.evaluation(1).unwrap().is_some(), "evaluations stay");

        assert!(
            matches!(registry.delete("gaml/10", &jobs, Some("gaml/10")), Err(RegistryError::Serving(_))),
            "still served while another model's index is built"
        );
        registry.activate("gaml/10").unwrap();
        assert!(matches!(registry.delete("gaml/10", &jobs, None), Err(RegistryError::Active(_))));
        assert!(matches!(registry.delete(descriptor::MODEL_ID, &jobs, None), Err(RegistryError::BuiltIn(_))));
        assert!(matches!(registry.delete("gaml/1", &jobs, None), Err(RegistryError::NotFound(_))));
    }
}
