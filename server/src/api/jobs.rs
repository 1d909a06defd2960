//! JobService: background jobs of every kind.

use std::pin::Pin;
use std::sync::Arc;

use facesim_proto::v1::{self as pb, job_service_server::JobService};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{self, required_id};
use crate::state::AppState;
use crate::store::JobRecord;

pub struct JobApi {
    state: Arc<AppState>,
}

impl JobApi {
    pub fn new(state: Arc<AppState>) -> Self {
        JobApi { state }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

/// A job's event; training jobs that finished an epoch carry its figures.
fn event(job: &JobRecord) -> Result<pb::JobEvent, Status> {
    let metric = |name: &str| job.metrics.get(name).copied();
    let training = (job.kind == pb::JobKind::Training as i32).then(|| metric("epoch")).flatten().map(|epoch| {
        pb::TrainingProgress {
            epoch: epoch as u32,
            epochs: metric("epochs").unwrap_or(0.0) as u32,
            train_loss: metric("train_loss").unwrap_or(0.0),
            validation_loss: metric("validation_loss").unwrap_or(0.0),
            validation_auc: metric("validation_auc").unwrap_or(0.0),
            pairs_per_second: metric("pairs_per_second").unwrap_or(0.0),
            eta_seconds: metric("eta_seconds").unwrap_or(0.0),
        }
    });
    Ok(pb::JobEvent { job: Some(convert::job(job)), training })
}

#[tonic::async_trait]
impl JobService for JobApi {
    #[instrument(skip_all, fields(job_id = request.get_ref().job_id))]
    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = required_id(request.get_ref().job_id, "job_id")?;
        Ok(Response::new(convert::job(&self.state.jobs.get(id)?)))
    }

    #[instrument(skip_all)]
    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let req = request.into_inner();
        let size = convert::page_size(req.page_size)?;
        let before = convert::decode_page_token(&req.page_token)?;
        let kind = match pb::JobKind::try_from(req.kind) {
            Ok(pb::JobKind::Unspecified) => None,
            Ok(kind) => Some(kind as i32),
            Err(_) => return Err(Status::invalid_argument(format!("unknown job kind {}", req.kind))),
        };
        let (jobs, next) = self.state.jobs.list(kind, before, size)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(convert::job).collect(),
            next_page_token: convert::encode_page_token(next),
        }))
    }

    #[instrument(skip_all, fields(job_id = request.get_ref().job_id))]
    async fn watch_job(&self, request: Request<pb::WatchJobRequest>) -> Result<Response<EventStream>, Status> {
        let id = required_id(request.get_ref().job_id, "job_id")?;
        let stream: EventStream = match self.state.jobs.watch(id)? {
            // The current state at once, then every change; it ends when the job ends.
            Some(receiver) => Box::pin(WatchStream::new(receiver).map(|job| event(&job))),
            None => Box::pin(futures::stream::iter([event(&self.state.jobs.get(id)?)])),
        };
        Ok(Response::new(stream))
    }

    #[instrument(skip_all, fields(job_id = request.get_ref().job_id))]
    async fn cancel_job(&self, request: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = required_id(request.get_ref().job_id, "job_id")?;
        Ok(Response::new(convert::job(&self.state.jobs.cancel(id)?)))
    }
}
