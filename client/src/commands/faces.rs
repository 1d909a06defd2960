//! `facesim compare` and `facesim embed`: ask the server about faces given as stored image ids
//! or as image files.

use std::path::Path;

use anyhow::Context;
use facesim_client::{pb, Client, ClientError};

/// A face argument: a number is a stored image id, anything else an image file to upload.
pub fn face_input(arg: &str) -> anyhow::Result<pb::FaceInput> {
    let face = match arg.parse::<u64>() {
        Ok(id) => pb::face_input::Face::ImageId(id),
        Err(_) => {
            let bytes = std::fs::read(Path::new(arg)).with_context(|| format!("cannot read image file {arg}"))?;
            pb::face_input::Face::ImageData(bytes)
        }
    };
    Ok(pb::FaceInput { face: Some(face) })
}

pub async fn compare(client: &Client, a: &str, b: &str, model: &str) -> anyhow::Result<()> {
    let request = pb::CompareRequest { a: Some(face_input(a)?), b: Some(face_input(b)?), model_id: model.into() };
    let r = client.ranking().compare(request).await.map_err(ClientError::from)?.into_inner();
    let verdict = if r.similar { "same person / look alike" } else { "different-looking" };
    let what = if r.metric == pb::DistanceMetric::Cosine as i32 { "similarity" } else { "distance" };
    println!("{what} {:.4} (threshold {:.2}, model {}): {verdict}", r.score, r.threshold, r.model_id);
    Ok(())
}

pub async fn embed(client: &Client, face: &str, model: &str) -> anyhow::Result<()> {
    let request = pb::EmbedRequest { face: Some(face_input(face)?), model_id: model.into() };
    let r = client.ranking().embed(request).await.map_err(ClientError::from)?.into_inner();
    let values: Vec<String> = r.embedding.unwrap_or_default().values.iter().map(|v| format!("{v:.6}")).collect();
    println!("{}", values.join(" "));
    Ok(())
}
