//! A fully connected layer as one candle operation on the CPU: `act(x Wᵀ + b)`.
//!
//! Composed from candle's own operations the layer is a matrix product, a transposed view of
//! the weights, a broadcast addition and (for GAML) a tanh; backward then adds a zero-filled
//! gradient buffer per node, copies the transposed weight gradient back, spells tanh's
//! derivative as four whole-tensor passes, and always computes the input's gradient, also for
//! the CNN's first layer, whose input (the image patches, 200 x 64 x 64 rows of 243 values at
//! batch 100) is not a variable: a 0.8 GB product nobody reads. Here forward is one product
//! with the bias (and tanh) applied in place, and backward is tanh's derivative in one pass,
//! then only the products whose gradients are wanted. Same arithmetic as the composed form
//! (checked against it in the tests); other devices use the composed form.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::storage::values;

/// What follows the affine map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Tanh,
}

/// `act(x Wᵀ + b)` for `x` (rows × inputs), `w` (outputs × inputs, PyTorch's layout) and `b`
/// (outputs).
pub fn dense(x: &Tensor, w: &Tensor, b: &Tensor, activation: Activation) -> Result<Tensor> {
    if x.device().is_cpu() && x.rank() == 2 {
        return x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Dense(activation));
    }
    let y = x.broadcast_matmul(&w.t()?)?.broadcast_add(b)?;
    match activation {
        Activation::Identity => Ok(y),
        Activation::Tanh => y.tanh(),
    }
}

/// Rows of the output handled per task in the element-wise passes.
const ROWS_PER_TASK: usize = 64;

struct Dense(Activation);

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "facesim-dense"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, inputs) = xl.shape().dims2()?;
        let (outputs, w_inputs) = wl.shape().dims2()?;
        if w_inputs != inputs || bl.shape().dims1()? != outputs {
            bail!(
                "{}: input {:?}, weights {:?}, bias {:?} do not fit",
                self.name(),
                xl.shape(),
                wl.shape(),
                bl.shape()
            );
        }
        let bias = values(bs, bl, self.name())?;
        // The product through candle's own CPU kernel (gemm), with the weights read transposed.
        let product = xs.matmul(ws, (1, rows, outputs, inputs), xl, &wl.transpose(0, 1)?)?;
        let CpuStorage::F32(mut out) = product else { bail!("{}: f32 values expected", self.name()) };
        let activation = self.0;
        out.par_chunks_mut(outputs * ROWS_PER_TASK).for_each(|rows| {
            for row in rows.chunks_exact_mut(outputs) {
                match activation {
                    Activation::Identity => row.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
                    Activation::Tanh => row.iter_mut().zip(bias).for_each(|(v, b)| *v = tanh(*v + b)),
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The gradient before the activation.
        let gz = match self.0 {
            Activation::Identity => grad_res.contiguous()?,
            Activation::Tanh => grad_res.contiguous()?.apply_op2_no_bwd(res, &TanhGrad)?,
        };
        let (x_plain, w_plain) = (x.detach(), w.detach());
        let gx = if x.track_op() { Some(gz.matmul(&w_plain)?) } else { None };
        let gw = if w.track_op() { Some(gz.t()?.matmul(&x_plain)?) } else { None };
        let gb = if b.track_op() { Some(column_sums(&gz)?) } else { None };
        Ok((gx, gw, gb))
    }
}

/// The sums of the columns of a matrix (rows × columns): a bias's gradient. On the CPU the
/// rows are shared out over the threads (candle's own `sum(0)` runs on one thread, 5% of the
/// CNN's step in its first layer's 819,200 rows).
pub(super) fn column_sums(m: &Tensor) -> Result<Tensor> {
    if m.device().is_cpu() && m.rank() == 2 {
        m.contiguous()?.apply_op1_no_bwd(&ColumnSums)
    } else {
        m.sum(0)
    }
}

struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "facesim-column-sums"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, columns) = layout.shape().dims2()?;
        let values = values(storage, layout, self.name())?;
        let tasks = 4 * rayon::current_num_threads().max(1);
        let per_task = rows.div_ceil(tasks).max(1) * columns;
        let sums = match values.len() {
            0 => None,
            _ => values
                .par_chunks(per_task)
                .map(|part| {
                    let mut sums = vec![0f32; columns];
                    for row in part.chunks_exact(columns) {
                        sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                    }
                    sums
                })
                .reduce_with(|mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                }),
        };
        Ok((CpuStorage::F32(sums.unwrap_or_else(|| vec![0.0; columns])), Shape::from(columns)))
    }
}

/// tanh written so that a loop over it compiles to vector instructions. The C library's `tanhf`
/// is one call per value (with an `expm1f` inside), which took a tenth of a GAML step at 128
/// inputs. Here: the odd Taylor series through x¹⁵ for |x| < ½ (truncation error below 10⁻⁸ of
/// the value), 1 − 2/(e^{2|x|} + 1) above, with e^y by splitting y = k ln 2 + r, |r| ≤ ½ ln 2,
/// and a degree-7 Taylor polynomial for e^r; within 3 units in the last place of `f32::tanh`
/// (tested), odd, ±1 where `f32::tanh` is, NaN stays NaN.
#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
    // Taylor coefficients of tanh: 1, −1/3, 2/15, −17/315, 62/2835, −1382/155925, …
    const C3: f32 = -1.0 / 3.0;
    const C5: f32 = 2.0 / 15.0;
    const C7: f32 = -17.0 / 315.0;
    const C9: f32 = 62.0 / 2835.0;
    const C11: f32 = -1382.0 / 155_925.0;
    const C13: f32 = 21_844.0 / 6_081_075.0;
    const C15: f32 = -929_569.0 / 638_512_875.0;
    // ln 2 in two parts: the first has few enough bits that k · LN2_HI is exact for k ≤ 29.
    const LN2_HI: f32 = f32::from_bits(0x3F31_7200); // 0.693145751953125 exactly
    const LN2_LO: f32 = 1.428_606_8e-6;
    let a = x.abs().min(10.0);
    let a2 = a * a;
    let series = a * (1.0 + a2 * (C3 + a2 * (C5 + a2 * (C7 + a2 * (C9 + a2 * (C11 + a2 * (C13 + a2 * C15)))))));
    let y = 2.0 * a;
    // k = round(y / ln 2) by the float adder's own rounding: adding 1.5 · 2²³ leaves no bits
    // below the units (no rounding instruction or library call, which would stop vectorisation);
    // the integer k is then the low bits of the sum.
    const ROUNDER: f32 = 12_582_912.0;
    let shifted = y * std::f32::consts::LOG2_E + ROUNDER;
    let k = shifted - ROUNDER;
    let r = (y - k * LN2_HI) - k * LN2_LO;
    let e_r = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let two_to_k = f32::from_bits((shifted.to_bits() - ROUNDER.to_bits() + 127) << 23);
    let e_y = e_r * two_to_k;
    let magnitude = if a < 0.5 { series } else { 1.0 - 2.0 / (e_y + 1.0) };
    if x.is_nan() {
        x
    } else {
        magnitude.copysign(x)
    }
}

/// (gradient of tanh's output, tanh's output y) → gradient of its input: g (1 − y²).
struct TanhGrad;

impl CustomOp2 for TanhGrad {
    fn name(&self) -> &'static str {
        "facesim-tanh-grad"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, ys: &CpuStorage, yl: &Layout) -> Result<(CpuStorage, Shape)> {
        if gl.shape() != yl.shape() {
            bail!("{}: gradient {:?} for output {:?}", self.name(), gl.shape(), yl.shape());
        }
        let (g, y) = (values(gs, gl, self.name())?, values(ys, yl, self.name())?);
        let mut out = Vec::with_capacity(g.len());
        out.par_extend(g.par_iter().zip(y).map(|(g, y)| g * (1.0 - y * y)));
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn var(shape: (usize, usize), seed: f32) -> Var {
        let n = shape.0 * shape.1;
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.731 + seed).sin() * 0.8).collect();
        Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tolerance: f32, what: &str) {
        assert_eq!(a.shape(), b.shape(), "{what}");
        let (a, b): (Vec<f32>, Vec<f32>) =
            (a.flatten_all().unwrap().to_vec1().unwrap(), b.flatten_all().unwrap().to_vec1().unwrap());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= tolerance, "{what}: largest difference {worst}");
        assert!(a.iter().any(|v| v.abs() > 1e-3), "{what}: not all zero");
    }

    #[test]
    fn the_fused_layer_matches_candles_composed_layer_forward_and_backward() {
        for activation in [Activation::Tanh, Activation::Identity] {
            let (x, w) = (var((70, 33), 0.1), var((19, 33), 0.7));
            let b = Var::from_tensor(
                &Tensor::from_vec((0..19).map(|i| i as f32 * 0.05 - 0.4).collect(), 19, &Device::Cpu).unwrap(),
            )
            .unwrap();
            // A loss that weights every output differently, so every gradient entry matters.
            let weights = var((70, 19), 2.3);
            let fused = dense(x.as_tensor(), w.as_tensor(), b.as_tensor(), activation).unwrap();
            let mut composed =
                x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap().broadcast_add(b.as_tensor()).unwrap();
            if activation == Activation::Tanh {
                composed = composed.tanh().unwrap();
            }
            close(&fused, &composed, 1e-6, "output");
            let loss = |y: &Tensor| (y * weights.as_tensor()).unwrap().sqr().unwrap().sum_all().unwrap();
            let (g1, g2) = (loss(&fused).backward().unwrap(), loss(&composed).backward().unwrap());
            for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                let (a, c) = (g1.get(v.as_tensor()).expect(name), g2.get(v.as_tensor()).expect(name));
                close(a, c, 1e-4, &format!("{activation:?} gradient of {name}"));
            }
        }
    }

    #[test]
    fn the_vectorised_tanh_is_within_three_units_in_the_last_place_of_the_c_librarys() {
        let units = |ours: f32, exact: f32| (ours.to_bits() as i64 - exact.to_bits() as i64).abs();
        let mut worst = (0, 0f32);
        // Every 97th f32 from 1e-30 to beyond saturation, both signs, plus the branch's edges.
        let edges = [0.5f32, 0.499_999_97, 0.500_000_06, 9.0, 9.1, 10.0, 10.5, 1e-30, 1.0];
        let grid = (0x0DA2_4260u32..0x4130_0000).step_by(97).map(f32::from_bits);
        for x in grid.chain(edges).flat_map(|x| [x, -x]) {
            let (ours, exact) = (tanh(x), x.tanh());
            assert_eq!(ours.is_sign_negative(), exact.is_sign_negative(), "sign at {x}");
            let u = units(ours, exact);
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 3, "{} units in the last place at {}", worst.0, worst.1);
        for (x, expected) in
            [(0.0f32, 0.0f32), (9.5, 1.0), (-1e6, -1.0), (f32::INFINITY, 1.0), (f32::NEG_INFINITY, -1.0)]
        {
            assert_eq!(tanh(x), expected, "tanh({x})");
        }
        assert!(tanh(-0.0).is_sign_negative(), "tanh(−0) = −0");
        assert!(tanh(f32::NAN).is_nan(), "NaN stays NaN");
    }

    #[test]
    fn column_sums_are_candles_sum_over_rows() {
        for (rows, columns) in [(1, 3), (7, 1), (1000, 33), (0, 4)] {
            let m = var((rows, columns), 0.4);
            let ours = column_sums(m.as_tensor()).unwrap();
            let reference = m.as_tensor().sum(0).unwrap();
            assert_eq!(ours.dims(), &[columns]);
            if rows > 0 {
                close(&ours, &reference, 1e-3, &format!("{rows}x{columns}"));
            } else {
                assert!(ours.to_vec1::<f32>().unwrap().iter().all(|v| *v == 0.0), "no rows: zeros");
            }
        }
    }

    #[test]
    fn no_gradient_is_computed_for_an_input_that_is_not_a_variable() {
        let x = Tensor::from_vec((0..40).map(|i| i as f32 * 0.01).collect(), (8, 5), &Device::Cpu).unwrap();
        let (w, b) = (var((3, 5), 0.2), var((1, 3), 0.9));
        let b = b.as_tensor().reshape(3).unwrap();
        let y = dense(&x, w.as_tensor(), &b, Activation::Identity).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none(), "the input is not a variable");
        assert!(grads.get(w.as_tensor()).is_some());
        assert!(
            dense(&x, &w.as_tensor().t().unwrap().contiguous().unwrap(), &b, Activation::Identity).is_err(),
            "shapes are checked"
        );
    }
}
