//! The tensors the Siamese networks take: face crops as planar `(pixel − mean) / 255` floats
//! (the descriptor's normalisation) for the CNN, descriptor vectors as rows for GAML.

use candle_core::{Device, Tensor};
use image::imageops::FilterType;

use crate::models::descriptor::{DIM, MEAN_RGB};

/// Interleaved RGB bytes to planar `(pixel − mean) / 255` floats in `target` (same pixel count).
pub fn planar_normalised(pixels: &[u8], target: &mut [f32]) {
    let plane = pixels.len() / 3;
    for (p, rgb) in pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            target[c * plane + p] = (f32::from(rgb[c]) - MEAN_RGB[c]) / 255.0;
        }
    }
}

/// The CNN's input tensor (N, 3, side, side) of face crops of any size, resized as in training.
pub fn image_tensor(faces: &[&image::RgbImage], side: usize, device: &Device) -> candle_core::Result<Tensor> {
    let plane = side * side;
    let mut out = vec![0f32; faces.len() * 3 * plane];
    for (k, face) in faces.iter().enumerate() {
        let resized = image::imageops::resize(*face, side as u32, side as u32, FilterType::Triangle);
        planar_normalised(resized.as_raw(), &mut out[k * 3 * plane..(k + 1) * 3 * plane]);
    }
    Tensor::from_vec(out, (faces.len(), 3, side, side), device)
}

/// GAML's input tensor (N, dim) of descriptor vectors (all of one length).
pub fn vectors_tensor(vectors: &[Vec<f32>], device: &Device) -> candle_core::Result<Tensor> {
    let dim = vectors.first().map_or(DIM, Vec::len);
    Tensor::from_vec(vectors.concat(), (vectors.len(), dim), device)
}
