//! The real `facesim-server` binary: acknowledged imports and votes survive `kill -9`, and the
//! server keeps working when whoever reads its log goes away.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use facesim_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, dataset_service_client::DatasetServiceClient,
    job_service_client::JobServiceClient, labeling_service_client::LabelingServiceClient,
    proposal_service_client::ProposalServiceClient,
};
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
    start_with(data_dir, keep_log, &[])
}

fn start_with(data_dir: &Path, keep_log: bool, extra: &[&str]) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_facesim-server"))
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
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
    authed_as(TOKEN, message)
}

fn authed_as<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    request
}

async fn image_ids(url: &str) -> Vec<u64> {
    let mut client = DatasetServiceClient::connect(url.to_string()).await.unwrap();
    let page =
        client.list_images(authed(pb::ListImagesRequest { page_size: 1000, ..Default::default() })).await.unwrap();
    page.into_inner().images.iter().map(|i| i.id).collect()
}

fn demo_messages() -> Vec<pb::ImportImagesRequest> {
    person_messages("Abdullah_Gul")
}

fn person_messages(person: &str) -> Vec<pb::ImportImagesRequest> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo").join(person);
    let mut files: Vec<_> = std::fs::read_dir(&demo).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .map(|path| pb::ImportImagesRequest {
            dataset: "demo".into(),
            identity: person.into(),
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

/// Waits until a job ends and returns it.
async fn finished_job(url: &str, job_id: u64) -> pb::Job {
    let mut jobs = JobServiceClient::connect(url.to_string()).await.unwrap();
    loop {
        let job = jobs.get_job(authed(pb::GetJobRequest { job_id })).await.unwrap().into_inner();
        if job.state != pb::JobState::Running as i32 && job.state != pb::JobState::Queued as i32 {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Annotators voting as fast as the server lets them, until the server goes away. Returns every
/// acknowledged vote as (lease, pair, annotator token index, choice).
async fn vote_until_gone(url: String, tokens: Vec<String>) -> Vec<(u64, u64, usize, i32)> {
    let mut tasks = Vec::new();
    for (who, token) in tokens.into_iter().enumerate() {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let Ok(mut labeling) = LabelingServiceClient::connect(url).await else { return acknowledged };
            loop {
                let Ok(task) = labeling.next_task(authed_as(&token, pb::NextTaskRequest::default())).await else {
                    return acknowledged;
                };
                let task = task.into_inner();
                if task.done {
                    return acknowledged;
                }
                let choice = if (task.pair_id + who as u64).is_multiple_of(2) { 1 } else { 2 };
                let vote = pb::SubmitVoteRequest { lease_id: task.lease_id, choice };
                match labeling.submit_vote(authed_as(&token, vote)).await {
                    Ok(r) if r.get_ref().recorded => acknowledged.push((task.lease_id, task.pair_id, who, choice)),
                    Ok(_) => panic!("a fresh lease's vote was reported as a retry"),
                    Err(_) => return acknowledged,
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_votes_survive_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    // Votes may follow hand-outs at once: this is a load test of the vote path, not of human pace.
    let args = ["--min-answer-millis", "0"];
    let (mut server, mut url) = start_with(dir.path(), true, &args);
    let mut datasets = DatasetServiceClient::connect(url.clone()).await.unwrap();
    let mut messages = Vec::new();
    // 12 people, 5 images each: 1,650 cross-identity pairs, 4,950 votes, more than the rounds
    // below can cast before their kills at the server's ~5,000 votes/s.
    for person in [
        "Abdullah_Gul",
        "Adrien_Brody",
        "Ahmed_Chalabi",
        "Ai_Sugiyama",
        "Al_Gore",
        "Al_Sharpton",
        "Alan_Greenspan",
        "Alastair_Campbell",
        "Albert_Costa",
        "Alejandro_Toledo",
        "Ali_Naimi",
        "Allyson_Felix",
    ] {
        messages.extend(person_messages(person));
    }
    let report = datasets.import_images(authed(futures::stream::iter(messages))).await.unwrap().into_inner();
    assert_eq!(finished_job(&url, report.embedding_job_id).await.state, pb::JobState::Succeeded as i32);
    let mut proposals = ProposalServiceClient::connect(url.clone()).await.unwrap();
    let request =
        pb::ProposePairsRequest { limit: Some(pb::propose_pairs_request::Limit::Budget(1650)), ..Default::default() };
    let job = proposals.propose_pairs(authed(request)).await.unwrap().into_inner();
    assert_eq!(finished_job(&url, job.id).await.state, pb::JobState::Succeeded as i32);
    let mut admin = AdminServiceClient::connect(url.clone()).await.unwrap();
    let mut tokens = Vec::new();
    for i in 0..12 {
        let request = pb::CreateUserRequest {
            name: format!("crowd-{i}"),
            role: pb::Role::Annotator as i32,
            token_ttl_seconds: 0,
        };
        tokens.push(admin.create_user(authed(request)).await.unwrap().into_inner().token);
    }

    // Three rounds of load, each ended by SIGKILL at a different moment.
    let mut acknowledged = Vec::new();
    for (round, kill_after_ms) in [(0, 150u64), (1, 400), (2, 60)] {
        let load = tokio::spawn(vote_until_gone(url.clone(), tokens.clone()));
        tokio::time::sleep(std::time::Duration::from_millis(kill_after_ms)).await;
        server.kill9();
        let got = load.await.unwrap();
        assert!(round == 2 || !got.is_empty(), "round {round}: no vote was acknowledged before the kill");
        acknowledged.extend(got);
        let (restarted, new_url) = start_with(dir.path(), true, &args);
        (server, url) = (restarted, new_url);
    }

    // Every acknowledged vote is there; no pair has more than three votes or a repeated voter;
    // labels are the majority of the stored votes.
    let mut labeling = LabelingServiceClient::connect(url.clone()).await.unwrap();
    let mut proposals = ProposalServiceClient::connect(url.clone()).await.unwrap();
    let mut votes = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListVotesRequest { page_size: 1000, page_token, ..Default::default() };
        let page = labeling.list_votes(authed(request)).await.unwrap().into_inner();
        votes.extend(page.votes);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let stored: std::collections::HashMap<u64, &pb::Vote> = votes.iter().map(|v| (v.lease_id, v)).collect();
    for (lease, pair, _, choice) in &acknowledged {
        let vote = stored.get(lease).unwrap_or_else(|| panic!("acknowledged vote of lease {lease} is lost"));
        assert_eq!((vote.pair_id, vote.choice), (*pair, *choice));
    }
    let mut by_pair: std::collections::HashMap<u64, Vec<&pb::Vote>> = Default::default();
    for v in &votes {
        by_pair.entry(v.pair_id).or_default().push(v);
    }
    let labels = labeling.list_labels(authed(pb::ListLabelsRequest { page_size: 1000, ..Default::default() })).await;
    let labels: std::collections::HashMap<u64, pb::Label> =
        labels.unwrap().into_inner().labels.into_iter().map(|l| (l.pair_id, l)).collect();
    for (pair_id, pair_votes) in &by_pair {
        let voters: std::collections::HashSet<u64> = pair_votes.iter().map(|v| v.annotator_id).collect();
        assert!(pair_votes.len() <= 3 && voters.len() == pair_votes.len(), "pair {pair_id}: {pair_votes:?}");
        let pair = proposals.get_pair(authed(pb::GetPairRequest { pair_id: *pair_id })).await.unwrap().into_inner();
        assert_eq!(pair.votes as usize, pair_votes.len(), "pair {pair_id}'s vote count");
        match labels.get(pair_id) {
            Some(label) => {
                let similar = pair_votes.iter().filter(|v| v.choice == 1).count() as u32;
                assert_eq!(pair_votes.len(), 3);
                assert_eq!((label.similar_votes, label.dissimilar_votes), (similar, 3 - similar));
                assert_eq!(label.majority, if similar >= 2 { 1 } else { 2 });
            }
            None => assert!(pair_votes.len() < 3, "pair {pair_id} has three votes and no label"),
        }
    }
    assert!(acknowledged.len() >= 20, "only {} votes were acknowledged in three rounds", acknowledged.len());
    drop(server);
}
