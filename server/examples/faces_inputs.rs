//! Writes images as raw RGB files plus an index (`[{"name", "width", "height"}]`) for the
//! face-api scripts in `tools/faceapi-reference/`:
//!
//!   faces_inputs reference OUT          the detection reference set (support/face_inputs.rs)
//!   faces_inputs lfw LFW_DIR N OUT      every k-th LFW image, N in all (detector comparison)

#[path = "../tests/support/face_inputs.rs"]
mod face_inputs;

use std::path::{Path, PathBuf};

use image::RgbImage;

fn write(out: &Path, inputs: &[(String, RgbImage)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let mut index = Vec::new();
    for (name, image) in inputs {
        std::fs::write(out.join(format!("{name}.rgb")), image.as_raw())?;
        index.push(serde_json::json!({"name": name, "width": image.width(), "height": image.height()}));
    }
    std::fs::write(out.join("index.json"), serde_json::to_string(&index)?)?;
    println!("wrote {} inputs to {}", inputs.len(), out.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["reference", out] => write(Path::new(out), &face_inputs::reference_inputs()),
        ["lfw", dir, n, out] => {
            let n: usize = n.parse()?;
            let mut files: Vec<PathBuf> = Vec::new();
            for person in std::fs::read_dir(Path::new(dir).join("images_deepfunneled"))? {
                let person = person?.path();
                if !person.is_dir() {
                    continue;
                }
                for file in std::fs::read_dir(person)? {
                    files.push(file?.path());
                }
            }
            files.sort();
            let step = (files.len() / n.max(1)).max(1);
            let inputs: Vec<(String, RgbImage)> = files
                .iter()
                .step_by(step)
                .take(n)
                .map(|f| {
                    let name = f.file_stem().unwrap().to_string_lossy().into_owned();
                    (name, image::open(f).expect("an LFW image").to_rgb8())
                })
                .collect();
            write(Path::new(out), &inputs)
        }
        _ => anyhow::bail!("usage: faces_inputs reference OUT | faces_inputs lfw LFW_DIR N OUT"),
    }
}
