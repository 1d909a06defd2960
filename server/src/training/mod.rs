//! Training of Siamese similarity models (`crate::models::siamese`) on crowd labels (or
//! identity-labelled pair lists), and their evaluation next to the pretrained descriptor. Jobs run
//! on threads of their own (`run`); each ends with a model in the registry, its weights in
//! safetensors files and its test-split evaluation. `data` gathers and splits the pairs, `optim`
//! holds the optimisers; the scores come from the shared `facesim-metrics` crate.

mod data;
pub mod optim;
mod resume;
mod run;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use candle_core::Device;
use serde::{Deserialize, Serialize};

pub use data::{parse_pair_list, LabelQuery, LabelledPair, TEST, TRAIN, VALIDATION};

use crate::dataset::{DatasetError, Datasets};
use crate::jobs::{JobError, JobKind, Jobs};
use crate::models::siamese::{self, Architecture, LossKind, LossSettings};
use crate::store::{EvaluationRecord, ModelRecord, Store, StoreError};

/// The optimisers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    SgdMomentum,
    Adam,
}

/// Every setting of a run, defaults filled in. Kept with the model as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub momentum: f64,
    pub optimizer: OptimizerKind,
    /// The loss's settings (margin, α, β, λ, ε, γ), stored flat beside the others.
    #[serde(flatten)]
    pub loss: LossSettings,
    /// Seeds the initial weights, the split and the batch order.
    pub seed: u64,
}

impl Hyperparameters {
    /// The method's settings for an architecture and loss.
    pub fn defaults(architecture: Architecture, loss: LossKind) -> Self {
        let mut h = match architecture {
            // Siamese CNN: Xavier init, SGD with momentum, lr 0.01, batch 500, 400 epochs, τ = 2.
            Architecture::SiameseCnn => Hyperparameters {
                epochs: 400,
                batch_size: 500,
                learning_rate: 0.01,
                momentum: 0.9,
                optimizer: OptimizerKind::SgdMomentum,
                loss: LossSettings { margin: 2.0, alpha: 0.5, beta: 0.0, lambda: 0.0, epsilon: 0.0, focal_gamma: 2.0 },
                seed: 0,
            },
            // GAML: uniform init, Adam lr 1e-4, batch 100, 200 epochs, α = 0.5, τ = 0.55.
            Architecture::SiameseGaml => Hyperparameters {
                epochs: 200,
                batch_size: 100,
                learning_rate: 1e-4,
                momentum: 0.0,
                optimizer: OptimizerKind::Adam,
                loss: LossSettings { margin: 0.55, alpha: 0.5, beta: 0.0, lambda: 0.0, epsilon: 0.0, focal_gamma: 2.0 },
                seed: 0,
            },
        };
        if loss.is_mining() {
            // The kinship-verification paper's mining loss settings.
            (h.loss.alpha, h.loss.beta, h.loss.lambda, h.loss.epsilon) = (0.2, 3.1, 1.5, 1.0);
        }
        h
    }
}

/// The settings a request gives; `None` takes the method's default (zero is a value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HyperparameterOverrides {
    pub epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub learning_rate: Option<f64>,
    pub momentum: Option<f64>,
    pub margin: Option<f64>,
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    pub lambda: Option<f64>,
    pub epsilon: Option<f64>,
    pub seed: Option<u64>,
}

/// Where a job's pairs come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    Labels(LabelQuery),
    PairList { dataset: String, text: String },
}

/// A request to train a model.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRequest {
    pub architecture: Architecture,
    /// `None` takes the architecture's loss (contrastive for the CNN, geometry-aware for GAML).
    pub loss: Option<LossKind>,
    pub data: DataSource,
    pub overrides: HyperparameterOverrides,
    /// "cpu", "cuda" or empty for the server's default.
    pub device: String,
    pub name: String,
    /// Train:validation:test in any units; empty means 8:1:1.
    pub split: Vec<u32>,
}

/// Errors of training and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotEnoughPairs(String),
    #[error("training diverged: {0}")]
    Diverged(String),
    #[error("{0} images have no descriptor embedding yet; wait for the embedding job and try again")]
    MissingEmbeddings(usize),
    #[error("device {0:?} is not available on this server (build with the `cuda` feature and a GPU present)")]
    DeviceUnavailable(String),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Load(#[from] siamese::LoadError),
    #[error("cannot write model files: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Jobs(#[from] JobError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Training and evaluation, shared by the API.
#[derive(Clone)]
pub struct Training {
    store: Store,
    datasets: Datasets,
    jobs: Jobs,
    /// Model weights live in `<models_dir>/<architecture>-<n>/`.
    models_dir: PathBuf,
    /// The device used when a request leaves it empty.
    default_device: Device,
    /// Least time between two resume checkpoints of a run (zero: after every epoch).
    checkpoint_every: std::time::Duration,
}

impl Training {
    pub fn new(
        store: Store,
        datasets: Datasets,
        jobs: Jobs,
        models_dir: PathBuf,
        default_device: Device,
        checkpoint_every: std::time::Duration,
    ) -> Self {
        Training { store, datasets, jobs, models_dir, default_device, checkpoint_every }
    }

    fn device(&self, requested: &str) -> Result<Device, TrainingError> {
        match requested {
            "" => Ok(self.default_device.clone()),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "cuda:0" => {
                #[cfg(feature = "cuda")]
                if let Ok(device) = Device::new_cuda(0) {
                    return Ok(device);
                }
                Err(TrainingError::DeviceUnavailable(requested.to_string()))
            }
            other => Err(TrainingError::Invalid(format!("unknown device {other:?}; use \"cpu\" or \"cuda\""))),
        }
    }

    /// Checks the request, gathers and splits its pairs, loads their inputs and starts the job.
    /// Returns the job id; the model id is on the job.
    pub fn start_training(&self, request: TrainRequest, created_by: u64) -> Result<u64, TrainingError> {
        let plan = run::plan_training(self, request)?;
        let device_name = crate::models::descriptor::device_name(&plan.device);
        // The plan goes to disk first, so a server stop at any later moment can resume the job.
        std::fs::create_dir_all(&plan.dir)?;
        resume::write_atomic(&plan.dir.join(resume::PLAN_FILE), &prost::Message::encode_to_vec(&plan.saved()))?;
        let handle = self.jobs.start(JobKind::Training, created_by, &plan.model_id, &device_name)?;
        let id = handle.id();
        let training = self.clone();
        self.jobs.spawn(handle, "train", move |handle| run::run_training(&training, handle, plan));
        Ok(id)
    }

    /// Restarts the training jobs a server stop interrupted (jobs marked interrupted whose
    /// folder holds a saved plan): each continues after its last checkpoint, or from the start
    /// without one, under its own job id. A job whose model was stored before the stop is
    /// marked succeeded; one that cannot continue (its images were deleted, say) stays
    /// interrupted with the reason. Returns the ids of the resumed jobs.
    pub fn resume_interrupted(&self) -> Result<Vec<u64>, TrainingError> {
        let mut resumed = Vec::new();
        for job in self.jobs.interrupted(JobKind::Training)? {
            let dir = self.models_dir.join(job.model_id.replace('/', "-"));
            let saved = match resume::read::<resume::SavedPlan>(&dir.join(resume::PLAN_FILE)) {
                Ok(Some(saved)) if saved.model_id == job.model_id => saved,
                Ok(_) => continue,
                Err(e) => {
                    resume::clear(&dir);
                    self.jobs.note(job.id, format!("{}; cannot resume: {e}", job.message))?;
                    continue;
                }
            };
            if self.store.model(&job.model_id)?.is_some() {
                resume::clear(&dir);
                self.jobs
                    .note_succeeded(job.id, format!("model {} was stored before the server stopped", job.model_id))?;
                continue;
            }
            let checkpoint = match resume::read::<resume::Checkpoint>(&dir.join(resume::CHECKPOINT_FILE)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(job = job.id, error = %e, "unreadable checkpoint: the job starts over");
                    None
                }
            };
            let plan = match run::plan_from_saved(self, dir.clone(), saved, checkpoint) {
                Ok(plan) => plan,
                Err(e) => {
                    resume::clear(&dir);
                    self.jobs.note(job.id, format!("{}; cannot resume: {e}", job.message))?;
                    continue;
                }
            };
            let message = match plan.resumes_after() {
                0 => "resumed from the start after a server stop".to_string(),
                epoch => format!("resumed after epoch {epoch} (its last checkpoint) after a server stop"),
            };
            tracing::info!(job = job.id, model = %plan.model_id, %message, "training resumes");
            let handle = self.jobs.resume(job, message)?;
            resumed.push(handle.id());
            let training = self.clone();
            self.jobs.spawn(handle, "train", move |handle| run::run_training(&training, handle, plan));
        }
        Ok(resumed)
    }

    /// Evaluates a trained model or the descriptor on a pair set; returns the job id.
    pub fn start_evaluation(&self, model_id: &str, data: DataSource, created_by: u64) -> Result<u64, TrainingError> {
        let plan = run::plan_evaluation(self, model_id, data)?;
        let handle = self.jobs.start(JobKind::Evaluation, created_by, &plan.model_id, "cpu")?;
        let id = handle.id();
        let training = self.clone();
        self.jobs.spawn(handle, "evaluate", move |handle| run::run_evaluation(&training, handle, plan));
        Ok(id)
    }

    pub fn evaluation(&self, id: u64) -> Result<EvaluationRecord, TrainingError> {
        self.store.evaluation(id)?.ok_or_else(|| TrainingError::NotFound(format!("no evaluation with id {id}")))
    }

    pub fn evaluations_page(
        &self,
        model_id: &str,
        start: u64,
        limit: usize,
    ) -> Result<(Vec<EvaluationRecord>, Option<u64>), TrainingError> {
        Ok(self.store.evaluations_page(model_id, start, limit)?)
    }

    /// Removes a deleted model's weights: its directory under the models directory (only
    /// there; a record pointing elsewhere has just its weights file removed). Failures are
    /// logged: the model is gone from the registry either way.
    pub fn remove_weights(&self, record: &ModelRecord) {
        let weights = PathBuf::from(&record.weights_path);
        let dir = weights.parent().filter(|d| d.starts_with(&self.models_dir) && *d != self.models_dir);
        let removed = match dir {
            Some(dir) => std::fs::remove_dir_all(dir).map(|()| dir.to_path_buf()),
            None => std::fs::remove_file(&weights).map(|()| weights.clone()),
        };
        match removed {
            Ok(path) => tracing::info!(model = %record.id, path = %path.display(), "weights removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(model = %record.id, error = %e, "cannot remove a deleted model's weights"),
        }
    }
}
