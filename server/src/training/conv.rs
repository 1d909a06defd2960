//! The CNN's convolution blocks on the CPU, channels-last: the convolution is an `im2col`
//! (every output pixel's receptive field copied into one row) followed by one matrix product
//! with the weights, and ReLU with the 2x2 max-pool is a single fused operation.
//!
//! Candle 0.11's own CPU `conv2d` backward computes the input gradient as a transposed
//! convolution and the weight gradient as a second convolution over reshuffled copies, which
//! made the Siamese CNN's training step about 11x slower than PyTorch's (now about 3x). Here the backward is
//! the matrix product's (two more products, Candle's `gemm`, in [`super::dense`]) plus a
//! `col2im` scatter-add; the first layer's input gradient is never computed because the
//! images are not variables.
//! The results are the same function as the channels-first path in `nets` (checked against
//! PyTorch's gradients and against that path in the tests).

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::dense::{dense, Activation};
use super::nets::same_padding;

/// The contiguous f32 values of a CPU tensor's storage.
pub(super) fn values<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        bail!("{op}: f32 values expected");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => bail!("{op}: a contiguous tensor expected"),
    }
}

/// `n` zeros, written by the caller's thread rather than asked of the allocator as zeroed
/// memory: for buffers this large jemalloc gets zeroed memory by handing pages back to the
/// kernel and faulting them in again, which cost more than the writes.
fn zeros(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0.0);
    v
}

/// Where a 'same'-padded convolution reads: input (n, h, w, c) channels-last, a `k` x `k`
/// kernel with `stride`, output `ho` x `wo`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    stride: usize,
    top: usize,
    left: usize,
    ho: usize,
    wo: usize,
}

impl Window {
    fn new((n, h, w, c): (usize, usize, usize, usize), k: usize, stride: usize) -> Self {
        let (top, _) = same_padding(h, k, stride);
        let (left, _) = same_padding(w, k, stride);
        Window { n, h, w, c, k, stride, top, left, ho: h.div_ceil(stride), wo: w.div_ceil(stride) }
    }

    /// Length of one im2col row: the kernel's pixels × channels, in (ky, kx, c) order.
    fn row(&self) -> usize {
        self.k * self.k * self.c
    }

    /// For output row `oy`/column `ox` and kernel row `ky`: the input row, and the span of
    /// kernel columns that fall inside the image with the input column of the first one.
    /// `None` when the kernel row lies in the padding.
    fn span(&self, oy: usize, ox: usize, ky: usize) -> Option<(usize, usize, usize, usize)> {
        let iy = (oy * self.stride + ky).checked_sub(self.top).filter(|&iy| iy < self.h)?;
        // The padded column where the kernel starts; kernel column kx reads unpadded column
        // x0 + kx - left, inside the image for kx in [left - x0, w + left - x0).
        let x0 = ox * self.stride;
        let kx_start = self.left.saturating_sub(x0);
        let kx_end = (self.w + self.left).saturating_sub(x0).min(self.k);
        (kx_start < kx_end).then(|| (iy, kx_start, kx_end, x0 + kx_start - self.left))
    }

    /// Calls `f(output pixel, kernel row offset in the im2col row, input offset, length)` for
    /// every contiguous run the image (one of `n`) shares with an im2col row.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        for oy in 0..self.ho {
            for ox in 0..self.wo {
                let pixel = oy * self.wo + ox;
                for ky in 0..self.k {
                    if let Some((iy, kx_start, kx_end, ix)) = self.span(oy, ox, ky) {
                        let col = (ky * self.k + kx_start) * self.c;
                        let input = (iy * self.w + ix) * self.c;
                        f(pixel, col, input, (kx_end - kx_start) * self.c);
                    }
                }
            }
        }
    }
}

/// Channels-last input (n, h, w, c) → (n·ho·wo, k·k·c) patches of a 'same' convolution.
struct Im2Col {
    k: usize,
    stride: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "facesim-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let win = Window::new(layout.shape().dims4()?, self.k, self.stride);
        let input = values(storage, layout, self.name())?;
        let (image_in, image_out) = (win.h * win.w * win.c, win.ho * win.wo * win.row());
        let mut out = zeros(win.n * image_out);
        out.par_chunks_mut(image_out).zip(input.par_chunks(image_in)).for_each(|(out, image)| {
            win.for_each_run(|pixel, col, from, len| {
                let row = pixel * win.row() + col;
                out[row..row + len].copy_from_slice(&image[from..from + len]);
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((win.n * win.ho * win.wo, win.row()))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let win = Window::new(arg.dims4()?, self.k, self.stride);
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im(win))?))
    }
}

/// The adjoint of [`Im2Col`]: every patch value added back to the input pixel it came from.
struct Col2Im(Window);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "facesim-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let win = self.0;
        let cols = values(storage, layout, self.name())?;
        let (image_in, image_out) = (win.h * win.w * win.c, win.ho * win.wo * win.row());
        if cols.len() != win.n * image_out {
            bail!("{}: {} values for {win:?}", self.name(), cols.len());
        }
        let mut out = zeros(win.n * image_in);
        out.par_chunks_mut(image_in).zip(cols.par_chunks(image_out)).for_each(|(image, cols)| {
            win.for_each_run(|pixel, col, to, len| {
                let row = pixel * win.row() + col;
                for (d, s) in image[to..to + len].iter_mut().zip(&cols[row..row + len]) {
                    *d += s;
                }
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((win.n, win.h, win.w, win.c))))
    }
}

/// ReLU then 2x2 max-pool with stride 2 on channels-last (n, h, w, c), h and w even. The
/// gradient goes, whole, to the first maximum of each window when it is positive (as
/// PyTorch's `max_pool2d` after `relu`).
struct ReluPool;

impl ReluPool {
    /// Visits every window: `f(output index, input indices of its four pixels)`.
    fn windows(dims: (usize, usize, usize, usize), mut f: impl FnMut(usize, [usize; 4])) {
        let (_, h, w, c) = dims;
        let image = h * w * c;
        let (ph, pw) = (h / 2, w / 2);
        let mut out = 0;
        for py in 0..ph {
            for px in 0..pw {
                let origin = ((2 * py) * w + 2 * px) * c;
                for ch in 0..c {
                    let a = origin + ch;
                    f(out, [a, a + c, a + w * c, a + w * c + c]);
                    out += 1;
                }
            }
        }
        debug_assert_eq!(out * 4, image);
    }

    fn check(dims: (usize, usize, usize, usize)) -> Result<()> {
        if !dims.1.is_multiple_of(2) || !dims.2.is_multiple_of(2) {
            bail!("2x2 pooling needs an even height and width, got {dims:?}");
        }
        Ok(())
    }
}

impl CustomOp1 for ReluPool {
    fn name(&self) -> &'static str {
        "facesim-relu-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims4()?;
        ReluPool::check(dims)?;
        let (n, h, w, c) = dims;
        let input = values(storage, layout, self.name())?;
        let (image_in, image_out) = (h * w * c, h * w * c / 4);
        let mut out = zeros(n * image_out);
        out.par_chunks_mut(image_out).zip(input.par_chunks(image_in)).for_each(|(out, x)| {
            ReluPool::windows(dims, |o, [a, b, c, d]| out[o] = x[a].max(x[b]).max(x[c]).max(x[d]).max(0.0));
        });
        Ok((CpuStorage::F32(out), Shape::from((n, h / 2, w / 2, c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad_res.contiguous()?, &ReluPoolGrad)?))
    }
}

/// (input of [`ReluPool`], gradient of its output) → gradient of its input.
struct ReluPoolGrad;

impl CustomOp2 for ReluPoolGrad {
    fn name(&self) -> &'static str {
        "facesim-relu-pool-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims4()?;
        ReluPool::check(dims)?;
        let (n, h, w, c) = dims;
        if l2.shape().dims4()? != (n, h / 2, w / 2, c) {
            bail!("{}: gradient of shape {:?} for input {dims:?}", self.name(), l2.shape());
        }
        let (input, grad) = (values(s1, l1, self.name())?, values(s2, l2, self.name())?);
        let (image_in, image_out) = (h * w * c, h * w * c / 4);
        let mut out = zeros(n * image_in);
        out.par_chunks_mut(image_in).zip(input.par_chunks(image_in)).zip(grad.par_chunks(image_out)).for_each(
            |((out, x), g)| {
                ReluPool::windows(dims, |o, window| {
                    let mut best = window[0];
                    for &i in &window[1..] {
                        if x[i] > x[best] {
                            best = i;
                        }
                    }
                    if x[best] > 0.0 {
                        out[best] = g[o];
                    }
                });
            },
        );
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// One block of the CNN on channels-last input (n, h, w, c): 'same' convolution with `weight`
/// (outputs × c × k × k, the layout models are saved in) and `bias`, ReLU, 2x2 max-pool.
pub fn conv_relu_pool(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let (outputs, _, k, _) = weight.dims4()?;
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    let patches = if k == 1 && stride == 1 {
        x.reshape((n * h * w, c))?
    } else {
        x.contiguous()?.apply_op1(Im2Col { k, stride })?
    };
    // (outputs, ky, kx, c): the order of an im2col row.
    let kernel = weight.permute((0, 2, 3, 1))?.reshape((outputs, k * k * c))?;
    let y = dense(&patches, &kernel, bias, Activation::Identity)?;
    y.reshape((n, ho, wo, outputs))?.apply_op1(ReluPool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn sines(shape: &[usize], a: f64, b: f64) -> Var {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (a * i as f64 + b).sin() as f32).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 2e-5 * scale, "{what}[{i}]: {x} vs {y}");
        }
    }

    #[test]
    fn im2col_and_col2im_are_adjoint_and_match_candles_convolution() {
        // <im2col(x), g> = <x, col2im(g)> for every x, g: the gradient is the exact adjoint.
        for (h, w, k, stride) in [(7, 5, 3, 1), (16, 16, 9, 2), (6, 8, 5, 2), (4, 4, 1, 2)] {
            let x = sines(&[2, h, w, 3], 0.31, 0.2).as_tensor().clone();
            let cols = x.apply_op1_no_bwd(&Im2Col { k, stride }).unwrap();
            let g = sines(cols.dims(), 0.17, 0.9).as_tensor().clone();
            let back = g.apply_op1_no_bwd(&Col2Im(Window::new((2, h, w, 3), k, stride))).unwrap();
            let lhs = (&cols * &g).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            let rhs = (&x * &back).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!((lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0), "{h}x{w} k{k} s{stride}: {lhs} vs {rhs}");

            // The patches times the weights are candle's own 'same' convolution.
            let weight = sines(&[4, 3, k, k], 0.23, 0.5).as_tensor().clone();
            let (top, bottom) = same_padding(h, k, stride);
            let (left, right) = same_padding(w, k, stride);
            let nchw = x.permute((0, 3, 1, 2)).unwrap();
            let reference = nchw
                .pad_with_zeros(2, top, bottom)
                .unwrap()
                .pad_with_zeros(3, left, right)
                .unwrap()
                .conv2d(&weight, 0, stride, 1, 1)
                .unwrap()
                .permute((0, 2, 3, 1))
                .unwrap();
            let kernel = weight.permute((0, 2, 3, 1)).unwrap().reshape((4, k * k * 3)).unwrap();
            let ours = cols.matmul(&kernel.t().unwrap()).unwrap().reshape(reference.shape()).unwrap();
            close(&ours, &reference, &format!("conv {h}x{w} k{k} s{stride}"));
        }
    }

    #[test]
    fn relu_pool_sends_the_gradient_to_the_first_positive_maximum() {
        // One image, one channel, 2x4: windows [1 4; 2 3] and [-1 -2; -3 -4].
        let x = Var::from_tensor(
            &Tensor::new(&[1f32, 4.0, -1.0, -2.0, 2.0, 3.0, -3.0, -4.0], &Device::Cpu)
                .unwrap()
                .reshape((1, 2, 4, 1))
                .unwrap(),
        )
        .unwrap();
        let y = x.as_tensor().apply_op1(ReluPool).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![4.0, 0.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(g, vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let odd = Tensor::zeros((1, 3, 4, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(odd.apply_op1(ReluPool).is_err(), "an odd height is refused");
    }
}
