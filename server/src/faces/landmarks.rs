//! face-api's FaceLandmark68Net: four densely connected blocks of separable convolutions on a
//! 112x112 face, average pooling, and one fully connected layer giving 68 (x, y) points relative
//! to the (square-padded) face box.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::ops::{Conv, Planes, SeparableConv};
use super::{BoxF, FaceError, Point};
use crate::tfjs::{self, WeightTensor};

/// Points of the 68-point (iBUG 300-W) layout.
pub const POINTS: usize = 68;
/// The network's input side.
const INPUT: usize = 112;
/// Subtracted per channel before dividing by 255 (the descriptor's means).
const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];
/// Channels of the four blocks.
const BLOCKS: [(usize, usize); 4] = [(3, 32), (32, 64), (64, 128), (128, 256)];

/// Four convolutions, each fed the sum of all earlier outputs of the block.
struct DenseBlock {
    /// The first block starts with a full convolution, the others with a separable one.
    first_full: Option<Conv>,
    first_separable: Option<SeparableConv>,
    rest: [SeparableConv; 3],
}

impl DenseBlock {
    fn load(
        weights: &HashMap<String, WeightTensor>,
        name: &str,
        (cin, cout): (usize, usize),
        device: &Device,
    ) -> Result<Self, FaceError> {
        let full = weights.contains_key(&format!("{name}/conv0/filters"));
        let sep = |i: usize, cin: usize| SeparableConv::load(weights, &format!("{name}/conv{i}"), (cin, cout), device);
        Ok(DenseBlock {
            first_full: if full {
                Some(Conv::load(weights, &format!("{name}/conv0"), 3, (cin, cout), device)?)
            } else {
                None
            },
            first_separable: if full { None } else { Some(sep(0, cin)?) },
            rest: [sep(1, cout)?, sep(2, cout)?, sep(3, cout)?],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, FaceError> {
        let out1 = match (&self.first_full, &self.first_separable) {
            (Some(conv), _) => conv.forward(x, 2, true)?,
            (None, Some(sep)) => sep.forward(x, 2, None)?,
            (None, None) => unreachable!("a block has a first layer"),
        }
        .relu()?;
        let out2 = self.rest[0].forward(&out1, 1, None)?;
        let out3 = self.rest[1].forward(&(&out1 + &out2)?.relu()?, 1, None)?;
        // face-api adds as out1 + (out2 + out3), and out1 + (out2 + (out3 + out4)).
        let in4 = (&out1 + (&out2 + &out3)?)?.relu()?;
        let out4 = self.rest[2].forward(&in4, 1, None)?;
        Ok((out1 + (out2 + (out3 + out4)?)?)?.relu()?)
    }
}

pub struct LandmarkNet {
    blocks: Vec<DenseBlock>,
    fc_weights: Tensor,
    fc_bias: Tensor,
    device: Device,
}

impl LandmarkNet {
    pub fn load(weights: &HashMap<String, WeightTensor>, device: &Device) -> Result<Self, FaceError> {
        let blocks = BLOCKS
            .iter()
            .enumerate()
            .map(|(i, &channels)| DenseBlock::load(weights, &format!("dense{i}"), channels, device))
            .collect::<Result<Vec<_>, _>>()?;
        let fc = tfjs::tensor(weights, "fc/weights", &[256, 2 * POINTS])?;
        let bias = tfjs::tensor(weights, "fc/bias", &[2 * POINTS])?;
        Ok(LandmarkNet {
            blocks,
            fc_weights: Tensor::from_vec(fc.values.clone(), (256, 2 * POINTS), device)?,
            fc_bias: Tensor::from_vec(bias.values.clone(), (1, 2 * POINTS), device)?,
            device: device.clone(),
        })
    }

    /// The 68 points of the face in `bbox` of `image`, in the image's pixels. As face-api does,
    /// the face is cut at the box clipped to the image and rounded down to whole pixels, and the
    /// points are shifted back by the box's own (unrounded) corner.
    pub fn landmarks(&self, image: &Planes, bbox: &BoxF) -> Result<Vec<Point>, FaceError> {
        let cut = bbox.clipped_floor(image.width, image.height).ok_or(FaceError::EmptyBox)?;
        let face = image.crop(cut.0, cut.1, cut.2, cut.3);
        let (w, h) = (face.width as f64, face.height as f64);
        let input = face.pad_to_square(true).resize_bilinear(INPUT, INPUT);
        let mut x = input.normalised_tensor(MEAN_RGB, &self.device)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        // 7x7 average pooling, 'valid', at stride 2 on a 7x7 map: one value per channel.
        let pooled = x.avg_pool2d_with_stride((7, 7), (2, 2))?.flatten_from(1)?;
        let out = pooled.matmul(&self.fc_weights)?.broadcast_add(&self.fc_bias)?.flatten_all()?.to_vec1::<f32>()?;

        // face-api's post-processing: undo the centring pad (computed on the unrounded sizes).
        let scale = INPUT as f64 / w.max(h);
        let (sw, sh) = (w * scale, h * scale);
        let pad_x = if sw < sh { (sw - sh).abs() / 2.0 } else { 0.0 };
        let pad_y = if sh < sw { (sw - sh).abs() / 2.0 } else { 0.0 };
        let relative = |v: f32, pad: f64, size: f64| ((f64::from(v) * INPUT as f64) as f32 as f64 - pad) / size;
        Ok(out
            .chunks_exact(2)
            .map(|xy| Point { x: relative(xy[0], pad_x, sw) * w + bbox.x, y: relative(xy[1], pad_y, sh) * h + bbox.y })
            .collect())
    }
}
