//! The layers the face detector and the landmark net share, written as TensorFlow computes them
//! (NHWC there, NCHW here): 'same' padding that puts the odd pixel after, separable convolutions
//! (a 3x3 depthwise filter, then a 1x1 pointwise one), and TensorFlow's legacy bilinear resize.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::FaceError;
use crate::tfjs::{self, WeightTensor};

/// TensorFlow's 'same' padding of one axis: (before, after), the odd pixel after.
pub fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Pads both spatial axes of an NCHW tensor with zeros.
fn pad(x: &Tensor, (before, after): (usize, usize)) -> Result<Tensor, FaceError> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    Ok(x.pad_with_zeros(2, before, after)?.pad_with_zeros(3, before, after)?)
}

/// A full convolution (HWIO weights in the file) with a bias.
pub struct Conv {
    filters: Tensor,
    bias: Tensor,
    kernel: usize,
}

impl Conv {
    pub fn load(
        weights: &HashMap<String, WeightTensor>,
        prefix: &str,
        kernel: usize,
        (cin, cout): (usize, usize),
        device: &Device,
    ) -> Result<Self, FaceError> {
        let filters = tfjs::tensor(weights, &format!("{prefix}/filters"), &[kernel, kernel, cin, cout])?;
        let bias = tfjs::tensor(weights, &format!("{prefix}/bias"), &[cout])?;
        let hwio = Tensor::from_vec(filters.values.clone(), (kernel, kernel, cin, cout), device)?;
        Ok(Conv {
            filters: hwio.permute((3, 2, 0, 1))?.contiguous()?,
            bias: Tensor::from_vec(bias.values.clone(), (1, cout, 1, 1), device)?,
            kernel,
        })
    }

    /// 'valid' (no padding) or 'same' convolution at `stride`.
    pub fn forward(&self, x: &Tensor, stride: usize, same: bool) -> Result<Tensor, FaceError> {
        let x = if same && self.kernel > 1 { pad(x, same_padding(x.dim(2)?, self.kernel, stride))? } else { x.clone() };
        let out = if self.kernel == 1 && stride == 1 {
            pointwise(&x, &self.filters)?
        } else {
            x.conv2d(&self.filters, 0, stride, 1, 1)?
        };
        Ok(out.broadcast_add(&self.bias)?)
    }
}

/// A 1x1 convolution as one matrix product: (Cout × Cin) · (Cin × H·W).
fn pointwise(x: &Tensor, filters: &Tensor) -> Result<Tensor, FaceError> {
    let (n, cin, h, w) = x.dims4()?;
    let cout = filters.dim(0)?;
    let matrix = filters.reshape((cout, cin))?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let columns = x.get(i)?.reshape((cin, h * w))?;
        out.push(matrix.matmul(&columns)?.reshape((cout, h, w))?);
    }
    Ok(Tensor::stack(&out, 0)?)
}

/// A separable convolution: 3x3 depthwise, 1x1 pointwise, bias; padded 'same' unless told.
pub struct SeparableConv {
    /// The nine taps of the depthwise filter, each (1, C, 1, 1).
    taps: Vec<Tensor>,
    pointwise: Tensor,
    bias: Tensor,
}

impl SeparableConv {
    pub fn load(
        weights: &HashMap<String, WeightTensor>,
        prefix: &str,
        (cin, cout): (usize, usize),
        device: &Device,
    ) -> Result<Self, FaceError> {
        let depthwise = tfjs::tensor(weights, &format!("{prefix}/depthwise_filter"), &[3, 3, cin, 1])?;
        let point = tfjs::tensor(weights, &format!("{prefix}/pointwise_filter"), &[1, 1, cin, cout])?;
        let bias = tfjs::tensor(weights, &format!("{prefix}/bias"), &[cout])?;
        let taps = depthwise
            .values
            .chunks_exact(cin)
            .map(|tap| Tensor::from_vec(tap.to_vec(), (1, cin, 1, 1), device))
            .collect::<Result<Vec<_>, _>>()?;
        let io = Tensor::from_vec(point.values.clone(), (cin, cout), device)?;
        Ok(SeparableConv {
            taps,
            pointwise: io.t()?.contiguous()?.reshape((cout, cin, 1, 1))?,
            bias: Tensor::from_vec(bias.values.clone(), (1, cout, 1, 1), device)?,
        })
    }

    /// `padding`: explicit (before, after) zeros on both axes; `None` for TensorFlow's 'same'.
    pub fn forward(&self, x: &Tensor, stride: usize, padding: Option<(usize, usize)>) -> Result<Tensor, FaceError> {
        let padding = padding.unwrap_or_else(|| same_padding(x.dim(2).unwrap_or(0), 3, stride));
        let depthwise = self.depthwise(x, stride, padding)?;
        Ok(pointwise(&depthwise, &self.pointwise)?.broadcast_add(&self.bias)?)
    }

    /// The depthwise 3x3 filter as nine shifted, per-channel-scaled views summed. At stride 2
    /// the padded image is viewed as 2x2 cells, so each tap reads one parity of rows/columns.
    fn depthwise(&self, x: &Tensor, stride: usize, (before, after): (usize, usize)) -> Result<Tensor, FaceError> {
        let (n, c, h, w) = x.dims4()?;
        let (ho, wo) = ((h + before + after - 3) / stride + 1, (w + before + after - 3) / stride + 1);
        let mut sum: Option<Tensor> = None;
        if stride == 1 {
            let padded = pad(x, (before, after))?;
            for (k, tap) in self.taps.iter().enumerate() {
                let view = padded.narrow(2, k / 3, ho)?.narrow(3, k % 3, wo)?;
                let term = view.broadcast_mul(tap)?;
                sum = Some(match sum {
                    Some(s) => (s + term)?,
                    None => term,
                });
            }
        } else if stride == 2 {
            // Rows read: 2·(ho−1)+2 at most, plus one so the padded size is even.
            let (rows, cols) = ((h + before + after).max(2 * ho + 1), (w + before + after).max(2 * wo + 1));
            let (rows, cols) = (rows + rows % 2, cols + cols % 2);
            let padded = x
                .pad_with_zeros(2, before, rows - h - before)?
                .pad_with_zeros(3, before, cols - w - before)?
                .reshape((n, c, rows / 2, 2, cols / 2, 2))?;
            for (k, tap) in self.taps.iter().enumerate() {
                let (dy, dx) = (k / 3, k % 3);
                let view = padded
                    .narrow(2, dy / 2, ho)?
                    .narrow(3, dy % 2, 1)?
                    .narrow(4, dx / 2, wo)?
                    .narrow(5, dx % 2, 1)?
                    .reshape((n, c, ho, wo))?;
                let term = view.broadcast_mul(tap)?;
                sum = Some(match sum {
                    Some(s) => (s + term)?,
                    None => term,
                });
            }
        } else {
            return Err(FaceError::Weights(format!("stride {stride} is not used by these nets")));
        }
        Ok(sum.expect("nine taps"))
    }
}

/// 2x2 max pooling with TensorFlow's 'same' padding (the padded edge repeats the last
/// row/column, which leaves each maximum as TensorFlow's −∞ padding does).
pub fn max_pool_same(x: &Tensor, stride: usize) -> Result<Tensor, FaceError> {
    max_pool_same_k(x, 2, stride)
}

/// `kernel` × `kernel` max pooling with TensorFlow's 'same' padding, as [`max_pool_same`]: the
/// padded rows and columns repeat the edge, so no maximum changes.
pub fn max_pool_same_k(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor, FaceError> {
    let (_, _, h, w) = x.dims4()?;
    let (before_h, after_h) = same_padding(h, kernel, stride);
    let (before_w, after_w) = same_padding(w, kernel, stride);
    let mut x = x.clone();
    if before_h + after_h > 0 {
        x = x.pad_with_same(2, before_h, after_h)?;
    }
    if before_w + after_w > 0 {
        x = x.pad_with_same(3, before_w, after_w)?;
    }
    Ok(x.max_pool2d_with_stride((kernel, kernel), (stride, stride))?)
}

/// TensorFlow's leaky ReLU as face-api writes it: max(x, 0.1·x).
pub fn leaky(x: &Tensor) -> Result<Tensor, FaceError> {
    Ok(x.maximum(&(x * 0.1)?)?)
}

/// An image as floats, height × width × 3, row-major, as TensorFlow holds it.
#[derive(Debug, Clone)]
pub struct Planes {
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl Planes {
    pub fn from_rgb(image: &image::RgbImage) -> Self {
        Planes {
            height: image.height() as usize,
            width: image.width() as usize,
            values: image.as_raw().iter().map(|&v| f32::from(v)).collect(),
        }
    }

    /// The rectangle at (`x`, `y`) of `width` × `height` (inside the image).
    pub fn crop(&self, x: usize, y: usize, width: usize, height: usize) -> Planes {
        let mut values = Vec::with_capacity(width * height * 3);
        for row in y..y + height {
            let start = (row * self.width + x) * 3;
            values.extend_from_slice(&self.values[start..start + width * 3]);
        }
        Planes { height, width, values }
    }

    /// Pads the shorter side with zeros up to a square: all after the image (`centre` false),
    /// or `round(diff / 2)` after and the rest before (`centre` true), as face-api does.
    pub fn pad_to_square(&self, centre: bool) -> Planes {
        let side = self.height.max(self.width);
        let diff = side - self.height.min(self.width);
        if diff == 0 {
            return self.clone();
        }
        let after = if centre { (diff as f64 * 0.5).round() as usize } else { diff };
        let before = diff - after;
        let (top, left) = if self.height < self.width { (before, 0) } else { (0, before) };
        let mut values = vec![0f32; side * side * 3];
        for row in 0..self.height {
            let src = row * self.width * 3;
            let dst = ((row + top) * side + left) * 3;
            values[dst..dst + self.width * 3].copy_from_slice(&self.values[src..src + self.width * 3]);
        }
        Planes { height: side, width: side, values }
    }

    /// TensorFlow's `resizeBilinear` with `alignCorners` and `halfPixelCenters` both false: output
    /// pixel r reads the input at r · in/out.
    pub fn resize_bilinear(&self, height: usize, width: usize) -> Planes {
        if height == self.height && width == self.width {
            return self.clone();
        }
        let row_ratio = self.height as f64 / height as f64;
        let col_ratio = self.width as f64 / width as f64;
        let columns: Vec<(usize, usize, f64)> = (0..width)
            .map(|c| {
                let frac = col_ratio * c as f64;
                let floor = frac.floor().max(0.0);
                (floor as usize, (frac.ceil() as usize).min(self.width - 1), frac - floor)
            })
            .collect();
        let mut values = Vec::with_capacity(height * width * 3);
        for r in 0..height {
            let frac = row_ratio * r as f64;
            let floor = frac.floor().max(0.0);
            let (top, bottom, row_frac) = (floor as usize, (frac.ceil() as usize).min(self.height - 1), frac - floor);
            let (top, bottom) = (top * self.width * 3, bottom * self.width * 3);
            for &(left, right, col_frac) in &columns {
                for d in 0..3 {
                    let at = |row: usize, col: usize| f64::from(self.values[row + col * 3 + d]);
                    let upper = at(top, left) + (at(top, right) - at(top, left)) * col_frac;
                    let lower = at(bottom, left) + (at(bottom, right) - at(bottom, left)) * col_frac;
                    values.push((upper + (lower - upper) * row_frac) as f32);
                }
            }
        }
        Planes { height, width, values }
    }

    /// `(x − mean) / 255` per channel, as an NCHW tensor (1, 3, H, W).
    pub fn normalised_tensor(&self, mean: [f32; 3], device: &Device) -> Result<Tensor, FaceError> {
        let pixels = self.height * self.width;
        let mut data = vec![0f32; 3 * pixels];
        for (i, rgb) in self.values.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * pixels + i] = (rgb[c] - mean[c]) / 255.0;
            }
        }
        Ok(Tensor::from_vec(data, (1, 3, self.height, self.width), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        assert_eq!(same_padding(112, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 3, 1), (1, 1));
        assert_eq!(same_padding(207, 2, 2), (0, 1));
        assert_eq!(same_padding(13, 2, 1), (0, 1));
        assert_eq!(same_padding(414, 2, 2), (0, 0));
    }

    #[test]
    fn strided_depthwise_equals_every_other_output_of_the_dense_one() {
        let device = Device::Cpu;
        let c = 3;
        let mut weights = HashMap::new();
        let taps: Vec<f32> = (0..9 * c).map(|i| (i as f32 * 0.37).sin()).collect();
        weights.insert("s/depthwise_filter".into(), WeightTensor { shape: vec![3, 3, c, 1], values: taps });
        let identity: Vec<f32> = (0..c * c).map(|i| if i % (c + 1) == 0 { 1.0 } else { 0.0 }).collect();
        weights.insert("s/pointwise_filter".into(), WeightTensor { shape: vec![1, 1, c, c], values: identity });
        weights.insert("s/bias".into(), WeightTensor { shape: vec![c], values: vec![0.0; c] });
        let conv = SeparableConv::load(&weights, "s", (c, c), &device).unwrap();
        let x = Tensor::arange(0f32, (c * 10 * 10) as f32, &device).unwrap().reshape((1, c, 10, 10)).unwrap();
        let x = (x * 0.01).unwrap().sin().unwrap();
        let dense: Vec<Vec<Vec<f32>>> = conv.forward(&x, 1, Some((1, 1))).unwrap().get(0).unwrap().to_vec3().unwrap();
        // 'same' at stride 2 on 10 pads (0, 1): output (i, j) is dense output (2i+1, 2j+1)
        // of the (1, 1)-padded dense pass.
        let strided: Vec<Vec<Vec<f32>>> = conv.forward(&x, 2, None).unwrap().get(0).unwrap().to_vec3().unwrap();
        for ch in 0..c {
            for i in 0..5 {
                for j in 0..5 {
                    let want = dense[ch][2 * i + 1][2 * j + 1];
                    assert!((strided[ch][i][j] - want).abs() < 1e-5, "({ch},{i},{j}) {} vs {want}", strided[ch][i][j]);
                }
            }
        }
        // And the direct convolution agrees with candle's grouped conv2d.
        let filters = Tensor::cat(&conv.taps, 0).unwrap(); // (9, C, 1, 1)
        let filters =
            filters.reshape((9, c)).unwrap().t().unwrap().contiguous().unwrap().reshape((c, 1, 3, 3)).unwrap();
        let grouped = x.conv2d(&filters, 1, 1, 1, c).unwrap().get(0).unwrap().to_vec3::<f32>().unwrap();
        for ch in 0..c {
            for i in 0..10 {
                for j in 0..10 {
                    assert!((grouped[ch][i][j] - dense[ch][i][j]).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn bilinear_resize_reads_at_r_times_ratio() {
        let planes =
            Planes { height: 2, width: 2, values: vec![0., 0., 0., 10., 10., 10., 20., 20., 20., 30., 30., 30.] };
        let up = planes.resize_bilinear(4, 4);
        // Row 0: x at 0, 0.5, 1, 1.5 (clamped to the last column): 0, 5, 10, 10.
        let red: Vec<f32> = up.values.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(&red[..4], &[0., 5., 10., 10.]);
        assert_eq!(&red[4..8], &[10., 15., 20., 20.]);
        assert_eq!(&red[12..16], &[20., 25., 30., 30.]);
    }

    #[test]
    fn pad_to_square_centres_with_the_rounded_half_after() {
        let planes = Planes { height: 1, width: 4, values: vec![1.0; 12] };
        let square = planes.pad_to_square(true);
        let rows: Vec<f32> = square.values.chunks_exact(12).map(|row| row[0]).collect();
        // diff 3: round(1.5) = 2 rows after, 1 before.
        assert_eq!(rows, vec![0.0, 1.0, 0.0, 0.0]);
        let rows: Vec<f32> = planes.pad_to_square(false).values.chunks_exact(12).map(|row| row[0]).collect();
        assert_eq!(rows, vec![1.0, 0.0, 0.0, 0.0]);
    }
}
