//! face-api's TinyFaceDetector: a Tiny-YOLOv2 head on a small separable-convolution backbone.
//! The image is padded (bottom or right) to a square, resized to `input_size` (416 by default),
//! and each cell of the 13x13 output grid predicts five boxes around fixed anchors.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::ops::{leaky, max_pool_same, Conv, Planes, SeparableConv};
use super::{BoxF, FaceError};
use crate::tfjs::WeightTensor;

/// Anchor box sizes in grid cells (width, height), from face-api.
const ANCHORS: [(f64, f64); 5] =
    [(1.603231, 2.094468), (6.041143, 7.080126), (2.882459, 3.518061), (4.266906, 5.178857), (9.041765, 10.66308)];
/// Subtracted per channel before dividing by 255.
const MEAN_RGB: [f32; 3] = [117.001, 114.697, 97.404];
/// Boxes overlapping a better one by more than this (intersection over union) are dropped.
pub const IOU_THRESHOLD: f64 = 0.4;
/// Channels after the stem and each separable layer.
const CHANNELS: [usize; 7] = [3, 16, 32, 64, 128, 256, 512];

/// One box the detector found, in the original image's pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub bbox: BoxF,
    pub score: f32,
}

/// What one pass over an image gave.
#[derive(Debug, Clone, Default)]
pub struct Detections {
    /// Boxes above the threshold after non-maximum suppression, best first.
    pub faces: Vec<Detection>,
    /// The best score of any box, kept or not (0 when the image is empty).
    pub best_score: f32,
}

pub struct Detector {
    stem: Conv,
    layers: Vec<SeparableConv>,
    head: Conv,
    device: Device,
}

impl Detector {
    pub fn load(weights: &HashMap<String, WeightTensor>, device: &Device) -> Result<Self, FaceError> {
        let stem = Conv::load(weights, "conv0", 3, (CHANNELS[0], CHANNELS[1]), device)?;
        let layers = (1..6)
            .map(|i| SeparableConv::load(weights, &format!("conv{i}"), (CHANNELS[i], CHANNELS[i + 1]), device))
            .collect::<Result<Vec<_>, _>>()?;
        let head = Conv::load(weights, "conv8", 1, (CHANNELS[6], ANCHORS.len() * 5), device)?;
        Ok(Detector { stem, layers, head, device: device.clone() })
    }

    /// The raw grid: (1, 25, cells, cells).
    fn forward(&self, input: &Tensor) -> Result<Tensor, FaceError> {
        let mut x = leaky(&self.stem.forward(input, 1, false)?)?;
        x = max_pool_same(&x, 2)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = leaky(&layer.forward(&x, 1, Some((1, 1)))?)?;
            // Halve after each layer but the last, which pools at stride 1.
            x = max_pool_same(&x, if i + 1 < self.layers.len() { 2 } else { 1 })?;
        }
        self.head.forward(&x, 1, false)
    }

    /// Faces in `image` scoring above `min_score`, at the network input size `input_size`
    /// (a multiple of 32; larger finds smaller faces, slower).
    pub fn detect(&self, image: &Planes, input_size: usize, min_score: f32) -> Result<Detections, FaceError> {
        let (width, height) = (image.width as f64, image.height as f64);
        if image.width == 0 || image.height == 0 {
            return Ok(Detections::default());
        }
        let input = image.pad_to_square(false).resize_bilinear(input_size, input_size);
        let grid = self.forward(&input.normalised_tensor(MEAN_RGB, &self.device)?)?;
        let (_, channels, cells, _) = grid.dims4()?;
        let values = grid.flatten_all()?.to_vec1::<f32>()?;
        let at = |channel: usize, row: usize, col: usize| f64::from(values[(channel * cells + row) * cells + col]);
        debug_assert_eq!(channels, ANCHORS.len() * 5);

        // The padded square's side, in face-api's rounding of the resized image.
        let scale = input_size as f64 / width.max(height);
        let (reshaped_w, reshaped_h) = ((width * scale).round(), (height * scale).round());
        let side = reshaped_w.max(reshaped_h);
        let (correct_x, correct_y) = (side / reshaped_w, side / reshaped_h);
        let n = cells as f64;

        let mut candidates: Vec<(BoxF, f64)> = Vec::new();
        let mut best_score = 0f64;
        for row in 0..cells {
            for col in 0..cells {
                for (anchor, &(anchor_w, anchor_h)) in ANCHORS.iter().enumerate() {
                    let base = anchor * 5;
                    let score = sigmoid(at(base + 4, row, col));
                    best_score = best_score.max(score);
                    if score <= f64::from(min_score) {
                        continue;
                    }
                    let cx = (col as f64 + sigmoid(at(base, row, col))) / n * correct_x;
                    let cy = (row as f64 + sigmoid(at(base + 1, row, col))) / n * correct_y;
                    let w = at(base + 2, row, col).exp() * anchor_w / n * correct_x;
                    let h = at(base + 3, row, col).exp() * anchor_h / n * correct_y;
                    // Relative to the image; face-api keeps these until the end.
                    candidates.push((BoxF { x: cx - w / 2.0, y: cy - h / 2.0, width: w, height: h }, score));
                }
            }
        }
        let kept = non_max_suppression(&candidates, input_size as f64);
        let faces = kept
            .into_iter()
            .map(|i| {
                let (rel, score) = &candidates[i];
                Detection {
                    bbox: BoxF {
                        x: rel.x * width,
                        y: rel.y * height,
                        width: rel.width * width,
                        height: rel.height * height,
                    },
                    score: *score as f32,
                }
            })
            .collect();
        Ok(Detections { faces, best_score: best_score as f32 })
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// face-api's greedy suppression, on boxes scaled by `scale`: repeatedly keep the best remaining
/// box and drop those overlapping it by more than `IOU_THRESHOLD`. Returns indices, best first.
fn non_max_suppression(candidates: &[(BoxF, f64)], scale: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    // Ascending by score, stable, and taken from the end, as face-api does.
    order.sort_by(|&a, &b| candidates[a].1.total_cmp(&candidates[b].1));
    let scaled: Vec<BoxF> = candidates.iter().map(|(b, _)| b.scaled(scale)).collect();
    let mut kept = Vec::new();
    while let Some(best) = order.pop() {
        kept.push(best);
        order.retain(|&other| scaled[best].iou(&scaled[other]) <= IOU_THRESHOLD);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppression_keeps_the_best_of_overlapping_boxes_and_separate_ones() {
        let b = |x: f64, y: f64| BoxF { x, y, width: 10.0, height: 10.0 };
        let candidates = vec![(b(0.0, 0.0), 0.6), (b(1.0, 1.0), 0.9), (b(50.0, 50.0), 0.7), (b(5.0, 0.0), 0.8)];
        // (1,1) vs (0,0): IoU 81/119 > 0.4, dropped. (5,0) vs (1,1): 54/146 = 0.37, kept.
        assert_eq!(non_max_suppression(&candidates, 1.0), vec![1, 3, 2]);
    }
}
