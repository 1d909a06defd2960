//! Which embedding models exist. Today that is the pretrained descriptor only; trained models
//! join through the registry that training fills.

use crate::descriptor;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model {0:?}; the available model is \"descriptor/v1\"")]
pub struct UnknownModel(pub String);

/// The id of the model a request names: empty means the active model, which is the descriptor
/// until a trained model is activated.
pub fn resolve(requested: &str) -> Result<String, UnknownModel> {
    match requested {
        "" | descriptor::MODEL_ID => Ok(descriptor::MODEL_ID.to_string()),
        other => Err(UnknownModel(other.to_string())),
    }
}

/// Embedding length of a model.
pub fn dim(model_id: &str) -> Result<usize, UnknownModel> {
    match model_id {
        descriptor::MODEL_ID => Ok(descriptor::DIM),
        other => Err(UnknownModel(other.to_string())),
    }
}
