//! The gRPC edge: the only module that knows tonic. Each service file converts requests to domain
//! calls and results back; `status.rs` maps every domain error to a gRPC status in one place.

mod admin;
mod auth_layer;
mod convert;
mod dataset;
mod decode_errors;
mod jobs;
mod labeling;
mod proposal;
mod ranking;
mod status;
mod training;
mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use facesim_proto::v1::{
    admin_service_server::AdminServiceServer, dataset_service_server::DatasetServiceServer,
    job_service_server::JobServiceServer, labeling_service_server::LabelingServiceServer,
    model_service_server::ModelServiceServer, proposal_service_server::ProposalServiceServer,
    ranking_service_server::RankingServiceServer, training_service_server::TrainingServiceServer,
};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

pub use auth_layer::AuthLayer;

use crate::config::TlsPem;
use crate::state::AppState;

/// Why the gRPC server could not be set up or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection set-up failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// A TLS certificate and key parsed and checked by the TLS acceptor.
#[derive(Clone)]
pub struct TlsIdentity(tonic::transport::Identity);

impl TlsIdentity {
    /// Parses the PEM files by building a TLS acceptor from them, so a damaged certificate or key
    /// stops the start here, before the store opens.
    pub fn from_pem(pem: &TlsPem) -> Result<Self, ApiError> {
        let identity = tonic::transport::Identity::from_pem(&pem.cert, &pem.key);
        Server::builder().tls_config(tonic::transport::ServerTlsConfig::new().identity(identity.clone())).map_err(
            |e| {
                let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
                ApiError::Tls(format!(
                    "{} and {} do not make a TLS identity: {cause}",
                    pem.cert_path.display(),
                    pem.key_path.display()
                ))
            },
        )?;
        Ok(TlsIdentity(identity))
    }
}

/// The fully qualified names of the facesim services, as health and reflection report them.
pub const SERVICE_NAMES: [&str; 8] = [
    "facesim.v1.AdminService",
    "facesim.v1.DatasetService",
    "facesim.v1.JobService",
    "facesim.v1.ProposalService",
    "facesim.v1.LabelingService",
    "facesim.v1.TrainingService",
    "facesim.v1.ModelService",
    RANKING_SERVICE,
];

/// Applies the message size limits of the configuration to a generated service.
macro_rules! limited {
    ($server:ident, $svc:expr, $limit:expr) => {
        $server::new($svc).max_decoding_message_size($limit).max_encoding_message_size(64 * 1024 * 1024)
    };
}

const RANKING_SERVICE: &str = "facesim.v1.RankingService";

/// Serves every facesim service plus health and reflection on `listener` until `shutdown`.
pub async fn run(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<TlsIdentity>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICE_NAMES {
        health.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(facesim_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(facesim_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // Ranking serves once its first index is built (moments after start); until then its
    // health is NOT_SERVING and ranking calls answer UNAVAILABLE.
    let mut ready = state.ranking.indexes().ready();
    if !*ready.borrow_and_update() {
        health.set_service_status(RANKING_SERVICE, tonic_health::ServingStatus::NotServing).await;
        let health = health.clone();
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                health.set_service_status(RANKING_SERVICE, tonic_health::ServingStatus::Serving).await;
            }
        });
    }

    let limit = state.config.message_limit();
    let draining = {
        let health = health.clone();
        async move {
            shutdown.await;
            // Load balancers and watchers learn first, then in-flight calls drain.
            for name in SERVICE_NAMES {
                health.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
            }
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            tracing::info!("health is NOT_SERVING; draining in-flight calls");
        }
    };

    let mut builder = Server::builder();
    if let Some(TlsIdentity(identity)) = tls {
        // rustls offers ALPN `h2`; gRPC-Web from browsers runs over HTTP/2 on TLS, and HTTP/1.1
        // clients that send no ALPN are still served.
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity).timeout(Duration::from_secs(10)))
            .map_err(|e| ApiError::Tls(e.to_string()))?;
    }
    builder
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(ui::UiLayer::new(&state.config.ui_dir))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(AuthLayer::new(
            state.auth.clone(),
            crate::auth::FailureLimiter::new(
                state.config.auth_failure_limit,
                Duration::from_secs(state.config.auth_failure_window_seconds),
            ),
        ))
        .layer(decode_errors::DecodeErrorLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limited!(AdminServiceServer, admin::AdminApi::new(state.clone()), limit))
        .add_service(limited!(DatasetServiceServer, dataset::DatasetApi::new(state.clone()), limit))
        .add_service(limited!(JobServiceServer, jobs::JobApi::new(state.clone()), limit))
        .add_service(limited!(ProposalServiceServer, proposal::ProposalApi::new(state.clone()), limit))
        .add_service(limited!(LabelingServiceServer, labeling::LabelingApi::new(state.clone()), limit))
        .add_service(limited!(TrainingServiceServer, training::TrainingApi::new(state.clone()), limit))
        .add_service(limited!(ModelServiceServer, training::ModelApi::new(state.clone()), limit))
        .add_service(limited!(RankingServiceServer, ranking::RankingApi::new(state.clone()), limit))
        // Small responses (a vote's answer) must not wait for the client's delayed ACK.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), draining)
        .await?;
    Ok(())
}
