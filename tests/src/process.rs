//! Runs the real `facesim-server` binary for the process-level tests (kill -9, crashes, logs,
//! memory): start on an ephemeral port, read the address it logs, kill it with SIGKILL, and
//! small API helpers over raw generated clients.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use facesim_proto::v1::{
    self as pb, dataset_service_client::DatasetServiceClient, job_service_client::JobServiceClient,
};
use tonic::metadata::MetadataValue;

pub const TOKEN: &str = "kill9-admin-token-0123456789";

/// A server process that is killed and reaped when dropped, so a failing assertion never
/// leaves it running.
pub struct Server(Child);

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, and waits for the server's graceful stop (it drains calls, stops jobs, flushes).
    pub fn terminate(&mut self) {
        let sent = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "cannot send SIGTERM");
        self.0.wait().ok();
    }

    /// SIGKILL, as `kill -9` sends it.
    pub fn kill9(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The `facesim-server` binary of this build: `FACESIM_SERVER_BIN` when set, else the one cargo
/// built next to the running test (`target/<profile>/facesim-server`; the server's own
/// integration tests make cargo build it first).
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FACESIM_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/facesim-server
    let profile_dir = exe.parent().and_then(Path::parent).expect("a test binary inside target/<profile>/deps");
    let binary = profile_dir.join(format!("facesim-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is not built; run the server crate's tests or set FACESIM_SERVER_BIN",
        binary.display()
    );
    binary
}

/// Starts the binary on an ephemeral port and returns it with the address it logged. With
/// `keep_log` the log is drained for the server's lifetime; without it the pipe is closed.
pub fn start(data_dir: &Path, keep_log: bool) -> (Server, String) {
    start_with(data_dir, keep_log, &[])
}

pub fn start_with(data_dir: &Path, keep_log: bool, extra: &[&str]) -> (Server, String) {
    start_logging(data_dir, if keep_log { Log::Drain } else { Log::Close }, "info", extra)
}

/// What becomes of the server's log once it listens.
#[derive(Clone)]
pub enum Log {
    /// The pipe is closed: later writes fail.
    Close,
    /// Read and thrown away.
    Drain,
    /// Every line (the ones before listening too) is kept here.
    Collect(Arc<Mutex<Vec<String>>>),
}

/// Starts the binary with `RUST_LOG=filter` and the log handled as `log` says.
pub fn start_logging(data_dir: &Path, log: Log, filter: &str, extra: &[&str]) -> (Server, String) {
    let mut child = Command::new(server_binary())
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("FACESIM_ADMIN_TOKEN", TOKEN)
        // The demo faces these tests send are centred crops already (see tests/src/lib.rs).
        .env("FACESIM_FACE_MODE", "center")
        .env("RUST_LOG", filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start facesim-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Log::Collect(kept) = &log {
            kept.lock().unwrap().push(line.clone());
        }
        if let Some(rest) = line.split("addr=").nth(1).filter(|_| line.contains("listening")) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            match log {
                Log::Close => {}
                Log::Drain => {
                    std::thread::spawn(move || lines.for_each(drop));
                }
                Log::Collect(kept) => {
                    std::thread::spawn(move || {
                        for line in lines.map_while(Result::ok) {
                            kept.lock().unwrap().push(line);
                        }
                    });
                }
            }
            return (Server(child), format!("http://{addr}"));
        }
    }
    let status = child.wait().expect("wait for the server");
    panic!("the server exited ({status}) before listening");
}

pub fn authed<T>(message: T) -> tonic::Request<T> {
    authed_as(TOKEN, message)
}

pub fn authed_as<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    request
}

pub async fn image_ids(url: &str) -> Vec<u64> {
    let mut client = DatasetServiceClient::connect(url.to_string()).await.unwrap();
    let page =
        client.list_images(authed(pb::ListImagesRequest { page_size: 1000, ..Default::default() })).await.unwrap();
    page.into_inner().images.iter().map(|i| i.id).collect()
}

pub fn demo_messages() -> Vec<pb::ImportImagesRequest> {
    person_messages("Abdullah_Gul")
}

pub fn person_messages(person: &str) -> Vec<pb::ImportImagesRequest> {
    let demo = crate::demo_dir().join(person);
    let mut files: Vec<_> = std::fs::read_dir(&demo).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .map(|path| pb::ImportImagesRequest {
            dataset: "demo".into(),
            identity: person.into(),
            file_name: path.file_name().unwrap().to_string_lossy().into_owned(),
            data: std::fs::read(path).unwrap(),
            ..Default::default()
        })
        .collect()
}

/// Waits until a job ends and returns it.
pub async fn finished_job(url: &str, job_id: u64) -> pb::Job {
    let mut jobs = JobServiceClient::connect(url.to_string()).await.unwrap();
    loop {
        let job = jobs.get_job(authed(pb::GetJobRequest { job_id })).await.unwrap().into_inner();
        if job.state != pb::JobState::Running as i32 && job.state != pb::JobState::Queued as i32 {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The first `n` people of the demo faces (sorted by name).
pub fn demo_people(n: usize) -> Vec<String> {
    let mut people: Vec<String> = std::fs::read_dir(crate::demo_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    people.sort();
    people.truncate(n);
    people
}

/// A request with the admin token.
pub fn admin<T>(message: T) -> tonic::Request<T> {
    authed(message)
}

/// The test's random source, from `FACESIM_KILL_SEED` or the clock; the seed is printed.
pub fn kill_points(test: &str) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    let seed = std::env::var("FACESIM_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("{test}: FACESIM_KILL_SEED={seed}");
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}
