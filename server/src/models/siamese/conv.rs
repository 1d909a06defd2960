//! The CNN's blocks on the CPU, channels-last: a 'same' convolution (every output pixel's
//! receptive field copied into one row, `im2col`, then one matrix product with the kernel),
//! ReLU and the 2x2 max-pool, as one candle operation.
//!
//! Candle 0.11's own CPU `conv2d` backward computes the input gradient as a transposed
//! convolution and the weight gradient as a second convolution over reshuffled copies, which
//! made the Siamese CNN's training step about 11x slower than PyTorch's. Here a block works a
//! few images at a time in buffers that stay in cache: forward copies their patches, multiplies
//! (the `gemm` crate, one product per task) and pools; backward puts the pooled gradient back
//! on each window's winner and computes the kernel gradient (gradientᵀ × patches, the patches
//! copied again), the bias gradient and the input gradient (gradient × kernel, scattered back
//! with `col2im`) in the same pass. Nothing the size of the batch's patches or pre-pool values
//! is kept, and the first layer's input gradient is never computed because the images are not
//! variables. The results are the same function as the channels-first path in `nets` (checked
//! against candle's convolution here, and against PyTorch's gradients and that path in the
//! tests).

use std::sync::OnceLock;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::storage::values;

/// 2x2 max-pooling with stride 2 whose gradient goes, whole, to the window's maximum.
pub fn max_pool_2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h / 2, 2, w / 2, 2))?.max(5)?.max(3)
}

/// Zero padding of a 'same' convolution: (before, after) for one side.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
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

/// Copies the receptive field of every output pixel of `images` (whole channels-last images
/// of `win`'s size) into one row of `cols` each. Padding positions are never written: `cols`
/// must hold zeros there, and stays so when it is reused for other images of the same size.
fn im2col(win: &Window, images: &[f32], cols: &mut [f32]) {
    let (image_in, image_cols) = (win.h * win.w * win.c, win.ho * win.wo * win.row());
    for (image, cols) in images.chunks_exact(image_in).zip(cols.chunks_exact_mut(image_cols)) {
        win.for_each_run(|pixel, col, from, len| {
            let row = pixel * win.row() + col;
            cols[row..row + len].copy_from_slice(&image[from..from + len]);
        });
    }
}

/// The adjoint of [`im2col`]: every patch value added back to the input pixel it came from.
fn col2im(win: &Window, cols: &[f32], images: &mut [f32]) {
    let (image_in, image_cols) = (win.h * win.w * win.c, win.ho * win.wo * win.row());
    for (image, cols) in images.chunks_exact_mut(image_in).zip(cols.chunks_exact(image_cols)) {
        win.for_each_run(|pixel, col, to, len| {
            let row = pixel * win.row() + col;
            for (d, s) in image[to..to + len].iter_mut().zip(&cols[row..row + len]) {
                *d += s;
            }
        });
    }
}

/// Rows (output pixels) a matrix product of a convolution should at least have: fewer images
/// at a time make products too small to run at full speed, more make the patch buffer outgrow
/// the caches.
const MIN_PRODUCT_ROWS: usize = 1024;

/// How a convolution's images are shared out: contiguous ranges of `per_task` images, one
/// task each, each worked through `per_product` images at a time, and the threads one product
/// may use (more than one only when there are fewer images than threads, e.g. one face being
/// embedded).
#[derive(Debug, Clone, Copy)]
struct Plan {
    per_task: usize,
    per_product: usize,
    parallelism: gemm::Parallelism,
}

impl Plan {
    fn new(images: usize, pixels: usize) -> Self {
        let threads = rayon::current_num_threads().max(1);
        // A few tasks per thread, so a core slowed by other work does not hold up the step.
        let tasks = images.clamp(1, 4 * threads);
        let per_task = images.div_ceil(tasks).max(1);
        let per_product = MIN_PRODUCT_ROWS.div_ceil(pixels.max(1)).clamp(1, per_task);
        let inner = threads / images.max(1);
        let parallelism = if inner > 1 { gemm::Parallelism::Rayon(inner) } else { gemm::Parallelism::None };
        Plan { per_task, per_product, parallelism }
    }
}

/// `dst (m × n) = [dst +] lhs (m × k) · rhs (k × n)`, each operand given by its column and row
/// strides; `accumulate` adds to what `dst` holds.
#[allow(clippy::too_many_arguments)]
fn product(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    (lhs_cs, lhs_rs): (usize, usize),
    rhs: &[f32],
    (rhs_cs, rhs_rs): (usize, usize),
    parallelism: gemm::Parallelism,
) {
    // The bounds gemm will touch, checked here because it only takes pointers.
    let last = |cs: usize, rs: usize, rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(dst.len() > last(1, n, m, n), "product: destination too short");
    assert!(lhs.len() > last(lhs_cs, lhs_rs, m, k), "product: left operand too short");
    assert!(rhs.len() > last(rhs_cs, rhs_rs, k, n), "product: right operand too short");
    // SAFETY: every element gemm reads or writes lies inside the slices (checked above), and
    // `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The shapes a block works with, read and checked from its operands.
struct Shapes {
    win: Window,
    outputs: usize,
    /// Values of one input image, of its patches, of its convolution's output and of its
    /// pooled output.
    image_in: usize,
    image_cols: usize,
    image_out: usize,
    image_pooled: usize,
    plan: Plan,
}

impl Shapes {
    fn new(
        op: &str,
        input: (usize, usize, usize, usize),
        kernel: (usize, usize),
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        let win = Window::new(input, k, stride);
        let (outputs, row) = kernel;
        if row != win.row() {
            bail!("{op}: kernel rows of {row} values for {k}x{k} windows over {} channels", win.c);
        }
        if !win.ho.is_multiple_of(2) || !win.wo.is_multiple_of(2) {
            bail!("{op}: 2x2 pooling needs an even height and width, the convolution gives {}x{}", win.ho, win.wo);
        }
        let pixels = win.ho * win.wo;
        Ok(Shapes {
            win,
            outputs,
            image_in: win.h * win.w * win.c,
            image_cols: pixels * win.row(),
            image_out: pixels * outputs,
            image_pooled: pixels * outputs / 4,
            plan: Plan::new(win.n, pixels),
        })
    }

    /// A 1x1 kernel with stride 1: the patches are the images themselves.
    fn pointwise(&self) -> bool {
        self.win.k == 1 && self.win.stride == 1
    }

    /// A buffer for one product's patches (zeros at the padding, see [`im2col`]).
    fn patch_buffer(&self) -> Vec<f32> {
        if self.pointwise() {
            Vec::new()
        } else {
            zeros(self.plan.per_product * self.image_cols)
        }
    }

    /// The patches of `images`, copied into `buffer` unless they are the images themselves.
    fn patches<'a>(&self, images: &'a [f32], buffer: &'a mut [f32]) -> &'a [f32] {
        if self.pointwise() {
            return images;
        }
        let cols = &mut buffer[..images.len() / self.image_in * self.image_cols];
        im2col(&self.win, images, cols);
        cols
    }

    /// For every pooled value of `images` images, in order: `f(index in the convolution's
    /// output of the window's top-left pixel, its pooled index)`; the window's other pixels
    /// are + outputs, + wo·outputs and + (wo + 1)·outputs.
    fn for_each_window(&self, images: usize, mut f: impl FnMut(usize, usize)) {
        let (o, wo) = (self.outputs, self.win.wo);
        let mut pooled = 0;
        for image in 0..images {
            for py in 0..self.win.ho / 2 {
                for px in 0..wo / 2 {
                    let origin = image * self.image_out + (2 * py * wo + 2 * px) * o;
                    for channel in 0..o {
                        f(origin + channel, pooled);
                        pooled += 1;
                    }
                }
            }
        }
    }

    /// Offsets of a pooling window's four pixels from its top-left one, in [`Block::winners`]' order.
    fn window_offsets(&self) -> [usize; 4] {
        let (o, wo) = (self.outputs, self.win.wo);
        [0, o, wo * o, wo * o + o]
    }
}

/// Marks a pooled value whose window has no positive maximum: no gradient goes back through it.
const NO_GRADIENT: u8 = u8::MAX;

/// One block of the CNN on channels-last input (n, h, w, c) → (n, ho/2, wo/2, outputs): a
/// 'same' convolution with bias (the kernel as (outputs, k·k·c) rows in im2col order), ReLU
/// and a 2x2 max-pool with stride 2, as one operation. Each task copies a few images' patches
/// into a buffer of its own that stays in cache, multiplies it with the kernel and pools the
/// result; only the pooled values and, for backward, which pixel of each window won are kept.
/// Backward copies the patches again rather than keep every patch and pre-pool value of the
/// batch (for the CNN's first two layers at batch 100 that would be 2.2 GB), and computes all
/// three gradients in the same pass over the images.
struct Block {
    k: usize,
    stride: usize,
    /// For every pooled value, which pixel of its window gave it (0-3 as in
    /// [`Shapes::window_offsets`]: the first maximum, as PyTorch's `max_pool2d`), or
    /// [`NO_GRADIENT`]. Written by forward for backward.
    winners: OnceLock<Vec<u8>>,
}

impl CustomOp3 for Block {
    fn name(&self) -> &'static str {
        "facesim-conv-relu-pool"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = Shapes::new(self.name(), xl.shape().dims4()?, kl.shape().dims2()?, self.k, self.stride)?;
        if bl.shape().dims1()? != s.outputs {
            bail!("{}: bias {:?} for {} outputs", self.name(), bl.shape(), s.outputs);
        }
        let (x, kernel, bias) =
            (values(xs, xl, self.name())?, values(ks, kl, self.name())?, values(bs, bl, self.name())?);
        let (win, plan, offsets) = (s.win, s.plan, s.window_offsets());
        let mut out = zeros(win.n * s.image_pooled);
        let mut winners = vec![NO_GRADIENT; win.n * s.image_pooled];
        let task_pooled = plan.per_task * s.image_pooled;
        out.par_chunks_mut(task_pooled)
            .zip(winners.par_chunks_mut(task_pooled))
            .zip(x.par_chunks(plan.per_task * s.image_in))
            .for_each(|((out, winners), x)| {
                let mut cols = s.patch_buffer();
                let mut conv = zeros(plan.per_product * s.image_out);
                let product_pooled = plan.per_product * s.image_pooled;
                for ((out, winners), x) in out
                    .chunks_mut(product_pooled)
                    .zip(winners.chunks_mut(product_pooled))
                    .zip(x.chunks(plan.per_product * s.image_in))
                {
                    let images = x.len() / s.image_in;
                    let conv = &mut conv[..images * s.image_out];
                    conv.chunks_exact_mut(s.outputs).for_each(|row| row.copy_from_slice(bias));
                    let patches = s.patches(x, &mut cols);
                    let dims = (images * win.ho * win.wo, s.outputs, win.row());
                    product(dims, conv, true, patches, (1, win.row()), kernel, (win.row(), 1), plan.parallelism);
                    s.for_each_window(images, |first, pooled| {
                        let mut best = 0;
                        for (i, offset) in offsets.iter().enumerate().skip(1) {
                            if conv[first + offset] > conv[first + offsets[best]] {
                                best = i;
                            }
                        }
                        let value = conv[first + offsets[best]];
                        out[pooled] = value.max(0.0);
                        if value > 0.0 {
                            winners[pooled] = best as u8;
                        }
                    });
                }
            });
        if self.winners.set(winners).is_err() {
            bail!("{}: one operation ran forward twice", self.name());
        }
        Ok((CpuStorage::F32(out), Shape::from((win.n, win.ho / 2, win.wo / 2, s.outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (want_x, want_kernel, want_bias) = (x.track_op(), kernel.track_op(), bias.track_op());
        if !(want_x || want_kernel || want_bias) {
            return Ok((None, None, None));
        }
        let Some(winners) = self.winners.get() else { bail!("{}: backward before forward", self.name()) };
        let grad = grad_res.contiguous()?;
        let s = Shapes::new(self.name(), x.dims4()?, kernel.dims2()?, self.k, self.stride)?;
        let (win, plan, offsets) = (s.win, s.plan, s.window_offsets());
        if grad.dims4()? != (win.n, win.ho / 2, win.wo / 2, s.outputs) || winners.len() != win.n * s.image_pooled {
            bail!("{}: output gradient {:?} for input {:?}", self.name(), grad.shape(), x.shape());
        }
        let (xs, xl) = x.storage_and_layout();
        let (ks, kl) = kernel.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ks), Storage::Cpu(gs)) = (&*xs, &*ks, &*gs) else {
            bail!("{}: CPU tensors expected", self.name());
        };
        let (x_values, kernel_values, g) =
            (values(xs, xl, self.name())?, values(ks, kl, self.name())?, values(gs, gl, self.name())?);

        let mut gx = if want_x { zeros(win.n * s.image_in) } else { Vec::new() };
        let tasks = win.n.div_ceil(plan.per_task);
        let gx_parts: Vec<Option<&mut [f32]>> = if want_x {
            gx.chunks_mut(plan.per_task * s.image_in).map(Some).collect()
        } else {
            (0..tasks).map(|_| None).collect()
        };
        let kernel_len = s.outputs * win.row();
        let sums = gx_parts
            .into_par_iter()
            .enumerate()
            .map(|(task, mut gx)| {
                let mut gk = if want_kernel { zeros(kernel_len) } else { Vec::new() };
                let mut gb = vec![0f32; s.outputs];
                let mut cols = s.patch_buffer();
                let mut grad_cols = if s.pointwise() { Vec::new() } else { zeros(plan.per_product * s.image_cols) };
                let mut gz = zeros(plan.per_product * s.image_out);
                let task_images = task * plan.per_task..((task + 1) * plan.per_task).min(win.n);
                for first in task_images.clone().step_by(plan.per_product) {
                    let images = plan.per_product.min(task_images.end - first);
                    let pixels = images * win.ho * win.wo;
                    // The gradient before the pool, then before ReLU: the pooled gradient on
                    // each window's winner, nothing elsewhere.
                    let gz = &mut gz[..images * s.image_out];
                    gz.fill(0.0);
                    let pooled = first * s.image_pooled;
                    s.for_each_window(images, |top_left, i| {
                        let winner = winners[pooled + i];
                        if winner != NO_GRADIENT {
                            let value = g[pooled + i];
                            gz[top_left + offsets[usize::from(winner)]] = value;
                            gb[i % s.outputs] += value;
                        }
                    });
                    if want_kernel {
                        let x = &x_values[first * s.image_in..(first + images) * s.image_in];
                        let patches = s.patches(x, &mut cols);
                        let dims = (s.outputs, win.row(), pixels);
                        product(dims, &mut gk, true, gz, (s.outputs, 1), patches, (1, win.row()), plan.parallelism);
                    }
                    if let Some(gx) = gx.as_deref_mut() {
                        let offset = (first - task_images.start) * s.image_in;
                        let gx = &mut gx[offset..offset + images * s.image_in];
                        let dims = (pixels, win.row(), s.outputs);
                        if s.pointwise() {
                            product(
                                dims,
                                gx,
                                false,
                                gz,
                                (1, s.outputs),
                                kernel_values,
                                (1, win.row()),
                                plan.parallelism,
                            );
                        } else {
                            let grad_cols = &mut grad_cols[..images * s.image_cols];
                            let (lhs, rhs) = ((1, s.outputs), (1, win.row()));
                            product(dims, grad_cols, false, gz, lhs, kernel_values, rhs, plan.parallelism);
                            col2im(&win, grad_cols, gx);
                        }
                    }
                }
                (gk, gb)
            })
            .reduce_with(|(mut gk, mut gb), (gk2, gb2)| {
                gk.iter_mut().zip(&gk2).for_each(|(a, b)| *a += b);
                gb.iter_mut().zip(&gb2).for_each(|(a, b)| *a += b);
                (gk, gb)
            });
        let (gk, gb) = sums.unwrap_or_else(|| (zeros(kernel_len), zeros(s.outputs)));
        let device = x.device();
        let gx = if want_x { Some(Tensor::from_vec(gx, x.shape(), device)?) } else { None };
        let gk = if want_kernel { Some(Tensor::from_vec(gk, (s.outputs, win.row()), device)?) } else { None };
        let gb = if want_bias { Some(Tensor::from_vec(gb, s.outputs, device)?) } else { None };
        Ok((gx, gk, gb))
    }
}

/// One block of the CNN on channels-last input (n, h, w, c): 'same' convolution with `weight`
/// (outputs × c × k × k, the layout models are saved in) and `bias`, ReLU, 2x2 max-pool.
pub fn conv_relu_pool(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize) -> Result<Tensor> {
    let (_, _, _, c) = x.dims4()?;
    let (outputs, _, k, _) = weight.dims4()?;
    // (outputs, ky, kx, c): the order of an im2col row.
    let kernel = weight.permute((0, 2, 3, 1))?.reshape((outputs, k * k * c))?;
    let block = Block { k, stride, winners: OnceLock::new() };
    x.contiguous()?.apply_op3(&kernel.contiguous()?, &bias.contiguous()?, block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

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

    /// Candle's own 'same' convolution with bias on channels-last `x`, as the reference.
    fn candle_conv(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize) -> Tensor {
        let (_, h, w, _) = x.dims4().unwrap();
        let k = weight.dim(2).unwrap();
        let (top, bottom) = same_padding(h, k, stride);
        let (left, right) = same_padding(w, k, stride);
        x.permute((0, 3, 1, 2))
            .unwrap()
            .pad_with_zeros(2, top, bottom)
            .unwrap()
            .pad_with_zeros(3, left, right)
            .unwrap()
            .conv2d(weight, 0, stride, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, (), 1, 1)).unwrap())
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap()
    }

    /// The fused block on channels-last `x` with a weight in saved (outputs, c, k, k) layout.
    fn fused_block(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize) -> Tensor {
        conv_relu_pool(x, weight, bias, stride).unwrap()
    }

    #[test]
    fn im2col_and_col2im_are_adjoint() {
        // <im2col(x), g> = <x, col2im(g)> for every x, g: the gradient is the exact adjoint.
        for (h, w, k, stride) in [(7, 5, 3, 1), (16, 16, 9, 2), (6, 8, 5, 2), (4, 4, 1, 2)] {
            let win = Window::new((2, h, w, 3), k, stride);
            let x: Vec<f32> = (0..2 * h * w * 3).map(|i| (0.31 * i as f32 + 0.2).sin()).collect();
            let mut cols = vec![0.0; 2 * win.ho * win.wo * win.row()];
            im2col(&win, &x, &mut cols);
            let g: Vec<f32> = (0..cols.len()).map(|i| (0.17 * i as f32 + 0.9).sin()).collect();
            let mut back = vec![0.0; x.len()];
            col2im(&win, &g, &mut back);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>();
            let (lhs, rhs) = (dot(&cols, &g), dot(&x, &back));
            assert!((lhs - rhs).abs() < 1e-6 * lhs.abs().max(1.0), "{h}x{w} k{k} s{stride}: {lhs} vs {rhs}");
            assert!(lhs.abs() > 1e-3, "{h}x{w} k{k} s{stride}: not a trivial product");
        }
    }

    #[test]
    fn the_fused_block_matches_candles_convolution_relu_and_pool_forward_and_backward() {
        // Nine images: several tasks, several images per product and a shorter last one; a
        // single image (one task, the product over several threads); 1x1 kernels with and
        // without a stride (the pointwise path reads the images as their own patches).
        let cases =
            [(9, 8, 6, 3, 1), (9, 16, 16, 9, 2), (9, 12, 8, 5, 2), (1, 6, 8, 5, 1), (3, 4, 4, 1, 2), (5, 4, 6, 1, 1)];
        for (n, h, w, k, stride) in cases {
            let x = sines(&[n, h, w, 3], 0.31, 0.2);
            let weight = sines(&[4, 3, k, k], 0.23, 0.5);
            let bias = sines(&[4], 1.1, 0.3);
            let what = format!("{n} images {h}x{w} k{k} s{stride}");
            let ours = fused_block(x.as_tensor(), weight.as_tensor(), bias.as_tensor(), stride);
            let conv = candle_conv(x.as_tensor(), weight.as_tensor(), bias.as_tensor(), stride);
            let reference = max_pool_2x2(&conv.permute((0, 3, 1, 2)).unwrap().relu().unwrap())
                .unwrap()
                .permute((0, 2, 3, 1))
                .unwrap();
            close(&ours, &reference, &format!("output, {what}"));
            // A loss that weights every output differently, so every gradient entry matters.
            let probe = sines(reference.dims(), 0.77, 0.1);
            let loss = |y: &Tensor| (y * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            let (g_ours, g_reference) = (loss(&ours), loss(&reference));
            for (name, v) in [("input", &x), ("weight", &weight), ("bias", &bias)] {
                let (a, b) = (g_ours.get(v.as_tensor()).expect(name), g_reference.get(v.as_tensor()).expect(name));
                close(a, b, &format!("{name} gradient, {what}"));
            }
        }
    }

    #[test]
    fn plans_share_images_out_in_cache_sized_products() {
        let threads = rayon::current_num_threads();
        // The CNN's second layer at batch 100: 200 images of 32x32 outputs.
        let plan = Plan::new(200, 32 * 32);
        assert_eq!(plan.per_product, 1);
        assert!(plan.per_task * (4 * threads).min(200) >= 200);
        assert!(matches!(plan.parallelism, gemm::Parallelism::None));
        // The fourth layer: 8x8 outputs, so 16 images a product when a task has that many.
        let plan = Plan::new(200, 8 * 8);
        assert_eq!(plan.per_product, 16.min(plan.per_task));
        // One face: one task, the product over all threads.
        let plan = Plan::new(1, 32 * 32);
        assert_eq!((plan.per_task, plan.per_product), (1, 1));
        assert_eq!(matches!(plan.parallelism, gemm::Parallelism::None), threads == 1);
    }

    #[test]
    fn the_pool_sends_the_gradient_to_the_first_positive_maximum() {
        // One image, one channel, 2x4, through a 1x1 kernel of weight 1 and no bias (the block
        // is then ReLU and the pool): windows [1 4; 2 3], [-1 -2; -3 -4]; then [5 5; 1 5]
        // with a tie, whose gradient goes to the first 5 only (as PyTorch's).
        let x = Var::from_tensor(
            &Tensor::new(&[1f32, 4.0, -1.0, -2.0, 5.0, 5.0, 2.0, 3.0, -3.0, -4.0, 1.0, 5.0], &Device::Cpu)
                .unwrap()
                .reshape((1, 2, 6, 1))
                .unwrap(),
        )
        .unwrap();
        let (weight, bias) = (
            Tensor::ones((1, 1, 1, 1), DType::F32, &Device::Cpu).unwrap(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        );
        let y = conv_relu_pool(x.as_tensor(), &weight, &bias, 1).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![4.0, 0.0, 5.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(g, vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let odd = Tensor::zeros((1, 3, 4, 1), DType::F32, &Device::Cpu).unwrap();
        let error = conv_relu_pool(&odd, &weight, &bias, 1).unwrap_err().to_string();
        assert!(error.contains("even height and width"), "an odd height is refused: {error}");
    }
}
