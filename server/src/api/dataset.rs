//! DatasetService: streaming import and browsing of images and identities.

use std::sync::Arc;
use std::time::Duration;

use facesim_proto::v1::{self as pb, dataset_service_server::DatasetService};
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use super::convert::{self, required_id};
use super::status::from_join;
use crate::dataset::{FaceMode, ImportFile, ImportOutcome, RejectReason};
use crate::state::AppState;

pub struct DatasetApi {
    state: Arc<AppState>,
}

impl DatasetApi {
    pub fn new(state: Arc<AppState>) -> Self {
        DatasetApi { state }
    }

    fn identity_name(&self, identity_id: u64) -> String {
        self.state.datasets.identity(identity_id).map(|i| i.name).unwrap_or_default()
    }

    /// Runs a read on a blocking thread (they decode and may scan).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::dataset::Datasets) -> Result<T, crate::dataset::DatasetError> + Send + 'static,
    ) -> Result<T, Status> {
        let datasets = self.state.datasets.clone();
        Ok(tokio::task::spawn_blocking(move || f(&datasets)).await.map_err(from_join)??)
    }
}

fn reject_reason(reason: RejectReason) -> pb::ImportError {
    match reason {
        RejectReason::Empty => pb::ImportError::Empty,
        RejectReason::TooLarge => pb::ImportError::TooLarge,
        RejectReason::UnsupportedFormat => pb::ImportError::UnsupportedFormat,
        RejectReason::Corrupt => pb::ImportError::Corrupt,
        RejectReason::DimensionsTooLarge => pb::ImportError::DimensionsTooLarge,
        RejectReason::TooSmall => pb::ImportError::TooSmall,
        RejectReason::InvalidName => pb::ImportError::InvalidName,
        RejectReason::NoFace => pb::ImportError::NoFace,
    }
}

/// Files decoded at once: decoding is CPU-bound, so one per core is enough.
fn import_parallelism() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8)
}

#[tonic::async_trait]
impl DatasetService for DatasetApi {
    #[instrument(skip_all)]
    async fn import_images(
        &self,
        request: Request<Streaming<pb::ImportImagesRequest>>,
    ) -> Result<Response<pb::ImportImagesResponse>, Status> {
        let principal_id = convert::principal(&request)?.user_id;
        let idle = Duration::from_secs(self.state.config.stream_idle_seconds.max(1));
        // A client that opens the stream and then sends nothing (or trickles one message for
        // ever) must not hold the call open: each message has `idle` to arrive.
        let stream = tokio_stream::StreamExt::timeout(request.into_inner(), idle).map(move |message| {
            message.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "the upload sent no complete file for {} s; the files before were stored (send the \
                     rest again: stored files come back as duplicates)",
                    idle.as_secs()
                )))
            })
        });
        let datasets = self.state.datasets.clone();
        let mut outcomes = std::pin::pin!(stream
            .enumerate()
            .map(|(index, message)| {
                let datasets = datasets.clone();
                async move {
                    let message = message?;
                    let file_name = message.file_name.clone();
                    let identity = message.identity.clone();
                    let face = convert::face_request(message.face_mode, message.min_face_score, "")?;
                    if message.all_faces && face.mode.unwrap_or(datasets.face_defaults().mode) == FaceMode::Center {
                        return Err(Status::invalid_argument(
                            "all_faces stores each detected face: it needs face_mode detect (this request, or the \
                             server's default, is center)",
                        ));
                    }
                    let file = ImportFile {
                        dataset: message.dataset,
                        identity: message.identity,
                        file_name: message.file_name,
                        data: message.data,
                        face,
                        all_faces: message.all_faces,
                    };
                    let prepared =
                        tokio::task::spawn_blocking(move || datasets.prepare(file)).await.map_err(from_join)?;
                    Ok::<_, Status>((index as u32, file_name, identity, prepared))
                }
            })
            .buffered(import_parallelism()));

        let mut response = pb::ImportImagesResponse::default();
        // A broken stream ends the call with its error, after what came before is flushed and
        // its embeddings are under way, so nothing stored is left half-done.
        let mut broken = None;
        while let Some(item) = outcomes.next().await {
            let (index, file_name, identity, prepared) = match item {
                Ok(item) => item,
                Err(status) => {
                    broken = Some(status);
                    break;
                }
            };
            // Files are decoded in parallel but stored in stream order, so ids follow the order
            // in which the client sent the files (and the faces of a file, largest first).
            let outcomes = match prepared {
                Ok(prepared) => {
                    let datasets = datasets.clone();
                    tokio::task::spawn_blocking(move || {
                        prepared
                            .into_iter()
                            .map(|p| {
                                let name = p.file_name().to_string();
                                datasets.store(p).map(|outcome| (name, outcome))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .await
                    .map_err(from_join)??
                }
                Err(rejected) => vec![(file_name, rejected)],
            };
            for (file_name, outcome) in outcomes {
                let mut result =
                    pb::ImportResult { index, file_name, identity: identity.clone(), ..Default::default() };
                match outcome {
                    ImportOutcome::Imported { image_id, .. } => {
                        result.set_outcome(pb::ImportOutcome::Imported);
                        result.image_id = image_id;
                        response.imported += 1;
                    }
                    ImportOutcome::Duplicate { image_id } => {
                        result.set_outcome(pb::ImportOutcome::Duplicate);
                        result.image_id = image_id;
                        result.message = format!("the same bytes are already stored as image {image_id}");
                        response.duplicates += 1;
                    }
                    ImportOutcome::Rejected { reason, message } => {
                        tracing::info!(file = %result.file_name, %message, "file rejected");
                        result.set_outcome(pb::ImportOutcome::Rejected);
                        result.set_error(reject_reason(reason));
                        result.message = message;
                        response.rejected += 1;
                    }
                }
                response.results.push(result);
            }
        }
        // Acknowledge only what is on disk.
        self.state.datasets.flush().await?;
        if response.imported > 0 {
            // The import is stored and acknowledged whatever happens here: embeddings are derived
            // data, and the next import or restart starts the job again.
            let embedder = self.state.embedder.clone();
            match tokio::task::spawn_blocking(move || embedder.ensure(principal_id)).await.map_err(from_join)? {
                Ok(job) => response.embedding_job_id = job.unwrap_or(0),
                Err(error) => tracing::error!(%error, "cannot start the embedding job after an import"),
            }
        }
        tracing::info!(
            imported = response.imported,
            duplicates = response.duplicates,
            rejected = response.rejected,
            broken = broken.is_some(),
            "import done"
        );
        match broken {
            Some(status) => Err(status),
            None => Ok(Response::new(response)),
        }
    }

    #[instrument(skip_all)]
    async fn list_datasets(
        &self,
        _request: Request<pb::ListDatasetsRequest>,
    ) -> Result<Response<pb::ListDatasetsResponse>, Status> {
        let summaries = self.blocking(|ds| ds.datasets()).await?;
        Ok(Response::new(pb::ListDatasetsResponse {
            datasets: summaries
                .into_iter()
                .map(|s| pb::Dataset { name: s.name, identity_count: s.identity_count, image_count: s.image_count })
                .collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_identities(
        &self,
        request: Request<pb::ListIdentitiesRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        let req = request.into_inner();
        let size = convert::page_size(req.page_size)?;
        let start = convert::decode_page_token(&req.page_token)?;
        let dataset = (!req.dataset.is_empty()).then_some(req.dataset);
        let (page, next) = self.blocking(move |ds| ds.identities_page(dataset.as_deref(), start, size)).await?;
        Ok(Response::new(pb::ListIdentitiesResponse {
            identities: page.iter().map(convert::identity).collect(),
            next_page_token: convert::encode_page_token(next),
        }))
    }

    #[instrument(skip_all)]
    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let req = request.into_inner();
        let size = convert::page_size(req.page_size)?;
        let start = convert::decode_page_token(&req.page_token)?;
        let dataset = (!req.dataset.is_empty()).then_some(req.dataset);
        let identity = (req.identity_id != 0).then_some(req.identity_id);
        let (page, next) = self.blocking(move |ds| ds.images_page(dataset.as_deref(), identity, start, size)).await?;
        let mut names = std::collections::HashMap::new();
        let images = page
            .iter()
            .map(|image| {
                let name = names.entry(image.identity_id).or_insert_with(|| self.identity_name(image.identity_id));
                convert::image(image, name)
            })
            .collect();
        Ok(Response::new(pb::ListImagesResponse { images, next_page_token: convert::encode_page_token(next) }))
    }

    #[instrument(skip_all, fields(image_id = request.get_ref().image_id))]
    async fn get_image(&self, request: Request<pb::GetImageRequest>) -> Result<Response<pb::Image>, Status> {
        let id = required_id(request.get_ref().image_id, "image_id")?;
        let image = self.state.datasets.image(id)?;
        Ok(Response::new(convert::image(&image, &self.identity_name(image.identity_id))))
    }

    #[instrument(skip_all, fields(images = request.get_ref().image_ids.len()))]
    async fn estimate_traits(
        &self,
        request: Request<pb::EstimateTraitsRequest>,
    ) -> Result<Response<pb::EstimateTraitsResponse>, Status> {
        let ids = request.into_inner().image_ids;
        let datasets = self.state.datasets.clone();
        let (ids, estimates) =
            tokio::task::spawn_blocking(move || datasets.traits(&ids).map(|t| (ids, t))).await.map_err(from_join)??;
        let traits = ids
            .into_iter()
            .zip(estimates)
            .map(|(image_id, t)| pb::FaceTraits { image_id, age: t.age, male_probability: t.male_probability })
            .collect();
        Ok(Response::new(pb::EstimateTraitsResponse { traits }))
    }

    #[instrument(skip_all, fields(image_id = request.get_ref().image_id))]
    async fn get_image_data(
        &self,
        request: Request<pb::GetImageDataRequest>,
    ) -> Result<Response<pb::ImageData>, Status> {
        let req = request.into_inner();
        let id = required_id(req.image_id, "image_id")?;
        let (content_type, data) = match pb::ImageVariant::try_from(req.variant) {
            Ok(pb::ImageVariant::Original) => {
                let image = self.state.datasets.image(id)?;
                let content_type = match pb::ImageFormat::try_from(image.format) {
                    Ok(pb::ImageFormat::Jpeg) => "image/jpeg",
                    Ok(pb::ImageFormat::Png) => "image/png",
                    Ok(pb::ImageFormat::Pnm) => "image/x-portable-anymap",
                    Ok(pb::ImageFormat::Bmp) => "image/bmp",
                    Ok(pb::ImageFormat::Webp) => "image/webp",
                    _ => "application/octet-stream",
                };
                (content_type, self.state.datasets.original(id)?)
            }
            Ok(pb::ImageVariant::Face) => ("image/png", self.state.datasets.face_png(id)?),
            _ => return Err(Status::invalid_argument("variant must be IMAGE_VARIANT_ORIGINAL or IMAGE_VARIANT_FACE")),
        };
        Ok(Response::new(pb::ImageData { image_id: id, content_type: content_type.into(), data }))
    }

    #[instrument(skip_all, fields(image_id = request.get_ref().image_id))]
    async fn get_thumbnail(
        &self,
        request: Request<pb::GetThumbnailRequest>,
    ) -> Result<Response<pb::ImageData>, Status> {
        let req = request.into_inner();
        let id = required_id(req.image_id, "image_id")?;
        let size = if req.size == 0 { 96 } else { req.size };
        let data = self.blocking(move |ds| ds.thumbnail(id, size)).await?;
        Ok(Response::new(pb::ImageData { image_id: id, content_type: "image/jpeg".into(), data }))
    }

    #[instrument(skip_all, fields(image_id = request.get_ref().image_id))]
    async fn delete_image(
        &self,
        request: Request<pb::DeleteImageRequest>,
    ) -> Result<Response<pb::DeleteImageResponse>, Status> {
        let id = required_id(request.get_ref().image_id, "image_id")?;
        let workflows = self.state.workflows.clone();
        let deleted = tokio::task::spawn_blocking(move || workflows.delete_image(id)).await.map_err(from_join)??;
        self.state.datasets.flush().await?;
        Ok(Response::new(pb::DeleteImageResponse {
            pairs_removed: deleted.removed_pairs.len() as u32,
            embeddings_removed: deleted.embeddings_removed as u32,
        }))
    }
}
