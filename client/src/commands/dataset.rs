//! `facesim dataset ...`: import a folder of faces and browse what the server holds.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use facesim_client::{pb, scan_import_dir, Client, ClientError, FaceChoice};
use indicatif::{ProgressBar, ProgressStyle};

use super::{paginate, time};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VariantArg {
    /// The bytes as imported.
    Original,
    /// The normalised 150x150 face crop (PNG).
    Face,
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Import a folder laid out as <identity>/<image file>.
    Import {
        dir: PathBuf,
        /// Dataset name (default: the folder's name).
        #[arg(long)]
        dataset: Option<String>,
        /// Print every file's result, not only the rejected ones.
        #[arg(long)]
        verbose: bool,
        /// Wait for the embeddings of the new images, with a progress bar.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        face: super::faces::FaceArgs,
        /// Store every face found in a photo as its own image, named `<file>#<k>` (k = 1 for
        /// the largest), in the folder's identity; without it only the largest face is kept.
        /// Needs detect mode.
        #[arg(long)]
        all_faces: bool,
    },
    /// List images, one page at a time (or all with --all).
    List {
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long)]
        identity_id: Option<u64>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// Continue from a previous page.
        #[arg(long, default_value = "")]
        page_token: String,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// List identities (people).
    Identities {
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
        #[arg(long)]
        all: bool,
    },
    /// Datasets with their identity and image counts.
    Summary,
    /// One image's metadata.
    Show { image_id: u64 },
    /// Save an image's bytes to a file.
    Get {
        image_id: u64,
        #[arg(long, value_enum, default_value = "face")]
        variant: VariantArg,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Save a JPEG thumbnail of the face crop.
    Thumbnail {
        image_id: u64,
        #[arg(long, default_value_t = 96)]
        size: u32,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Delete an image and everything derived from it.
    Delete { image_id: u64 },
    /// Apparent age and gender of stored faces, as face-api's age and gender net estimates them
    /// from the face crops (what the simulated look-alike crowd judges by).
    Traits {
        #[arg(required = true)]
        image_ids: Vec<u64>,
    },
}

pub async fn run(client: &Client, command: DatasetCommand) -> anyhow::Result<()> {
    match command {
        DatasetCommand::Traits { image_ids } => {
            println!("{:>7}  {:>5}  {:<7} P(male)", "id", "age", "gender");
            // The server answers up to 1,000 ids per call.
            for chunk in image_ids.chunks(1000) {
                let request = pb::EstimateTraitsRequest { image_ids: chunk.to_vec() };
                let traits = client.datasets().estimate_traits(request).await.map_err(ClientError::from)?.into_inner();
                for t in traits.traits {
                    let gender = if t.male_probability > 0.5 { "male" } else { "female" };
                    println!("{:>7}  {:>5.1}  {gender:<7} {:.3}", t.image_id, t.age, t.male_probability);
                }
            }
            Ok(())
        }
        DatasetCommand::Import { dir, dataset, verbose, wait, face, all_faces } => {
            let choice = FaceChoice { all_faces, ..face.choice() };
            import(client, dir, dataset, verbose, wait, choice).await
        }
        DatasetCommand::List { dataset, identity_id, page_size, page_token, all } => {
            println!("{:>7}  {:<12} {:<32} {:<28} {:>9}  created (UTC)", "id", "dataset", "identity", "file", "size");
            paginate(page_token, all, |page_token| {
                let request = pb::ListImagesRequest {
                    dataset: dataset.clone().unwrap_or_default(),
                    identity_id: identity_id.unwrap_or(0),
                    page_size,
                    page_token,
                };
                let mut datasets = client.datasets();
                async move {
                    let page = datasets.list_images(request).await?.into_inner();
                    for i in &page.images {
                        let size = format!("{}x{}", i.width, i.height);
                        let created = time(&i.create_time);
                        println!(
                            "{:>7}  {:<12} {:<32} {:<28} {size:>9}  {created}",
                            i.id, i.dataset, i.identity, i.file_name
                        );
                    }
                    Ok(page.next_page_token)
                }
            })
            .await
        }
        DatasetCommand::Identities { dataset, page_size, page_token, all } => {
            println!("{:>7}  {:<12} {:<40} {:>6}", "id", "dataset", "name", "images");
            paginate(page_token, all, |page_token| {
                let request =
                    pb::ListIdentitiesRequest { dataset: dataset.clone().unwrap_or_default(), page_size, page_token };
                let mut datasets = client.datasets();
                async move {
                    let page = datasets.list_identities(request).await?.into_inner();
                    for i in &page.identities {
                        println!("{:>7}  {:<12} {:<40} {:>6}", i.id, i.dataset, i.name, i.image_count);
                    }
                    Ok(page.next_page_token)
                }
            })
            .await
        }
        DatasetCommand::Summary => {
            let datasets = client
                .datasets()
                .list_datasets(pb::ListDatasetsRequest {})
                .await
                .map_err(ClientError::from)?
                .into_inner()
                .datasets;
            println!("{:<24} {:>10} {:>8}", "dataset", "identities", "images");
            for d in datasets {
                println!("{:<24} {:>10} {:>8}", d.name, d.identity_count, d.image_count);
            }
            Ok(())
        }
        DatasetCommand::Show { image_id } => {
            let i = client
                .datasets()
                .get_image(pb::GetImageRequest { image_id })
                .await
                .map_err(ClientError::from)?
                .into_inner();
            let format = pb::ImageFormat::try_from(i.format).map(|f| f.as_str_name()).unwrap_or("?");
            println!("id:        {}", i.id);
            println!("dataset:   {}", i.dataset);
            println!("identity:  {} (id {})", i.identity, i.identity_id);
            println!("file:      {}", i.file_name);
            println!("format:    {format}, {}x{}, {} bytes", i.width, i.height, i.byte_size);
            println!("sha256:    {}", i.content_sha256);
            println!("created:   {} UTC", time(&i.create_time));
            match &i.face {
                Some(f) if f.r#box.len() == 4 => {
                    let b = &f.r#box;
                    println!(
                        "face:      box x {:.1} y {:.1} w {:.1} h {:.1}, score {:.3}, {} landmarks; {} face(s) in the image",
                        b[0],
                        b[1],
                        b[2],
                        b[3],
                        f.score,
                        f.landmarks.len(),
                        i.face_count
                    );
                }
                _ => println!("face:      centred crop (imported in center mode)"),
            }
            Ok(())
        }
        DatasetCommand::Get { image_id, variant, output } => {
            let variant = match variant {
                VariantArg::Original => pb::ImageVariant::Original,
                VariantArg::Face => pb::ImageVariant::Face,
            };
            let data = client
                .datasets()
                .get_image_data(pb::GetImageDataRequest { image_id, variant: variant as i32 })
                .await
                .map_err(ClientError::from)?
                .into_inner();
            std::fs::write(&output, &data.data).with_context(|| format!("cannot write {}", output.display()))?;
            println!("wrote {} ({}, {} bytes)", output.display(), data.content_type, data.data.len());
            Ok(())
        }
        DatasetCommand::Thumbnail { image_id, size, output } => {
            let data = client
                .datasets()
                .get_thumbnail(pb::GetThumbnailRequest { image_id, size })
                .await
                .map_err(ClientError::from)?
                .into_inner();
            std::fs::write(&output, &data.data).with_context(|| format!("cannot write {}", output.display()))?;
            println!("wrote {} ({} bytes)", output.display(), data.data.len());
            Ok(())
        }
        DatasetCommand::Delete { image_id } => {
            client.datasets().delete_image(pb::DeleteImageRequest { image_id }).await.map_err(ClientError::from)?;
            println!("image {image_id} deleted");
            Ok(())
        }
    }
}

async fn import(
    client: &Client,
    dir: PathBuf,
    dataset: Option<String>,
    verbose: bool,
    wait: bool,
    face: FaceChoice,
) -> anyhow::Result<()> {
    let dataset = match dataset {
        Some(name) => name,
        None => dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .context("cannot name the dataset after the folder; pass --dataset")?,
    };
    let entries = scan_import_dir(&dir)?;
    if entries.is_empty() {
        anyhow::bail!("{} holds no <identity>/<file> images", dir.display());
    }
    let total_bytes: u64 = entries.iter().map(|e| e.size).sum();
    let bar = ProgressBar::new(total_bytes).with_style(
        ProgressStyle::with_template("{spinner} importing [{bar:40}] {bytes}/{total_bytes} {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let files = entries.len();
    let bar_in = bar.clone();
    let report = client
        .import_files_with(&dataset, entries, face, move |sent: u64, bytes: u64| {
            bar_in.set_position(bytes);
            bar_in.set_message(format!("{sent}/{files} files"));
        })
        .await;
    bar.finish_and_clear();
    let report = report?;
    for r in &report.results {
        let rejected = r.outcome == pb::ImportOutcome::Rejected as i32;
        if rejected || verbose {
            let outcome = pb::ImportOutcome::try_from(r.outcome).map(|o| o.as_str_name()).unwrap_or("?");
            let outcome = outcome.trim_start_matches("IMPORT_OUTCOME_").to_lowercase();
            println!("{outcome:<9} {}/{}  {}", r.identity, r.file_name, r.message);
        }
    }
    println!(
        "dataset {dataset}: {} imported, {} duplicates, {} rejected ({} files)",
        report.imported, report.duplicates, report.rejected, files
    );
    if report.embedding_job_id != 0 {
        if wait {
            let job = super::jobs::watch(client, report.embedding_job_id).await?;
            println!("embeddings: job {} {}: {}", job.id, super::jobs::state_name(job.state), job.message);
        } else {
            println!(
                "embeddings: job {} is computing them; follow it with `facesim jobs watch {}`",
                report.embedding_job_id, report.embedding_job_id
            );
        }
    }
    Ok(())
}
