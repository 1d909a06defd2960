//! Labeling from the terminal: `facesim labeling ...` for researchers (instructions, progress,
//! annotators, agreement, gold pairs), `facesim labels export ...`, `facesim label` for
//! annotators, `facesim crowd simulate` and `facesim bench votes`.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Args, Subcommand, ValueEnum};
use facesim_client::crowd::{annotator_clients, run_crowd, CrowdConfig, CrowdReport, LookAlike, Truth};
use facesim_client::{pb, Client, ClientError};

use super::time;

#[derive(Debug, Subcommand)]
pub enum LabelingCommand {
    /// Show or set the annotators' instructions.
    #[command(subcommand)]
    Instructions(InstructionsCommand),
    /// Where a batch stands: pairs by number of votes, labels so far, tasks out.
    Progress { batch_id: u64 },
    /// Statistics of every annotator.
    Annotators,
    /// Agreement between annotators (Fleiss' kappa, Krippendorff's alpha).
    Agreement {
        /// Only this batch (default: all).
        #[arg(long, default_value_t = 0)]
        batch: u64,
    },
    /// Add a gold pair with a known answer, mixed into every annotator's tasks.
    Gold { image_a: u64, image_b: u64, answer: Answer },
    /// Stop counting an annotator's votes; its pairs need votes again.
    Disable { user_id: u64 },
    /// Let a disabled annotator label again (its earlier votes stay excluded).
    Enable { user_id: u64 },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Answer {
    Similar,
    Dissimilar,
}

impl Answer {
    fn choice(self) -> i32 {
        match self {
            Answer::Similar => pb::VoteChoice::Similar as i32,
            Answer::Dissimilar => pb::VoteChoice::Dissimilar as i32,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum InstructionsCommand {
    Show,
    /// Set the text and example pairs: `--similar A,B` and `--dissimilar A,B` (image ids), each
    /// at least once, optionally `A,B,explanation`.
    Set {
        #[arg(long)]
        text: String,
        #[arg(long, required = true)]
        similar: Vec<String>,
        #[arg(long, required = true)]
        dissimilar: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// The label dataset: one row per labeled pair.
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// Only this batch (default: all).
        #[arg(long, default_value_t = 0)]
        batch: u64,
        /// Only unanimous (3-0) labels.
        #[arg(long)]
        unanimous: bool,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Every vote, like a crowd platform's result file.
    Votes {
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        #[arg(long, default_value_t = 0)]
        batch: u64,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// The look-alike truth's settings (`--truth lookalike`).
#[derive(Debug, Clone, Args)]
pub struct LookAlikeArgs {
    /// Look-alike truth: the largest apparent-age gap (years) of two look-alikes.
    #[arg(long, default_value_t = LookAlike::default().max_age_gap)]
    pub max_age_gap: f32,
    /// Look-alike truth: the largest descriptor distance of two look-alikes.
    #[arg(long, default_value_t = LookAlike::default().max_distance)]
    pub max_distance: f32,
    /// Look-alike truth: how much annotators' cuts vary (0.3: ±30% on the age gap).
    #[arg(long, default_value_t = LookAlike::default().spread)]
    pub strictness_spread: f32,
}

impl LookAlikeArgs {
    pub fn rule(&self) -> anyhow::Result<LookAlike> {
        anyhow::ensure!(self.max_age_gap >= 0.0, "--max-age-gap must not be negative");
        anyhow::ensure!(self.max_distance > 0.0, "--max-distance must be positive");
        anyhow::ensure!((0.0..0.9).contains(&self.strictness_spread), "--strictness-spread must be in [0, 0.9)");
        Ok(LookAlike { max_age_gap: self.max_age_gap, max_distance: self.max_distance, spread: self.strictness_spread })
    }
}

/// Reads `--truth`.
pub fn parse_truth(truth: &str, threshold: f32, lookalike: &LookAlikeArgs) -> anyhow::Result<Truth> {
    Ok(match truth {
        "identity" => Truth::Identity,
        "distance" => Truth::Distance(threshold),
        "lookalike" => Truth::LookAlike(lookalike.rule()?),
        other => anyhow::bail!("--truth must be identity, distance or lookalike, got {other:?}"),
    })
}

#[derive(Debug, Subcommand)]
pub enum CrowdCommand {
    /// Simulated annotators label through the real API (needs an admin token to make them).
    Simulate {
        #[arg(long, default_value_t = 5)]
        annotators: usize,
        /// Name prefix of the simulated annotators' accounts.
        #[arg(long, default_value = "sim")]
        prefix: String,
        /// Share of answers given wrong on purpose.
        #[arg(long, default_value_t = 0.1)]
        error_rate: f64,
        /// Seconds each annotator takes per pair.
        #[arg(long, default_value_t = 1.2)]
        seconds_per_vote: f64,
        /// Ground truth: `identity` (same person = similar), `distance` (nearer than
        /// --truth-threshold under the proposing model = similar) or `lookalike` (a stand-in
        /// for human judgment: same apparent gender, apparent ages within --max-age-gap years
        /// and descriptor distance under --max-distance, each annotator somewhat stricter or
        /// looser than that by up to --strictness-spread).
        #[arg(long, default_value = "distance")]
        truth: String,
        #[arg(long, default_value_t = 0.40)]
        truth_threshold: f32,
        #[command(flatten)]
        lookalike: LookAlikeArgs,
        /// Stop after this many votes in all.
        #[arg(long)]
        max_votes: Option<u64>,
        #[arg(long, default_value_t = 0)]
        batch: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sustained durable votes per second and vote latency with concurrent annotators. Run it
    /// against a server started with `--min-answer-millis 0` (see bench/votes.sh).
    Votes {
        #[arg(long, default_value_t = 64)]
        annotators: usize,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
    /// Ranking QPS and latency with concurrent callers querying stored images or embeddings.
    Rank(super::rank::BenchRankArgs),
    /// Minutes of mixed load (annotators, ranking, back-to-back training) against a loopback
    /// server: error rate, p99 latency per RPC, server memory over time (see bench/soak.sh).
    Soak(super::soak::BenchSoakArgs),
}

fn example_ref(spec: &str) -> anyhow::Result<pb::ExampleRef> {
    let mut parts = spec.splitn(3, ',');
    let mut id = |what: &str| -> anyhow::Result<u64> {
        let text = parts.next().ok_or_else(|| anyhow::anyhow!("{spec:?}: give image ids as A,B"))?;
        text.trim().parse().map_err(|_| anyhow::anyhow!("{spec:?}: {what} {text:?} is not an image id"))
    };
    let (image_a, image_b) = (id("first")?, id("second")?);
    Ok(pb::ExampleRef { image_a, image_b, explanation: parts.next().unwrap_or("").trim().to_string() })
}

fn choice_name(choice: i32) -> &'static str {
    match pb::VoteChoice::try_from(choice) {
        Ok(pb::VoteChoice::Similar) => "similar",
        Ok(pb::VoteChoice::Dissimilar) => "dissimilar",
        _ => "?",
    }
}

fn print_stats(s: &pb::AnnotatorStats) {
    println!(
        "{:>6}  {:<16} {:<8} {:>6} {:>6} {:>8} {:>6} {:>6} {:>9} {:>9} {:>8.2}",
        s.user_id,
        s.name,
        if s.enabled { "enabled" } else { "disabled" },
        s.votes,
        s.votes_today,
        s.rejected_too_fast,
        s.skips,
        s.gold_answered,
        format!("{:.0}%", 100.0 * s.gold_accuracy),
        format!("{:.0}%", 100.0 * s.majority_agreement),
        s.median_answer_seconds
    );
}

const STATS_HEADER: &str =
    "    id  name             state     votes  today too-fast  skips   gold  gold-acc  majority  median s";

pub async fn run(client: &Client, command: LabelingCommand) -> anyhow::Result<()> {
    let mut labeling = client.labeling();
    match command {
        LabelingCommand::Instructions(InstructionsCommand::Show) => {
            let i = labeling.get_instructions(pb::GetInstructionsRequest {}).await.map_err(ClientError::from)?;
            let i = i.into_inner();
            println!("{}\n", i.text);
            for (kind, list) in [("similar", &i.similar_examples), ("dissimilar", &i.dissimilar_examples)] {
                for e in list {
                    println!("{kind} example: images {} and {}  {}", e.image_a, e.image_b, e.explanation);
                }
            }
            println!("votes sooner than {} ms after a pair is shown are refused", i.min_answer_millis);
            Ok(())
        }
        LabelingCommand::Instructions(InstructionsCommand::Set { text, similar, dissimilar }) => {
            let request = pb::SetInstructionsRequest {
                text,
                similar_examples: similar.iter().map(|s| example_ref(s)).collect::<anyhow::Result<_>>()?,
                dissimilar_examples: dissimilar.iter().map(|s| example_ref(s)).collect::<anyhow::Result<_>>()?,
            };
            let set = labeling.set_instructions(request).await.map_err(ClientError::from)?.into_inner();
            println!(
                "instructions set: {} similar and {} dissimilar example pairs",
                set.similar_examples.len(),
                set.dissimilar_examples.len()
            );
            Ok(())
        }
        LabelingCommand::Progress { batch_id } => {
            let p = labeling.get_batch_progress(pb::GetBatchProgressRequest { batch_id }).await;
            let p = p.map_err(ClientError::from)?.into_inner();
            let total: u64 = p.pairs_by_votes.iter().sum();
            println!("batch {}: {total} pairs", p.batch_id);
            for (votes, n) in p.pairs_by_votes.iter().enumerate() {
                println!("  {votes} votes: {n}");
            }
            println!("labels: {} similar, {} dissimilar", p.labeled_similar, p.labeled_dissimilar);
            println!("tasks out now: {}", p.active_leases);
            Ok(())
        }
        LabelingCommand::Annotators => {
            println!("{STATS_HEADER}");
            let mut page_token = String::new();
            loop {
                let request = pb::ListAnnotatorStatsRequest { page_size: 1000, page_token };
                let page = labeling.list_annotator_stats(request).await.map_err(ClientError::from)?.into_inner();
                page.annotators.iter().for_each(print_stats);
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = page.next_page_token;
            }
        }
        LabelingCommand::Agreement { batch } => {
            let a = labeling.get_agreement(pb::GetAgreementRequest { batch_id: batch }).await;
            let a = a.map_err(ClientError::from)?.into_inner();
            println!("complete pairs:        {}", a.complete_pairs);
            println!("Fleiss' kappa:         {:.3}", a.fleiss_kappa);
            println!("Krippendorff's alpha:  {:.3}", a.krippendorff_alpha);
            println!("unanimous (3-0):       {:.1}%", 100.0 * a.unanimous_share);
            Ok(())
        }
        LabelingCommand::Gold { image_a, image_b, answer } => {
            let pairs = vec![pb::GoldPair { image_a, image_b, answer: answer.choice() }];
            let added = labeling.add_gold_pairs(pb::AddGoldPairsRequest { pairs }).await.map_err(ClientError::from)?;
            println!("gold pair {} added", added.into_inner().pair_ids[0]);
            Ok(())
        }
        LabelingCommand::Disable { user_id } | LabelingCommand::Enable { user_id } => {
            let enabled = matches!(command, LabelingCommand::Enable { .. });
            let request = pb::SetAnnotatorEnabledRequest { user_id, enabled };
            let s = labeling.set_annotator_enabled(request).await.map_err(ClientError::from)?.into_inner();
            println!("{STATS_HEADER}");
            print_stats(&s);
            Ok(())
        }
    }
}

fn output(path: &Option<PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    })
}

/// Identity and file names of images, fetched once each.
struct Names {
    client: Client,
    images: HashMap<u64, pb::Image>,
}

impl Names {
    async fn image(&mut self, id: u64) -> anyhow::Result<pb::Image> {
        if let Some(image) = self.images.get(&id) {
            return Ok(image.clone());
        }
        let image = self.client.datasets().get_image(pb::GetImageRequest { image_id: id }).await;
        let image = image.map_err(ClientError::from)?.into_inner();
        self.images.insert(id, image.clone());
        Ok(image)
    }
}

/// One value of an export row: written as text in CSV and with its JSON type in JSON lines
/// (so a numeric identity name such as CASIA's `0000045` stays a string).
enum Cell {
    Int(u64),
    /// A number and its decimals in CSV.
    Num(f64, usize),
    Text(String),
    Bool(bool),
}

impl Cell {
    fn csv(&self) -> String {
        match self {
            Cell::Int(v) => v.to_string(),
            Cell::Num(v, decimals) => format!("{v:.decimals$}"),
            Cell::Text(v) => v.clone(),
            Cell::Bool(v) => v.to_string(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Cell::Int(v) => (*v).into(),
            // Rounded as in CSV: 0.404465, not 0.40446498990058899.
            Cell::Num(..) => self.csv().parse::<f64>().map(serde_json::Value::from).unwrap_or_default(),
            Cell::Text(v) => v.as_str().into(),
            Cell::Bool(v) => (*v).into(),
        }
    }
}

impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        Cell::Int(v)
    }
}

impl From<u32> for Cell {
    fn from(v: u32) -> Self {
        Cell::Int(v.into())
    }
}

impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(v)
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_string())
    }
}

impl From<bool> for Cell {
    fn from(v: bool) -> Self {
        Cell::Bool(v)
    }
}

fn write_rows(out: &mut dyn Write, format: Format, header: &[&str], rows: &[Vec<Cell>]) -> anyhow::Result<()> {
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(header)?;
            for row in rows {
                w.write_record(row.iter().map(Cell::csv))?;
            }
            w.flush()?;
        }
        Format::Jsonl => {
            for row in rows {
                let object: serde_json::Map<String, serde_json::Value> =
                    header.iter().zip(row).map(|(k, v)| (k.to_string(), v.json())).collect();
                writeln!(out, "{}", serde_json::Value::Object(object))?;
            }
        }
    }
    Ok(())
}

pub async fn run_labels(client: &Client, command: LabelsCommand) -> anyhow::Result<()> {
    let mut names = Names { client: client.clone(), images: HashMap::new() };
    match command {
        LabelsCommand::Export { format, batch, unanimous, output: path } => {
            let header = [
                "pair_id",
                "batch_id",
                "image_a",
                "image_b",
                "identity_a",
                "identity_b",
                "file_a",
                "file_b",
                "distance",
                "similar_votes",
                "dissimilar_votes",
                "majority",
                "split",
                "soft_label",
            ];
            let mut rows = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = pb::ListLabelsRequest { batch_id: batch, page_size: 1000, page_token };
                let page = client.labeling().list_labels(request).await.map_err(ClientError::from)?.into_inner();
                for l in &page.labels {
                    let (a, b) = (names.image(l.image_a).await?, names.image(l.image_b).await?);
                    let split = format!(
                        "{}-{}",
                        l.similar_votes.max(l.dissimilar_votes),
                        l.similar_votes.min(l.dissimilar_votes)
                    );
                    if unanimous && split != "3-0" {
                        continue;
                    }
                    rows.push(vec![
                        l.pair_id.into(),
                        l.batch_id.into(),
                        l.image_a.into(),
                        l.image_b.into(),
                        a.identity.clone().into(),
                        b.identity.clone().into(),
                        a.file_name.clone().into(),
                        b.file_name.clone().into(),
                        Cell::Num(f64::from(l.distance), 6),
                        l.similar_votes.into(),
                        l.dissimilar_votes.into(),
                        choice_name(l.majority).into(),
                        split.into(),
                        Cell::Num(l.similar_votes as f64 / (l.similar_votes + l.dissimilar_votes).max(1) as f64, 4),
                    ]);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            write_rows(&mut *output(&path)?, format, &header, &rows)?;
            if let Some(p) = path {
                eprintln!("{} labels written to {}", rows.len(), p.display());
            }
            Ok(())
        }
        LabelsCommand::Votes { format, batch, output: path } => {
            let header = [
                "vote_id",
                "pair_id",
                "annotator_id",
                "lease_id",
                "choice",
                "lease_time",
                "vote_time",
                "answer_seconds",
                "counted",
                "gold",
            ];
            let mut rows = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = pb::ListVotesRequest { batch_id: batch, page_size: 1000, page_token };
                let page = client.labeling().list_votes(request).await.map_err(ClientError::from)?.into_inner();
                for v in &page.votes {
                    let millis = |t: &Option<prost_types::Timestamp>| {
                        t.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000).unwrap_or(0)
                    };
                    rows.push(vec![
                        v.id.into(),
                        v.pair_id.into(),
                        v.annotator_id.into(),
                        v.lease_id.into(),
                        choice_name(v.choice).into(),
                        time(&v.lease_time).into(),
                        time(&v.vote_time).into(),
                        Cell::Num((millis(&v.vote_time) - millis(&v.lease_time)) as f64 / 1000.0, 3),
                        v.counted.into(),
                        v.gold.into(),
                    ]);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            write_rows(&mut *output(&path)?, format, &header, &rows)?;
            if let Some(p) = path {
                eprintln!("{} votes written to {}", rows.len(), p.display());
            }
            Ok(())
        }
    }
}

/// Shows an image inline with the kitty graphics protocol (kitty, WezTerm, Ghostty, Konsole),
/// sent as raw RGB.
fn kitty_image(encoded: &[u8]) -> String {
    let Ok(image) = image::load_from_memory(encoded) else { return "[unreadable face image]".into() };
    let rgb = image.to_rgb8();
    let data = base64::engine::general_purpose::STANDARD.encode(rgb.as_raw());
    let chunks: Vec<&[u8]> = data.as_bytes().chunks(4096).collect();
    let mut out = String::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let more = u8::from(i + 1 < chunks.len());
        let head = if i == 0 {
            format!("a=T,f=24,s={},v={},m={more}", rgb.width(), rgb.height())
        } else {
            format!("m={more}")
        };
        out.push_str(&format!("\x1b_G{head};{}\x1b\\", String::from_utf8_lossy(chunk)));
    }
    out
}

fn kitty_supported() -> bool {
    std::io::stdout().is_terminal()
        && (std::env::var("KITTY_WINDOW_ID").is_ok()
            || std::env::var("TERM").is_ok_and(|t| t.contains("kitty") || t.contains("ghostty"))
            || std::env::var("TERM_PROGRAM").is_ok_and(|t| t == "WezTerm"))
}

/// `facesim label`: label pairs in the terminal. Faces show inline where the terminal speaks the
/// kitty graphics protocol; otherwise they are saved as JPEG files whose paths are printed.
pub async fn label(client: &Client, batch: u64, faces_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut labeling = client.labeling();
    let instructions = labeling.get_instructions(pb::GetInstructionsRequest {}).await.map_err(ClientError::from)?;
    let instructions = instructions.into_inner();
    println!("{}", instructions.text);
    println!("keys: s = similar, d = dissimilar, k = skip, q = quit (then Enter)\n");
    let dir = match faces_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("facesim-label-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let inline = kitty_supported();
    let mut stdin = std::io::stdin().lock();
    let mut voted = 0u64;
    'tasks: loop {
        let task = labeling.next_task(pb::NextTaskRequest { batch_id: batch }).await.map_err(ClientError::from)?;
        let task = task.into_inner();
        if task.done {
            println!("nothing left to label right now; {voted} votes this session");
            return Ok(());
        }
        println!("pair {} (batch {}, {} pairs still need votes)", task.pair_id, task.batch_id, task.remaining_in_batch);
        if inline {
            println!("{}  {}", kitty_image(&task.face_a), kitty_image(&task.face_b));
        } else {
            let (a, b) =
                (dir.join(format!("pair-{}-a.jpg", task.pair_id)), dir.join(format!("pair-{}-b.jpg", task.pair_id)));
            std::fs::write(&a, &task.face_a)?;
            std::fs::write(&b, &task.face_b)?;
            println!("faces: {}  {}", a.display(), b.display());
        }
        loop {
            print!("similar, dissimilar, skip or quit [s/d/k/q]? ");
            std::io::stdout().flush()?;
            let mut line = String::new();
            if stdin.read_line(&mut line)? == 0 {
                // End of input: give the task back so that it does not wait for its lease to lapse.
                labeling.skip(pb::SkipRequest { lease_id: task.lease_id }).await.map_err(ClientError::from)?;
                println!("\n{voted} votes this session");
                return Ok(());
            }
            let choice = match line.trim() {
                "s" => pb::VoteChoice::Similar,
                "d" => pb::VoteChoice::Dissimilar,
                "k" => {
                    labeling.skip(pb::SkipRequest { lease_id: task.lease_id }).await.map_err(ClientError::from)?;
                    println!("skipped");
                    continue 'tasks;
                }
                "q" => {
                    labeling.skip(pb::SkipRequest { lease_id: task.lease_id }).await.map_err(ClientError::from)?;
                    println!("{voted} votes this session");
                    return Ok(());
                }
                other => {
                    println!("{other:?}: type s, d, k or q");
                    continue;
                }
            };
            let request = pb::SubmitVoteRequest { lease_id: task.lease_id, choice: choice as i32 };
            match labeling.submit_vote(request).await {
                Ok(_) => {
                    voted += 1;
                    println!("voted {}", choice_name(choice as i32));
                    continue 'tasks;
                }
                Err(status) if status.message().contains("too fast") => {
                    println!(
                        "too fast: look at both faces for at least {} ms, then answer again",
                        instructions.min_answer_millis
                    );
                }
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    println!("{}; here is another pair", status.message());
                    continue 'tasks;
                }
                Err(status) => return Err(ClientError::from(status).into()),
            }
        }
    }
}

fn print_report(report: &CrowdReport) {
    println!(
        "{} votes in {:.1} s ({:.1} votes/s); {} answered wrong on purpose; {} too-fast retries; {} lapsed leases",
        report.votes,
        report.elapsed.as_secs_f64(),
        report.votes as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.flipped,
        report.retries_too_fast,
        report.lapsed_leases
    );
    for (name, votes) in &report.per_annotator {
        println!("  {name:<16} {votes:>6} votes");
    }
}

pub async fn crowd(client: &Client, command: CrowdCommand) -> anyhow::Result<()> {
    let CrowdCommand::Simulate {
        annotators,
        prefix,
        error_rate,
        seconds_per_vote,
        truth,
        truth_threshold,
        lookalike,
        max_votes,
        batch,
        seed,
    } = command;
    let truth = parse_truth(&truth, truth_threshold, &lookalike)?;
    let crowd = annotator_clients(client, &prefix, annotators).await?;
    let config = CrowdConfig {
        truth,
        error_rate,
        answer_time: Duration::from_secs_f64(seconds_per_vote.max(0.0)),
        max_votes,
        deadline: None,
        batch_id: batch,
        seed,
    };
    let report = run_crowd(client, crowd, config).await?;
    print_report(&report);
    Ok(())
}

pub async fn bench(client: &Client, command: BenchCommand) -> anyhow::Result<()> {
    let (annotators, seconds, prefix) = match command {
        BenchCommand::Votes { annotators, seconds, prefix } => (annotators, seconds, prefix),
        BenchCommand::Rank(args) => return super::rank::bench_rank(client, args).await,
        BenchCommand::Soak(_) => anyhow::bail!("the soak needs the server address: run it from the facesim CLI"),
    };
    facesim_client::crowd::ensure_instructions(client).await?;
    let crowd = annotator_clients(client, &prefix, annotators).await?;
    // Warm-up: connections, caches.
    let warm = CrowdConfig {
        truth: Truth::Coin,
        error_rate: 0.0,
        answer_time: Duration::ZERO,
        max_votes: Some(annotators as u64 * 4),
        deadline: None,
        batch_id: 0,
        seed: 7,
    };
    run_crowd(client, crowd.clone(), warm.clone()).await?;
    let config =
        CrowdConfig { max_votes: None, deadline: Some(Instant::now() + Duration::from_secs_f64(seconds)), ..warm };
    let report = run_crowd(client, crowd, config).await?;
    if report.retries_too_fast > 0 {
        eprintln!("warning: the server enforces a minimum answer time; start it with --min-answer-millis 0 to measure");
    }
    let q = |v: &[f64], p| CrowdReport::quantile(v, p);
    println!(
        "{}",
        serde_json::json!({
            "impl": "facesim", "annotators": annotators, "seconds": report.elapsed.as_secs_f64(),
            "votes": report.votes, "votes_per_s": report.votes as f64 / report.elapsed.as_secs_f64(),
            "vote_p50_ms": q(&report.vote_latencies_ms, 0.5), "vote_p99_ms": q(&report.vote_latencies_ms, 0.99),
            "task_p50_ms": q(&report.task_latencies_ms, 0.5), "task_p99_ms": q(&report.task_latencies_ms, 0.99),
        })
    );
    Ok(())
}
