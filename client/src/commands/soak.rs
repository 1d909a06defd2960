//! `facesim bench soak`: a bounded mixed load against a loopback server for minutes on end:
//! annotators labelling at a human pace, services ranking as fast as they can, and a researcher
//! retraining a model back to back. Reports the error rate (the goal is 0), latency percentiles
//! per RPC and the server's resident memory over time (read from /proc when `--server-pid` is
//! given). `bench/soak.sh` starts a server and runs it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use facesim_client::crowd::annotator_clients;
use facesim_client::pair_list::{lfw_pair_list, numbered_images};
use facesim_client::{pb, Client};
use tonic::Code;

#[derive(Debug, Args)]
pub struct BenchSoakArgs {
    /// How long the mixed load runs.
    #[arg(long, default_value_t = 300.0)]
    pub seconds: f64,
    /// Simulated annotators (each: next task, look for `--answer-millis`, vote).
    #[arg(long, default_value_t = 16)]
    pub annotators: usize,
    /// Time an annotator looks at a pair before voting (the server refuses votes under 1 s).
    #[arg(long, default_value_t = 1100)]
    pub answer_millis: u64,
    /// Concurrent ranking callers, each calling Rank back to back.
    #[arg(long, default_value_t = 2)]
    pub rankers: usize,
    /// The dataset to rank, label and train on (the demo's by default).
    #[arg(long, default_value = "lfw-demo")]
    pub dataset: String,
    /// Epochs of each back-to-back GAML training (0: no training).
    #[arg(long, default_value_t = 30)]
    pub train_epochs: u32,
    /// The server's process id, to sample its resident memory (Linux /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 10.0)]
    pub sample_seconds: f64,
}

/// Latencies and outcomes per RPC.
#[derive(Default)]
struct Tally {
    latencies_ms: BTreeMap<&'static str, Vec<f64>>,
    errors: BTreeMap<String, u64>,
    calls: u64,
}

impl Tally {
    fn record<T>(tally: &Mutex<Tally>, rpc: &'static str, started: Instant, outcome: &Result<T, tonic::Status>) {
        let mut tally = tally.lock().expect("not poisoned");
        tally.calls += 1;
        match outcome {
            Ok(_) => tally.latencies_ms.entry(rpc).or_default().push(started.elapsed().as_secs_f64() * 1e3),
            Err(status) => {
                *tally.errors.entry(format!("{rpc} {:?}: {}", status.code(), status.message())).or_default() += 1
            }
        }
    }
}

/// Resident memory of a process in MiB, from /proc/<pid>/status.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// An LFW-format pair list over the dataset's images.
fn pair_list(images: &[pb::Image]) -> String {
    lfw_pair_list(&numbered_images(images.iter().map(|i| (i.identity.as_str(), i.file_name.as_str()))))
}

fn is_loopback(server: &str) -> bool {
    let host = server.split("://").nth(1).unwrap_or(server).split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host).trim_matches(['[', ']']);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub async fn run(client: &Client, server: &str, args: BenchSoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        is_loopback(server),
        "the soak only runs against a server on this machine (loopback), not {server}"
    );
    let images = super::rank::dataset_images(client, &args.dataset).await?;
    anyhow::ensure!(
        images.len() >= 20,
        "dataset {:?} has {} images; start the server with --demo or import faces first",
        args.dataset,
        images.len()
    );
    // Enough open pairs for every annotator to keep voting for the whole run.
    let votes_needed = (args.annotators as f64 * args.seconds / (args.answer_millis as f64 / 1e3)).ceil() as u32;
    let request = pb::ProposePairsRequest {
        limit: Some(pb::propose_pairs_request::Limit::Budget((votes_needed / 3 + 100).min(100_000))),
        batch_size: 500,
        note: "soak".into(),
        ..Default::default()
    };
    let job = client.proposals().propose_pairs(request).await.context("proposing pairs for the soak")?.into_inner();
    eprintln!("soak: {} images; proposing pairs for the annotators", images.len());
    loop {
        let job = client.jobs().get_job(pb::GetJobRequest { job_id: job.id }).await?.into_inner();
        match pb::JobState::try_from(job.state) {
            Ok(pb::JobState::Succeeded) => break,
            Ok(pb::JobState::Queued | pb::JobState::Running) => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => anyhow::bail!("the soak's proposal job {} ended: {}", job.id, job.message),
        }
    }
    facesim_client::crowd::ensure_instructions(client).await?;
    let crowd = annotator_clients(client, "soak", args.annotators).await?;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for (_, annotator) in crowd {
        let (tally, answer) = (tally.clone(), Duration::from_millis(args.answer_millis));
        tasks.push(tokio::spawn(async move {
            let mut labeling = annotator.labeling();
            while Instant::now() < deadline {
                let t = Instant::now();
                let task = labeling.next_task(pb::NextTaskRequest::default()).await.map(|r| r.into_inner());
                Tally::record(&tally, "NextTask", t, &task);
                let Ok(task) = task else { continue };
                if task.done {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                tokio::time::sleep(answer).await;
                let choice = if task.pair_id % 2 == 0 { pb::VoteChoice::Similar } else { pb::VoteChoice::Dissimilar };
                let vote = pb::SubmitVoteRequest { lease_id: task.lease_id, choice: choice as i32 };
                let t = Instant::now();
                let outcome = labeling.submit_vote(vote).await;
                Tally::record(&tally, "SubmitVote", t, &outcome);
            }
        }));
    }
    let ids: Arc<Vec<u64>> = Arc::new(images.iter().map(|i| i.id).collect());
    for ranker in 0..args.rankers {
        let (tally, ids, client) = (tally.clone(), ids.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let mut ranking = client.ranking();
            let mut i = ranker * 7919;
            while Instant::now() < deadline {
                i = (i + 104_729) % ids.len();
                let query = pb::FaceInput { face: Some(pb::face_input::Face::ImageId(ids[i])), ..Default::default() };
                let t = Instant::now();
                let outcome = ranking.rank(pb::RankRequest { query: Some(query), k: 10, ..Default::default() }).await;
                Tally::record(&tally, "Rank", t, &outcome);
            }
        }));
    }
    let trainings = Arc::new(Mutex::new(0u64));
    if args.train_epochs > 0 {
        let (tally, client, trainings) = (tally.clone(), client.clone(), trainings.clone());
        let pairs_text = pair_list(&images);
        let (dataset, epochs) = (args.dataset.clone(), args.train_epochs);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let request = pb::StartTrainingRequest {
                    architecture: pb::Architecture::SiameseGaml as i32,
                    data: Some(pb::start_training_request::Data::PairList(pb::PairListSource {
                        dataset: dataset.clone(),
                        pairs_text: pairs_text.clone(),
                    })),
                    hyperparameters: Some(pb::Hyperparameters {
                        epochs: Some(epochs),
                        batch_size: Some(64),
                        seed: Some(1),
                        ..Default::default()
                    }),
                    name: "soak".into(),
                    ..Default::default()
                };
                let t = Instant::now();
                let outcome = client.training().start_training(request).await.map(|r| r.into_inner());
                Tally::record(&tally, "StartTraining", t, &outcome);
                let Ok(job) = outcome else {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                };
                // Poll as a dashboard would, and count a failed job as an error.
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let t = Instant::now();
                    let got = client.jobs().get_job(pb::GetJobRequest { job_id: job.id }).await.map(|r| r.into_inner());
                    Tally::record(&tally, "GetJob", t, &got);
                    let Ok(got) = got else { continue };
                    match pb::JobState::try_from(got.state) {
                        Ok(pb::JobState::Succeeded) => {
                            *trainings.lock().expect("not poisoned") += 1;
                            break;
                        }
                        Ok(pb::JobState::Queued | pb::JobState::Running) if Instant::now() < deadline => {}
                        Ok(pb::JobState::Queued | pb::JobState::Running) => {
                            // The run is over: stop the job rather than leave it behind.
                            let _ = client.jobs().cancel_job(pb::CancelJobRequest { job_id: job.id }).await;
                            break;
                        }
                        _ => {
                            let status = tonic::Status::new(
                                Code::Aborted,
                                format!("training job {} ended: {}", job.id, got.message),
                            );
                            Tally::record::<()>(&tally, "TrainingJob", t, &Err(status));
                            break;
                        }
                    }
                }
            }
        }));
    }

    // Memory and progress samples while the load runs.
    let mut samples: Vec<(f64, Option<f64>, u64)> = Vec::new();
    let interval = Duration::from_secs_f64(args.sample_seconds.max(1.0));
    loop {
        let at = started.elapsed().as_secs_f64();
        let rss = args.server_pid.and_then(rss_mib);
        let calls = tally.lock().expect("not poisoned").calls;
        eprintln!(
            "soak: {at:6.1} s  calls {calls:8}  server RSS {}",
            rss.map_or("-".into(), |r| format!("{r:.0} MiB"))
        );
        samples.push((at, rss, calls));
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(
            interval.min(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(10)),
        )
        .await;
    }
    for task in tasks {
        task.await.context("a load task panicked")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tally = tally.lock().expect("not poisoned");
    let errors: u64 = tally.errors.values().sum();
    let q = |v: &[f64], p: f64| facesim_client::crowd::CrowdReport::quantile(v, p);
    let per_rpc: HashMap<&str, serde_json::Value> = tally
        .latencies_ms
        .iter()
        .map(|(rpc, v)| {
            (*rpc, serde_json::json!({"ok": v.len(), "p50_ms": q(v, 0.5), "p99_ms": q(v, 0.99), "max_ms": q(v, 1.0)}))
        })
        .collect();
    let rss: Vec<serde_json::Value> =
        samples.iter().map(|(t, r, calls)| serde_json::json!({"t_s": t, "rss_mib": r, "calls": calls})).collect();
    println!(
        "{}",
        serde_json::json!({
            "impl": "facesim", "seconds": elapsed, "annotators": args.annotators, "rankers": args.rankers,
            "answer_ms": args.answer_millis, "calls": tally.calls, "errors": errors,
            "error_rate": errors as f64 / tally.calls.max(1) as f64, "error_kinds": tally.errors,
            "trainings_completed": *trainings.lock().expect("not poisoned"), "rpc": per_rpc, "rss": rss,
        })
    );
    anyhow::ensure!(errors == 0, "{errors} of {} calls failed: {:?}", tally.calls, tally.errors);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_soaked() {
        for ok in ["http://127.0.0.1:50051", "http://localhost:1", "https://[::1]:50051", "127.0.0.2:9"] {
            assert!(is_loopback(ok), "{ok}");
        }
        for no in ["http://10.0.0.1:50051", "https://facesim.example.com", "http://0.0.0.0:1"] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
