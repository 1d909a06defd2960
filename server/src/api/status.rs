//! The one place where domain errors become gRPC statuses, each with a human message.

use tonic::{Code, Status};

use crate::auth::AuthError;
use crate::dataset::DatasetError;
use crate::store::StoreError;

pub fn from_store(error: StoreError) -> Status {
    tracing::error!(%error, "storage failure");
    match error {
        StoreError::SchemaMismatch { .. } => Status::failed_precondition(error.to_string()),
        StoreError::Sled(_) | StoreError::Corrupt { .. } | StoreError::BadKey { .. } => {
            Status::internal(format!("storage failure: {error}"))
        }
    }
}

pub fn from_auth(error: AuthError) -> Status {
    let message = error.to_string();
    match error {
        AuthError::MissingToken | AuthError::InvalidToken => Status::unauthenticated(message),
        AuthError::Forbidden { .. } => Status::permission_denied(message),
        AuthError::InvalidUserName(_) | AuthError::MissingRole | AuthError::TtlTooLong(_) => {
            Status::invalid_argument(message)
        }
        AuthError::AdminTokenTooShort => Status::failed_precondition(message),
        AuthError::UserExists(_) => Status::already_exists(message),
        AuthError::UserNotFound(_) | AuthError::TokenNotFound(_) => Status::not_found(message),
        AuthError::Store(e) => from_store(e),
    }
}

pub fn from_dataset(error: DatasetError) -> Status {
    let message = error.to_string();
    match error {
        DatasetError::ImageNotFound(_) | DatasetError::IdentityNotFound(_) => Status::not_found(message),
        DatasetError::InvalidDatasetName(_) | DatasetError::InvalidThumbnailSize(_) => {
            Status::invalid_argument(message)
        }
        DatasetError::BadStoredFace { .. } => Status::internal(message),
        DatasetError::DemoDir { .. } => Status::failed_precondition(message),
        DatasetError::Store(e) => from_store(e),
    }
}

/// A blocking task that panicked or was cancelled.
pub fn from_join(error: tokio::task::JoinError) -> Status {
    tracing::error!(%error, "blocking task failed");
    Status::new(Code::Internal, "the server failed while processing the request")
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        from_auth(error)
    }
}

impl From<DatasetError> for Status {
    fn from(error: DatasetError) -> Self {
        from_dataset(error)
    }
}
