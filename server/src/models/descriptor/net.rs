//! The face descriptor network: a ResNet-34-like stack ported from face-api's
//! FaceRecognitionNet (itself a port of dlib's `dlib_face_recognition_resnet_model_v1`).
//! 150x150 RGB in, 128 numbers out; tensors are NCHW.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};

use super::DescriptorError;
use crate::tfjs::WeightTensor;

/// A convolution whose bias and following per-channel scale layer (x·w + b) are folded into the
/// filters: conv(x)·w + (bias·w + b) equals conv with filters scaled by w.
struct ConvLayer {
    filters: Tensor,
    /// The filters as a (Cout, Cin·kh·kw) matrix, for the single-image path.
    filter_matrix: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvLayer {
    fn load(
        weights: &HashMap<String, WeightTensor>,
        prefix: &str,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Result<Self, DescriptorError> {
        let get = |name: &str| {
            weights
                .get(&format!("{prefix}/{name}"))
                .ok_or_else(|| DescriptorError::Weights(format!("missing {prefix}/{name}")))
        };
        let filters = get("conv/filters")?;
        let [kh, kw, cin, cout] = filters.shape[..] else {
            return Err(DescriptorError::Weights(format!("{prefix}: filters are not 4-d")));
        };
        let (bias, scale, shift) =
            (&get("conv/bias")?.values, &get("scale/weights")?.values, &get("scale/biases")?.values);
        if bias.len() != cout || scale.len() != cout || shift.len() != cout {
            return Err(DescriptorError::Weights(format!("{prefix}: channel counts disagree")));
        }
        // TF stores HWIO; candle wants OIHW. Scale each output channel while transposing.
        let mut oihw = vec![0f32; cout * cin * kh * kw];
        for h in 0..kh {
            for w in 0..kw {
                for i in 0..cin {
                    for o in 0..cout {
                        let v = filters.values[((h * kw + w) * cin + i) * cout + o];
                        oihw[((o * cin + i) * kh + h) * kw + w] = v * scale[o];
                    }
                }
            }
        }
        let folded_bias: Vec<f32> = (0..cout).map(|o| bias[o] * scale[o] + shift[o]).collect();
        let filters = Tensor::from_vec(oihw, (cout, cin, kh, kw), device)?;
        Ok(ConvLayer {
            filter_matrix: filters.reshape((cout, cin * kh * kw))?,
            filters,
            bias: Tensor::from_vec(folded_bias, (1, cout, 1, 1), device)?,
            stride,
            padding,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, DescriptorError> {
        if self.stride == 1 && x.dim(0)? == 1 {
            return self.forward_single(x);
        }
        Ok(x.conv2d(&self.filters, self.padding, self.stride, 1, 1)?.broadcast_add(&self.bias)?)
    }

    /// A stride-1 convolution of one image as `filters (Cout×K) · columns (K×HW)`. candle's
    /// conv2d computes `columns (HW×K) · filters (K×Cout)`, and the matrix multiply spreads
    /// its work over threads along the output's columns: with 32-256 output channels there is
    /// too little to split, so one image used one core. Here the columns are the H·W positions.
    fn forward_single(&self, x: &Tensor) -> Result<Tensor, DescriptorError> {
        let (_, cin, h, w) = x.dims4()?;
        let (cout, _, kh, kw) = self.filters.dims4()?;
        let p = self.padding;
        let padded = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
        let (ho, wo) = (h + 2 * p + 1 - kh, w + 2 * p + 1 - kw);
        let mut shifted = Vec::with_capacity(kh * kw);
        for dy in 0..kh {
            for dx in 0..kw {
                shifted.push(padded.narrow(2, dy, ho)?.narrow(3, dx, wo)?);
            }
        }
        // (1, Cin, kh·kw, ho, wo): row index cin·kh·kw + dy·kw + dx, as in the filter matrix.
        let columns = Tensor::stack(&shifted, 2)?.reshape((cin * kh * kw, ho * wo))?;
        let out = self.filter_matrix.matmul(&columns)?.reshape((1, cout, ho, wo))?;
        Ok(out.broadcast_add(&self.bias)?)
    }
}

/// Two convolutions with a shortcut; the down variant halves the resolution.
struct Residual {
    conv1: ConvLayer,
    conv2: ConvLayer,
    down: bool,
}

impl Residual {
    fn load(
        weights: &HashMap<String, WeightTensor>,
        name: &str,
        down: bool,
        device: &Device,
    ) -> Result<Self, DescriptorError> {
        // Down blocks: 3x3 stride 2 without padding ('valid'); others: 3x3 stride 1, 'same'.
        let (stride, padding) = if down { (2, 0) } else { (1, 1) };
        Ok(Residual {
            conv1: ConvLayer::load(weights, &format!("{name}/conv1"), stride, padding, device)?,
            conv2: ConvLayer::load(weights, &format!("{name}/conv2"), 1, 1, device)?,
            down,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, DescriptorError> {
        let mut out = self.conv2.forward(&self.conv1.forward(x)?.relu()?)?;
        let shortcut = if self.down {
            let mut pooled = x.avg_pool2d_with_stride((2, 2), (2, 2))?;
            // The strided 'valid' conv can come out one smaller than the pooled shortcut (it
            // does in both 256-channel down blocks): pad the main path at the bottom and right.
            if out.dim(2)? != pooled.dim(2)? || out.dim(3)? != pooled.dim(3)? {
                out = out.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            }
            // When channels double, the shortcut gets zero channels appended.
            let (c_out, c_in) = (out.dim(1)?, pooled.dim(1)?);
            if c_out != c_in {
                let zeros = pooled.zeros_like()?;
                pooled = Tensor::cat(&[&pooled, &zeros], 1)?;
            }
            pooled
        } else {
            x.clone()
        };
        Ok((out + shortcut)?.relu()?)
    }
}

/// The whole network.
pub struct Net {
    stem: ConvLayer,
    blocks: Vec<Residual>,
    fc: Tensor,
}

/// Residual blocks in order, and whether each one down-samples.
const BLOCKS: [(&str, bool); 14] = [
    ("conv32_1", false),
    ("conv32_2", false),
    ("conv32_3", false),
    ("conv64_down", true),
    ("conv64_1", false),
    ("conv64_2", false),
    ("conv64_3", false),
    ("conv128_down", true),
    ("conv128_1", false),
    ("conv128_2", false),
    ("conv256_down", true),
    ("conv256_1", false),
    ("conv256_2", false),
    ("conv256_down_out", true),
];

/// The final fully connected layer (256 → 128, no bias).
const FC: &str = "fc";

impl Net {
    pub fn load(weights: &HashMap<String, WeightTensor>, device: &Device) -> Result<Self, DescriptorError> {
        let stem = ConvLayer::load(weights, "conv32_down", 2, 0, device)?;
        let blocks = BLOCKS
            .iter()
            .map(|(name, down)| Residual::load(weights, name, *down, device))
            .collect::<Result<Vec<_>, _>>()?;
        let fc = weights.get(FC).ok_or_else(|| DescriptorError::Weights("missing fc".into()))?;
        if fc.shape != [256, 128] {
            return Err(DescriptorError::Weights(format!("fc has shape {:?}, expected [256, 128]", fc.shape)));
        }
        let fc = Tensor::from_vec(fc.values.clone(), (256, 128), device)?;
        Ok(Net { stem, blocks, fc })
    }

    /// `x`: (N, 3, 150, 150), already normalised. Returns (N, 128).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, DescriptorError> {
        let mut out = self.stem.forward(x)?.relu()?.max_pool2d_with_stride((3, 3), (2, 2))?;
        for block in &self.blocks {
            out = block.forward(&out)?;
        }
        let pooled = out.mean((2, 3))?;
        debug_assert_eq!(pooled.dim(D::Minus1)?, 256);
        Ok(pooled.to_dtype(DType::F32)?.matmul(&self.fc)?)
    }
}
