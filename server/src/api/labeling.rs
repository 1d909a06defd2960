//! LabelingService: tasks, votes and skips for annotators; instructions, progress, statistics,
//! agreement, gold pairs, annotator control, labels and raw votes for researchers.

use std::sync::Arc;

use facesim_proto::v1::{self as pb, labeling_service_server::LabelingService};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{decode_page_token, encode_page_token, page_size, principal, required_id, timestamp};
use super::status::from_join;
use crate::labeling::{self, AnnotatorStats, Example, Instructions, NewGold};
use crate::state::AppState;
use crate::store::{ExampleRecord, InstructionsRecord, LabelRecord, VoteRecord};

pub struct LabelingApi {
    state: Arc<AppState>,
}

impl LabelingApi {
    pub fn new(state: Arc<AppState>) -> Self {
        LabelingApi { state }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&labeling::Labeling) -> Result<T, labeling::LabelingError> + Send + 'static,
    ) -> Result<T, Status> {
        let labeling = self.state.labeling.clone();
        Ok(tokio::task::spawn_blocking(move || f(&labeling)).await.map_err(from_join)??)
    }
}

fn stats(s: AnnotatorStats) -> pb::AnnotatorStats {
    pb::AnnotatorStats {
        user_id: s.user_id,
        name: s.name,
        enabled: s.enabled,
        votes: s.votes,
        votes_today: s.votes_today,
        rejected_too_fast: s.rejected_too_fast,
        skips: s.skips,
        gold_accuracy: s.gold_accuracy,
        gold_answered: s.gold_answered,
        majority_agreement: s.majority_agreement,
        median_answer_seconds: s.median_answer_seconds,
    }
}

fn example(e: Example) -> pb::ExamplePair {
    pb::ExamplePair {
        image_a: e.image_a,
        image_b: e.image_b,
        face_a: e.face_a.to_vec(),
        face_b: e.face_b.to_vec(),
        explanation: e.explanation,
    }
}

fn instructions(i: Instructions) -> pb::Instructions {
    pb::Instructions {
        text: i.text,
        similar_examples: i.similar.into_iter().map(example).collect(),
        dissimilar_examples: i.dissimilar.into_iter().map(example).collect(),
        min_answer_millis: i.min_answer_millis,
    }
}

fn example_ref(e: pb::ExampleRef) -> ExampleRecord {
    ExampleRecord { image_a: e.image_a, image_b: e.image_b, explanation: e.explanation }
}

fn label(l: &LabelRecord, pair: Option<crate::store::PairRecord>) -> pb::Label {
    let pair = pair.unwrap_or_default();
    pb::Label {
        pair_id: l.pair_id,
        batch_id: l.batch_id,
        image_a: pair.image_a,
        image_b: pair.image_b,
        identity_a: pair.identity_a,
        identity_b: pair.identity_b,
        distance: pair.distance,
        majority: l.majority,
        similar_votes: l.similar_votes,
        dissimilar_votes: l.dissimilar_votes,
        label_time: timestamp(l.label_millis),
    }
}

fn vote(v: &VoteRecord) -> pb::Vote {
    pb::Vote {
        id: v.id,
        pair_id: v.pair_id,
        annotator_id: v.annotator_id,
        choice: v.choice,
        lease_time: timestamp(v.lease_millis),
        vote_time: timestamp(v.vote_millis),
        counted: v.counted,
        gold: v.gold,
        lease_id: v.lease_id,
    }
}

#[tonic::async_trait]
impl LabelingService for LabelingApi {
    #[instrument(skip_all, fields(batch_id = request.get_ref().batch_id))]
    async fn next_task(&self, request: Request<pb::NextTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let user = principal(&request)?.user_id;
        let batch = request.get_ref().batch_id;
        // A hand-out is a few in-memory steps and two small reads: cheaper inline than a hop to
        // the blocking pool, which under load costs more in thread switches than it saves.
        let task = self.state.labeling.next_task(user, batch)?;
        Ok(Response::new(match task {
            Some(t) => pb::Task {
                lease_id: t.lease_id,
                pair_id: t.pair_id,
                face_a: t.face_a.to_vec(),
                face_b: t.face_b.to_vec(),
                lease_time: timestamp(t.lease_millis),
                lease_expire_time: timestamp(t.expire_millis),
                remaining_in_batch: t.remaining_in_batch,
                batch_id: t.batch_id,
                done: false,
            },
            None => pb::Task { done: true, ..Default::default() },
        }))
    }

    #[instrument(skip_all, fields(lease_id = request.get_ref().lease_id))]
    async fn submit_vote(
        &self,
        request: Request<pb::SubmitVoteRequest>,
    ) -> Result<Response<pb::SubmitVoteResponse>, Status> {
        let user = principal(&request)?.user_id;
        let req = request.into_inner();
        let lease = required_id(req.lease_id, "lease_id")?;
        let recorded = self.state.labeling.submit_vote(user, lease, req.choice).await?;
        Ok(Response::new(pb::SubmitVoteResponse { recorded }))
    }

    #[instrument(skip_all, fields(lease_id = request.get_ref().lease_id))]
    async fn skip(&self, request: Request<pb::SkipRequest>) -> Result<Response<pb::SkipResponse>, Status> {
        let user = principal(&request)?.user_id;
        let lease = required_id(request.get_ref().lease_id, "lease_id")?;
        self.blocking(move |l| l.skip(user, lease)).await?;
        Ok(Response::new(pb::SkipResponse {}))
    }

    #[instrument(skip_all)]
    async fn get_instructions(
        &self,
        _request: Request<pb::GetInstructionsRequest>,
    ) -> Result<Response<pb::Instructions>, Status> {
        Ok(Response::new(instructions(self.blocking(|l| l.instructions()).await?)))
    }

    #[instrument(skip_all)]
    async fn my_stats(&self, request: Request<pb::MyStatsRequest>) -> Result<Response<pb::AnnotatorStats>, Status> {
        let user = principal(&request)?.user_id;
        Ok(Response::new(stats(self.blocking(move |l| l.stats(user)).await?)))
    }

    #[instrument(skip_all)]
    async fn set_instructions(
        &self,
        request: Request<pb::SetInstructionsRequest>,
    ) -> Result<Response<pb::Instructions>, Status> {
        let req = request.into_inner();
        let record = InstructionsRecord {
            text: req.text,
            similar: req.similar_examples.into_iter().map(example_ref).collect(),
            dissimilar: req.dissimilar_examples.into_iter().map(example_ref).collect(),
        };
        let set = self.state.labeling.set_instructions(record).await?;
        tracing::info!(similar = set.similar.len(), dissimilar = set.dissimilar.len(), "instructions set");
        Ok(Response::new(instructions(set)))
    }

    #[instrument(skip_all, fields(batch_id = request.get_ref().batch_id))]
    async fn get_batch_progress(
        &self,
        request: Request<pb::GetBatchProgressRequest>,
    ) -> Result<Response<pb::BatchProgress>, Status> {
        let batch = required_id(request.get_ref().batch_id, "batch_id")?;
        let p = self.blocking(move |l| l.batch_progress(batch)).await?;
        Ok(Response::new(pb::BatchProgress {
            batch_id: p.batch_id,
            pairs_by_votes: p.pairs_by_votes.to_vec(),
            labeled_similar: p.labeled_similar,
            labeled_dissimilar: p.labeled_dissimilar,
            active_leases: p.active_leases,
        }))
    }

    #[instrument(skip_all)]
    async fn list_annotator_stats(
        &self,
        request: Request<pb::ListAnnotatorStatsRequest>,
    ) -> Result<Response<pb::ListAnnotatorStatsResponse>, Status> {
        let req = request.into_inner();
        let (limit, start) = (page_size(req.page_size)?, decode_page_token(&req.page_token)?);
        let (all, next) = self.blocking(move |l| l.all_stats(start, limit)).await?;
        Ok(Response::new(pb::ListAnnotatorStatsResponse {
            annotators: all.into_iter().map(stats).collect(),
            next_page_token: encode_page_token(next),
        }))
    }

    #[instrument(skip_all, fields(batch_id = request.get_ref().batch_id))]
    async fn get_agreement(
        &self,
        request: Request<pb::GetAgreementRequest>,
    ) -> Result<Response<pb::Agreement>, Status> {
        let batch = request.get_ref().batch_id;
        let a = self.blocking(move |l| l.agreement(batch)).await?;
        Ok(Response::new(pb::Agreement {
            complete_pairs: a.complete_pairs,
            fleiss_kappa: a.fleiss_kappa,
            krippendorff_alpha: a.krippendorff_alpha,
            unanimous_share: a.unanimous_share,
        }))
    }

    #[instrument(skip_all)]
    async fn add_gold_pairs(
        &self,
        request: Request<pb::AddGoldPairsRequest>,
    ) -> Result<Response<pb::AddGoldPairsResponse>, Status> {
        let pairs: Vec<NewGold> = request
            .into_inner()
            .pairs
            .into_iter()
            .map(|g| NewGold { image_a: g.image_a, image_b: g.image_b, answer: g.answer })
            .collect();
        let pair_ids = self.state.labeling.add_gold(&pairs).await?;
        tracing::info!(gold = pair_ids.len(), "gold pairs added");
        Ok(Response::new(pb::AddGoldPairsResponse { pair_ids }))
    }

    #[instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn set_annotator_enabled(
        &self,
        request: Request<pb::SetAnnotatorEnabledRequest>,
    ) -> Result<Response<pb::AnnotatorStats>, Status> {
        let req = request.into_inner();
        let user = required_id(req.user_id, "user_id")?;
        let s = self.state.labeling.set_enabled(user, req.enabled).await?;
        tracing::info!(user, enabled = req.enabled, "annotator labeling access set");
        Ok(Response::new(stats(s)))
    }

    #[instrument(skip_all, fields(batch_id = request.get_ref().batch_id))]
    async fn list_labels(
        &self,
        request: Request<pb::ListLabelsRequest>,
    ) -> Result<Response<pb::ListLabelsResponse>, Status> {
        let req = request.into_inner();
        let (limit, start) = (page_size(req.page_size)?, decode_page_token(&req.page_token)?);
        let batch = req.batch_id;
        let (labels, next) = self
            .blocking(move |l| {
                let (labels, next) = l.labels(batch, start, limit)?;
                let with_pairs = labels
                    .iter()
                    .map(|lab| Ok(label(lab, l.pair(lab.pair_id)?)))
                    .collect::<Result<Vec<_>, labeling::LabelingError>>()?;
                Ok((with_pairs, next))
            })
            .await?;
        Ok(Response::new(pb::ListLabelsResponse { labels, next_page_token: encode_page_token(next) }))
    }

    #[instrument(skip_all, fields(batch_id = request.get_ref().batch_id))]
    async fn list_votes(
        &self,
        request: Request<pb::ListVotesRequest>,
    ) -> Result<Response<pb::ListVotesResponse>, Status> {
        let req = request.into_inner();
        let (limit, start) = (page_size(req.page_size)?, decode_page_token(&req.page_token)?);
        let batch = req.batch_id;
        let (votes, next) = self.blocking(move |l| l.votes(batch, start, limit)).await?;
        Ok(Response::new(pb::ListVotesResponse {
            votes: votes.iter().map(vote).collect(),
            next_page_token: encode_page_token(next),
        }))
    }
}
