//! `facesim train ...` (start, watch, list and cancel training jobs; evaluate models) and
//! `facesim models ...` (the registry: list, show with ROC and loss plots, activate, delete).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use facesim_client::plot::{lines_png, Line, LINE_COLORS};
use facesim_client::{pb, Client, ClientError};
use indicatif::{ProgressBar, ProgressStyle};

use super::jobs::state_name;
use super::{paginate, time};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Arch {
    /// Six convolutions + FC-400 on 128x128 face crops.
    Cnn,
    /// Four tanh FC layers on the descriptor's features.
    Gaml,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Loss {
    Contrastive,
    GeometryAware,
    /// The mining loss on the labelled pairs.
    Mining,
    /// The mining loss with every batch's cross pairs of similar pairs as extra negatives.
    MiningInBatch,
    HeadBce,
    HeadFocal,
}

/// Where the pairs come from: crowd labels (default) or a pairs file.
#[derive(Debug, clap::Args)]
pub struct Data {
    /// Majority labels of these batches (repeat; none = all labelled pairs).
    #[arg(long = "batch")]
    batches: Vec<u64>,
    /// Only pairs whose three votes agree.
    #[arg(long)]
    unanimous: bool,
    /// Train on the share of "similar" votes instead of the majority.
    #[arg(long)]
    soft_labels: bool,
    /// An identity-labelled pairs file in LFW's format (e.g. pairsDevTrain.txt) instead of labels.
    #[arg(long, requires = "dataset")]
    pairs: Option<PathBuf>,
    /// The dataset the pairs file names images of.
    #[arg(long)]
    dataset: Option<String>,
}

/// A data source read from the command line.
enum Source {
    Labels(pb::LabelSource),
    PairList(pb::PairListSource),
}

impl Data {
    fn source(&self) -> anyhow::Result<Source> {
        match &self.pairs {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                let dataset = self.dataset.clone().unwrap_or_default();
                Ok(Source::PairList(pb::PairListSource { dataset, pairs_text: text }))
            }
            None => Ok(Source::Labels(pb::LabelSource {
                batch_ids: self.batches.clone(),
                unanimous_only: self.unanimous,
                soft_labels: self.soft_labels,
            })),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Start a training job (defaults: the method's settings for the architecture).
    Start {
        #[arg(long, value_enum)]
        arch: Arch,
        /// Default: contrastive for the CNN, geometry-aware for GAML.
        #[arg(long, value_enum)]
        loss: Option<Loss>,
        #[command(flatten)]
        data: Data,
        /// Each setting left out takes the method's default for the architecture and loss; a
        /// given one is used as is, zero included.
        #[arg(long)]
        epochs: Option<u32>,
        #[arg(long)]
        batch_size: Option<u32>,
        #[arg(long)]
        lr: Option<f64>,
        #[arg(long)]
        momentum: Option<f64>,
        /// τ of the contrastive or geometry-aware loss.
        #[arg(long)]
        margin: Option<f64>,
        #[arg(long)]
        alpha: Option<f64>,
        #[arg(long)]
        beta: Option<f64>,
        #[arg(long)]
        lambda: Option<f64>,
        #[arg(long)]
        epsilon: Option<f64>,
        /// Seed of the initial weights, split and batch order (default: pick one and record it).
        #[arg(long)]
        seed: Option<u64>,
        /// Train:validation:test, e.g. 8:1:1.
        #[arg(long, default_value = "8:1:1")]
        split: String,
        /// cpu or cuda (default: the server's).
        #[arg(long, default_value = "")]
        device: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Return after starting instead of following the job.
        #[arg(long)]
        detach: bool,
    },
    /// Follow a training job: epochs, losses, validation AUC, pairs/s, ETA.
    Watch { job_id: u64 },
    /// Training jobs, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        page_size: i32,
        #[arg(long)]
        all: bool,
    },
    /// Ask a running training job to stop (no model is stored).
    Cancel { job_id: u64 },
    /// Evaluate a model (default: the descriptor) on labels or a pairs file.
    Evaluate {
        #[arg(long, default_value = "descriptor/v1")]
        model: String,
        #[command(flatten)]
        data: Data,
    },
    /// Evaluations, oldest first.
    Evaluations {
        #[arg(long, default_value = "")]
        model: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every model with its test figures.
    List,
    /// One model: settings, data, figures beside the descriptor, and ROC/loss PNGs.
    Show {
        model_id: String,
        /// Folder for roc.png and loss.png (default: ./facesim-plots/<model>).
        #[arg(long)]
        plots: Option<PathBuf>,
    },
    /// Make a model the one ranking uses. Refused unless it is better than the active model on
    /// their shared labelled test pairs (95% interval of the AUC difference above zero).
    Activate {
        model_id: String,
        /// Activate even when it is not shown better than the active model.
        #[arg(long)]
        force: bool,
    },
    /// Compare two models on the same labelled test pairs: ROC-AUC of each, the difference with
    /// its 95% interval, and a verdict.
    Compare {
        candidate: String,
        /// The model to compare with (default: the active one).
        reference: Option<String>,
    },
    /// Delete a trained model: its record, weights, embeddings and search graphs (its
    /// evaluations stay listed). Not the descriptor, not the active model.
    Delete { model_id: String },
}

fn split(text: &str) -> anyhow::Result<Vec<u32>> {
    let parts: Result<Vec<u32>, _> = text.split(':').map(str::parse).collect();
    match parts {
        Ok(p) if p.len() == 3 => Ok(p),
        _ => anyhow::bail!("--split takes three whole numbers like 8:1:1, got {text:?}"),
    }
}

pub async fn run(client: &Client, command: TrainCommand) -> anyhow::Result<()> {
    match command {
        TrainCommand::Start {
            arch,
            loss,
            data,
            epochs,
            batch_size,
            lr,
            momentum,
            margin,
            alpha,
            beta,
            lambda,
            epsilon,
            seed,
            split: split_text,
            device,
            name,
            detach,
        } => {
            let architecture = match arch {
                Arch::Cnn => pb::Architecture::SiameseCnn,
                Arch::Gaml => pb::Architecture::SiameseGaml,
            } as i32;
            let loss = loss.map_or(0, |l| {
                (match l {
                    Loss::Contrastive => pb::LossFunction::Contrastive,
                    Loss::GeometryAware => pb::LossFunction::GeometryAware,
                    Loss::Mining => pb::LossFunction::MiningContrastive,
                    Loss::MiningInBatch => pb::LossFunction::MiningInBatch,
                    Loss::HeadBce => pb::LossFunction::HeadBce,
                    Loss::HeadFocal => pb::LossFunction::HeadFocal,
                }) as i32
            });
            let data = match data.source()? {
                Source::PairList(p) => pb::start_training_request::Data::PairList(p),
                Source::Labels(l) => pb::start_training_request::Data::Labels(l),
            };
            let request = pb::StartTrainingRequest {
                architecture,
                loss,
                data: Some(data),
                hyperparameters: Some(pb::Hyperparameters {
                    epochs,
                    batch_size,
                    learning_rate: lr,
                    momentum,
                    margin,
                    alpha,
                    beta,
                    lambda,
                    epsilon,
                    seed,
                }),
                device,
                name,
                split: split(&split_text)?,
            };
            let job = client.training().start_training(request).await.map_err(ClientError::from)?.into_inner();
            println!("training job {} started on {} for model {}", job.id, job.device, job.model_id);
            if detach {
                return Ok(());
            }
            follow(client, job.id).await
        }
        TrainCommand::Watch { job_id } => follow(client, job_id).await,
        TrainCommand::List { page_size, all } => {
            println!("{:>6}  {:<10} {:<9} {:>9}  {:<19}  message", "id", "state", "model", "epochs", "created (UTC)");
            paginate(String::new(), all, |page_token| {
                let mut jobs = client.jobs();
                async move {
                    let request = pb::ListJobsRequest { kind: pb::JobKind::Training as i32, page_size, page_token };
                    let page = jobs.list_jobs(request).await?.into_inner();
                    for j in &page.jobs {
                        let p = j.progress.unwrap_or_default();
                        println!(
                            "{:>6}  {:<10} {:<9} {:>9}  {:<19}  {}",
                            j.id,
                            state_name(j.state),
                            j.model_id,
                            format!("{}/{}", p.done, p.total),
                            time(&j.create_time),
                            j.message
                        );
                    }
                    Ok(page.next_page_token)
                }
            })
            .await
        }
        TrainCommand::Cancel { job_id } => {
            client.jobs().cancel_job(pb::CancelJobRequest { job_id }).await.map_err(ClientError::from)?;
            println!("asked training job {job_id} to stop");
            Ok(())
        }
        TrainCommand::Evaluate { model, data } => {
            let data = match data.source()? {
                Source::PairList(p) => pb::start_evaluation_request::Data::PairList(p),
                Source::Labels(l) => pb::start_evaluation_request::Data::Labels(l),
            };
            let request = pb::StartEvaluationRequest { model_id: model, data: Some(data) };
            let job = client.training().start_evaluation(request).await.map_err(ClientError::from)?.into_inner();
            let job = super::jobs::watch(client, job.id).await?;
            println!("{}", job.message);
            if job.state != pb::JobState::Succeeded as i32 {
                anyhow::bail!("evaluation job {} ended {}", job.id, state_name(job.state));
            }
            Ok(())
        }
        TrainCommand::Evaluations { model } => {
            let request = pb::ListEvaluationsRequest { model_id: model, page_size: 1000, ..Default::default() };
            let page = client.training().list_evaluations(request).await.map_err(ClientError::from)?.into_inner();
            println!(
                "{:>4}  {:<14} {:>6}  {:>8} {:>8}  {:>8} {:>8}",
                "id", "model", "pairs", "AUC", "MCC", "desc AUC", "desc MCC"
            );
            for e in page.evaluations {
                let (s, b) = (e.scores.unwrap_or_default(), e.baseline.unwrap_or_default());
                println!(
                    "{:>4}  {:<14} {:>6}  {:>8.4} {:>8.4}  {:>8.4} {:>8.4}",
                    e.id, e.model_id, e.test_pairs, s.roc_auc, s.mcc, b.roc_auc, b.mcc
                );
            }
            Ok(())
        }
    }
}

/// Follows a training job with a progress bar over epochs; prints a line per epoch.
pub async fn follow(client: &Client, job_id: u64) -> anyhow::Result<()> {
    let mut events =
        client.jobs().watch_job(pb::WatchJobRequest { job_id }).await.map_err(ClientError::from)?.into_inner();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} epoch [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let (mut last, mut printed) = (None, 0);
    while let Some(event) = events.message().await.map_err(ClientError::from)? {
        if let Some(t) = &event.training {
            bar.set_length(u64::from(t.epochs));
            bar.set_position(u64::from(t.epoch));
            bar.set_message(format!(
                "val AUC {:.4}, {:.0} pairs/s, ETA {:.0} s",
                t.validation_auc, t.pairs_per_second, t.eta_seconds
            ));
            if t.epoch > printed {
                printed = t.epoch;
                bar.suspend(|| println!("{}", epoch_line(t)));
            }
        } else if let Some(job) = &event.job {
            bar.set_message(job.message.clone());
        }
        last = event.job;
    }
    bar.finish_and_clear();
    let job = last.ok_or_else(|| anyhow::anyhow!("the server sent no state for job {job_id}"))?;
    if job.state == pb::JobState::Succeeded as i32 {
        // Watching coalesces updates: epochs that went by between two events come from the model.
        let request = pb::GetModelRequest { model_id: job.model_id.clone() };
        let model = client.models().get_model(request).await.map_err(ClientError::from)?.into_inner();
        for epoch in model.history.iter().filter(|e| e.epoch > printed) {
            println!("{}", epoch_line(epoch));
        }
    }
    println!("job {} {}: {}", job.id, state_name(job.state), job.message);
    if job.state != pb::JobState::Succeeded as i32 {
        anyhow::bail!("training job {} ended {}", job.id, state_name(job.state));
    }
    println!("see it with: facesim models show {}", job.model_id);
    Ok(())
}

fn epoch_line(t: &pb::TrainingProgress) -> String {
    format!(
        "epoch {:>4}/{}: train loss {:.5}  validation loss {:.5}  validation AUC {:.4}  {:.0} pairs/s",
        t.epoch, t.epochs, t.train_loss, t.validation_loss, t.validation_auc, t.pairs_per_second
    )
}

fn arch_name(a: i32) -> &'static str {
    match pb::Architecture::try_from(a) {
        Ok(pb::Architecture::SiameseCnn) => "siamese-cnn",
        Ok(pb::Architecture::SiameseGaml) => "siamese-gaml",
        _ => "pretrained",
    }
}

fn loss_name(l: i32) -> String {
    pb::LossFunction::try_from(l)
        .ok()
        .filter(|l| *l != pb::LossFunction::Unspecified)
        .map(|l| l.as_str_name().trim_start_matches("LOSS_FUNCTION_").to_lowercase().replace('_', "-"))
        .unwrap_or_else(|| "-".into())
}

pub async fn models(client: &Client, command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List => {
            let request = pb::ListModelsRequest { page_size: 1000, ..Default::default() };
            let models = client.models().list_models(request).await.map_err(ClientError::from)?.into_inner().models;
            println!(
                "{:<14} {:<7} {:<13} {:<16} {:>7}  {:>8} {:>8}  {:>8}  name",
                "id", "state", "architecture", "loss", "labels", "AUC", "MCC", "desc AUC"
            );
            for m in models {
                let state = if m.state == pb::ModelState::Active as i32 { "active" } else { "ready" };
                let (auc, mcc, base) = match (&m.scores, &m.baseline) {
                    (Some(s), Some(b)) => {
                        (format!("{:.4}", s.roc_auc), format!("{:.4}", s.mcc), format!("{:.4}", b.roc_auc))
                    }
                    _ => ("-".into(), "-".into(), "-".into()),
                };
                println!(
                    "{:<14} {:<7} {:<13} {:<16} {:>7}  {auc:>8} {mcc:>8}  {base:>8}  {}",
                    m.id,
                    state,
                    arch_name(m.architecture),
                    loss_name(m.loss),
                    m.label_count,
                    m.name
                );
            }
            Ok(())
        }
        ModelsCommand::Show { model_id, plots } => {
            let request = pb::GetModelRequest { model_id: model_id.clone() };
            let m = client.models().get_model(request).await.map_err(ClientError::from)?.into_inner();
            print!("{}", describe(&m));
            if m.scores.is_some() {
                let dir = plots.unwrap_or_else(|| PathBuf::from("facesim-plots").join(m.id.replace('/', "-")));
                let (roc, loss) = draw(&m, &dir)?;
                println!("ROC curve:   {}", roc.display());
                println!("loss curves: {}", loss.display());
            }
            Ok(())
        }
        ModelsCommand::Activate { model_id, force } => {
            let request = pb::ActivateModelRequest { model_id, force };
            let m = client.models().activate_model(request).await.map_err(ClientError::from)?.into_inner();
            println!("{} is now the active model", m.id);
            if let Some(last) = m.activations.last().and_then(|a| a.comparison.as_ref()) {
                println!("{}", last.summary);
            }
            Ok(())
        }
        ModelsCommand::Compare { candidate, reference } => {
            let request = pb::CompareModelsRequest {
                candidate_model_id: candidate,
                reference_model_id: reference.unwrap_or_default(),
            };
            let c = client.models().compare_models(request).await.map_err(ClientError::from)?.into_inner();
            println!("{}", c.summary);
            println!("verdict: {}", verdict_name(c.verdict));
            Ok(())
        }
        ModelsCommand::Delete { model_id } => {
            let request = pb::DeleteModelRequest { model_id };
            let deleted = client.models().delete_model(request).await.map_err(ClientError::from)?.into_inner();
            let id = deleted.model.map(|m| m.id).unwrap_or_default();
            println!("deleted {id} (and {} stored embeddings of it)", deleted.embeddings_removed);
            Ok(())
        }
    }
}

/// The text of `facesim models show`.
pub fn describe(m: &pb::Model) -> String {
    let mut out = format!("model:        {} ({})\n", m.id, m.name);
    out += &format!("architecture: {}, loss {}\n", arch_name(m.architecture), loss_name(m.loss));
    let metric = if m.metric == pb::DistanceMetric::Cosine as i32 { "cosine" } else { "euclidean" };
    out += &format!("embedding:    {} values, {metric}, threshold {:.4}\n", m.embedding_dim, m.threshold);
    let state = if m.state == pb::ModelState::Active as i32 { "active (ranking uses it)" } else { "ready" };
    out += &format!("state:        {state}\n");
    if m.training_job_id == 0 {
        return out;
    }
    out += &format!("trained by:   job {} on {}, {} UTC\n", m.training_job_id, m.device, time(&m.create_time));
    out += &format!("data:         {}\n", m.data_source);
    if m.train_pair_ids.is_empty() {
        out += &format!("pairs:        {}\n", m.label_count);
    } else {
        out += &format!(
            "pairs:        {} labelled ({} train, {} validation, {} test)\n",
            m.label_count,
            m.train_pair_ids.len(),
            m.validation_pair_ids.len(),
            m.test_pair_ids.len()
        );
    }
    if let Some(h) = &m.hyperparameters {
        out += &format!(
            "settings:     {} epochs, batch {}, {} lr {}, momentum {}, margin {}, alpha {}, beta {}, lambda {}, \
             epsilon {}, seed {}\n",
            h.epochs.unwrap_or_default(),
            h.batch_size.unwrap_or_default(),
            m.optimizer,
            h.learning_rate.unwrap_or_default(),
            h.momentum.unwrap_or_default(),
            h.margin.unwrap_or_default(),
            h.alpha.unwrap_or_default(),
            h.beta.unwrap_or_default(),
            h.lambda.unwrap_or_default(),
            h.epsilon.unwrap_or_default(),
            h.seed.unwrap_or_default()
        );
    }
    out += &format!("kept epoch:   {} (best validation ROC-AUC)\n", m.best_epoch);
    if let (Some(s), Some(b)) = (&m.scores, &m.baseline) {
        out += &format!(
            "test split ({} evaluation): {} similar, {} dissimilar pairs\n",
            m.evaluation_id, s.similar_pairs, s.dissimilar_pairs
        );
        out += &format!(
            "  {:<16} {:>8} {:>17} {:>8} {:>17} {:>9} {:>10}\n",
            "model", "ROC-AUC", "95% CI", "MCC", "95% CI", "accuracy", "threshold"
        );
        for (name, s) in [(m.id.as_str(), s), ("descriptor/v1", b)] {
            out += &format!(
                "  {:<16} {:>8.4} {:>17} {:>8.4} {:>17} {:>9.4} {:>10.4}\n",
                name,
                s.roc_auc,
                interval(&s.roc_auc_ci),
                s.mcc,
                interval(&s.mcc_ci),
                s.accuracy,
                s.threshold
            );
        }
        if !s.caveat.is_empty() {
            out += &format!("  note: {}\n", s.caveat);
        }
    }
    for a in &m.activations {
        let what = match (a.refused, a.forced) {
            (true, _) => "activation refused",
            (false, true) => "activated (forced)",
            (false, false) => "activated",
        };
        let why = a.comparison.as_ref().map(|c| c.summary.as_str()).unwrap_or("no comparison possible");
        out += &format!("{} UTC by {}: {what}: {why}\n", time(&a.time), a.user);
    }
    out
}

/// `[low, high]` of an interval, or `-` when the evaluation predates intervals.
pub fn interval(i: &Option<pb::Interval>) -> String {
    i.as_ref().map_or_else(|| "-".into(), |i| format!("[{:.3}, {:.3}]", i.low, i.high))
}

/// The verdict of a comparison in words.
pub fn verdict_name(v: i32) -> &'static str {
    match pb::ComparisonVerdict::try_from(v) {
        Ok(pb::ComparisonVerdict::Better) => "better",
        Ok(pb::ComparisonVerdict::Worse) => "worse",
        Ok(pb::ComparisonVerdict::NotDistinguishable) => "not distinguishable",
        Ok(pb::ComparisonVerdict::TooFewPairs) => "too few pairs to tell",
        _ => "-",
    }
}

/// Draws roc.png (model and descriptor) and loss.png (train and validation loss per epoch).
pub fn draw(m: &pb::Model, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let curve = |s: &pb::ModelScores| -> Vec<(f64, f64)> {
        s.roc.iter().map(|p| (f64::from(p.false_positive_rate), f64::from(p.true_positive_rate))).collect()
    };
    let (scores, baseline) = (m.scores.clone().unwrap_or_default(), m.baseline.clone().unwrap_or_default());
    let model_label = format!("{} (AUC {:.3})", m.id, scores.roc_auc);
    let baseline_label = format!("descriptor/v1 (AUC {:.3})", baseline.roc_auc);
    let roc_path = dir.join("roc.png");
    let lines = [
        Line { name: &model_label, points: curve(&scores), color: LINE_COLORS[0] },
        Line { name: &baseline_label, points: curve(&baseline), color: LINE_COLORS[1] },
    ];
    let title = format!("ROC on the test split of {}", m.id);
    lines_png(&title, ("false positive rate", "true positive rate"), &lines, true, &roc_path, (640, 520))?;
    let loss_path = dir.join("loss.png");
    let per_epoch = |f: fn(&pb::TrainingProgress) -> f64| -> Vec<(f64, f64)> {
        m.history.iter().map(|e| (f64::from(e.epoch), f(e))).collect()
    };
    let lines = [
        Line { name: "training loss", points: per_epoch(|e| e.train_loss), color: LINE_COLORS[0] },
        Line { name: "validation loss", points: per_epoch(|e| e.validation_loss), color: LINE_COLORS[1] },
    ];
    lines_png(&format!("Loss per epoch of {}", m.id), ("epoch", "loss"), &lines, false, &loss_path, (640, 400))?;
    Ok((roc_path, loss_path))
}
