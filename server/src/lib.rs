//! The facesim server as a library: `serve` runs the gRPC (and gRPC-Web) server on a listener the
//! caller has already bound, until `shutdown` resolves.

pub mod allocator;
pub mod api;
pub mod auth;
pub mod config;
pub mod cpu;
pub mod dataset;
pub mod faces;
pub mod jobs;
pub mod labeling;
pub mod models;
pub mod proposal;
pub mod ranking;
pub mod state;
pub mod store;
pub mod tfjs;
pub mod training;
pub mod vectors;
pub mod workflows;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;
use tokio::net::TcpListener;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the data dir: {0}")]
    Store(#[from] store::StoreError),
    #[error("cannot set up users: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("cannot load the face detector: {0}")]
    Faces(#[from] faces::FaceError),
    #[error("cannot load the face descriptor: {0}")]
    Descriptor(#[from] models::descriptor::DescriptorError),
    #[error("cannot start the embedding job: {0}")]
    Embedding(#[from] models::descriptor::EmbedJobError),
    #[error("cannot load the labeling state: {0}")]
    Labeling(#[from] labeling::LabelingError),
    #[error("cannot recover jobs: {0}")]
    Jobs(#[from] jobs::JobError),
    #[error("cannot import the demo faces: {0}")]
    Demo(#[from] dataset::DatasetError),
    #[error("cannot set up ranking: {0}")]
    Ranking(#[from] ranking::RankingError),
    #[error("cannot use the listener: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What `serve` reports once it is listening, before it starts answering.
#[derive(Debug, Clone)]
pub struct Started {
    pub addr: std::net::SocketAddr,
    /// The admin token, only on the first start without `FACESIM_ADMIN_TOKEN`.
    pub new_admin_token: Option<String>,
    /// Whether it serves over TLS.
    pub tls: bool,
}

/// Opens the store, prepares users and optional demo data, then serves on `listener` until
/// `shutdown` resolves. Health turns NOT_SERVING before in-flight calls are drained, and the store
/// is flushed before returning.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_started: impl FnOnce(Started),
) -> Result<(), ServerError> {
    // A bad certificate or key stops the start before anything is opened.
    let tls = config.tls_pem()?.map(|pem| api::TlsIdentity::from_pem(&pem)).transpose()?;
    let faces = dataset::FacePipeline::load(config.face_defaults()?)?;
    let store = store::Store::open(&config.data_dir)?;
    let auth = auth::Auth::new(store.clone());
    let new_admin_token = auth.bootstrap_admin(config.admin_token.as_deref())?;
    let datasets = dataset::Datasets::new(store.clone(), config.decode_limits(), faces);

    if config.demo && datasets.is_empty() {
        tracing::info!(dir = %config.demo_dir.display(), "empty data dir: importing the demo faces");
        let (ds, dir) = (datasets.clone(), config.demo_dir.clone());
        // The bundled faces are already centred 160x160 crops: cut in center mode.
        let face = dataset::FaceRequest { mode: Some(dataset::FaceMode::Center), min_score: None };
        let outcomes = tokio::task::spawn_blocking(move || ds.import_dir(&dir, "lfw-demo", face)).await??;
        let imported = outcomes.iter().filter(|(_, o)| matches!(o, dataset::ImportOutcome::Imported { .. })).count();
        tracing::info!(imported, files = outcomes.len(), dir = %config.demo_dir.display(), "imported demo faces");
    }

    let jobs = jobs::Jobs::new(store.clone());
    let interrupted = jobs.mark_interrupted()?;
    if interrupted > 0 {
        tracing::warn!(interrupted, "jobs that ran when the server last stopped are marked interrupted");
    }
    let device = models::descriptor::default_device();
    let descriptor = Arc::new(models::descriptor::Descriptor::load(device.clone())?);
    tracing::info!(device = %models::descriptor::device_name(descriptor.device()), "face descriptor loaded");
    let embedder = models::descriptor::Embedder::new(store.clone(), datasets.clone(), jobs.clone(), descriptor.clone());
    // Embeddings missing after a crash or the demo import are computed in the background.
    if let Some(job) = embedder.ensure(0)? {
        tracing::info!(job, "embedding job started for images without embeddings");
    }
    let labeling = {
        let (store, datasets, labeling_config) = (store.clone(), datasets.clone(), config.labeling());
        tokio::task::spawn_blocking(move || labeling::Labeling::load(store, datasets, labeling_config)).await??
    };
    let registry = models::Registry::new(store.clone());
    let proposals = proposal::Proposals::new(
        store.clone(),
        jobs.clone(),
        labeling.clone(),
        proposal::ModelSource {
            registry: registry.clone(),
            descriptor: descriptor.clone(),
            datasets: datasets.clone(),
        },
        config.compute_threads,
        config.max_proposal_pairs,
    );

    let training = training::Training::new(
        store.clone(),
        datasets.clone(),
        jobs.clone(),
        config.data_dir.join("models"),
        device,
        std::time::Duration::from_secs(config.checkpoint_seconds),
    );
    // Training jobs a server stop interrupted continue from their last checkpoint.
    // A job that cannot be resumed does not keep the server from starting.
    match training.resume_interrupted() {
        Ok(resumed) if !resumed.is_empty() => tracing::info!(jobs = ?resumed, "interrupted training jobs resumed"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot resume interrupted training jobs"),
    }
    // The active model's ranking index is built in the background; ranking's health says
    // NOT_SERVING until the first one is ready.
    let indexes = ranking::Indexes::start(
        store.clone(),
        datasets.clone(),
        registry.clone(),
        descriptor.clone(),
        ranking::IndexOptions {
            approx_min: config.rank_approx_min,
            bench_gallery: config.rank_bench_gallery.clone(),
            graph: ranking::approx::GraphOptions {
                connections: config.rank_hnsw_m,
                precision: config.rank_hnsw_precision,
            },
            graph_dir: Some(config.data_dir.join("hnsw")),
        },
    );
    let ranking = ranking::Ranking::new(
        store.clone(),
        datasets.clone(),
        indexes,
        config.rank_ef,
        ranking::SearchThreads::new(usize::from(config.rank_threads))?,
    );

    let workflows = workflows::Workflows {
        datasets: datasets.clone(),
        labeling: labeling.clone(),
        indexes: ranking.indexes().clone(),
        registry: registry.clone(),
        jobs: jobs.clone(),
        training: training.clone(),
        comparer: models::compare::Comparer {
            registry: registry.clone(),
            descriptor: descriptor.clone(),
            store: store.clone(),
            datasets: datasets.clone(),
        },
    };

    let addr = listener.local_addr()?;
    let state = Arc::new(state::AppState {
        config,
        store: store.clone(),
        auth,
        datasets,
        jobs,
        embedder,
        ranking,
        proposals,
        labeling,
        training,
        registry,
        workflows,
    });
    on_started(Started { addr, new_admin_token, tls: tls.is_some() });
    let served = api::run(state.clone(), listener, tls, shutdown).await;
    let (embedder, jobs, indexes) = (state.embedder.clone(), state.jobs.clone(), state.ranking.indexes().clone());
    tokio::task::spawn_blocking(move || {
        embedder.shutdown();
        jobs.shutdown();
        indexes.shutdown();
    })
    .await?;
    state.labeling.shutdown().await;
    served?;
    store.flush().await?;
    tracing::info!("store flushed, server stopped");
    Ok(())
}
