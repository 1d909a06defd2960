//! `facesim demo`: the whole platform in one command. Starts a server on a fresh data dir (or
//! uses a running one), imports the demo faces, lets the descriptor propose round 1, has
//! simulated annotators label it through the real API (by default a look-alike crowd, whose
//! "similar" is apparent age, gender and face distance rather than identity), trains GAML and a
//! short CNN run, activates the better if it beats the active model on their shared test pairs
//! (the server's guard), lets the active model propose round 2 (the pairs it is least sure of),
//! labels it, retrains GAML on both rounds under the same guard, measures retrieval and ranks
//! some faces, and reports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use facesim_client::crowd::{annotator_clients, run_crowd, CrowdConfig};
use facesim_client::rounds::{self, round_note};
use facesim_client::{pb, scan_import_dir, Client, ClientError};
use indicatif::{ProgressBar, ProgressStyle};
use rand::distr::{Alphanumeric, SampleString};

use super::jobs::{state_name, watch};
use super::rank::retrieval_of;
use super::train::{draw, follow};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Use the server at --server (the token must be an admin's) instead of starting one.
    #[arg(long)]
    pub connect: bool,
    /// The `facesim-server` program to start (default: the one beside this program, else PATH).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Folder for the started server's data, log, plots and report; must not exist yet
    /// (default: ./facesim-demo-<unix time>).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Faces to import, laid out as <identity>/<image>.
    #[arg(long, default_value = "datasets/lfw-demo")]
    pub faces: PathBuf,
    /// Dataset name of the imported faces.
    #[arg(long, default_value = "lfw-demo")]
    pub dataset: String,
    /// How faces are cut from the files: `center` (the bundled faces are centred crops, where a
    /// detector sees too little context) or `detect` (ordinary photos).
    #[arg(long, value_enum, default_value = "center")]
    pub face_mode: super::faces::FaceModeArg,
    /// Pairs proposed in round 1 (round 2 proposes three quarters as many).
    #[arg(long, default_value_t = 1000)]
    pub round_pairs: u32,
    /// Simulated annotators.
    #[arg(long, default_value_t = 48)]
    pub annotators: usize,
    /// Share of simulated answers given wrong on purpose.
    #[arg(long, default_value_t = 0.1)]
    pub error_rate: f64,
    /// The simulated crowd's truth: `lookalike` (a stand-in for people's look-alike judgment
    /// from apparent age, gender and face distance; see `facesim crowd simulate --help`) or
    /// `identity` (same person = similar, which the descriptor already knows).
    #[arg(long, default_value = "lookalike")]
    pub truth: String,
    #[command(flatten)]
    pub lookalike: super::labeling::LookAlikeArgs,
    #[arg(long, default_value_t = 60)]
    pub gaml_epochs: u32,
    /// GAML's learning rate: ten times the method's 1e-4, as the demo runs 60 epochs where the
    /// method runs 200.
    #[arg(long, default_value_t = 1e-3)]
    pub gaml_lr: f64,
    #[arg(long, default_value_t = 2)]
    pub cnn_epochs: u32,
    #[arg(long, default_value_t = 32)]
    pub cnn_batch: u32,
    /// Seed of the simulated crowd and of the training splits.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    /// Stop the started server at the end (by default it keeps running for inspection until
    /// Ctrl-C).
    #[arg(long)]
    pub exit: bool,
}

/// A server this command started; stopped (SIGTERM: it drains and flushes) when dropped.
struct Started {
    child: Child,
}

impl Drop for Started {
    fn drop(&mut self) {
        let graceful = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        if !graceful.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn server_program(asked: &Option<PathBuf>) -> PathBuf {
    if let Some(path) = asked {
        return path.clone();
    }
    let beside = std::env::current_exe().ok().map(|p| p.with_file_name("facesim-server"));
    beside.filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("facesim-server"))
}

/// Starts `facesim-server` on a free loopback port with a fresh data dir; returns it, its
/// address and the admin token it was given.
async fn start_server(args: &DemoArgs, dir: &Path) -> anyhow::Result<(Started, String, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let token = format!("demo_{}", Alphanumeric.sample_string(&mut rand::rng(), 32));
    let log = std::fs::File::create(dir.join("server.log"))?;
    let program = server_program(&args.server_bin);
    let child = Command::new(&program)
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("FACESIM_ADMIN_TOKEN", &token)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {} (build it with `cargo build --release`)", program.display()))?;
    let mut started = Started { child };
    let server = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(client) = Client::connect(&server, Some(&token)).await {
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            if client.health().check(request).await.is_ok() {
                return Ok((started, server, token));
            }
        }
        if let Some(status) = started.child.try_wait()? {
            anyhow::bail!("the server exited ({status}); see {}", dir.join("server.log").display());
        }
        anyhow::ensure!(Instant::now() < deadline, "the server did not answer within 2 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stage(n: usize, what: &str) {
    println!("\n[{n}/9] {what}");
}

fn spinner(template: &str) -> ProgressBar {
    let bar = ProgressBar::new(0)
        .with_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Activates `candidate` if the server's guard finds it better than the active model on their
/// shared test pairs; otherwise keeps the active one. Says which model it kept and why; returns
/// the active model and that sentence.
pub async fn activate_if_better(client: &Client, candidate: &str) -> anyhow::Result<(pb::Model, String)> {
    let request = pb::ActivateModelRequest { model_id: candidate.to_string(), force: false };
    let (model, why) = match client.models().activate_model(request).await {
        Ok(model) => {
            let model = model.into_inner();
            let why = model.activations.last().and_then(|a| a.comparison.as_ref()).map(|c| c.summary.clone());
            let why = format!("activated {}: {}", model.id, why.unwrap_or_default());
            (model, why)
        }
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            let active = client.models().get_active_model(pb::GetActiveModelRequest {}).await;
            let active = active.map_err(ClientError::from)?.into_inner();
            let why = format!("kept {}: {}", active.id, status.message());
            (active, why)
        }
        Err(status) => return Err(ClientError::from(status).into()),
    };
    println!("{why}");
    Ok((model, why))
}

/// Proposes pairs of round `round` with the active model; returns the batches.
async fn propose(
    client: &Client,
    round: u32,
    budget: u32,
    same_identity: bool,
    uncertain: bool,
    seed: u64,
) -> anyhow::Result<Vec<u64>> {
    let request = pb::ProposePairsRequest {
        selection: Some(pb::PairSelection { include_same_identity: same_identity, ..Default::default() }),
        limit: Some(pb::propose_pairs_request::Limit::Budget(budget)),
        order: if uncertain { pb::ProposalOrder::Uncertain } else { pb::ProposalOrder::Nearest } as i32,
        note: round_note(round),
        // Dealt into batches at random, by the demo's seed.
        shuffle_seed: Some(seed.wrapping_add(u64::from(round))),
        ..Default::default()
    };
    let job = client.proposals().propose_pairs(request).await.map_err(ClientError::from)?.into_inner();
    let job = watch(client, job.id).await?;
    println!("proposal job {} {}: {}", job.id, state_name(job.state), job.message);
    anyhow::ensure!(job.state == pb::JobState::Succeeded as i32, "the proposal of round {round} failed");
    Ok(job.batch_ids)
}

/// Sets labeling instructions unless there are some: one photo pair of one person as the
/// similar example, photos of two people as the dissimilar one.
async fn ensure_instructions(client: &Client, imported: &pb::ImportImagesResponse) -> anyhow::Result<()> {
    if client.labeling().get_instructions(pb::GetInstructionsRequest {}).await.is_ok() {
        return Ok(());
    }
    let images: Vec<&pb::ImportResult> = imported.results.iter().filter(|r| r.image_id != 0).collect();
    let same = images
        .windows(2)
        .find(|w| w[0].identity == w[1].identity)
        .context("the demo faces need a person with two photos")?;
    let other = images.iter().find(|r| r.identity != same[0].identity).context("the demo faces need two people")?;
    let request = pb::SetInstructionsRequest {
        text: "Do these two faces look alike? Judge the faces only (not the photo, light or background). \
               Answer 'similar' if they could pass for relatives or look-alikes, 'dissimilar' otherwise."
            .into(),
        similar_examples: vec![pb::ExampleRef {
            image_a: same[0].image_id,
            image_b: same[1].image_id,
            explanation: "the same person: as alike as faces get".into(),
        }],
        dissimilar_examples: vec![pb::ExampleRef {
            image_a: same[0].image_id,
            image_b: other.image_id,
            explanation: "two different people who do not look alike".into(),
        }],
    };
    client.labeling().set_instructions(request).await.map_err(ClientError::from)?;
    println!("labeling instructions set, with a similar and a dissimilar example");
    Ok(())
}

/// Simulated annotators label every open pair; a bar follows the labels of `batches`.
async fn label_round(client: &Client, args: &DemoArgs, batches: &[u64], pairs: u64, seed: u64) -> anyhow::Result<u64> {
    let instructions =
        client.labeling().get_instructions(pb::GetInstructionsRequest {}).await.map_err(ClientError::from)?;
    let min_ms = instructions.into_inner().min_answer_millis;
    let crowd = annotator_clients(client, "demo-annotator", args.annotators).await?;
    let config = CrowdConfig {
        truth: super::labeling::parse_truth(&args.truth, 0.0, &args.lookalike)?,
        error_rate: args.error_rate,
        // Just over the server's minimum answer time, as a quick human would be.
        answer_time: Duration::from_millis(u64::from(min_ms) + 50),
        max_votes: None,
        deadline: None,
        batch_id: 0,
        seed,
    };
    let bar = spinner("{spinner} labeling [{bar:40}] {pos}/{len} pairs labeled {msg} ({eta})");
    bar.set_length(pairs);
    let (watcher_client, watched, watcher_bar) = (client.clone(), batches.to_vec(), bar.clone());
    let watcher = tokio::spawn(async move {
        loop {
            let mut labeled = 0;
            for &batch_id in &watched {
                if let Ok(p) =
                    watcher_client.labeling().get_batch_progress(pb::GetBatchProgressRequest { batch_id }).await
                {
                    let p = p.into_inner();
                    labeled += p.labeled_similar + p.labeled_dissimilar;
                }
            }
            watcher_bar.set_position(labeled);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let report = run_crowd(client, crowd, config).await;
    watcher.abort();
    bar.finish_and_clear();
    let report = report?;
    println!(
        "{} annotators gave {} votes in {:.0} s ({} wrong on purpose, {} too-fast retries)",
        args.annotators,
        report.votes,
        report.elapsed.as_secs_f64(),
        report.flipped,
        report.retries_too_fast
    );
    Ok(report.votes)
}

async fn train(
    client: &Client,
    architecture: pb::Architecture,
    (epochs, batch, learning_rate): (u32, u32, Option<f64>),
    name: &str,
    seed: u64,
) -> anyhow::Result<pb::Model> {
    let request = pb::StartTrainingRequest {
        architecture: architecture as i32,
        data: Some(pb::start_training_request::Data::Labels(pb::LabelSource::default())),
        hyperparameters: Some(pb::Hyperparameters {
            epochs: Some(epochs),
            // 0: the method's batch for the architecture.
            batch_size: (batch != 0).then_some(batch),
            learning_rate,
            seed: Some(seed),
            ..Default::default()
        }),
        name: name.into(),
        // A fifth of the pairs held out for the test (not the usual tenth): the guard's paired
        // interval needs at least 20 pairs of each class there.
        split: vec![6, 2, 2],
        ..Default::default()
    };
    let job = client.training().start_training(request).await.map_err(ClientError::from)?.into_inner();
    println!("training job {} ({name}) on {}", job.id, job.device);
    follow(client, job.id).await?;
    let job = client.jobs().get_job(pb::GetJobRequest { job_id: job.id }).await.map_err(ClientError::from)?;
    let model_id = job.into_inner().model_id;
    Ok(client.models().get_model(pb::GetModelRequest { model_id }).await.map_err(ClientError::from)?.into_inner())
}

/// Waits until unpinned ranking answers with `model_id` (its gallery is built in the background).
async fn wait_until_serving(client: &Client, probe: u64, model_id: &str) -> anyhow::Result<()> {
    let bar = spinner("{spinner} {msg} ({elapsed})");
    bar.set_message(format!("ranking index of {model_id}"));
    let deadline = Instant::now() + Duration::from_secs(900);
    let face = Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(probe)), ..Default::default() });
    loop {
        let request = pb::RankRequest { query: face.clone(), k: 1, ..Default::default() };
        if let Ok(r) = client.ranking().rank(request).await {
            if r.get_ref().model_id == model_id {
                bar.finish_and_clear();
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "ranking did not switch to {model_id} within 15 minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn scores_json(s: &Option<pb::ModelScores>) -> serde_json::Value {
    let s = s.clone().unwrap_or_default();
    serde_json::json!({ "roc_auc": s.roc_auc, "mcc": s.mcc, "threshold": s.threshold })
}

pub async fn run(server: &str, token: Option<&str>, args: DemoArgs) -> anyhow::Result<()> {
    let started_at = Instant::now();
    let entries = scan_import_dir(&args.faces)
        .with_context(|| format!("cannot read the demo faces in {}", args.faces.display()))?;
    anyhow::ensure!(!entries.is_empty(), "{} holds no <identity>/<file> images", args.faces.display());
    anyhow::ensure!(
        matches!(args.truth.as_str(), "lookalike" | "identity"),
        "--truth must be lookalike or identity, got {:?}",
        args.truth
    );
    args.lookalike.rule()?;
    anyhow::ensure!(
        args.round_pairs >= 20,
        "--round-pairs must be at least 20 (training needs both classes in every split)"
    );

    stage(1, "server");
    let (server_guard, dir, client, server) = if args.connect {
        let client = Client::connect(server, token).await?;
        let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("facesim-demo-output"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        println!("using the server at {server}");
        (None, dir, client, server.to_string())
    } else {
        let dir = args.dir.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            PathBuf::from(format!("facesim-demo-{now}"))
        });
        anyhow::ensure!(!dir.exists(), "{} exists already; the demo starts from a fresh folder", dir.display());
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (guard, address, token) = start_server(&args, &dir).await?;
        println!(
            "server {address} on data dir {} (log: {})",
            dir.join("data").display(),
            dir.join("server.log").display()
        );
        println!("admin token: export FACESIM_SERVER={address} FACESIM_TOKEN={token}");
        let client = Client::connect(&address, Some(&token)).await?;
        (Some(guard), dir, client, address)
    };

    stage(2, "import the faces and embed them with the pretrained descriptor");
    let files = entries.len();
    let identities = {
        let mut names: Vec<&str> = entries.iter().map(|e| e.identity.as_str()).collect();
        names.dedup();
        names.len()
    };
    let bar = spinner("{spinner} importing [{bar:40}] {pos}/{len} files ({eta})");
    bar.set_length(files as u64);
    let bar_in = bar.clone();
    let face = super::faces::FaceArgs { face_mode: Some(args.face_mode), min_face_score: None }.choice();
    let imported = client
        .import_files_with(&args.dataset, entries, face, move |sent: u64, _bytes: u64| bar_in.set_position(sent))
        .await;
    bar.finish_and_clear();
    let imported = imported?;
    println!("{} imported, {} duplicates, {} rejected", imported.imported, imported.duplicates, imported.rejected);
    if imported.embedding_job_id != 0 {
        let job = watch(&client, imported.embedding_job_id).await?;
        println!("embedding job {} {}: {}", job.id, state_name(job.state), job.message);
        anyhow::ensure!(job.state == pb::JobState::Succeeded as i32, "embedding failed");
    }
    let probe = imported.results.iter().map(|r| r.image_id).find(|&id| id != 0).context("no image was imported")?;

    stage(3, "round 1: the descriptor proposes the nearest pairs");
    let round1 = rounds::next_round_number(&client).await?;
    let batches1 = if args.truth == "lookalike" {
        // The method's candidates: the nearest pairs of two different people. The look-alike
        // crowd calls some of them similar and some not.
        propose(&client, round1, args.round_pairs, false, false, args.seed).await?
    } else {
        // Half the nearest pairs of any two photos (mostly one person twice: the identity crowd
        // calls them similar) and half the nearest pairs of two different people, so the labels
        // hold both classes.
        let half = args.round_pairs / 2;
        let mut batches = propose(&client, round1, half, true, false, args.seed).await?;
        batches.extend(propose(&client, round1, args.round_pairs - half, false, false, args.seed + 100).await?);
        batches
    };

    stage(4, "round 1: simulated annotators label through the API");
    ensure_instructions(&client, &imported).await?;
    let votes1 = label_round(&client, &args, &batches1, u64::from(args.round_pairs), args.seed).await?;

    stage(5, "train GAML and a short CNN run on round 1, evaluate against the descriptor");
    let gaml_settings = (args.gaml_epochs, 0, Some(args.gaml_lr));
    let gaml = train(&client, pb::Architecture::SiameseGaml, gaml_settings, "demo gaml, round 1", args.seed).await?;
    let cnn_settings = (args.cnn_epochs, args.cnn_batch, None);
    let cnn = train(&client, pb::Architecture::SiameseCnn, cnn_settings, "demo cnn, round 1", args.seed).await?;
    let auc = |m: &pb::Model| m.scores.as_ref().map_or(0.0, |s| s.roc_auc);
    let better = if auc(&cnn) > auc(&gaml) { cnn.clone() } else { gaml.clone() };

    stage(6, &format!("activate {} (the better test ROC-AUC) if it beats the active model", better.id));
    let (active, verdict1) = activate_if_better(&client, &better.id).await?;
    wait_until_serving(&client, probe, &active.id).await?;

    stage(7, &format!("round 2: {} proposes the pairs it is least sure of; label them", active.id));
    let round2_pairs = (args.round_pairs * 3 / 4).max(20);
    let round2 = round1 + 1;
    // A model with a learned head has no distance threshold: it proposes its nearest pairs.
    let uncertain =
        !matches!(pb::LossFunction::try_from(active.loss), Ok(pb::LossFunction::HeadBce | pb::LossFunction::HeadFocal));
    let batches2 = propose(&client, round2, round2_pairs, args.truth != "lookalike", uncertain, args.seed).await?;
    let votes2 = label_round(&client, &args, &batches2, u64::from(round2_pairs), args.seed + 1).await?;

    stage(8, "retrain GAML on both rounds; activate it if it beats the active model");
    let gaml2 =
        train(&client, pb::Architecture::SiameseGaml, gaml_settings, "demo gaml, rounds 1-2", args.seed).await?;
    let round2_proposer = active.id.clone();
    let (active, verdict2) = activate_if_better(&client, &gaml2.id).await?;
    wait_until_serving(&client, probe, &active.id).await?;

    stage(9, "retrieval and ranking with the descriptor and the active model");
    let plots = dir.join("plots");
    let mut plot_paths = Vec::new();
    for m in [&gaml, &cnn, &gaml2] {
        let (roc, loss) = draw(m, &plots.join(m.id.replace('/', "-")))?;
        plot_paths.push((m.id.clone(), roc, loss));
    }
    let descriptor_retrieval = retrieval_of(&client, &args.dataset, "descriptor/v1", 2, 8).await?;
    let active_retrieval = retrieval_of(&client, &args.dataset, "", 2, 8).await?;
    let mut ranked = Vec::new();
    let step = (imported.results.len() / 5).max(1);
    for r in imported.results.iter().filter(|r| r.image_id != 0).step_by(step).take(5) {
        let face = Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(r.image_id)), ..Default::default() });
        let answer = client.ranking().rank(pb::RankRequest { query: face, k: 5, ..Default::default() }).await;
        let answer = answer.map_err(ClientError::from)?.into_inner();
        ranked.push((r.image_id, r.identity.clone(), answer));
    }
    let agreement = client.labeling().get_agreement(pb::GetAgreementRequest { batch_id: 0 }).await;
    let agreement = agreement.map_err(ClientError::from)?.into_inner();
    let loop_report = rounds::report(&client).await?;

    // The report.
    println!("\n=== facesim demo report ({:.1} min) ===", started_at.elapsed().as_secs_f64() / 60.0);
    println!(
        "faces: {files} files of {identities} people in dataset {:?} ({} imported)",
        args.dataset, imported.imported
    );
    print!("{}", super::rounds::format_report(&loop_report));
    println!("model selection (paired bootstrap on each candidate's held-out test pairs):");
    println!("  round 1: {verdict1}");
    println!("  rounds 1-2: {verdict2}");
    println!(
        "votes: {} (round {round1}) + {} (round {round2}); agreement over {} labeled pairs: Fleiss' kappa {:.3}, \
         Krippendorff's alpha {:.3}, 3-0 share {:.1}%",
        votes1,
        votes2,
        agreement.complete_pairs,
        agreement.fleiss_kappa,
        agreement.krippendorff_alpha,
        100.0 * agreement.unanimous_share
    );
    let relevant = if args.truth == "lookalike" {
        "the same person, which a model taught look-alikes is not trained to find"
    } else {
        "the same person"
    };
    println!("retrieval on {:?} (every image a probe; relevant = {relevant}):", args.dataset);
    for r in [&descriptor_retrieval, &active_retrieval] {
        let at: Vec<String> = r.result.rank_at.iter().map(|(k, v)| format!("Rank@{k} {v:.4}")).collect();
        println!("  {:<20} mAP {:.4}, {}", r.model_id, r.result.map, at.join(", "));
    }
    println!("ranking (k = 5, active model):");
    for (id, identity, answer) in &ranked {
        let names: Vec<String> = answer.results.iter().map(|r| format!("{} ({:.3})", r.identity, r.score)).collect();
        println!("  image {id} ({identity}) by {}: {}", answer.model_id, names.join(", "));
    }
    println!("plots:");
    for (id, roc, loss) in &plot_paths {
        println!("  {id}: {} {}", roc.display(), loss.display());
    }
    println!("annotation UI: {}/", server.trim_end_matches('/'));

    let models_json: Vec<serde_json::Value> = [&gaml, &cnn, &gaml2]
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id, "label_count": m.label_count, "batch_ids": m.batch_ids,
                "scores": scores_json(&m.scores), "baseline": scores_json(&m.baseline),
            })
        })
        .collect();
    let retrieval_json: Vec<serde_json::Value> = [&descriptor_retrieval, &active_retrieval]
        .iter()
        .map(|r| {
            let at: Vec<serde_json::Value> =
                r.result.rank_at.iter().map(|(k, v)| serde_json::json!({ "k": k, "share": v })).collect();
            serde_json::json!({ "model_id": r.model_id, "probes": r.result.probes, "map": r.result.map, "rank_at": at })
        })
        .collect();
    let report = serde_json::json!({
        "files": files,
        "identities": identities,
        "imported": imported.imported,
        "rounds": loop_report.rounds.iter().map(|r| serde_json::json!({
            "round": r.round, "batch_ids": r.batch_ids, "proposed_by": r.proposed_by,
            "pairs": r.pairs, "labeled": r.labeled, "labeled_similar": r.labeled_similar,
        })).collect::<Vec<_>>(),
        "votes": votes1 + votes2,
        "agreement": { "complete_pairs": agreement.complete_pairs, "fleiss_kappa": agreement.fleiss_kappa,
                        "krippendorff_alpha": agreement.krippendorff_alpha, "unanimous_share": agreement.unanimous_share },
        "models": models_json,
        "activated": active.id,
        "active_in_round_2": round2_proposer,
        "model_selection": [verdict1, verdict2],
        "retrieval": retrieval_json,
        "ranking": ranked.iter().map(|(id, _, a)| serde_json::json!({
            "image_id": id, "model_id": a.model_id, "results": a.results.len(),
        })).collect::<Vec<_>>(),
        "plots": plot_paths.iter().map(|(id, roc, loss)| serde_json::json!({
            "model_id": id, "roc": roc, "loss": loss,
        })).collect::<Vec<_>>(),
        "ui": format!("{}/", server.trim_end_matches('/')),
    });
    let json_path = args.report_json.clone().unwrap_or_else(|| dir.join("report.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    println!("report: {}", json_path.display());

    if let Some(guard) = server_guard {
        if args.exit {
            drop(guard);
        } else {
            println!(
                "\nThe server keeps running for inspection with the usual commands (FACESIM_SERVER and \
                 FACESIM_TOKEN as printed above), e.g. `facesim loop report`, `facesim models list`. \
                 Ctrl-C stops it."
            );
            tokio::signal::ctrl_c().await.ok();
            drop(guard);
        }
    }
    Ok(())
}
