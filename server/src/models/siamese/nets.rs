//! The two Siamese towers of the method and the optional similarity head, built from candle
//! tensors held in a [`VarMap`] (so they save to and load from safetensors).
//!
//! Candle 0.11 lacks several pieces the method needs, so they are made here:
//! - initial weights come from a seeded ChaCha generator (candle's CPU generator cannot be
//!   seeded), Xavier-uniform for the CNN, uniform ±1/√fan_in for GAML, zero biases;
//! - 'same' padding (TensorFlow's rule: the extra pixel of an odd total goes right/bottom);
//! - 2x2 max-pooling as a reshape and two maxima, because `max_pool2d`'s gradient in candle 0.11
//!   is a quarter of the right one (see the gradient tests in `tests`);
//! - on the CPU the CNN runs channels-last through `conv` (each convolution + ReLU + pooling
//!   block one fused op over tasks of a few images): 1.5-1.8 s a training step at batch 100 where
//!   the first version, on candle's `conv2d`, took 22.9 s, and 1.4 GB at batch 500; other devices use the channels-first path
//!   with candle's `conv2d`. Both compute the same function (tests).

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::conv::{self, max_pool_2x2, same_padding};
use super::dense::{dense, Activation};

/// Side of the CNN's square RGB input.
pub const CNN_SIDE: usize = 128;
/// Embedding length of both towers.
pub const EMBEDDING_DIM: usize = 400;

/// The CNN's convolutions: output maps, kernel side, stride.
pub const CNN_LAYERS: [(usize, usize, usize); 6] =
    [(32, 9, 2), (64, 7, 1), (128, 5, 1), (256, 3, 1), (512, 1, 1), (1024, 1, 1)];
/// GAML's fully connected widths after the input.
pub const GAML_WIDTHS: [usize; 4] = [2000, 1000, 600, 400];
/// Hidden width of the similarity head.
pub const HEAD_HIDDEN: usize = 128;

/// How initial weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Uniform in ±√(6 / (fan_in + fan_out)).
    XavierUniform,
    /// Uniform in ±1/√fan_in.
    Uniform,
}

/// Makes the variables of a network from one seed, in a fixed order, so a seed always gives
/// the same initial weights on every machine.
pub struct Builder<'a> {
    vars: &'a VarMap,
    device: &'a Device,
    rng: ChaCha8Rng,
}

impl<'a> Builder<'a> {
    pub fn new(vars: &'a VarMap, device: &'a Device, seed: u64) -> Self {
        Builder { vars, device, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// A weight of `shape` with the given fans, registered as `name`.
    pub fn weight(
        &mut self,
        name: &str,
        shape: &[usize],
        fan_in: usize,
        fan_out: usize,
        init: Init,
    ) -> candle_core::Result<Tensor> {
        let bound = match init {
            Init::XavierUniform => (6.0 / (fan_in + fan_out) as f64).sqrt(),
            Init::Uniform => 1.0 / (fan_in as f64).sqrt(),
        } as f32;
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| self.rng.random_range(-bound..=bound)).collect();
        self.register(name, Tensor::from_vec(values, shape, self.device)?)
    }

    pub fn zeros(&mut self, name: &str, shape: &[usize]) -> candle_core::Result<Tensor> {
        self.register(name, Tensor::zeros(shape, DType::F32, self.device)?)
    }

    fn register(&mut self, name: &str, value: Tensor) -> candle_core::Result<Tensor> {
        let var = Var::from_tensor(&value)?;
        let tensor = var.as_tensor().clone();
        self.vars.data().lock().expect("not poisoned").insert(name.to_string(), var);
        Ok(tensor)
    }
}

/// A fully connected layer `x W^T + b`.
#[derive(Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// A layer with given weights (outputs × inputs) and bias.
    pub fn from_tensors(weight: Tensor, bias: Tensor) -> Self {
        Linear { weight, bias }
    }

    pub fn new(b: &mut Builder, name: &str, inputs: usize, outputs: usize, init: Init) -> candle_core::Result<Self> {
        Ok(Linear {
            weight: b.weight(&format!("{name}.weight"), &[outputs, inputs], inputs, outputs, init)?,
            bias: b.zeros(&format!("{name}.bias"), &[outputs])?,
        })
    }
}

impl Linear {
    /// `tanh(x W^T + b)`, as one operation on the CPU.
    pub fn forward_tanh(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        dense(x, &self.weight, &self.bias, Activation::Tanh)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        dense(x, &self.weight, &self.bias, Activation::Identity)
    }
}

/// A 'same'-padded convolution with bias.
#[derive(Clone)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    kernel: usize,
    stride: usize,
}

impl Conv {
    /// A convolution with given weights (outputs × inputs × k × k) and bias.
    pub fn from_tensors(weight: Tensor, bias: Tensor, stride: usize) -> candle_core::Result<Self> {
        let kernel = weight.dim(3)?;
        Ok(Conv { weight, bias, kernel, stride })
    }

    fn new(
        b: &mut Builder,
        name: &str,
        inputs: usize,
        outputs: usize,
        kernel: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        let (fan_in, fan_out) = (inputs * kernel * kernel, outputs * kernel * kernel);
        Ok(Conv {
            weight: b.weight(
                &format!("{name}.weight"),
                &[outputs, inputs, kernel, kernel],
                fan_in,
                fan_out,
                Init::XavierUniform,
            )?,
            bias: b.zeros(&format!("{name}.bias"), &[outputs])?,
            kernel,
            stride,
        })
    }
}

impl Conv {
    /// Convolution, ReLU and 2x2 max-pooling on channels-last input (n, h, w, c), CPU only.
    pub fn block_channels_last(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        conv::conv_relu_pool(x, &self.weight, &self.bias, self.stride)
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (top, bottom) = same_padding(h, self.kernel, self.stride);
        let (left, right) = same_padding(w, self.kernel, self.stride);
        let y = if top == bottom && left == right && top == left {
            x.conv2d(&self.weight, top, self.stride, 1, 1)?
        } else {
            x.pad_with_zeros(2, top, bottom)?.pad_with_zeros(3, left, right)?.conv2d(
                &self.weight,
                0,
                self.stride,
                1,
                1,
            )?
        };
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

/// The Siamese CNN's tower: six conv + ReLU + 2x2 pool blocks, then FC-400.
#[derive(Clone)]
pub struct CnnTower {
    convs: Vec<Conv>,
    fc: Linear,
}

impl CnnTower {
    pub fn new(b: &mut Builder) -> candle_core::Result<Self> {
        let mut convs = Vec::new();
        let (mut channels, mut side) = (3, CNN_SIDE);
        for (i, &(maps, kernel, stride)) in CNN_LAYERS.iter().enumerate() {
            convs.push(Conv::new(b, &format!("conv{}", i + 1), channels, maps, kernel, stride)?);
            channels = maps;
            side = side.div_ceil(stride) / 2;
        }
        let fc = Linear::new(b, "fc", channels * side * side, EMBEDDING_DIM, Init::XavierUniform)?;
        Ok(CnnTower { convs, fc })
    }
}

impl Module for CnnTower {
    /// Images (n, 3, side, side) → embeddings (n, 400).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() {
            let mut x = x.permute((0, 2, 3, 1))?;
            for conv in &self.convs {
                x = conv.block_channels_last(&x)?;
            }
            // Back to channels-first before flattening: the FC weights see (c, h, w) order.
            return self.fc.forward(&x.permute((0, 3, 1, 2))?.flatten_from(1)?);
        }
        self.forward_channels_first(x)
    }
}

impl CnnTower {
    /// The tower with candle's `conv2d` (any device).
    pub fn forward_channels_first(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for conv in &self.convs {
            x = max_pool_2x2(&conv.forward(&x)?.relu()?)?;
        }
        self.fc.forward(&x.flatten_from(1)?)
    }
}

/// GAML's tower: FC 2000 → 1000 → 600 → 400 with tanh after each.
#[derive(Clone)]
pub struct GamlTower {
    layers: Vec<Linear>,
}

impl GamlTower {
    pub fn new(b: &mut Builder, input_dim: usize) -> candle_core::Result<Self> {
        let mut layers = Vec::new();
        let mut inputs = input_dim;
        for (i, &width) in GAML_WIDTHS.iter().enumerate() {
            layers.push(Linear::new(b, &format!("fc{}", i + 1), inputs, width, Init::Uniform)?);
            inputs = width;
        }
        Ok(GamlTower { layers })
    }
}

impl Module for GamlTower {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward_tanh(&x)?;
        }
        Ok(x)
    }
}

/// A learned similarity head on a pair of tower outputs: FC on (x² − y²) ⊕ (x − y)² ⊕ (x ⊙ y),
/// ReLU, FC to one logit of "similar".
#[derive(Clone)]
pub struct Head {
    hidden: Linear,
    out: Linear,
}

impl Head {
    pub fn new(b: &mut Builder, dim: usize) -> candle_core::Result<Self> {
        Ok(Head {
            hidden: Linear::new(b, "head.hidden", 3 * dim, HEAD_HIDDEN, Init::XavierUniform)?,
            out: Linear::new(b, "head.out", HEAD_HIDDEN, 1, Init::XavierUniform)?,
        })
    }

    /// The logit of "similar" for each pair, shape (N,).
    pub fn logits(&self, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        let combined = Tensor::cat(&[(x.sqr()? - y.sqr()?)?, (x - y)?.sqr()?, (x * y)?], 1)?;
        self.out.forward(&self.hidden.forward(&combined)?.relu()?)?.squeeze(1)
    }
}

/// Rows scaled to unit length (a tiny epsilon keeps the gradient finite at zero).
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Row-wise Euclidean distance (with a tiny epsilon under the root, for the gradient at 0).
pub fn euclidean(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    ((x - y)?.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()
}

/// Row-wise cosine similarity.
pub fn cosine(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    (l2_normalize(x)? * l2_normalize(y)?)?.sum(D::Minus1)
}
