//! The one place where domain errors become gRPC statuses, each with a human message.

use tonic::{Code, Status};

use crate::auth::AuthError;
use crate::dataset::{DatasetError, FaceCropError};
use crate::jobs::JobError;
use crate::labeling::LabelingError;
use crate::models::compare::CompareError;
use crate::models::descriptor::DescriptorError;
use crate::models::siamese::LoadError;
use crate::models::{ModelError, RegistryError};
use crate::proposal::ProposalError;
use crate::ranking::RankingError;
use crate::store::StoreError;
use crate::training::TrainingError;
use crate::workflows::ActivationError;

pub fn from_store(error: StoreError) -> Status {
    tracing::error!(%error, "storage failure");
    match error {
        StoreError::SchemaMismatch { .. } | StoreError::Locked { .. } => Status::failed_precondition(error.to_string()),
        StoreError::Sled(_) | StoreError::Corrupt { .. } | StoreError::BadKey { .. } | StoreError::Missing { .. } => {
            Status::internal(format!("storage failure: {error}"))
        }
    }
}

pub fn from_auth(error: AuthError) -> Status {
    let message = error.to_string();
    match error {
        AuthError::MissingToken | AuthError::InvalidToken => Status::unauthenticated(message),
        AuthError::Forbidden { .. } => Status::permission_denied(message),
        AuthError::TooManyFailures { .. } => Status::resource_exhausted(message),
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
        DatasetError::InvalidDatasetName(_)
        | DatasetError::InvalidThumbnailSize(_)
        | DatasetError::TraitsCount { .. } => Status::invalid_argument(message),
        DatasetError::BadStoredFace { .. } => Status::internal(message),
        DatasetError::BadUpload(_)
        | DatasetError::Face(FaceCropError::NoFace { .. } | FaceCropError::BadMinScore(_)) => {
            Status::invalid_argument(message)
        }
        DatasetError::Face(FaceCropError::Faces(_)) => Status::internal(message),
        DatasetError::DemoDir { .. } => Status::failed_precondition(message),
        DatasetError::Store(e) => from_store(e),
    }
}

/// Work on the ranking threads that panicked (logged where it happened).
pub fn panicked() -> Status {
    Status::new(Code::Internal, "the server failed while processing the request")
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

pub fn from_descriptor(error: DescriptorError) -> Status {
    tracing::error!(%error, "descriptor failure");
    match error {
        DescriptorError::BadInput(..) => Status::invalid_argument(error.to_string()),
        DescriptorError::Weights(_) | DescriptorError::Tfjs(_) | DescriptorError::Tensor(_) => {
            Status::internal(format!("the face descriptor failed: {error}"))
        }
    }
}

pub fn from_jobs(error: JobError) -> Status {
    let message = error.to_string();
    match error {
        JobError::NotFound(_) => Status::not_found(message),
        JobError::AlreadyEnded { .. } => Status::failed_precondition(message),
        JobError::Store(e) => from_store(e),
    }
}

pub fn from_ranking(error: RankingError) -> Status {
    let message = error.to_string();
    match error {
        RankingError::ImageNotFound(_) | RankingError::IdentityNotFound(_) | RankingError::DatasetNotFound(_) => {
            Status::not_found(message)
        }
        RankingError::Invalid(_)
        | RankingError::BadImage(_)
        | RankingError::BadEmbedding { .. }
        | RankingError::MissingFace => Status::invalid_argument(message),
        RankingError::NoIndex => Status::unavailable(message),
        RankingError::BenchGallery(_) => Status::failed_precondition(message),
        RankingError::Threads(_) => Status::internal(message),
        RankingError::Registry(e) => from_registry(e),
        RankingError::Model(e) => from_model(e),
        RankingError::Dataset(e) => from_dataset(e),
        RankingError::Store(e) => from_store(e),
    }
}

pub fn from_model(error: ModelError) -> Status {
    let message = error.to_string();
    match error {
        ModelError::HeadNeedsImages(_) => Status::invalid_argument(message),
        ModelError::Descriptor(e) => from_descriptor(e),
        ModelError::Dataset(e) => from_dataset(e),
        ModelError::Load(e) => from_load(e),
        ModelError::Tensor(_) => {
            tracing::error!(%message, "model inference failure");
            Status::internal(message)
        }
        ModelError::Store(e) => from_store(e),
    }
}

/// A stored model whose record or weights cannot be loaded: the request cannot be served until
/// the model is repaired or deleted.
pub fn from_load(error: LoadError) -> Status {
    let message = error.to_string();
    tracing::error!(%message, "model load failure");
    Status::failed_precondition(message)
}

pub fn from_registry(error: RegistryError) -> Status {
    let message = error.to_string();
    match error {
        RegistryError::NotFound(_) => Status::not_found(message),
        RegistryError::BuiltIn(_)
        | RegistryError::Active(_)
        | RegistryError::InUse { .. }
        | RegistryError::Serving(_) => Status::failed_precondition(message),
        RegistryError::Load { .. } => {
            tracing::error!(%message, "model load failure");
            Status::failed_precondition(message)
        }
        RegistryError::Store(e) => from_store(e),
    }
}

impl From<JobError> for Status {
    fn from(error: JobError) -> Self {
        from_jobs(error)
    }
}

impl From<RankingError> for Status {
    fn from(error: RankingError) -> Self {
        from_ranking(error)
    }
}

pub fn from_proposal(error: ProposalError) -> Status {
    let message = error.to_string();
    match error {
        ProposalError::UnknownModel(_) | ProposalError::BatchNotFound(_) | ProposalError::PairNotFound(_) => {
            Status::not_found(message)
        }
        ProposalError::InvalidRequest(_) => Status::invalid_argument(message),
        ProposalError::NoImages(_) | ProposalError::NotEmbedded { .. } | ProposalError::NoThreshold(_) => {
            Status::failed_precondition(message)
        }
        ProposalError::Registry(e) => from_registry(e),
        ProposalError::Model(e) => from_model(e),
        ProposalError::TooMany(_) => Status::resource_exhausted(message),
        ProposalError::Cancelled => Status::cancelled(message),
        ProposalError::Job(e) => from_jobs(e),
        ProposalError::Labeling(e) => from_labeling(e),
        ProposalError::Store(e) => from_store(e),
    }
}

impl From<ProposalError> for Status {
    fn from(error: ProposalError) -> Self {
        from_proposal(error)
    }
}

pub fn from_labeling(error: LabelingError) -> Status {
    let message = error.to_string();
    match error {
        LabelingError::Disabled => Status::permission_denied(message),
        LabelingError::UnknownLease(_)
        | LabelingError::BatchNotFound(_)
        | LabelingError::ImageNotFound(_)
        | LabelingError::UserNotFound(_) => Status::not_found(message),
        LabelingError::LeaseExpired(_)
        | LabelingError::TooFast { .. }
        | LabelingError::BatchClosed(_)
        | LabelingError::NoInstructions
        | LabelingError::NotAnnotator(_) => Status::failed_precondition(message),
        LabelingError::InvalidRequest(_) => Status::invalid_argument(message),
        LabelingError::Dataset(e) => from_dataset(e),
        LabelingError::Store(e) => from_store(e),
    }
}

impl From<LabelingError> for Status {
    fn from(error: LabelingError) -> Self {
        from_labeling(error)
    }
}

pub fn from_training(error: TrainingError) -> Status {
    let message = error.to_string();
    match error {
        TrainingError::Invalid(_) => Status::invalid_argument(message),
        TrainingError::NotFound(_) => Status::not_found(message),
        TrainingError::NotEnoughPairs(_)
        | TrainingError::MissingEmbeddings(_)
        | TrainingError::DeviceUnavailable(_)
        | TrainingError::Diverged(_) => Status::failed_precondition(message),
        TrainingError::Tensor(_) | TrainingError::Io(_) => {
            tracing::error!(%message, "training failure");
            Status::internal(message)
        }
        TrainingError::Load(e) => from_load(e),
        TrainingError::Dataset(e) => from_dataset(e),
        TrainingError::Jobs(e) => from_jobs(e),
        TrainingError::Store(e) => from_store(e),
    }
}

impl From<TrainingError> for Status {
    fn from(error: TrainingError) -> Self {
        from_training(error)
    }
}

pub fn from_compare(error: CompareError) -> Status {
    match error {
        CompareError::NoSharedPairs(message) => Status::failed_precondition(message),
        CompareError::Registry(e) => from_registry(e),
        CompareError::Model(e) => from_model(e),
    }
}

impl From<CompareError> for Status {
    fn from(error: CompareError) -> Self {
        from_compare(error)
    }
}

pub fn from_activation(error: ActivationError) -> Status {
    let message = error.to_string();
    match error {
        ActivationError::NotBetter(_) | ActivationError::NotComparable(_) => Status::failed_precondition(message),
        ActivationError::Compare(e) => from_compare(e),
        ActivationError::Registry(e) => from_registry(e),
        ActivationError::Store(e) => from_store(e),
    }
}

impl From<ActivationError> for Status {
    fn from(error: ActivationError) -> Self {
        from_activation(error)
    }
}

impl From<RegistryError> for Status {
    fn from(error: RegistryError) -> Self {
        from_registry(error)
    }
}
