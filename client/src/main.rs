//! `facesim`: the command-line client for researchers, annotators and admins.

mod commands;

use clap::{Parser, Subcommand};
use facesim_client::Client;

/// Command-line client of the facesim server.
#[derive(Debug, Parser)]
#[command(name = "facesim", version, about)]
struct Cli {
    /// Server address.
    #[arg(long, global = true, env = "FACESIM_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,

    /// Bearer token (printed by the server on first start, or made by `facesim admin create-user`).
    #[arg(long, global = true, env = "FACESIM_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// PEM certificate of the authority that signed an `https://` server's certificate (a
    /// private CA or the server's self-signed certificate); the Mozilla roots otherwise.
    #[arg(long, global = true, env = "FACESIM_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import and browse face images.
    #[command(subcommand)]
    Dataset(commands::dataset::DatasetCommand),
    /// Manage users and tokens (admin role).
    #[command(subcommand)]
    Admin(commands::admin::AdminCommand),
    /// Follow, list and cancel background jobs.
    #[command(subcommand)]
    Jobs(commands::jobs::JobsCommand),
    /// Look at pair distances and propose pairs to label (researcher role).
    #[command(subcommand)]
    Pairs(commands::pairs::PairsCommand),
    /// List, open and close labeling batches (researcher role).
    #[command(subcommand)]
    Batches(commands::pairs::BatchesCommand),
    /// Instructions, progress, annotators, agreement and gold pairs of labeling (researcher role).
    #[command(subcommand)]
    Labeling(commands::labeling::LabelingCommand),
    /// Export labels and raw votes (researcher role).
    #[command(subcommand)]
    Labels(commands::labeling::LabelsCommand),
    /// Label pairs in the terminal (annotator role).
    Label {
        /// Only pairs of this batch.
        #[arg(long, default_value_t = 0)]
        batch: u64,
        /// Where face images are saved when the terminal cannot show them.
        #[arg(long)]
        faces_dir: Option<std::path::PathBuf>,
    },
    /// Train similarity models on labels and evaluate them (researcher role).
    #[command(subcommand)]
    Train(commands::train::TrainCommand),
    /// The model registry: list, show (with ROC and loss plots), activate.
    #[command(subcommand)]
    Models(commands::train::ModelsCommand),
    /// The closed loop: propose the next round with the newest model, report rounds and models.
    #[command(subcommand, name = "loop")]
    Loop(commands::rounds::LoopCommand),
    /// Simulated annotators voting through the API (admin role).
    #[command(subcommand)]
    Crowd(commands::labeling::CrowdCommand),
    /// Benchmarks against a running server.
    #[command(subcommand)]
    Bench(commands::labeling::BenchCommand),
    /// The faces most like a face (a stored image id or an image file), by the active model.
    Rank(commands::rank::RankArgs),
    /// Compare two faces (stored image ids or image files).
    Compare {
        a: String,
        b: String,
        /// Model id (default: the active model).
        #[arg(long, default_value = "")]
        model: String,
        #[command(flatten)]
        face: commands::faces::FaceArgs,
    },
    /// Print the embedding of a face (a stored image id or an image file).
    Embed {
        face: String,
        #[arg(long, default_value = "")]
        model: String,
        #[command(flatten)]
        face_args: commands::faces::FaceArgs,
    },
    /// Find the faces in image files: one JSON line per file with each face's box [x, y, w, h],
    /// score and 68 landmarks, in the file's pixels, largest face first.
    Detect {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// The least detector score (0-1) that counts as a face (default: the server's, 0.5).
        #[arg(long)]
        min_face_score: Option<f32>,
    },
    /// Evaluate a model on a benchmark protocol.
    #[command(subcommand)]
    Eval(commands::eval::EvalCommand),
    /// The whole platform in one go: start a server on a fresh folder, import the demo faces,
    /// two labeling rounds by simulated annotators, GAML and CNN training, activation, ranking,
    /// and a report.
    Demo(commands::demo::DemoArgs),
    /// Show who the token belongs to.
    Whoami,
    /// Ask the server whether it is serving.
    Health,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The demo may start the server it then talks to.
    if let Command::Demo(args) = cli.command {
        return commands::demo::run(&cli.server, cli.token.as_deref(), args).await;
    }
    let tls = match &cli.tls_ca {
        Some(path) => facesim_client::TlsOptions::with_ca_file(path)?,
        None => facesim_client::TlsOptions::default(),
    };
    let client = Client::connect_with(&cli.server, cli.token.as_deref(), &tls).await?;
    match cli.command {
        Command::Dataset(command) => commands::dataset::run(&client, command).await,
        Command::Admin(command) => commands::admin::run(&client, command).await,
        Command::Jobs(command) => commands::jobs::run(&client, command).await,
        Command::Pairs(command) => commands::pairs::run(&client, command).await,
        Command::Batches(command) => commands::pairs::run_batches(&client, command).await,
        Command::Labeling(command) => commands::labeling::run(&client, command).await,
        Command::Labels(command) => commands::labeling::run_labels(&client, command).await,
        Command::Label { batch, faces_dir } => commands::labeling::label(&client, batch, faces_dir).await,
        Command::Train(command) => commands::train::run(&client, command).await,
        Command::Models(command) => commands::train::models(&client, command).await,
        Command::Loop(command) => commands::rounds::run(&client, command).await,
        Command::Crowd(command) => commands::labeling::crowd(&client, command).await,
        Command::Bench(commands::labeling::BenchCommand::Soak(args)) => {
            commands::soak::run(&client, &cli.server, args).await
        }
        Command::Bench(command) => commands::labeling::bench(&client, command).await,
        Command::Rank(args) => commands::rank::rank(&client, args).await,
        Command::Compare { a, b, model, face } => commands::faces::compare(&client, &a, &b, &model, face).await,
        Command::Embed { face, model, face_args } => commands::faces::embed(&client, &face, &model, face_args).await,
        Command::Detect { files, min_face_score } => commands::faces::detect(&client, &files, min_face_score).await,
        Command::Eval(command) => commands::eval::run(&client, command).await,
        Command::Demo(_) => unreachable!("handled before connecting"),
        Command::Whoami => commands::admin::whoami(&client).await,
        Command::Health => commands::health(&client).await,
    }
}
