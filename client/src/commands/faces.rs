//! `facesim compare`, `facesim embed` and `facesim detect`: ask the server about faces given as
//! stored image ids or as image files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use facesim_client::{pb, Client, ClientError, FaceChoice};

/// How the face is cut from an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaceModeArg {
    /// Find the largest face and align it (ordinary photos).
    Detect,
    /// The centred square (images that already are face crops).
    Center,
}

/// The face options of commands that send image files.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct FaceArgs {
    /// How faces are cut from the image files (default: the server's, `detect` unless set
    /// otherwise): `detect` for ordinary photos, `center` for images that are face crops already.
    #[arg(long, value_enum)]
    pub face_mode: Option<FaceModeArg>,
    /// The least detector score (0-1) that counts as a face (default: the server's, 0.5).
    #[arg(long)]
    pub min_face_score: Option<f32>,
}

impl FaceArgs {
    pub fn choice(&self) -> FaceChoice {
        FaceChoice {
            mode: match self.face_mode {
                None => pb::FaceMode::Unspecified,
                Some(FaceModeArg::Detect) => pb::FaceMode::Detect,
                Some(FaceModeArg::Center) => pb::FaceMode::Center,
            } as i32,
            min_score: self.min_face_score.unwrap_or(0.0),
            all_faces: false,
        }
    }
}

/// A face argument: a number is a stored image id, anything else an image file to upload (cut
/// as `face` says).
pub fn face_input(arg: &str, face: FaceChoice) -> anyhow::Result<pb::FaceInput> {
    let face_of = match arg.parse::<u64>() {
        Ok(id) => pb::face_input::Face::ImageId(id),
        Err(_) => {
            let bytes = std::fs::read(Path::new(arg)).with_context(|| format!("cannot read image file {arg}"))?;
            pb::face_input::Face::ImageData(bytes)
        }
    };
    Ok(pb::FaceInput { face: Some(face_of), face_mode: face.mode, min_face_score: face.min_score })
}

pub async fn compare(client: &Client, a: &str, b: &str, model: &str, face: FaceArgs) -> anyhow::Result<()> {
    let (a, b) = (face_input(a, face.choice())?, face_input(b, face.choice())?);
    let request = pb::CompareRequest { a: Some(a), b: Some(b), model_id: model.into() };
    let r = client.ranking().compare(request).await.map_err(ClientError::from)?.into_inner();
    let verdict = if r.similar { "same person / look alike" } else { "different-looking" };
    let what = if r.metric == pb::DistanceMetric::Cosine as i32 { "similarity" } else { "distance" };
    println!("{what} {:.4} (threshold {:.2}, model {}): {verdict}", r.score, r.threshold, r.model_id);
    Ok(())
}

pub async fn embed(client: &Client, face: &str, model: &str, face_args: FaceArgs) -> anyhow::Result<()> {
    let request = pb::EmbedRequest { face: Some(face_input(face, face_args.choice())?), model_id: model.into() };
    let r = client.ranking().embed(request).await.map_err(ClientError::from)?.into_inner();
    let values: Vec<String> = r.embedding.unwrap_or_default().values.iter().map(|v| format!("{v:.6}")).collect();
    println!("{}", values.join(" "));
    Ok(())
}

/// One JSON line per file: its faces (box [x, y, w, h], score, 68 landmarks) in the file's
/// pixels, largest first. A file the server cannot read gets an `error` field instead; the
/// command fails at the end if any did.
pub async fn detect(client: &Client, files: &[PathBuf], min_face_score: Option<f32>) -> anyhow::Result<()> {
    let round = |v: f32| (f64::from(v) * 100.0).round() / 100.0;
    let mut failed = 0;
    for file in files {
        let name = file.display().to_string();
        let line = match std::fs::read(file) {
            Err(e) => Err(format!("cannot read: {e}")),
            Ok(image_data) => {
                let request = pb::DetectFacesRequest { image_data, min_face_score: min_face_score.unwrap_or(0.0) };
                client.ranking().detect_faces(request).await.map_err(|s| ClientError::from(s).to_string())
            }
        };
        let json = match line {
            Ok(r) => {
                let r = r.into_inner();
                let faces: Vec<serde_json::Value> = r
                    .faces
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "box": f.r#box.iter().map(|&v| round(v)).collect::<Vec<_>>(),
                            "score": (f64::from(f.score) * 1e4).round() / 1e4,
                            "landmarks": f.landmarks.iter().map(|p| [round(p.x), round(p.y)]).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                format!("{{\"file\":{},\"faces\":{}}}", serde_json::json!(name), serde_json::json!(faces))
            }
            Err(error) => {
                failed += 1;
                format!("{{\"file\":{},\"faces\":[],\"error\":{}}}", serde_json::json!(name), serde_json::json!(error))
            }
        };
        // Written by hand to keep the fields in this order (file first).
        println!("{json}");
    }
    anyhow::ensure!(failed == 0, "{failed} of {} files could not be read", files.len());
    Ok(())
}
