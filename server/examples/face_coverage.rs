//! How often the face detector finds a face, and how fast: runs detection and landmarks on every
//! `.jpg`/`.png` under the folders given (both cores), and prints the share of images with a face
//! at several score thresholds, the time per image, and the files without a face at the default.
//!
//!   cargo run --release --example face_coverage -- [--input-size N] [--no-retry] DIR...

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use facesim_server::faces::{DetectSettings, FaceFinder, DEFAULT_MIN_SCORE};
use rayon::prelude::*;

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "jpg" || e == "png") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut input_size = facesim_server::faces::DEFAULT_INPUT_SIZE;
    let mut retry = true;
    loop {
        match args.first().map(String::as_str) {
            Some("--input-size") => {
                input_size = args[1].parse()?;
                args.drain(..2);
            }
            Some("--no-retry") => {
                retry = false;
                args.remove(0);
            }
            _ => break,
        }
    }
    anyhow::ensure!(!args.is_empty(), "usage: face_coverage [--input-size N] [--no-retry] DIR...");
    let mut files = Vec::new();
    for dir in &args {
        files_under(Path::new(dir), &mut files)?;
    }
    files.sort();
    let finder = FaceFinder::load(&Device::Cpu)?;
    // Thresholds are applied to the best score afterwards; with `retry`, sizes are retried
    // while nothing reaches the default threshold.
    let settings = DetectSettings { input_size, min_score: DEFAULT_MIN_SCORE, retry };
    let started = Instant::now();
    let best: Vec<(PathBuf, f32, usize)> = files
        .par_iter()
        .map(|path| {
            let image = image::open(path).map(|i| i.to_rgb8());
            let (score, count) = match image {
                Ok(image) => {
                    let found = finder.find(&image, settings).expect("detection runs");
                    (found.best_score, found.faces.len())
                }
                Err(_) => (0.0, 0),
            };
            (path.clone(), score, count)
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} images, input size {input_size} (retry {retry}), {} threads: {:.1} ms per image (detect + landmarks), {:.1} images/s",
        files.len(),
        rayon::current_num_threads(),
        seconds * 1000.0 * rayon::current_num_threads() as f64 / files.len().max(1) as f64,
        files.len() as f64 / seconds
    );
    for threshold in [0.5f32, 0.4, 0.3, 0.2, 0.1] {
        let found = best.iter().filter(|(_, s, _)| *s > threshold).count();
        println!(
            "  score > {threshold:.1}: a face in {found}/{} ({:.2}%)",
            best.len(),
            100.0 * found as f64 / best.len().max(1) as f64
        );
    }
    let several = best.iter().filter(|(_, _, c)| *c > 1).count();
    println!("  several faces (> {DEFAULT_MIN_SCORE}): {several} images");
    let missed: Vec<String> = best
        .iter()
        .filter(|(_, s, _)| *s <= DEFAULT_MIN_SCORE)
        .take(10)
        .map(|(p, s, _)| format!("{} ({s:.2})", p.file_name().unwrap_or_default().to_string_lossy()))
        .collect();
    println!("  first without a face: {}", missed.join(", "));
    Ok(())
}
