//! face-api's AgeGenderNet: a small Xception (an entry flow of two reduction blocks, two
//! residual middle blocks, an exit reduction block and a separable convolution to 512 channels)
//! on a 112x112 face, average pooling, then two fully connected heads: the age in years (one
//! value, a regression) and the gender (two logits, softmax; the first is "male").
//!
//! Its estimates are what the simulated look-alike crowd judges by (`facesim crowd simulate
//! --truth lookalike`); they are a model's guesses, not facts about a person.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::ops::{max_pool_same_k, Conv, Planes, SeparableConv};
use super::FaceError;
use crate::tfjs::{self, WeightTensor};

/// The network's input side.
const INPUT: usize = 112;
/// Subtracted per channel before dividing by 255 (the descriptor's means, as face-api has it).
const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];
/// Middle blocks of face-api's age and gender model.
const MAIN_BLOCKS: usize = 2;
/// Channels of the pooled features the heads read.
const FEATURES: usize = 512;

/// What the net estimates of one face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traits {
    /// Apparent age in years.
    pub age: f32,
    /// Probability that the face is a man's (face-api's gender head, softmax).
    pub male_probability: f32,
}

/// Two separable convolutions, a 3x3 max pool at stride 2, plus a strided 1x1 "expansion" of the
/// input added back: halves the map.
struct ReductionBlock {
    separable: [SeparableConv; 2],
    expansion: Conv,
}

impl ReductionBlock {
    fn load(
        weights: &HashMap<String, WeightTensor>,
        name: &str,
        (cin, cout): (usize, usize),
        device: &Device,
    ) -> Result<Self, FaceError> {
        Ok(ReductionBlock {
            separable: [
                SeparableConv::load(weights, &format!("{name}/separable_conv0"), (cin, cout), device)?,
                SeparableConv::load(weights, &format!("{name}/separable_conv1"), (cout, cout), device)?,
            ],
            expansion: Conv::load(weights, &format!("{name}/expansion_conv"), 1, (cin, cout), device)?,
        })
    }

    /// `activate_input`: whether the block starts with a ReLU (all but the first do).
    fn forward(&self, x: &Tensor, activate_input: bool) -> Result<Tensor, FaceError> {
        let input = if activate_input { x.relu()? } else { x.clone() };
        let out = self.separable[0].forward(&input, 1, None)?;
        let out = self.separable[1].forward(&out.relu()?, 1, None)?;
        let out = max_pool_same_k(&out, 3, 2)?;
        Ok((out + self.expansion.forward(x, 2, true)?)?)
    }
}

/// Three ReLU + separable convolutions with the input added back (same channels and size).
struct MainBlock {
    separable: [SeparableConv; 3],
}

impl MainBlock {
    fn load(
        weights: &HashMap<String, WeightTensor>,
        name: &str,
        channels: usize,
        device: &Device,
    ) -> Result<Self, FaceError> {
        let sep =
            |i: usize| SeparableConv::load(weights, &format!("{name}/separable_conv{i}"), (channels, channels), device);
        Ok(MainBlock { separable: [sep(0)?, sep(1)?, sep(2)?] })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, FaceError> {
        let mut out = x.clone();
        for layer in &self.separable {
            out = layer.forward(&out.relu()?, 1, None)?;
        }
        Ok((out + x)?)
    }
}

pub struct TraitsNet {
    conv_in: Conv,
    entry: [ReductionBlock; 2],
    middle: Vec<MainBlock>,
    exit: ReductionBlock,
    exit_separable: SeparableConv,
    /// (512, 1) and (1, 1).
    age: (Tensor, Tensor),
    /// (512, 2) and (1, 2).
    gender: (Tensor, Tensor),
    device: Device,
}

impl TraitsNet {
    pub fn load(weights: &HashMap<String, WeightTensor>, device: &Device) -> Result<Self, FaceError> {
        let head = |name: &str, outputs: usize| -> Result<(Tensor, Tensor), FaceError> {
            let w = tfjs::tensor(weights, &format!("fc/{name}/weights"), &[FEATURES, outputs])?;
            let b = tfjs::tensor(weights, &format!("fc/{name}/bias"), &[outputs])?;
            Ok((
                Tensor::from_vec(w.values.clone(), (FEATURES, outputs), device)?,
                Tensor::from_vec(b.values.clone(), (1, outputs), device)?,
            ))
        };
        Ok(TraitsNet {
            conv_in: Conv::load(weights, "entry_flow/conv_in", 3, (3, 32), device)?,
            entry: [
                ReductionBlock::load(weights, "entry_flow/reduction_block_0", (32, 64), device)?,
                ReductionBlock::load(weights, "entry_flow/reduction_block_1", (64, 128), device)?,
            ],
            middle: (0..MAIN_BLOCKS)
                .map(|i| MainBlock::load(weights, &format!("middle_flow/main_block_{i}"), 128, device))
                .collect::<Result<_, _>>()?,
            exit: ReductionBlock::load(weights, "exit_flow/reduction_block", (128, 256), device)?,
            exit_separable: SeparableConv::load(weights, "exit_flow/separable_conv", (256, FEATURES), device)?,
            age: head("age", 1)?,
            gender: head("gender", 2)?,
            device: device.clone(),
        })
    }

    /// The estimates for a face image of any size (face-api pads it to a centred square and
    /// resizes it to 112x112; a stored 150x150 face crop is already square).
    pub fn estimate(&self, face: &RgbImage) -> Result<Traits, FaceError> {
        if face.width() == 0 || face.height() == 0 {
            return Err(FaceError::EmptyBox);
        }
        let input = Planes::from_rgb(face).pad_to_square(true).resize_bilinear(INPUT, INPUT);
        let x = input.normalised_tensor(MEAN_RGB, &self.device)?;
        let mut x = self.conv_in.forward(&x, 2, true)?.relu()?;
        x = self.entry[0].forward(&x, false)?;
        x = self.entry[1].forward(&x, true)?;
        for block in &self.middle {
            x = block.forward(&x)?;
        }
        x = self.exit.forward(&x, true)?;
        let x = self.exit_separable.forward(&x, 1, None)?.relu()?;
        // 7x7 average pooling, 'valid', at stride 2 on a 7x7 map: one value per channel.
        let pooled = x.avg_pool2d_with_stride((7, 7), (2, 2))?.flatten_from(1)?;
        let age = pooled.matmul(&self.age.0)?.broadcast_add(&self.age.1)?.flatten_all()?.to_vec1::<f32>()?;
        let logits = pooled.matmul(&self.gender.0)?.broadcast_add(&self.gender.1)?.flatten_all()?.to_vec1::<f32>()?;
        // Softmax of two logits: the first one's probability.
        let male_probability = 1.0 / (1.0 + (logits[1] - logits[0]).exp());
        Ok(Traits { age: age[0], male_probability })
    }
}
