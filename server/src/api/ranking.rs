//! RankingService: embeddings and comparisons of faces. Gallery ranking is still to come.

use std::sync::Arc;

use facesim_proto::v1::{self as pb, ranking_service_server::RankingService};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::status::from_join;
use crate::ranking::{FaceRef, RankingError};
use crate::state::AppState;

pub struct RankingApi {
    state: Arc<AppState>,
}

impl RankingApi {
    pub fn new(state: Arc<AppState>) -> Self {
        RankingApi { state }
    }
}

fn face_ref(input: Option<pb::FaceInput>, field: &str) -> Result<FaceRef, Status> {
    match input.and_then(|f| f.face) {
        Some(pb::face_input::Face::ImageId(0)) => {
            Err(Status::invalid_argument(format!("{field}.image_id must be set")))
        }
        Some(pb::face_input::Face::ImageId(id)) => Ok(FaceRef::ImageId(id)),
        Some(pb::face_input::Face::ImageData(bytes)) => Ok(FaceRef::ImageBytes(bytes)),
        Some(pb::face_input::Face::Embedding(e)) => Ok(FaceRef::Embedding(e.values)),
        None => Err(Status::invalid_argument(format!("{field}: {}", RankingError::MissingFace))),
    }
}

#[tonic::async_trait]
impl RankingService for RankingApi {
    #[instrument(skip_all)]
    async fn compare(&self, request: Request<pb::CompareRequest>) -> Result<Response<pb::CompareResponse>, Status> {
        let req = request.into_inner();
        let (a, b) = (face_ref(req.a, "a")?, face_ref(req.b, "b")?);
        let ranking = self.state.ranking.clone();
        let model = req.model_id;
        let result = tokio::task::spawn_blocking(move || ranking.compare(&model, a, b)).await.map_err(from_join)??;
        Ok(Response::new(pb::CompareResponse {
            score: result.distance,
            metric: pb::DistanceMetric::Euclidean as i32,
            similar: result.similar,
            threshold: result.threshold,
            model_id: result.model_id,
        }))
    }

    #[instrument(skip_all)]
    async fn embed(&self, request: Request<pb::EmbedRequest>) -> Result<Response<pb::EmbedResponse>, Status> {
        let req = request.into_inner();
        let face = face_ref(req.face, "face")?;
        let ranking = self.state.ranking.clone();
        let model = ranking.model_id(&req.model_id)?;
        let model_in = model.clone();
        let values = tokio::task::spawn_blocking(move || ranking.embed(&model_in, face)).await.map_err(from_join)??;
        Ok(Response::new(pb::EmbedResponse { embedding: Some(pb::Embedding { values }), model_id: model }))
    }
}
