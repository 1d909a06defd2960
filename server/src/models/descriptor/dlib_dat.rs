//! Reads the full-precision weights of dlib's `dlib_face_recognition_resnet_model_v1.dat`
//! (public domain, shipped by the `face-recognition-models` package) from dlib's own
//! serialization format.
//!
//! The file is dlib's serialized network. Its layer records appear from the input to the output
//! (dlib writes a layer's sub-network before the layer itself). Each record starts with a
//! length-prefixed version string; the records holding parameters are:
//! - `con_4`..`con_6`: the parameter tensor (filters O×I×H×W, then one bias per filter), then
//!   num_filters, nr, nc, stride_y, stride_x, padding_y, padding_x;
//! - `affine_`/`affine_2`: the parameter tensor (gamma per channel, then beta);
//! - `fc_2`/`fc_3`: num_outputs, num_inputs, then the parameter tensor (inputs × outputs).
//!
//! Integers are dlib's variable-length form (a control byte holding the byte count and a sign
//! bit, then little-endian bytes); a tensor is version 2, four dimensions, then 4-byte
//! little-endian IEEE floats. Records of other layers (relu, pooling, add_prev, the input and
//! loss layers) carry no parameters and are skipped by looking for the next parameter record.

use super::net::{ConvParams, NetParams};
use super::DescriptorError;

/// Parameter record names, as dlib writes them (a length byte count of 1, the length, the text).
const TAGS: [&str; 7] = ["con_4", "con_5", "con_6", "affine_", "affine_2", "fc_2", "fc_3"];
/// Convolutions of the network: the 7x7 stem, then two per residual block.
const CONVS: usize = 29;

fn bad(what: impl Into<String>) -> DescriptorError {
    DescriptorError::Weights(format!("dlib model file: {}", what.into()))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// One convolution as stored: parameters and geometry.
struct Conv {
    params: Vec<f32>,
    filters: usize,
    kernel: (usize, usize),
    stride: (i64, i64),
    padding: (i64, i64),
}

enum Record {
    Conv(Conv),
    Affine(Vec<f32>),
    Fc { outputs: usize, inputs: usize, params: Vec<f32> },
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DescriptorError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| bad("truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A signed or unsigned integer in dlib's variable-length form.
    fn int(&mut self) -> Result<i64, DescriptorError> {
        let control = self.take(1)?[0];
        let size = usize::from(control & 0x0f);
        if size > 8 {
            return Err(bad(format!("integer of {size} bytes at offset {}", self.pos - 1)));
        }
        let value = self.take(size)?.iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b));
        let value = i64::try_from(value).map_err(|_| bad("integer out of range"))?;
        Ok(if control & 0x80 != 0 { -value } else { value })
    }

    fn count(&mut self) -> Result<usize, DescriptorError> {
        usize::try_from(self.int()?).map_err(|_| bad("negative size"))
    }

    /// A tensor: version 2, (num_samples, k, nr, nc), then the floats.
    fn tensor(&mut self) -> Result<Vec<f32>, DescriptorError> {
        let version = self.int()?;
        if version != 2 {
            return Err(bad(format!("tensor version {version}, expected 2")));
        }
        let mut len = 1usize;
        for _ in 0..4 {
            len = len.checked_mul(self.count()?).ok_or_else(|| bad("tensor too large"))?;
        }
        let bytes = self.take(len.checked_mul(4).ok_or_else(|| bad("tensor too large"))?)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// Moves past the next parameter record's version string and returns it, or None at the end.
    /// Only the small records between parameter tensors are scanned: tensors are read whole.
    fn next_tag(&mut self) -> Option<&'static str> {
        let bytes = self.bytes;
        for at in self.pos..bytes.len().saturating_sub(2) {
            if bytes[at] != 1 {
                continue;
            }
            let len = usize::from(bytes[at + 1]);
            let text = bytes.get(at + 2..at + 2 + len);
            if let Some(tag) = TAGS.iter().find(|tag| tag.len() == len && text == Some(tag.as_bytes())) {
                self.pos = at + 2 + len;
                return Some(tag);
            }
        }
        None
    }

    fn record(&mut self, tag: &str) -> Result<Record, DescriptorError> {
        Ok(match tag {
            "con_4" | "con_5" | "con_6" => {
                let params = self.tensor()?;
                let filters = self.count()?;
                let kernel = (self.count()?, self.count()?);
                let stride = (self.int()?, self.int()?);
                let padding = (self.int()?, self.int()?);
                Record::Conv(Conv { params, filters, kernel, stride, padding })
            }
            "affine_" | "affine_2" => Record::Affine(self.tensor()?),
            _ => {
                let outputs = self.count()?;
                let inputs = self.count()?;
                Record::Fc { outputs, inputs, params: self.tensor()? }
            }
        })
    }
}

/// The network's parameters from the bytes of `dlib_face_recognition_resnet_model_v1.dat`,
/// checked against the architecture: 29 convolutions each followed by its affine layer, with the
/// expected filter counts, kernels, strides and paddings, then the 256 → 128 projection.
pub fn read(bytes: &[u8]) -> Result<NetParams, DescriptorError> {
    let mut reader = Reader { bytes, pos: 0 };
    let mut convs: Vec<ConvParams> = Vec::new();
    let mut pending: Option<Conv> = None;
    let mut fc = None;
    while let Some(tag) = reader.next_tag() {
        match reader.record(tag)? {
            Record::Conv(conv) => {
                if pending.is_some() {
                    return Err(bad("two convolutions without an affine layer between them"));
                }
                pending = Some(conv);
            }
            Record::Affine(params) => {
                let conv = pending.take().ok_or_else(|| bad("an affine layer without a convolution before it"))?;
                convs.push(conv_params(conv, params, convs.len())?);
            }
            Record::Fc { outputs, inputs, params } => {
                if (inputs, outputs, params.len()) != (256, 128, 256 * 128) {
                    return Err(bad(format!("the fc layer is {inputs} → {outputs}, expected 256 → 128 without bias")));
                }
                fc = Some(params);
            }
        }
    }
    if convs.len() != CONVS || pending.is_some() {
        return Err(bad(format!("{} convolution + affine pairs, expected {CONVS}", convs.len())));
    }
    let fc = fc.ok_or_else(|| bad("no fc layer"))?;
    let mut convs = convs.into_iter();
    let stem = convs.next().expect("29 convolutions");
    let mut blocks = Vec::new();
    while let (Some(a), Some(b)) = (convs.next(), convs.next()) {
        blocks.push((a, b));
    }
    Ok(NetParams { stem, blocks, fc, input_scale: 256.0 })
}

/// Checks one convolution against the architecture and pairs it with its affine layer.
fn conv_params(conv: Conv, affine: Vec<f32>, index: usize) -> Result<ConvParams, DescriptorError> {
    let (channels, (kernel, stride, padding)) = super::net::conv_geometry(index);
    let n = conv.filters;
    if n != channels || conv.kernel != (kernel, kernel) {
        return Err(bad(format!(
            "convolution {index} has {n} filters of {:?}, expected {channels} of {kernel}x{kernel}",
            conv.kernel
        )));
    }
    if conv.stride != (stride as i64, stride as i64) || conv.padding != (padding as i64, padding as i64) {
        return Err(bad(format!("convolution {index} has stride {:?} and padding {:?}", conv.stride, conv.padding)));
    }
    let per_filter = (conv.params.len().checked_sub(n).ok_or_else(|| bad("convolution without biases"))?) / n.max(1);
    if !per_filter.is_multiple_of(kernel * kernel) || per_filter * n + n != conv.params.len() {
        return Err(bad(format!("convolution {index} has {} parameters", conv.params.len())));
    }
    if affine.len() != 2 * n {
        return Err(bad(format!("affine layer {index} has {} parameters for {n} channels", affine.len())));
    }
    let inputs = per_filter / (kernel * kernel);
    let mut params = conv.params;
    let bias = params.split_off(n * per_filter);
    let shift = affine[n..].to_vec();
    let mut scale = affine;
    scale.truncate(n);
    Ok(ConvParams { oihw: params, dims: [n, inputs, kernel, kernel], bias, scale, shift })
}
