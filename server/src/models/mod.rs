//! The model registry: the pretrained descriptor (built in) and the models training stored;
//! which one is active for ranking.

mod loaded;

pub use loaded::{LoadedModel, Metric, ModelError};

use std::sync::Arc;

use crate::descriptor::{self, Descriptor};
use crate::store::{ModelRecord, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no model {0:?}; `facesim models list` shows the registered ones")]
pub struct UnknownModel(pub String);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no model {0:?}")]
    NotFound(String),
    #[error("model {id} cannot be loaded: {source}")]
    Load { id: String, source: Box<ModelError> },
    #[error(transparent)]
    Store(#[from] StoreError),
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
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Registry { store }
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
        self.get(id)?;
        self.store.set_active_model(id)?;
        tracing::info!(model = id, "model activated");
        self.get(id)
    }
}
