//! The real `facesim-server` binary: an acknowledged import survives `kill -9`, and the server
//! keeps working when whoever reads its log goes away.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use facesim_proto::v1::{self as pb, dataset_service_client::DatasetServiceClient};
use tonic::metadata::MetadataValue;

const TOKEN: &str = "kill9-admin-token-0123456789";

/// A server process that is killed and reaped when dropped, so a failing assertion never
/// leaves it running.
struct Server(Child);

impl Server {
    /// SIGKILL, as `kill -9` sends it.
    fn kill9(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts the binary on an ephemeral port and returns it with the address it logged. With
/// `keep_log` the log is drained for the server's lifetime; without it the pipe is closed.
fn start(data_dir: &Path, keep_log: bool) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_facesim-server"))
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("FACESIM_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start facesim-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("addr=").nth(1).filter(|_| line.contains("listening")) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            if keep_log {
                std::thread::spawn(move || lines.for_each(drop));
            }
            return (Server(child), format!("http://{addr}"));
        }
    }
    let status = child.wait().expect("wait for the server");
    panic!("the server exited ({status}) before listening");
}

fn authed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {TOKEN}")).unwrap());
    request
}

async fn image_ids(url: &str) -> Vec<u64> {
    let mut client = DatasetServiceClient::connect(url.to_string()).await.unwrap();
    let page =
        client.list_images(authed(pb::ListImagesRequest { page_size: 1000, ..Default::default() })).await.unwrap();
    page.into_inner().images.iter().map(|i| i.id).collect()
}

fn demo_messages() -> Vec<pb::ImportImagesRequest> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo/Abdullah_Gul");
    let mut files: Vec<_> = std::fs::read_dir(&demo).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .map(|path| pb::ImportImagesRequest {
            dataset: "demo".into(),
            identity: "Abdullah_Gul".into(),
            file_name: path.file_name().unwrap().to_string_lossy().into_owned(),
            data: std::fs::read(path).unwrap(),
        })
        .collect()
}

#[tokio::test]
async fn acknowledged_import_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start(dir.path(), true);
    let mut client = DatasetServiceClient::connect(url.clone()).await.unwrap();
    let report = client.import_images(authed(futures::stream::iter(demo_messages()))).await.unwrap().into_inner();
    assert_eq!(report.imported, 5);
    let acknowledged: Vec<u64> = report.results.iter().map(|r| r.image_id).collect();

    // SIGKILL right after the acknowledgement: no graceful shutdown, no final flush.
    server.kill9();

    let (_server, url) = start(dir.path(), true);
    assert_eq!(image_ids(&url).await, acknowledged);
}

/// Regression: a failed log write used to panic the handler (tracing-subscriber reports write
/// errors with `eprintln!`, which panics on a closed stderr) and cancel the RPC.
#[tokio::test]
async fn serves_after_its_log_reader_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start(dir.path(), false);
    let mut client = DatasetServiceClient::connect(url.clone()).await.unwrap();
    let report = client.import_images(authed(futures::stream::iter(demo_messages()))).await.unwrap().into_inner();
    assert_eq!(report.imported, 5);
    assert_eq!(image_ids(&url).await.len(), 5);
}
