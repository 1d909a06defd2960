//! LFW View 2 (10 folds) of the face pipeline's variants in one process, to choose the defaults:
//! the descriptor's weights (face-api's 8-bit copy or dlib's full-precision file), the face used
//! in photos with several (the largest, or the one nearest the centre: LFW photos are centred on
//! the person they are labelled with), and whether the descriptor of the mirrored chip is
//! averaged in. Detection, fallbacks and scoring are those of `facesim eval lfw`: no face above
//! 0.5 → the best box above 0.01 → the centred crop; Euclidean distance; each fold's threshold
//! chosen on the other nine.
//!
//!   cargo run --release --example lfw_variants -- PAIRS IMAGES_DIR

use std::path::{Path, PathBuf};

use candle_core::Device;
use facesim_metrics::{k_fold_accuracy, mean_std, roc_auc};
use facesim_server::dataset::face_crop;
use facesim_server::faces::{DetectSettings, Face, FaceFinder};
use facesim_server::models::descriptor::Descriptor;
use image::RgbImage;
use rayon::prelude::*;

struct Pair {
    a: usize,
    b: usize,
    same: bool,
    fold: usize,
}

/// The pairs, the distinct image paths they use, and the number of folds.
fn parse(pairs: &Path, images: &Path) -> anyhow::Result<(Vec<Pair>, Vec<PathBuf>, usize)> {
    let text = std::fs::read_to_string(pairs)?;
    let mut lines = text.lines();
    let header: Vec<usize> = lines.next().unwrap_or("").split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    let [folds, per_class] = header[..] else { anyhow::bail!("bad header") };
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut id = |name: &str, n: &str| -> anyhow::Result<usize> {
        let path = images.join(name).join(format!("{name}_{:04}.jpg", n.parse::<u32>()?));
        Ok(*index.entry(path.clone()).or_insert_with(|| {
            paths.push(path);
            paths.len() - 1
        }))
    };
    let mut out = Vec::new();
    for fold in 0..folds {
        for _ in 0..2 * per_class {
            let f: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
            out.push(match f[..] {
                [name, a, b] => Pair { a: id(name, a)?, b: id(name, b)?, same: true, fold },
                [x, a, y, b] => Pair { a: id(x, a)?, b: id(y, b)?, same: false, fold },
                _ => anyhow::bail!("bad line {f:?}"),
            });
        }
    }
    Ok((out, paths, folds))
}

/// The chips of one image: of the largest face, and of the face nearest the centre.
struct Chips {
    largest: RgbImage,
    central: Option<RgbImage>,
}

fn chips(finder: &FaceFinder, path: &Path) -> anyhow::Result<Chips> {
    let image = image::open(path)?;
    let rgb = image.to_rgb8();
    let (cx, cy) = (f64::from(rgb.width()) / 2.0, f64::from(rgb.height()) / 2.0);
    for min_score in [0.5, 0.01] {
        let found = finder.find(&rgb, DetectSettings { min_score, ..DetectSettings::default() })?;
        let Some(largest) = found.faces.first() else { continue };
        let off = |f: &Face| {
            let b = &f.bbox;
            (b.x + b.width / 2.0 - cx).powi(2) + (b.y + b.height / 2.0 - cy).powi(2)
        };
        let central = found.faces.iter().min_by(|a, b| off(a).total_cmp(&off(b))).expect("one face");
        let central = if std::ptr::eq(central, largest) { None } else { Some(finder.chip(&rgb, central)?) };
        return Ok(Chips { largest: finder.chip(&rgb, largest)?, central });
    }
    Ok(Chips { largest: face_crop(&image), central: None })
}

fn embed(descriptor: &Descriptor, chips: &[&RgbImage], mirror: bool) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(chips.len());
    for batch in chips.chunks(32) {
        let mut vectors = descriptor.embed(batch)?;
        if mirror {
            let flipped: Vec<RgbImage> = batch.iter().map(|c| image::imageops::flip_horizontal(*c)).collect();
            let refs: Vec<&RgbImage> = flipped.iter().collect();
            for (v, f) in vectors.iter_mut().zip(descriptor.embed(&refs)?) {
                v.iter_mut().zip(f).for_each(|(a, b)| *a = (*a + b) / 2.0);
            }
        }
        out.extend(vectors);
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    facesim_server::cpu::park_idle_candle_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pairs, images] = &args[..] else { anyhow::bail!("usage: lfw_variants PAIRS IMAGES_DIR") };
    let (pairs, paths, folds) = parse(Path::new(pairs), Path::new(images))?;
    eprintln!("{} pairs, {} images", pairs.len(), paths.len());
    let started = std::time::Instant::now();
    let finder = FaceFinder::load(&Device::Cpu)?;
    let chips: Vec<Chips> = paths.par_iter().map(|p| chips(&finder, p)).collect::<anyhow::Result<_>>()?;
    let several = chips.iter().filter(|c| c.central.is_some()).count();
    eprintln!(
        "chips in {:.0} s; {several} images where the central face is not the largest",
        started.elapsed().as_secs_f64()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let faceapi = Descriptor::load_faceapi(Device::Cpu)?;
    let dlib = Descriptor::from_dlib_dat(
        &std::fs::read(root.join("models/dlib/dlib_face_recognition_resnet_model_v1.dat"))?,
        Device::Cpu,
    )?;
    let largest: Vec<&RgbImage> = chips.iter().map(|c| &c.largest).collect();
    let central: Vec<&RgbImage> = chips.iter().map(|c| c.central.as_ref().unwrap_or(&c.largest)).collect();
    let mut variants: Vec<(&str, Vec<Vec<f32>>)> = Vec::new();
    for (name, descriptor, faces, mirror) in [
        ("face-api weights, largest face", &faceapi, &largest, false),
        ("dlib weights, largest face", &dlib, &largest, false),
        ("dlib weights, central face", &dlib, &central, false),
        ("dlib weights, central face, + mirror", &dlib, &central, true),
    ] {
        let t = std::time::Instant::now();
        variants.push((name, embed(descriptor, faces, mirror)?));
        eprintln!("{name}: {:.0} s", t.elapsed().as_secs_f64());
    }
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    let fold_of: Vec<usize> = pairs.iter().map(|p| p.fold).collect();
    println!("{:<40} {:>16} {:>7}", "variant", "accuracy", "AUC");
    for (name, vectors) in &variants {
        let d: Vec<f64> =
            pairs.iter().map(|p| f64::from(facesim_server::vectors::euclidean(&vectors[p.a], &vectors[p.b]))).collect();
        let (mean, std) =
            mean_std(&k_fold_accuracy(&d, &same, &fold_of, folds).iter().map(|(_, a)| *a).collect::<Vec<_>>());
        let auc = roc_auc(&d, &same).unwrap_or(f64::NAN);
        println!("{name:<40} {:>7.2}% ± {:.2}% {auc:>7.4}", mean * 100.0, std * 100.0);
    }
    Ok(())
}
