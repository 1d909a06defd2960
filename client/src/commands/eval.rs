//! `facesim eval lfw`: face verification accuracy on the official LFW protocol (View 2: 10 folds
//! of 300 same-person and 300 different-person pairs), using the server's embeddings.
//!
//! Each image file is uploaded as it is, and the server's face pipeline (detect, align, describe
//! by default) embeds it; `--crop N --face-mode center` instead sends the centred N-pixel square
//! and has it resized (the pipeline before face detection). For each fold the threshold is the
//! one with the best accuracy on the other nine folds.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use facesim_client::{pb, Client, ClientError};
use facesim_metrics::{k_fold_accuracy, mean_std, roc_auc};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// 10-fold verification accuracy and ROC-AUC on LFW's pairs.txt.
    Lfw {
        /// LFW's pairs.txt (View 2).
        #[arg(long)]
        pairs: PathBuf,
        /// Folder of LFW images (<Name>/<Name>_NNNN.jpg); default: images_deepfunneled next to
        /// the pairs file.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Side of a centred square cut from each image before upload (0 = send the file as is).
        #[arg(long, default_value_t = 0)]
        crop: u32,
        #[command(flatten)]
        face: super::faces::FaceArgs,
        /// Model id (default: the pretrained descriptor).
        #[arg(long, default_value = "")]
        model: String,
        /// Embedding requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Retrieval on a stored identity-labelled dataset: every image of an identity with at least
    /// `--min-images` images is a probe against all the others; mAP and Rank@1/5/10.
    Retrieval {
        /// The dataset (as imported).
        #[arg(long)]
        dataset: String,
        /// Model id (default: the active model).
        #[arg(long, default_value = "")]
        model: String,
        #[arg(long, default_value_t = 2)]
        min_images: usize,
        /// Embedding requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
}

/// One pair of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct LfwPair {
    pub a: (String, u32),
    pub b: (String, u32),
    pub same: bool,
    pub fold: usize,
}

/// Parses pairs.txt: a header `folds pairs-per-class`, then per fold the same-person lines
/// `name n1 n2` followed by the different-person lines `name1 n1 name2 n2`.
pub fn parse_pairs(text: &str) -> anyhow::Result<(usize, Vec<LfwPair>)> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<usize> = lines
        .next()
        .context("empty pairs file")?
        .split_whitespace()
        .map(|v| v.parse())
        .collect::<Result<_, _>>()
        .context("the header must be `<folds> <pairs per class>`")?;
    let (folds, per_class) = match header[..] {
        [folds, per_class] => (folds, per_class),
        [per_class] => (1, per_class),
        _ => anyhow::bail!("the header must be `<folds> <pairs per class>`"),
    };
    let mut pairs = Vec::with_capacity(folds * per_class * 2);
    for fold in 0..folds {
        for k in 0..2 * per_class {
            let line = lines.next().with_context(|| format!("fold {fold} ends after {k} pairs"))?;
            let f: Vec<&str> = line.split_whitespace().collect();
            let n = |s: &str| s.parse::<u32>().with_context(|| format!("bad image number in {line:?}"));
            let pair = match f[..] {
                [name, a, b] if k < per_class => {
                    LfwPair { a: (name.into(), n(a)?), b: (name.into(), n(b)?), same: true, fold }
                }
                [x, a, y, b] if k >= per_class => {
                    LfwPair { a: (x.into(), n(a)?), b: (y.into(), n(b)?), same: false, fold }
                }
                _ => anyhow::bail!("unexpected line {line:?} in fold {fold}"),
            };
            pairs.push(pair);
        }
    }
    Ok((folds, pairs))
}

fn image_path(dir: &Path, (name, n): &(String, u32)) -> PathBuf {
    dir.join(name).join(format!("{name}_{n:04}.jpg"))
}

/// The centred `crop`-pixel square of an image file, as PNG bytes.
fn cropped_png(path: &Path, crop: u32) -> anyhow::Result<Vec<u8>> {
    let img = image::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let side = if crop == 0 { img.width().min(img.height()) } else { crop.min(img.width()).min(img.height()) };
    let square = img.crop_imm((img.width() - side) / 2, (img.height() - side) / 2, side, side).to_rgb8();
    let mut out = Cursor::new(Vec::new());
    square.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

pub async fn run(client: &Client, command: EvalCommand) -> anyhow::Result<()> {
    let (pairs, images, crop, model, concurrency, face) = match command {
        EvalCommand::Lfw { pairs, images, crop, model, concurrency, face } => {
            (pairs, images, crop, model, concurrency, face)
        }
        EvalCommand::Retrieval { dataset, model, min_images, concurrency } => {
            return super::rank::eval_retrieval(client, &dataset, &model, min_images, concurrency).await;
        }
    };
    let images = images.unwrap_or_else(|| pairs.parent().unwrap_or(Path::new(".")).join("images_deepfunneled"));
    let text = std::fs::read_to_string(&pairs).with_context(|| format!("cannot read {}", pairs.display()))?;
    let (folds, pairs) = parse_pairs(&text)?;
    let mut distinct: Vec<(String, u32)> = pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();
    distinct.sort();
    distinct.dedup();
    eprintln!("{} pairs in {folds} folds, {} distinct images", pairs.len(), distinct.len());

    let bar = ProgressBar::new(distinct.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} embedding [{bar:40}] {pos}/{len} {per_sec} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let images = Arc::new(images);
    let mut results = futures::stream::iter(distinct)
        .map(|key| {
            let (client, images, model) = (client.clone(), images.clone(), model.clone());
            async move {
                let path = image_path(&images, &key);
                let bytes = tokio::task::spawn_blocking(move || match crop {
                    0 => std::fs::read(&path).with_context(|| format!("cannot read {}", path.display())),
                    crop => cropped_png(&path, crop),
                })
                .await??;
                // The protocol needs every image: where the detector finds no face above the
                // threshold, ask again with a threshold of 0.01 (its best box), then centred.
                let choice = face.choice();
                let tries = [(choice.mode, choice.min_score), (choice.mode, 0.01), (pb::FaceMode::Center as i32, 0.0)];
                let mut last = None;
                for (attempt, (face_mode, min_face_score)) in tries.into_iter().enumerate() {
                    let face = pb::FaceInput {
                        face: Some(pb::face_input::Face::ImageData(bytes.clone())),
                        face_mode,
                        min_face_score,
                    };
                    match client.ranking().embed(pb::EmbedRequest { face: Some(face), model_id: model.clone() }).await {
                        Ok(response) => return anyhow::Ok((key, response.into_inner(), attempt)),
                        Err(status) if status.message().starts_with("no face found") => last = Some(status),
                        Err(status) => {
                            return Err(anyhow::Error::from(ClientError::from(status)))
                                .with_context(|| format!("{}", image_path(&images, &key).display()))
                        }
                    }
                }
                Err(anyhow::Error::from(ClientError::from(last.expect("tried"))))
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut embeddings: HashMap<(String, u32), Vec<f32>> = HashMap::new();
    let mut model_id = String::new();
    // Images embedded at the first try, with the threshold lowered, and centred.
    let mut attempts = [0usize; 3];
    while let Some(result) = results.next().await {
        let (key, response, attempt) = result?;
        attempts[attempt] += 1;
        model_id = response.model_id;
        embeddings.insert(key, response.embedding.unwrap_or_default().values);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rate = embeddings.len() as f64 / started.elapsed().as_secs_f64();

    let distance = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt();
    let d: Vec<f64> = pairs.iter().map(|p| distance(&embeddings[&p.a], &embeddings[&p.b])).collect();
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    let fold_of: Vec<usize> = pairs.iter().map(|p| p.fold).collect();
    let per_fold = k_fold_accuracy(&d, &same, &fold_of, folds);
    let accuracies: Vec<f64> = per_fold.iter().map(|(_, a)| *a).collect();
    let thresholds: Vec<f64> = per_fold.iter().map(|(t, _)| *t).collect();
    let (mean, std) = mean_std(&accuracies);
    let (t_mean, t_std) = mean_std(&thresholds);
    let auc = roc_auc(&d, &same).context("the pairs need both classes")?;

    let cut = match (crop, face.face_mode) {
        (0, None) => "whole files, server's face mode".to_string(),
        (0, Some(mode)) => format!("whole files, face mode {mode:?}").to_lowercase(),
        (crop, mode) => format!(
            "centred {crop}px square, face mode {}",
            mode.map_or("default".into(), |m| format!("{m:?}").to_lowercase())
        ),
    };
    println!("LFW verification, {} pairs, {folds}-fold, model {model_id}, {cut}", pairs.len());
    for (k, (t, a)) in per_fold.iter().enumerate() {
        println!("  fold {:>2}: threshold {t:.4}  accuracy {:.2}%", k + 1, a * 100.0);
    }
    println!("accuracy:  {:.2}% ± {:.2}% (mean ± sample std over folds)", mean * 100.0, std * 100.0);
    println!("threshold: {t_mean:.4} ± {t_std:.4}");
    println!("ROC-AUC:   {:.4}", auc);
    println!("embedded {} images at {rate:.1} images/s through the API", embeddings.len());
    if attempts[1] + attempts[2] > 0 {
        println!(
            "no face above the threshold in {} images: {} embedded at their best box (score > 0.01), {} centred",
            attempts[1] + attempts[2],
            attempts[1],
            attempts[2]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol_layout() {
        let text = "2\t1\nAda\t1\t2\nBob\t1\tCy\t3\nDee\t2\t4\nEd\t1\tFay\t2\n";
        let (folds, pairs) = parse_pairs(text).unwrap();
        assert_eq!(folds, 2);
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[0], LfwPair { a: ("Ada".into(), 1), b: ("Ada".into(), 2), same: true, fold: 0 });
        assert_eq!(pairs[1], LfwPair { a: ("Bob".into(), 1), b: ("Cy".into(), 3), same: false, fold: 0 });
        assert_eq!((pairs[2].same, pairs[2].fold, pairs[3].same), (true, 1, false));
        assert!(parse_pairs("2\t1\nAda\t1\t2\n").is_err(), "truncated");
        assert!(parse_pairs("x y\n").is_err(), "bad header");
    }
}
