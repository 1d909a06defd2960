//! RankingService: ranking a gallery by similarity to a face, comparing and embedding faces.

use std::sync::Arc;

use facesim_proto::v1::{self as pb, ranking_service_server::RankingService};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert;
use super::status::{from_join, panicked};
use crate::ranking::{FaceRef, RankQuery, Ranked, RankingError, SearchMode, MAX_BATCH};
use crate::state::AppState;
use crate::vectors::Metric;

pub struct RankingApi {
    state: Arc<AppState>,
}

impl RankingApi {
    pub fn new(state: Arc<AppState>) -> Self {
        RankingApi { state }
    }
}

fn face_ref(input: Option<pb::FaceInput>, field: &str) -> Result<FaceRef, Status> {
    let input = input.unwrap_or_default();
    let request = convert::face_request(input.face_mode, input.min_face_score, &format!("{field}."))?;
    match input.face {
        Some(pb::face_input::Face::ImageId(0)) => {
            Err(Status::invalid_argument(format!("{field}.image_id must be set")))
        }
        Some(pb::face_input::Face::ImageId(id)) => Ok(FaceRef::ImageId(id)),
        Some(pb::face_input::Face::ImageData(bytes)) => Ok(FaceRef::ImageBytes(bytes, request)),
        Some(pb::face_input::Face::Embedding(e)) => Ok(FaceRef::Embedding(e.values)),
        None => Err(Status::invalid_argument(format!("{field}: {}", RankingError::MissingFace))),
    }
}

fn metric(n: i32, field: &str) -> Result<Option<Metric>, Status> {
    match n {
        0 => Ok(None),
        n => Metric::from_number(n)
            .map(Some)
            .ok_or_else(|| Status::invalid_argument(format!("{field}: unknown distance metric {n}"))),
    }
}

fn rank_query(req: pb::RankRequest, field: &str) -> Result<RankQuery, Status> {
    let mode = match pb::SearchMode::try_from(req.mode) {
        Ok(pb::SearchMode::Unspecified) => SearchMode::Auto,
        Ok(pb::SearchMode::Exact) => SearchMode::Exact,
        Ok(pb::SearchMode::Approximate) => SearchMode::Approximate,
        Err(_) => return Err(Status::invalid_argument(format!("{field}.mode: unknown search mode {}", req.mode))),
    };
    let filter = req.filter.unwrap_or_default();
    Ok(RankQuery {
        face: face_ref(req.query, &format!("{field}.query"))?,
        k: req.k as usize,
        threshold: req.score_threshold,
        metric: metric(req.metric, &format!("{field}.metric"))?,
        exclude_query_identity: filter.exclude_query_identity,
        identity_ids: filter.identity_ids,
        datasets: filter.datasets,
        group_by_identity: req.group_by_identity,
        model_id: req.model_id,
        mode,
    })
}

fn rank_response(ranked: Ranked) -> pb::RankResponse {
    pb::RankResponse {
        results: ranked
            .results
            .into_iter()
            .map(|r| pb::RankResult {
                image_id: r.image_id,
                identity_id: r.identity_id,
                identity: r.identity,
                score: r.score,
                merged_images: r.merged_images,
            })
            .collect(),
        model_id: ranked.model_id,
        metric: ranked.metric.number(),
        mode: match ranked.mode {
            SearchMode::Approximate => pb::SearchMode::Approximate,
            _ => pb::SearchMode::Exact,
        } as i32,
    }
}

#[tonic::async_trait]
impl RankingService for RankingApi {
    #[instrument(skip_all, fields(k = request.get_ref().k, model = %request.get_ref().model_id))]
    async fn rank(&self, request: Request<pb::RankRequest>) -> Result<Response<pb::RankResponse>, Status> {
        let query = rank_query(request.into_inner(), "request")?;
        let ranking = self.state.ranking.clone();
        let threads = ranking.threads().clone();
        let ranked = threads.run(move || ranking.rank(query)).await.ok_or_else(panicked)??;
        Ok(Response::new(rank_response(ranked)))
    }

    #[instrument(skip_all, fields(queries = request.get_ref().queries.len()))]
    async fn batch_rank(
        &self,
        request: Request<pb::BatchRankRequest>,
    ) -> Result<Response<pb::BatchRankResponse>, Status> {
        let req = request.into_inner();
        if req.queries.is_empty() || req.queries.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "a batch holds 1-{MAX_BATCH} queries, got {}",
                req.queries.len()
            )));
        }
        let queries = req
            .queries
            .into_iter()
            .enumerate()
            .map(|(i, q)| rank_query(q, &format!("queries[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let ranking = self.state.ranking.clone();
        let threads = ranking.threads().clone();
        let ranked = threads
            .run(move || {
                queries
                    .into_iter()
                    .enumerate()
                    .map(|(i, q)| ranking.rank(q).map_err(|e| (i, e)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .ok_or_else(panicked)?
            .map_err(|(i, e)| {
                let status = Status::from(e);
                Status::new(status.code(), format!("queries[{i}]: {}", status.message()))
            })?;
        Ok(Response::new(pb::BatchRankResponse { responses: ranked.into_iter().map(rank_response).collect() }))
    }

    #[instrument(skip_all)]
    async fn compare(&self, request: Request<pb::CompareRequest>) -> Result<Response<pb::CompareResponse>, Status> {
        let req = request.into_inner();
        let (a, b) = (face_ref(req.a, "a")?, face_ref(req.b, "b")?);
        let ranking = self.state.ranking.clone();
        let model = req.model_id;
        let result = tokio::task::spawn_blocking(move || ranking.compare(&model, a, b)).await.map_err(from_join)??;
        Ok(Response::new(pb::CompareResponse {
            score: result.score,
            metric: result.metric.number(),
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
        let model = req.model_id;
        let (model_id, values) =
            tokio::task::spawn_blocking(move || ranking.embed(&model, face)).await.map_err(from_join)??;
        Ok(Response::new(pb::EmbedResponse { embedding: Some(pb::Embedding { values }), model_id }))
    }

    #[instrument(skip_all, fields(bytes = request.get_ref().image_data.len()))]
    async fn detect_faces(
        &self,
        request: Request<pb::DetectFacesRequest>,
    ) -> Result<Response<pb::DetectFacesResponse>, Status> {
        let req = request.into_inner();
        let face = convert::face_request(0, req.min_face_score, "")?;
        let datasets = self.state.datasets.clone();
        let (found, width, height) = tokio::task::spawn_blocking(move || datasets.detect_upload(&req.image_data, face))
            .await
            .map_err(from_join)??;
        Ok(Response::new(pb::DetectFacesResponse {
            faces: found.faces.iter().map(convert::detected_face).collect(),
            best_score: found.best_score,
            width,
            height,
        }))
    }
}
