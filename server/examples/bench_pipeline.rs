//! Throughput of the whole face pipeline on the CPU: detect (TinyFaceDetector at the default
//! input size, retries included) → largest face → 68 landmarks → dlib chip → descriptor, over
//! decoded photos (raw RGB files and an index written by `bench/pipeline.sh`). Detection runs on
//! both cores image by image, descriptors in batches of 32, as the server's import does.
//! Prints one JSON line like the peers' scripts.
//!
//!   cargo run --release --example bench_pipeline -- INPUTS_DIR [seconds]

#[path = "support/peak_rss.rs"]
mod peak_rss;

use peak_rss::peak_rss_mib;
use std::time::Instant;

use candle_core::Device;
use facesim_server::dataset::face_crop;
use facesim_server::faces::{DetectSettings, FaceFinder};
use facesim_server::models::descriptor::Descriptor;
use image::{DynamicImage, RgbImage};
use rayon::prelude::*;

#[derive(serde::Deserialize)]
struct Entry {
    name: String,
    width: u32,
    height: u32,
}

fn main() -> anyhow::Result<()> {
    facesim_server::cpu::park_idle_candle_threads();
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("give the inputs dir"))?);
    let seconds: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20.0);
    let index: Vec<Entry> = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json"))?)?;
    let photos: Vec<RgbImage> = index
        .iter()
        .map(|e| {
            let raw = std::fs::read(dir.join(format!("{}.rgb", e.name)))?;
            RgbImage::from_raw(e.width, e.height, raw).ok_or_else(|| anyhow::anyhow!("{}: wrong size", e.name))
        })
        .collect::<anyhow::Result<_>>()?;
    let finder = FaceFinder::load(&Device::Cpu)?;
    let descriptor = Descriptor::load(Device::Cpu)?;
    let settings = DetectSettings::default();
    // Images and how many of them had a face.
    let pass = |photos: &[RgbImage]| -> anyhow::Result<(usize, usize)> {
        let (mut done, mut found) = (0, 0);
        for chunk in photos.chunks(32) {
            let chips: Vec<RgbImage> = chunk
                .par_iter()
                .map(|photo| {
                    let faces = finder.find(photo, settings)?;
                    Ok(match faces.faces.first() {
                        Some(face) => (finder.chip(photo, face)?, true),
                        None => (face_crop(&DynamicImage::ImageRgb8(photo.clone())), false),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .map(|(chip, face)| {
                    found += usize::from(face);
                    chip
                })
                .collect();
            let refs: Vec<&RgbImage> = chips.iter().collect();
            descriptor.embed(&refs)?;
            done += chunk.len();
        }
        Ok((done, found))
    };
    pass(&photos[..photos.len().min(8)])?; // warm-up
    let started = Instant::now();
    let (mut images, mut found) = (0usize, 0usize);
    while started.elapsed().as_secs_f64() < seconds {
        let (done, with_face) = pass(&photos)?;
        images += done;
        found += with_face;
    }
    let rate = images as f64 / started.elapsed().as_secs_f64();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "{{\"impl\":\"facesim (candle, cpu)\",\"images_per_s\":{rate:.2},\"faces_found\":{:.4},\"threads\":{threads},\"peak_rss_mib\":{:.0}}}",
        found as f64 / images as f64,
        peak_rss_mib()
    );
    Ok(())
}
