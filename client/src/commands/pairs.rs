//! `facesim pairs ...` and `facesim batches ...`: look at the distance distribution, propose
//! pairs to label, and manage the labeling batches they form.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use facesim_client::{pb, plot, Client, ClientError};

use super::jobs::{state_name, watch};
use super::{paginate, time};

/// Which images and pairs a command considers.
#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Model whose embeddings measure distance (default: the active model).
    #[arg(long, default_value = "")]
    pub model: String,
    /// Only images of this dataset (repeat for several; default: all).
    #[arg(long = "dataset")]
    pub datasets: Vec<String>,
    /// Also pair images of the same identity.
    #[arg(long)]
    pub include_same_identity: bool,
}

impl SelectionArgs {
    pub fn to_proto(&self) -> pb::PairSelection {
        pb::PairSelection {
            model_id: self.model.clone(),
            datasets: self.datasets.clone(),
            include_same_identity: self.include_same_identity,
        }
    }
}

/// How proposed pairs are dealt into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchOrderArg {
    Random,
    Ranked,
}

#[derive(Debug, Subcommand)]
pub enum PairsCommand {
    /// Propose the nearest pairs of different identities as labeling batches.
    Propose {
        #[command(flatten)]
        selection: SelectionArgs,
        /// Every pair with distance <= this.
        #[arg(long, required_unless_present = "budget", conflicts_with = "budget")]
        threshold: Option<f32>,
        /// The N nearest pairs.
        #[arg(long)]
        budget: Option<u32>,
        /// At most this many pairs per image (0 = no limit).
        #[arg(long, default_value_t = 0)]
        max_per_image: u32,
        /// Also propose pairs that were proposed or labeled before.
        #[arg(long)]
        include_existing: bool,
        /// Pairs per labeling batch.
        #[arg(long, default_value_t = 500)]
        batch_size: u32,
        /// A note kept with the batches, e.g. "round 1".
        #[arg(long, default_value = "")]
        note: String,
        /// Pairs whose distance is nearest the model's decision threshold first (the pairs the
        /// model is least sure of), instead of the nearest pairs; needs --budget.
        #[arg(long, requires = "budget")]
        uncertain: bool,
        /// Create the batches closed (open them later with `facesim batches open`).
        #[arg(long)]
        closed: bool,
        /// How the chosen pairs are dealt into batches and handed out: `random` (a seeded
        /// shuffle, as the method assigned pairs to batches) or `ranked` (nearest first, or
        /// nearest the threshold first with --uncertain).
        #[arg(long, value_enum, default_value = "random")]
        batch_order: BatchOrderArg,
        /// Seed of the random batch order (default: picked, and recorded on the batches).
        #[arg(long)]
        shuffle_seed: Option<u64>,
        /// Print the job id and return instead of following the job.
        #[arg(long)]
        no_wait: bool,
    },
    /// The distribution of pair distances, to choose a threshold or budget.
    Histogram {
        #[command(flatten)]
        selection: SelectionArgs,
        /// Number of equal-width bins.
        #[arg(long, default_value_t = 50)]
        bins: u32,
        /// A threshold to mark and report coverage for.
        #[arg(long)]
        mark: Option<f32>,
        /// Also draw the histogram into this PNG file.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Lines of the terminal chart.
        #[arg(long, default_value_t = 25)]
        rows: usize,
    },
    /// List proposed pairs, in id order (= proposal order).
    List {
        /// Only pairs of this batch.
        #[arg(long)]
        batch: Option<u64>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
        #[arg(long)]
        all: bool,
    },
    /// One pair in detail.
    Show { pair_id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum BatchesCommand {
    /// List labeling batches.
    List {
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
        #[arg(long)]
        all: bool,
    },
    /// One batch in detail.
    Show { batch_id: u64 },
    /// Open a batch: annotators get its pairs.
    Open { batch_id: u64 },
    /// Close a batch: annotators get no more of its pairs.
    Close { batch_id: u64 },
}

fn pair_state(state: i32) -> String {
    pb::PairState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("PAIR_STATE_").to_lowercase())
        .unwrap_or("?".into())
}

fn batch_state(state: i32) -> String {
    pb::BatchState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("BATCH_STATE_").to_lowercase())
        .unwrap_or("?".into())
}

/// Follows a proposal job to its end and prints its batches.
pub async fn follow_proposal(client: &Client, job_id: u64) -> anyhow::Result<()> {
    let job = watch(client, job_id).await?;
    println!("job {} {}: {}", job.id, state_name(job.state), job.message);
    if job.state != pb::JobState::Succeeded as i32 {
        anyhow::bail!("proposal job {} ended {}", job.id, state_name(job.state));
    }
    if !job.batch_ids.is_empty() {
        println!("{BATCH_HEADER}");
        for &batch_id in &job.batch_ids {
            let b = client.proposals().get_batch(pb::GetBatchRequest { batch_id }).await;
            print_batch(&b.map_err(ClientError::from)?.into_inner());
        }
    }
    Ok(())
}

fn print_batch(b: &pb::Batch) {
    println!(
        "{:>6}  {:<6} {:>6}  {:>6}  {:<14} {:<19}  {}",
        b.id,
        batch_state(b.state),
        b.pair_count,
        b.proposal_job_id,
        b.model_id,
        time(&b.create_time),
        b.note
    );
}

const BATCH_HEADER: &str = "    id  state   pairs     job  model          created (UTC)        note";

pub async fn run(client: &Client, command: PairsCommand) -> anyhow::Result<()> {
    match command {
        PairsCommand::Propose {
            selection,
            threshold,
            budget,
            max_per_image,
            include_existing,
            batch_size,
            note,
            uncertain,
            closed,
            batch_order,
            shuffle_seed,
            no_wait,
        } => {
            let limit = match (threshold, budget) {
                (Some(d), _) => pb::propose_pairs_request::Limit::MaxDistance(d),
                (None, Some(n)) => pb::propose_pairs_request::Limit::Budget(n),
                (None, None) => anyhow::bail!("give --threshold or --budget"),
            };
            let request = pb::ProposePairsRequest {
                selection: Some(selection.to_proto()),
                limit: Some(limit),
                max_pairs_per_image: max_per_image,
                exclude_existing: Some(!include_existing),
                batch_size,
                order: if uncertain { pb::ProposalOrder::Uncertain } else { pb::ProposalOrder::Nearest } as i32,
                approximate: false,
                note,
                start_closed: closed,
                batch_order: match batch_order {
                    BatchOrderArg::Random => pb::BatchOrder::Random,
                    BatchOrderArg::Ranked => pb::BatchOrder::Ranked,
                } as i32,
                shuffle_seed,
            };
            let job = client.proposals().propose_pairs(request).await.map_err(ClientError::from)?.into_inner();
            if no_wait {
                println!("proposal job {} started; follow it with `facesim jobs watch {}`", job.id, job.id);
                return Ok(());
            }
            follow_proposal(client, job.id).await
        }
        PairsCommand::Histogram { selection, bins, mark, png, rows } => {
            let request = pb::GetDistanceHistogramRequest {
                selection: Some(selection.to_proto()),
                bins,
                mark_distance: mark.unwrap_or(0.0),
            };
            let h = client.proposals().get_distance_histogram(request).await.map_err(ClientError::from)?.into_inner();
            print!("{}", plot::histogram_text(&h, rows));
            if let Some(path) = png {
                plot::histogram_png(&h, &path, (1000, 600))?;
                println!("histogram drawn to {}", path.display());
            }
            Ok(())
        }
        PairsCommand::List { batch, page_size, page_token, all } => {
            println!(
                "{:>8}  {:>7} {:>7}  {:>8} {:>8}  {:>8}  {:>6}  {:<8} {:>5}",
                "id", "image a", "image b", "ident a", "ident b", "distance", "batch", "state", "votes"
            );
            paginate(page_token, all, |page_token| {
                let mut proposals = client.proposals();
                async move {
                    let request = pb::ListPairsRequest { batch_id: batch.unwrap_or(0), page_size, page_token };
                    let page = proposals.list_pairs(request).await?.into_inner();
                    for p in &page.pairs {
                        println!(
                            "{:>8}  {:>7} {:>7}  {:>8} {:>8}  {:>8.4}  {:>6}  {:<8} {:>5}",
                            p.id,
                            p.image_a,
                            p.image_b,
                            p.identity_a,
                            p.identity_b,
                            p.distance,
                            p.batch_id,
                            pair_state(p.state),
                            p.votes
                        );
                    }
                    Ok(page.next_page_token)
                }
            })
            .await
        }
        PairsCommand::Show { pair_id } => {
            let p = client.proposals().get_pair(pb::GetPairRequest { pair_id }).await.map_err(ClientError::from)?;
            let p = p.into_inner();
            let mut datasets = client.datasets();
            println!("pair:      {}", p.id);
            for (label, image_id) in [("image a", p.image_a), ("image b", p.image_b)] {
                let image = datasets.get_image(pb::GetImageRequest { image_id }).await.map_err(ClientError::from)?;
                let image = image.into_inner();
                println!("{label}:   {image_id} ({} / {} / {})", image.dataset, image.identity, image.file_name);
            }
            println!("distance:  {:.4} under {}", p.distance, p.model_id);
            println!("batch:     {}", p.batch_id);
            println!("state:     {} ({} votes)", pair_state(p.state), p.votes);
            println!("proposed:  {} UTC", time(&p.create_time));
            Ok(())
        }
    }
}

pub async fn run_batches(client: &Client, command: BatchesCommand) -> anyhow::Result<()> {
    match command {
        BatchesCommand::List { page_size, page_token, all } => {
            println!("{BATCH_HEADER}");
            paginate(page_token, all, |page_token| {
                let mut proposals = client.proposals();
                async move {
                    let page =
                        proposals.list_batches(pb::ListBatchesRequest { page_size, page_token }).await?.into_inner();
                    page.batches.iter().for_each(print_batch);
                    Ok(page.next_page_token)
                }
            })
            .await
        }
        BatchesCommand::Show { batch_id } => {
            let b = client.proposals().get_batch(pb::GetBatchRequest { batch_id }).await.map_err(ClientError::from)?;
            let b = b.into_inner();
            println!("batch:     {}", b.id);
            println!("state:     {}", batch_state(b.state));
            println!("pairs:     {}", b.pair_count);
            println!("job:       {}", b.proposal_job_id);
            println!("model:     {}", b.model_id);
            println!("note:      {}", b.note);
            match b.shuffle_seed {
                Some(seed) => println!("order:     random (shuffle seed {seed})"),
                None => println!("order:     ranked"),
            }
            println!("created:   {} UTC", time(&b.create_time));
            Ok(())
        }
        BatchesCommand::Open { batch_id } | BatchesCommand::Close { batch_id } => {
            let open = matches!(command, BatchesCommand::Open { .. });
            let state = if open { pb::BatchState::Open } else { pb::BatchState::Closed };
            let request = pb::SetBatchStateRequest { batch_id, state: state as i32 };
            let b = client.proposals().set_batch_state(request).await.map_err(ClientError::from)?.into_inner();
            println!("batch {} is {} ({} pairs)", b.id, batch_state(b.state), b.pair_count);
            Ok(())
        }
    }
}
