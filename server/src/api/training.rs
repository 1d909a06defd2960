//! TrainingService (training and evaluation jobs) and ModelService (the registry).

use std::sync::Arc;

use facesim_proto::v1::{self as pb, model_service_server::ModelService, training_service_server::TrainingService};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{self, principal, required_id};
use super::status::from_join;
use crate::models::descriptor;
use crate::models::siamese::{Architecture, LossKind};
use crate::models::Entry;
use crate::state::AppState;
use crate::store::{ComparisonRecord, EvaluationRecord, ScoresRecord};
use crate::training::{
    DataSource, HyperparameterOverrides, Hyperparameters, LabelQuery, OptimizerKind, TrainRequest, TEST, TRAIN,
    VALIDATION,
};

pub struct TrainingApi {
    state: Arc<AppState>,
}

impl TrainingApi {
    pub fn new(state: Arc<AppState>) -> Self {
        TrainingApi { state }
    }
}

fn labels(l: pb::LabelSource) -> DataSource {
    DataSource::Labels(LabelQuery {
        batch_ids: l.batch_ids,
        unanimous_only: l.unanimous_only,
        soft_labels: l.soft_labels,
    })
}

fn pair_list(p: pb::PairListSource) -> Result<DataSource, Status> {
    if p.dataset.is_empty() {
        return Err(Status::invalid_argument("pair_list.dataset must name the dataset the pairs refer to"));
    }
    Ok(DataSource::PairList { dataset: p.dataset, text: p.pairs_text })
}

fn no_data() -> Status {
    Status::invalid_argument("set the data: `labels` (crowd labels) or `pair_list` (a pairs file)")
}

/// The request's settings; unset fields take the defaults. The domain checks the merged values.
fn overrides(h: Option<pb::Hyperparameters>) -> HyperparameterOverrides {
    let h = h.unwrap_or_default();
    HyperparameterOverrides {
        epochs: h.epochs,
        batch_size: h.batch_size,
        learning_rate: h.learning_rate,
        momentum: h.momentum,
        margin: h.margin,
        alpha: h.alpha,
        beta: h.beta,
        lambda: h.lambda,
        epsilon: h.epsilon,
        seed: h.seed,
    }
}

fn scores(record: &ScoresRecord) -> pb::ModelScores {
    pb::ModelScores {
        model_id: record.model_id.clone(),
        roc_auc: record.roc_auc,
        mcc: record.mcc,
        threshold: record.threshold,
        accuracy: record.accuracy,
        roc: record
            .roc
            .chunks_exact(3)
            .map(|p| pb::RocPoint { false_positive_rate: p[0], true_positive_rate: p[1], threshold: p[2] })
            .collect(),
        similar_pairs: record.similar_pairs,
        dissimilar_pairs: record.dissimilar_pairs,
        // Records written before intervals were computed have none (both bounds 0).
        roc_auc_ci: (record.auc_high > 0.0).then_some(pb::Interval { low: record.auc_low, high: record.auc_high }),
        mcc_ci: (record.auc_high > 0.0).then_some(pb::Interval { low: record.mcc_low, high: record.mcc_high }),
        // Records written before counts were kept have none: nothing to warn about then.
        caveat: if record.similar_pairs + record.dissimilar_pairs == 0 {
            String::new()
        } else {
            facesim_metrics::confidence::too_few(record.similar_pairs as usize, record.dissimilar_pairs as usize)
                .unwrap_or_default()
        },
        ..Default::default()
    }
}

/// A recorded comparison of two models as the API's message.
fn comparison(r: &ComparisonRecord) -> pb::ModelComparison {
    pb::ModelComparison {
        candidate_model_id: r.candidate.clone(),
        reference_model_id: r.reference.clone(),
        similar_pairs: r.similar_pairs,
        dissimilar_pairs: r.dissimilar_pairs,
        candidate_roc_auc: r.candidate_auc,
        reference_roc_auc: r.reference_auc,
        auc_difference: r.difference,
        auc_difference_ci: Some(pb::Interval { low: r.difference_low, high: r.difference_high }),
        verdict: r.verdict,
        summary: r.summary.clone(),
    }
}

fn evaluation(record: &EvaluationRecord) -> pb::Evaluation {
    pb::Evaluation {
        id: record.id,
        model_id: record.model_id.clone(),
        job_id: record.job_id,
        test_pairs: record.test_pairs,
        scores: record.scores.as_ref().map(scores),
        baseline: record.baseline.as_ref().map(scores),
        create_time: convert::timestamp(record.create_millis),
        roc_png: Vec::new(),
        loss_png: Vec::new(),
    }
}

fn hyperparameters(h: &Hyperparameters) -> pb::Hyperparameters {
    pb::Hyperparameters {
        epochs: Some(h.epochs),
        batch_size: Some(h.batch_size),
        learning_rate: Some(h.learning_rate),
        momentum: Some(h.momentum),
        margin: Some(h.loss.margin),
        alpha: Some(h.loss.alpha),
        beta: Some(h.loss.beta),
        lambda: Some(h.loss.lambda),
        epsilon: Some(h.loss.epsilon),
        seed: Some(h.seed),
    }
}

fn model(entry: &Entry) -> pb::Model {
    let state = if entry.active { pb::ModelState::Active } else { pb::ModelState::Ready } as i32;
    let Some(r) = &entry.record else {
        return pb::Model {
            id: entry.id.clone(),
            name: "pretrained face descriptor (face-api ResNet, 128-d)".into(),
            state,
            embedding_dim: descriptor::DIM as u32,
            metric: pb::DistanceMetric::Euclidean as i32,
            threshold: descriptor::THRESHOLD,
            ..Default::default()
        };
    };
    let hyper: Option<Hyperparameters> = serde_json::from_str(&r.hyperparameters_json).ok();
    let split_ids = |part: u32| -> Vec<u64> {
        r.pairs
            .as_ref()
            .map(|p| {
                p.pair_id.iter().zip(&p.split).filter(|(id, s)| **s == part && **id != 0).map(|(id, _)| *id).collect()
            })
            .unwrap_or_default()
    };
    let epochs = hyper.as_ref().map(|h| h.epochs).unwrap_or(0);
    pb::Model {
        id: r.id.clone(),
        name: r.name.clone(),
        architecture: r.architecture,
        loss: r.loss,
        state,
        embedding_dim: r.embedding_dim,
        metric: r.metric,
        threshold: r.threshold,
        training_job_id: r.training_job_id,
        batch_ids: r.batch_ids.clone(),
        label_count: r.label_count,
        scores: r.scores.as_ref().map(scores),
        create_time: convert::timestamp(r.create_millis),
        hyperparameters: hyper.as_ref().map(hyperparameters),
        history: r
            .history
            .iter()
            .map(|e| pb::TrainingProgress {
                epoch: e.epoch,
                epochs,
                train_loss: e.train_loss,
                validation_loss: e.validation_loss,
                validation_auc: e.validation_auc,
                pairs_per_second: e.pairs_per_second,
                eta_seconds: 0.0,
            })
            .collect(),
        baseline: r.baseline.as_ref().map(scores),
        evaluation_id: r.evaluation_id,
        data_source: r.data_source.clone(),
        device: r.device.clone(),
        best_epoch: r.best_epoch,
        optimizer: match hyper.map(|h| h.optimizer) {
            Some(OptimizerKind::SgdMomentum) => "sgd-momentum".into(),
            Some(OptimizerKind::Adam) => "adam".into(),
            None => String::new(),
        },
        train_pair_ids: split_ids(TRAIN),
        validation_pair_ids: split_ids(VALIDATION),
        test_pair_ids: split_ids(TEST),
        activations: r
            .activations
            .iter()
            .map(|a| pb::ActivationEvent {
                time: convert::timestamp(a.millis),
                user: a.user.clone(),
                forced: a.forced,
                refused: a.refused,
                comparison: a.comparison.as_ref().map(comparison),
            })
            .collect(),
    }
}

/// Runs blocking domain work (store scans, file reads) off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Status> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(from_join)?
}

#[tonic::async_trait]
impl TrainingService for TrainingApi {
    #[instrument(skip_all)]
    async fn start_training(&self, request: Request<pb::StartTrainingRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let architecture = match pb::Architecture::try_from(req.architecture) {
            Ok(pb::Architecture::Unspecified) => {
                return Err(Status::invalid_argument("architecture must be set: SIAMESE_CNN or SIAMESE_GAML"))
            }
            Ok(a) => Architecture::from_number(a as i32).expect("the enums match"),
            Err(_) => return Err(Status::invalid_argument(format!("unknown architecture {}", req.architecture))),
        };
        let loss = match pb::LossFunction::try_from(req.loss) {
            Ok(pb::LossFunction::Unspecified) => None,
            Ok(l) => Some(LossKind::from_number(l as i32).expect("the enums match")),
            Err(_) => return Err(Status::invalid_argument(format!("unknown loss function {}", req.loss))),
        };
        let data = match req.data {
            Some(pb::start_training_request::Data::Labels(l)) => labels(l),
            Some(pb::start_training_request::Data::PairList(p)) => pair_list(p)?,
            None => return Err(no_data()),
        };
        let request = TrainRequest {
            architecture,
            loss,
            data,
            overrides: overrides(req.hyperparameters),
            device: req.device,
            name: req.name,
            split: req.split,
        };
        let state = self.state.clone();
        let job = blocking(move || {
            let id = state.training.start_training(request, caller.user_id)?;
            Ok(convert::job(&state.jobs.get(id)?))
        })
        .await?;
        Ok(Response::new(job))
    }

    #[instrument(skip_all)]
    async fn start_evaluation(
        &self,
        request: Request<pb::StartEvaluationRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let data = match req.data {
            Some(pb::start_evaluation_request::Data::Labels(l)) => labels(l),
            Some(pb::start_evaluation_request::Data::PairList(p)) => pair_list(p)?,
            None => return Err(no_data()),
        };
        let state = self.state.clone();
        let job = blocking(move || {
            let id = state.training.start_evaluation(&req.model_id, data, caller.user_id)?;
            Ok(convert::job(&state.jobs.get(id)?))
        })
        .await?;
        Ok(Response::new(job))
    }

    #[instrument(skip_all, fields(evaluation_id = request.get_ref().evaluation_id))]
    async fn get_evaluation(
        &self,
        request: Request<pb::GetEvaluationRequest>,
    ) -> Result<Response<pb::Evaluation>, Status> {
        let id = required_id(request.get_ref().evaluation_id, "evaluation_id")?;
        Ok(Response::new(evaluation(&self.state.training.evaluation(id)?)))
    }

    #[instrument(skip_all)]
    async fn list_evaluations(
        &self,
        request: Request<pb::ListEvaluationsRequest>,
    ) -> Result<Response<pb::ListEvaluationsResponse>, Status> {
        let req = request.into_inner();
        let size = convert::page_size(req.page_size)?;
        let start = convert::decode_page_token(&req.page_token)?;
        let (page, next) = self.state.training.evaluations_page(&req.model_id, start, size)?;
        Ok(Response::new(pb::ListEvaluationsResponse {
            evaluations: page.iter().map(evaluation).collect(),
            next_page_token: convert::encode_page_token(next),
        }))
    }
}

pub struct ModelApi {
    state: Arc<AppState>,
}

impl ModelApi {
    pub fn new(state: Arc<AppState>) -> Self {
        ModelApi { state }
    }
}

fn model_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("model_id must be set, e.g. \"descriptor/v1\" or \"gaml/3\""));
    }
    Ok(id)
}

#[tonic::async_trait]
impl ModelService for ModelApi {
    #[instrument(skip_all)]
    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let req = request.into_inner();
        let size = convert::page_size(req.page_size)?;
        // The token is the position in the registry's order (descriptor first, then by age).
        let start = convert::decode_page_token(&req.page_token)? as usize;
        let registry = self.state.registry.clone();
        let entries = blocking(move || Ok(registry.list()?)).await?;
        let end = (start + size).min(entries.len());
        let next = (end < entries.len()).then_some(end as u64);
        Ok(Response::new(pb::ListModelsResponse {
            models: entries.get(start.min(end)..end).unwrap_or_default().iter().map(model).collect(),
            next_page_token: convert::encode_page_token(next),
        }))
    }

    #[instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn get_model(&self, request: Request<pb::GetModelRequest>) -> Result<Response<pb::Model>, Status> {
        let id = model_id(&request.get_ref().model_id)?.to_string();
        let registry = self.state.registry.clone();
        Ok(Response::new(model(&blocking(move || Ok(registry.get(&id)?)).await?)))
    }

    #[instrument(skip_all)]
    async fn get_active_model(
        &self,
        _request: Request<pb::GetActiveModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let registry = self.state.registry.clone();
        Ok(Response::new(model(&blocking(move || Ok(registry.get(&registry.active_id()?)?)).await?)))
    }

    #[instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn activate_model(&self, request: Request<pb::ActivateModelRequest>) -> Result<Response<pb::Model>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let id = model_id(&request.model_id)?.to_string();
        let workflows = self.state.workflows.clone();
        let activated = blocking(move || Ok(workflows.activate_model(&id, request.force, &caller.user_name)?)).await?;
        Ok(Response::new(model(&activated)))
    }

    #[instrument(skip_all, fields(candidate = %request.get_ref().candidate_model_id, reference = %request.get_ref().reference_model_id))]
    async fn compare_models(
        &self,
        request: Request<pb::CompareModelsRequest>,
    ) -> Result<Response<pb::ModelComparison>, Status> {
        let request = request.into_inner();
        let candidate = model_id(&request.candidate_model_id)?.to_string();
        let reference = request.reference_model_id;
        let workflows = self.state.workflows.clone();
        let record = blocking(move || Ok(workflows.compare_models(&candidate, &reference)?)).await?;
        Ok(Response::new(comparison(&record)))
    }

    #[instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn delete_model(
        &self,
        request: Request<pb::DeleteModelRequest>,
    ) -> Result<Response<pb::DeleteModelResponse>, Status> {
        let id = model_id(&request.get_ref().model_id)?.to_string();
        let workflows = self.state.workflows.clone();
        let deleted = blocking(move || Ok(workflows.delete_model(&id)?)).await?;
        let entry = Entry { id: deleted.record.id.clone(), record: Some(deleted.record), active: false };
        Ok(Response::new(pb::DeleteModelResponse {
            model: Some(model(&entry)),
            embeddings_removed: deleted.embeddings_removed as u64,
        }))
    }
}
