//! The harness every end-to-end test uses: it starts the real facesim server on an ephemeral
//! loopback port with a temp data dir, and makes users and clients as a real user would.

pub mod process;
pub mod raw;

use std::path::PathBuf;
use std::sync::Arc;

use facesim_client::pair_list::{lfw_pair_list, numbered_images};
use facesim_client::{pb, scan_import_dir, Client, ImportEntry};
use facesim_server::{serve, Config, ServerError};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The admin token every test server is configured with (as with `FACESIM_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running server owning its data dir.
pub struct TestServer {
    pub url: String,
    pub addr: std::net::SocketAddr,
    dir: Arc<TempDir>,
    tune: fn(&mut Config),
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    /// Starts a server on a fresh data dir.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server on a fresh data dir with a configuration changed by `tune` (kept across
    /// restarts).
    pub async fn start_with(tune: fn(&mut Config)) -> Self {
        Self::start_in(Arc::new(tempfile::tempdir().expect("temp dir")), tune).await
    }

    /// Starts a server that serves over TLS with this PEM certificate and key; its `url` is
    /// `https://localhost:<port>`.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, cert_pem).expect("write cert");
        std::fs::write(&key, key_pem).expect("write key");
        let mut server = Self::start_configured(
            dir,
            |_| {},
            |config| {
                config.tls_cert = Some(cert);
                config.tls_key = Some(key);
            },
        )
        .await;
        server.url = format!("https://localhost:{}", server.addr.port());
        server
    }

    async fn start_in(dir: Arc<TempDir>, tune: fn(&mut Config)) -> Self {
        Self::start_configured(dir, tune, |_| {}).await
    }

    async fn start_configured(dir: Arc<TempDir>, tune: fn(&mut Config), also: impl FnOnce(&mut Config)) -> Self {
        // Bind first and hand the bound listener over: no free-port race, no sleep.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let mut config = Config::with_data_dir(dir.path().join("data"));
        config.admin_token = Some(ADMIN_TOKEN.into());
        // The bundled demo faces most tests import are centred 160x160 crops, and many tests send
        // synthetic pictures that hold no face: they are cut in center mode. Tests of the face
        // pipeline set `FaceMode::Detect` (here or per request) and send whole photos.
        config.face_mode = facesim_server::dataset::FaceMode::Center;
        tune(&mut config);
        also(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            config,
            listener,
            async move {
                let _ = rx.await;
            },
            |_| {},
        ));
        TestServer { url: format!("http://{addr}"), addr, dir, tune, shutdown: Some(tx), task: Some(task) }
    }

    /// Stops the server gracefully and returns its data dir.
    pub async fn stop(mut self) -> Arc<TempDir> {
        self.shutdown.take().expect("running").send(()).ok();
        self.task.take().expect("running").await.expect("server task").expect("server stopped cleanly");
        self.dir.clone()
    }

    /// Stops the server and starts a new one on the same data dir.
    pub async fn restart(self) -> Self {
        let tune = self.tune;
        let dir = self.stop().await;
        Self::start_in(dir, tune).await
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A client sending `token` (or none).
    pub async fn client(&self, token: Option<&str>) -> Client {
        Client::connect(&self.url, token).await.expect("connect to test server")
    }

    pub async fn admin(&self) -> Client {
        self.client(Some(ADMIN_TOKEN)).await
    }

    /// Creates a user with `role` and returns its token.
    pub async fn user(&self, name: &str, role: pb::Role) -> String {
        self.admin()
            .await
            .admin()
            .create_user(pb::CreateUserRequest { name: name.into(), role: role as i32, token_ttl_seconds: 0 })
            .await
            .expect("create user")
            .into_inner()
            .token
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
    }
}

/// The bundled demo faces.
pub fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo")
}

/// The demo files of the first `identities` people, in import order.
pub fn demo_subset(identities: usize) -> Vec<ImportEntry> {
    let all = scan_import_dir(&demo_dir()).expect("demo faces are bundled");
    let mut names: Vec<String> = all.iter().map(|e| e.identity.clone()).collect();
    names.dedup();
    names.truncate(identities);
    all.into_iter().filter(|e| names.contains(&e.identity)).collect()
}

/// An LFW-format pair list (see `facesim_client::pair_list`) over the demo faces of the first
/// `identities` people in import order.
pub fn demo_pair_list(identities: usize) -> String {
    pair_list_of(&demo_subset(identities))
}

/// An LFW-format pair list over the demo faces of the named people.
pub fn demo_pair_list_of(people: &[String]) -> String {
    let all = scan_import_dir(&demo_dir()).expect("demo faces are bundled");
    pair_list_of(&all.into_iter().filter(|e| people.contains(&e.identity)).collect::<Vec<_>>())
}

fn pair_list_of(files: &[ImportEntry]) -> String {
    lfw_pair_list(&numbered_images(files.iter().map(|e| (e.identity.as_str(), e.file_name.as_str()))))
}

/// Imports the demo files of the first `identities` people into dataset `demo`.
pub async fn import_demo(client: &Client, identities: usize) -> pb::ImportImagesResponse {
    client.import_files("demo", demo_subset(identities), |_, _| {}).await.expect("import demo subset")
}

/// Follows a job to its end and returns its final state; checks that progress never goes back.
pub async fn wait_for_job(client: &Client, job_id: u64) -> pb::Job {
    let mut events = client.jobs().watch_job(pb::WatchJobRequest { job_id }).await.unwrap().into_inner();
    let mut last = None;
    let mut done_seen = vec![];
    while let Some(event) = events.message().await.unwrap() {
        let job = event.job.unwrap();
        done_seen.push(job.progress.unwrap().done);
        last = Some(job);
    }
    assert!(done_seen.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {done_seen:?}");
    last.expect("at least the current state")
}

/// Imports the demo faces of `identities` people, waits for their embeddings and proposes the
/// `budget` nearest pairs in batches of `batch_size`; returns the proposal job.
pub async fn demo_pairs(client: &Client, identities: usize, budget: u32, batch_size: u32) -> pb::Job {
    let report = import_demo(client, identities).await;
    if report.embedding_job_id != 0 {
        let job = wait_for_job(client, report.embedding_job_id).await;
        assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    }
    let request = pb::ProposePairsRequest {
        limit: Some(pb::propose_pairs_request::Limit::Budget(budget)),
        batch_size,
        ..Default::default()
    };
    let job = client.proposals().propose_pairs(request).await.expect("propose").into_inner();
    let job = wait_for_job(client, job.id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    job
}

/// A synthetic `w`×`h` test picture encoded as `format` (PGM/PNM as 8-bit grey, the rest as RGB).
pub fn encoded_image(format: image::ImageFormat, w: u32, h: u32) -> Vec<u8> {
    let rgb = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x + y) * 7) as u8]));
    let img = match format {
        image::ImageFormat::Pnm => image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(rgb).to_luma8()),
        _ => image::DynamicImage::ImageRgb8(rgb),
    };
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode a test picture");
    out.into_inner()
}
