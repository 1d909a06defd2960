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
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::values;

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
                    Activation::Tanh => row.iter_mut().zip(bias).for_each(|(v, b)| *v = (*v + b).tanh()),
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
        let gb = if b.track_op() { Some(gz.sum(0)?) } else { None };
        Ok((gx, gw, gb))
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
