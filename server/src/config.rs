//! Server configuration: every flag can also be set by a `FACESIM_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::dataset::{DecodeLimits, FaceDefaults, FaceMode};

/// The facesim gRPC server (gRPC and gRPC-Web on one port).
#[derive(Debug, Clone, Parser)]
#[command(name = "facesim-server", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FACESIM_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,

    /// Directory of the sled database; created when missing.
    #[arg(long, env = "FACESIM_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Token for the `admin` user. Without it, the first start creates a random one and prints it
    /// once.
    #[arg(long, env = "FACESIM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Import the bundled demo faces when the data dir holds no images yet.
    #[arg(long, env = "FACESIM_DEMO")]
    pub demo: bool,

    /// Folder of demo faces laid out as `<identity>/<file>`.
    #[arg(long, env = "FACESIM_DEMO_DIR", default_value = "datasets/lfw-demo")]
    pub demo_dir: PathBuf,

    /// Folder of the built annotation UI, served at `/` on the same port as the API.
    #[arg(long, env = "FACESIM_UI_DIR", default_value = "annotation-ui/dist")]
    pub ui_dir: PathBuf,

    /// How faces are cut from imported and uploaded images unless a request says otherwise:
    /// `detect` (find the largest face and align it; for ordinary photos) or `center` (the
    /// centred square; only for images that are already face crops).
    #[arg(long, env = "FACESIM_FACE_MODE", default_value = "detect")]
    pub face_mode: FaceMode,

    /// The least face detector score (0-1) that counts as a face, unless a request says otherwise.
    #[arg(long, env = "FACESIM_MIN_FACE_SCORE", default_value_t = crate::faces::DEFAULT_MIN_SCORE)]
    pub min_face_score: f32,

    /// Largest accepted image file, in bytes.
    #[arg(long, env = "FACESIM_MAX_IMAGE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_image_bytes: usize,

    /// Largest accepted image width or height, in pixels.
    #[arg(long, env = "FACESIM_MAX_IMAGE_SIDE", default_value_t = 8192)]
    pub max_image_side: u32,

    /// Largest accepted image area, in pixels.
    #[arg(long, env = "FACESIM_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,

    /// Largest gRPC message the server accepts, in bytes (at least the image limit plus 64 KiB).
    #[arg(long, env = "FACESIM_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Threads for CPU-heavy jobs such as pair search; 0 means one per core.
    #[arg(long, env = "FACESIM_COMPUTE_THREADS", default_value_t = 0)]
    pub compute_threads: usize,

    /// Minimum time between handing a pair to an annotator and accepting its vote (the method's
    /// 1-second rule). Lower it only for load benchmarks.
    #[arg(long, env = "FACESIM_MIN_ANSWER_MILLIS", default_value_t = 1000)]
    pub min_answer_millis: u64,

    /// Seconds an annotator may hold a task before it returns to the pool.
    #[arg(long, env = "FACESIM_LEASE_SECONDS", default_value_t = 120)]
    pub lease_seconds: u64,

    /// Tasks one annotator may hold at once (2 lets the web UI prefetch the next pair).
    #[arg(long, env = "FACESIM_MAX_LEASES_PER_ANNOTATOR", default_value_t = 2)]
    pub max_leases_per_annotator: usize,

    /// Every n-th task of an annotator is a gold pair it has not answered yet (0 = never).
    #[arg(long, env = "FACESIM_GOLD_EVERY", default_value_t = 10)]
    pub gold_every: u64,

    /// Least seconds between two resume checkpoints of a training run (weights and optimiser
    /// state; a run interrupted by a server stop continues from its last one at the next start).
    /// 0 saves one after every epoch.
    #[arg(long, env = "FACESIM_CHECKPOINT_SECONDS", default_value_t = 30)]
    pub checkpoint_seconds: u64,

    /// The most pairs one proposal may store (a threshold that matches more fails clearly).
    #[arg(long, env = "FACESIM_MAX_PROPOSAL_PAIRS", default_value_t = 1_000_000)]
    pub max_proposal_pairs: usize,

    /// Galleries of at least this many images are ranked with the approximate (HNSW) index
    /// unless a query asks for exact search.
    #[arg(long, env = "FACESIM_RANK_APPROX_MIN", default_value_t = 100_000)]
    pub rank_approx_min: usize,

    /// Candidate list length of approximate searches (higher: better recall, slower).
    #[arg(long, env = "FACESIM_RANK_EF", default_value_t = 128)]
    pub rank_ef: usize,

    /// Threads that answer ranking queries, each pinned to one allowed core; 0 means one per
    /// allowed core. Fewer leaves cores to training and imports on a shared machine.
    #[arg(long, env = "FACESIM_RANK_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub rank_threads: u16,

    /// Neighbours per node of the HNSW graph (M): higher gives better recall at a given
    /// `--rank-ef`, a slower build and a bigger graph.
    #[arg(long, env = "FACESIM_RANK_HNSW_M", default_value_t = crate::ranking::approx::DEFAULT_CONNECTIONS)]
    pub rank_hnsw_m: usize,

    /// How the HNSW graph stores its copy of the vectors: f16 (half the memory, faster) or
    /// f32. Only the candidates depend on it: returned scores are always computed from the
    /// full-precision embeddings.
    #[arg(long, env = "FACESIM_RANK_HNSW_PRECISION", default_value = "f16")]
    pub rank_hnsw_precision: crate::ranking::approx::GraphPrecision,

    /// Benchmarks only: serve the pretrained descriptor's ranking gallery from this file of
    /// little-endian f32 vectors (the descriptor's dimension each; image ids 1, 2, ...; five
    /// images an identity) instead of the stored embeddings, so the ranking RPCs can be measured
    /// on galleries far larger than a test machine can import (`bench/rank.sh`).
    #[arg(long, env = "FACESIM_RANK_BENCH_GALLERY")]
    pub rank_bench_gallery: Option<PathBuf>,

    /// PEM certificate chain: serve gRPC and gRPC-Web over TLS (with `--tls-key`). Without it
    /// the server speaks plaintext, which is only fit for loopback or a TLS-terminating proxy.
    #[arg(long, env = "FACESIM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "FACESIM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Failed authentications (missing, unknown, revoked or expired tokens) one client address may
    /// make per `--auth-failure-window-seconds` before its calls are refused with
    /// RESOURCE_EXHAUSTED until the window ends; 0 turns the limit off.
    #[arg(long, env = "FACESIM_AUTH_FAILURE_LIMIT", default_value_t = 20)]
    pub auth_failure_limit: u32,

    /// Length of the failed-authentication window.
    #[arg(long, env = "FACESIM_AUTH_FAILURE_WINDOW_SECONDS", default_value_t = 60)]
    pub auth_failure_window_seconds: u64,

    /// An upload stream that sends nothing for this long is ended with DEADLINE_EXCEEDED (what
    /// it had delivered stays imported).
    #[arg(long, env = "FACESIM_STREAM_IDLE_SECONDS", default_value_t = 60)]
    pub stream_idle_seconds: u64,
}

impl Config {
    /// The defaults with another data dir (tests and embedding programs).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Config::parse_from(["facesim-server"]);
        config.data_dir = data_dir.into();
        config
    }

    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_bytes: self.max_image_bytes,
            max_side: self.max_image_side,
            max_pixels: self.max_image_pixels,
        }
    }

    pub fn face_defaults(&self) -> Result<FaceDefaults, ConfigError> {
        if !(0.0..1.0).contains(&self.min_face_score) {
            return Err(ConfigError::MinFaceScore(self.min_face_score));
        }
        Ok(FaceDefaults { mode: self.face_mode, min_score: self.min_face_score })
    }

    pub fn labeling(&self) -> crate::labeling::LabelingConfig {
        crate::labeling::LabelingConfig {
            min_answer: std::time::Duration::from_millis(self.min_answer_millis),
            lease: std::time::Duration::from_secs(self.lease_seconds.max(1)),
            max_leases_per_annotator: self.max_leases_per_annotator.max(1),
            gold_every: self.gold_every,
        }
    }

    /// The certificate and key of `--tls-cert`/`--tls-key`, read and checked to be PEM, when both
    /// are set. (`api` parses them into a TLS identity before the store opens.)
    pub fn tls_pem(&self) -> Result<Option<TlsPem>, ConfigError> {
        let (cert_path, key_path) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) => return Ok(None),
            _ => return Err(ConfigError::Tls("give both --tls-cert and --tls-key, or neither".into())),
        };
        let read = |path: &PathBuf, what: &str, marker: &str| {
            let pem = std::fs::read(path)
                .map_err(|e| ConfigError::Tls(format!("cannot read the {what} {}: {e}", path.display())))?;
            if !String::from_utf8_lossy(&pem).contains(marker) {
                return Err(ConfigError::Tls(format!("{} is not a PEM {what} (no `{marker}` block)", path.display())));
            }
            Ok(pem)
        };
        Ok(Some(TlsPem {
            cert: read(cert_path, "certificate", "-----BEGIN CERTIFICATE-----")?,
            key: read(key_path, "private key", "PRIVATE KEY-----")?,
            cert_path: cert_path.clone(),
            key_path: key_path.clone(),
        }))
    }

    /// The message limit actually applied: never below what one image upload needs.
    pub fn message_limit(&self) -> usize {
        self.max_message_bytes.max(self.max_image_bytes + 64 * 1024)
    }
}

/// A certificate chain and its private key as read from `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("--min-face-score must be between 0 and 1, got {0}")]
    MinFaceScore(f32),
}
