//! ProposalService: distance histograms, proposal jobs, and the pairs and batches they create.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use facesim_proto::v1::{self as pb, proposal_service_server::ProposalService};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{self, decode_page_token, encode_page_token, page_size, principal, required_id};
use super::status::from_join;
use crate::proposal::{self, Limit, ProposalSpec, Selection};
use crate::state::AppState;

pub struct ProposalApi {
    state: Arc<AppState>,
}

impl ProposalApi {
    pub fn new(state: Arc<AppState>) -> Self {
        ProposalApi { state }
    }
}

fn selection(input: Option<pb::PairSelection>) -> Selection {
    let input = input.unwrap_or_default();
    Selection { model_id: input.model_id, datasets: input.datasets, same_identity: input.include_same_identity }
}

/// Sets its flag when dropped: a computation of a call the client gave up on stops early.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl ProposalService for ProposalApi {
    #[instrument(skip_all)]
    async fn propose_pairs(&self, request: Request<pb::ProposePairsRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let limit = match req.limit {
            Some(pb::propose_pairs_request::Limit::MaxDistance(d)) => Limit::MaxDistance(d),
            Some(pb::propose_pairs_request::Limit::Budget(n)) => Limit::Budget(n as usize),
            None => {
                return Err(Status::invalid_argument(
                    "give either max_distance (every pair within it) or budget (the N nearest pairs)",
                ))
            }
        };
        let order = match pb::ProposalOrder::try_from(req.order) {
            Ok(pb::ProposalOrder::Unspecified | pb::ProposalOrder::Nearest) => proposal::Order::Nearest,
            Ok(pb::ProposalOrder::Uncertain) => proposal::Order::Uncertain,
            Err(_) => return Err(Status::invalid_argument(format!("unknown proposal order {}", req.order))),
        };
        let shuffle_seed = match pb::BatchOrder::try_from(req.batch_order) {
            Ok(pb::BatchOrder::Unspecified | pb::BatchOrder::Random) => {
                Some(req.shuffle_seed.unwrap_or_else(proposal::pick_seed))
            }
            Ok(pb::BatchOrder::Ranked) if req.shuffle_seed.is_some() => {
                return Err(Status::invalid_argument("shuffle_seed is for batch_order RANDOM, not RANKED"))
            }
            Ok(pb::BatchOrder::Ranked) => None,
            Err(_) => return Err(Status::invalid_argument(format!("unknown batch order {}", req.batch_order))),
        };
        let spec = ProposalSpec {
            selection: selection(req.selection),
            limit,
            max_pairs_per_image: req.max_pairs_per_image as usize,
            exclude_existing: req.exclude_existing.unwrap_or(true),
            batch_size: if req.batch_size == 0 { proposal::DEFAULT_BATCH_SIZE } else { req.batch_size as usize },
            open: !req.start_closed,
            note: req.note,
            approximate: req.approximate,
            order,
            shuffle_seed,
        };
        let proposals = self.state.proposals.clone();
        let job =
            tokio::task::spawn_blocking(move || proposals.start(spec, caller.user_id)).await.map_err(from_join)??;
        tracing::info!(job = job.id, "proposal job started");
        Ok(Response::new(convert::job(&job)))
    }

    #[instrument(skip_all)]
    async fn get_distance_histogram(
        &self,
        request: Request<pb::GetDistanceHistogramRequest>,
    ) -> Result<Response<pb::DistanceHistogram>, Status> {
        let req = request.into_inner();
        let bins = if req.bins == 0 { proposal::DEFAULT_BINS } else { req.bins as usize };
        let selection = selection(req.selection);
        let proposals = self.state.proposals.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let h = tokio::task::spawn_blocking(move || proposals.histogram(&selection, bins, req.mark_distance, &cancel))
            .await
            .map_err(from_join)??;
        Ok(Response::new(pb::DistanceHistogram {
            model_id: h.model_id,
            min_distance: h.min,
            max_distance: h.max,
            counts: h.counts,
            total_pairs: h.total_pairs,
            mark_distance: h.mark,
            pairs_within_mark: h.within_mark,
        }))
    }

    #[instrument(skip_all, fields(batch_id = request.get_ref().batch_id))]
    async fn list_pairs(
        &self,
        request: Request<pb::ListPairsRequest>,
    ) -> Result<Response<pb::ListPairsResponse>, Status> {
        let req = request.into_inner();
        let (limit, start) = (page_size(req.page_size)?, decode_page_token(&req.page_token)?);
        let (pairs, next) = self.state.proposals.pairs(req.batch_id, start, limit)?;
        Ok(Response::new(pb::ListPairsResponse {
            pairs: pairs.iter().map(convert::pair).collect(),
            next_page_token: encode_page_token(next),
        }))
    }

    #[instrument(skip_all, fields(pair_id = request.get_ref().pair_id))]
    async fn get_pair(&self, request: Request<pb::GetPairRequest>) -> Result<Response<pb::Pair>, Status> {
        let id = required_id(request.get_ref().pair_id, "pair_id")?;
        Ok(Response::new(convert::pair(&self.state.proposals.pair(id)?)))
    }

    #[instrument(skip_all)]
    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let req = request.into_inner();
        let (limit, start) = (page_size(req.page_size)?, decode_page_token(&req.page_token)?);
        let (batches, next) = self.state.proposals.batches(start, limit)?;
        Ok(Response::new(pb::ListBatchesResponse {
            batches: batches.iter().map(convert::batch).collect(),
            next_page_token: encode_page_token(next),
        }))
    }

    #[instrument(skip_all, fields(batch_id = request.get_ref().batch_id))]
    async fn get_batch(&self, request: Request<pb::GetBatchRequest>) -> Result<Response<pb::Batch>, Status> {
        let id = required_id(request.get_ref().batch_id, "batch_id")?;
        Ok(Response::new(convert::batch(&self.state.proposals.batch(id)?)))
    }

    #[instrument(skip_all, fields(batch_id = request.get_ref().batch_id))]
    async fn set_batch_state(&self, request: Request<pb::SetBatchStateRequest>) -> Result<Response<pb::Batch>, Status> {
        let req = request.into_inner();
        let id = required_id(req.batch_id, "batch_id")?;
        let open = match pb::BatchState::try_from(req.state) {
            Ok(pb::BatchState::Open) => true,
            Ok(pb::BatchState::Closed) => false,
            _ => return Err(Status::invalid_argument(format!("state must be OPEN or CLOSED, got {}", req.state))),
        };
        let batch = self.state.proposals.set_batch_open(id, open).await?;
        tracing::info!(batch = id, open, "batch state set");
        Ok(Response::new(convert::batch(&batch)))
    }
}
