//! The face descriptor network: a ResNet-34-like stack ported from face-api's
//! FaceRecognitionNet (itself a port of dlib's `dlib_face_recognition_resnet_model_v1`).
//! 150x150 RGB in, 128 numbers out; tensors are NCHW.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};

use super::DescriptorError;
use crate::tfjs::WeightTensor;

/// One convolution's parameters as the weight files give them, whatever their format: filters
/// (Cout, Cin, kh, kw) row-major, the convolution's bias, and the per-channel scale layer after
/// it (x·scale + shift; dlib's affine layer, face-api's "scale").
pub struct ConvParams {
    pub oihw: Vec<f32>,
    pub dims: [usize; 4],
    pub bias: Vec<f32>,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

/// All parameters of the network: the 7x7 stem, two convolutions per residual block (in the
/// order of `BLOCKS`), the 256 → 128 projection (inputs × outputs, row-major), and the divisor
/// of the mean-subtracted pixels (dlib divides by 256, face-api by 255).
pub struct NetParams {
    pub stem: ConvParams,
    pub blocks: Vec<(ConvParams, ConvParams)>,
    pub fc: Vec<f32>,
    pub input_scale: f32,
}

/// Output channels, then (kernel, stride, padding), of convolution `index` in file order (0 the
/// stem, then conv1 and conv2 of each block). Down blocks open with a 3x3 stride-2 convolution
/// without padding ('valid'); every other 3x3 convolution has stride 1 and 'same' padding.
pub fn conv_geometry(index: usize) -> (usize, (usize, usize, usize)) {
    if index == 0 {
        return (32, (7, 2, 0));
    }
    let (_, channels, down) = BLOCKS[((index - 1) / 2).min(BLOCKS.len() - 1)];
    if down && (index - 1).is_multiple_of(2) {
        (channels, (3, 2, 0))
    } else {
        (channels, (3, 1, 1))
    }
}

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
    fn new(params: ConvParams, index: usize, device: &Device) -> Result<Self, DescriptorError> {
        let [cout, cin, kh, kw] = params.dims;
        let (channels, (kernel, stride, padding)) = conv_geometry(index);
        if cout != channels || kh != kernel || kw != kernel || params.oihw.len() != cout * cin * kh * kw {
            return Err(DescriptorError::Weights(format!("convolution {index} has shape {:?}", params.dims)));
        }
        if params.bias.len() != cout || params.scale.len() != cout || params.shift.len() != cout {
            return Err(DescriptorError::Weights(format!("convolution {index}: channel counts disagree")));
        }
        let per_filter = cin * kh * kw;
        let mut oihw = params.oihw;
        for (o, filter) in oihw.chunks_exact_mut(per_filter).enumerate() {
            filter.iter_mut().for_each(|v| *v *= params.scale[o]);
        }
        let folded_bias: Vec<f32> = (0..cout).map(|o| params.bias[o] * params.scale[o] + params.shift[o]).collect();
        let filters = Tensor::from_vec(oihw, (cout, cin, kh, kw), device)?;
        Ok(ConvLayer {
            filter_matrix: filters.reshape((cout, per_filter))?,
            filters,
            bias: Tensor::from_vec(folded_bias, (1, cout, 1, 1), device)?,
            stride,
            padding,
        })
    }

    /// face-api's layer `prefix`: TF stores filters HWIO; they are transposed to OIHW.
    fn tfjs_params(weights: &HashMap<String, WeightTensor>, prefix: &str) -> Result<ConvParams, DescriptorError> {
        let get = |name: &str| {
            weights
                .get(&format!("{prefix}/{name}"))
                .ok_or_else(|| DescriptorError::Weights(format!("missing {prefix}/{name}")))
        };
        let filters = get("conv/filters")?;
        let [kh, kw, cin, cout] = filters.shape[..] else {
            return Err(DescriptorError::Weights(format!("{prefix}: filters are not 4-d")));
        };
        let mut oihw = vec![0f32; cout * cin * kh * kw];
        for h in 0..kh {
            for w in 0..kw {
                for i in 0..cin {
                    for o in 0..cout {
                        oihw[((o * cin + i) * kh + h) * kw + w] = filters.values[((h * kw + w) * cin + i) * cout + o];
                    }
                }
            }
        }
        Ok(ConvParams {
            oihw,
            dims: [cout, cin, kh, kw],
            bias: get("conv/bias")?.values.clone(),
            scale: get("scale/weights")?.values.clone(),
            shift: get("scale/biases")?.values.clone(),
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
    fn new(conv1: ConvLayer, conv2: ConvLayer, down: bool) -> Self {
        Residual { conv1, conv2, down }
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
    input_scale: f32,
}

/// Residual blocks in order (face-api's names), their channels, and whether each one
/// down-samples.
const BLOCKS: [(&str, usize, bool); 14] = [
    ("conv32_1", 32, false),
    ("conv32_2", 32, false),
    ("conv32_3", 32, false),
    ("conv64_down", 64, true),
    ("conv64_1", 64, false),
    ("conv64_2", 64, false),
    ("conv64_3", 64, false),
    ("conv128_down", 128, true),
    ("conv128_1", 128, false),
    ("conv128_2", 128, false),
    ("conv256_down", 256, true),
    ("conv256_1", 256, false),
    ("conv256_2", 256, false),
    ("conv256_down_out", 256, true),
];

/// face-api's final fully connected layer (256 → 128, no bias).
const FC: &str = "fc";

impl NetParams {
    /// face-api's weights (decoded from its TensorFlow.js files).
    pub fn from_tfjs(weights: &HashMap<String, WeightTensor>) -> Result<Self, DescriptorError> {
        let stem = ConvLayer::tfjs_params(weights, "conv32_down")?;
        let blocks = BLOCKS
            .iter()
            .map(|(name, _, _)| {
                Ok((
                    ConvLayer::tfjs_params(weights, &format!("{name}/conv1"))?,
                    ConvLayer::tfjs_params(weights, &format!("{name}/conv2"))?,
                ))
            })
            .collect::<Result<Vec<_>, DescriptorError>>()?;
        let fc = weights.get(FC).ok_or_else(|| DescriptorError::Weights("missing fc".into()))?;
        if fc.shape != [256, 128] {
            return Err(DescriptorError::Weights(format!("fc has shape {:?}, expected [256, 128]", fc.shape)));
        }
        Ok(NetParams { stem, blocks, fc: fc.values.clone(), input_scale: 255.0 })
    }
}

impl Net {
    pub fn new(params: NetParams, device: &Device) -> Result<Self, DescriptorError> {
        if params.blocks.len() != BLOCKS.len() || params.fc.len() != 256 * 128 {
            return Err(DescriptorError::Weights(format!("{} residual blocks, expected 14", params.blocks.len())));
        }
        let stem = ConvLayer::new(params.stem, 0, device)?;
        let blocks = params
            .blocks
            .into_iter()
            .zip(BLOCKS)
            .enumerate()
            .map(|(k, ((a, b), (_, _, down)))| {
                Ok(Residual::new(ConvLayer::new(a, 1 + 2 * k, device)?, ConvLayer::new(b, 2 + 2 * k, device)?, down))
            })
            .collect::<Result<Vec<_>, DescriptorError>>()?;
        let fc = Tensor::from_vec(params.fc, (256, 128), device)?;
        Ok(Net { stem, blocks, fc, input_scale: params.input_scale })
    }

    /// What the mean-subtracted pixels are divided by.
    pub fn input_scale(&self) -> f32 {
        self.input_scale
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
