//! Optimisers: SGD with momentum (PyTorch's form: v ← μv + g, w ← w − ηv), which candle-nn
//! lacks, and Adam (PyTorch's form, no weight decay). On the CPU Adam runs as one fused pass
//! over each parameter's values; candle-nn's AdamW (with zero decay, which is Adam) costs a
//! dozen whole-tensor operations per parameter and was half of a GAML step at 2,622 inputs.
//! The pass writes the weights in place (a candle in-place op), so no copy of the weights or
//! gradients is made. Other devices use candle-nn's AdamW.

use std::cell::RefCell;

use candle_core::{backprop::GradStore, CpuStorage, Device, InplaceOp2, Layout, Tensor, Var};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW};
use rayon::prelude::*;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

pub enum Optimizer {
    Sgd {
        vars: Vec<Var>,
        velocity: Vec<Option<Tensor>>,
        lr: f64,
        momentum: f64,
    },
    /// Adam over host memory: first and second moments per value, the step count.
    AdamCpu {
        vars: Vec<Var>,
        m: Vec<Vec<f32>>,
        v: Vec<Vec<f32>>,
        t: i32,
        lr: f64,
    },
    Adam(Box<AdamW>),
}

impl Optimizer {
    pub fn sgd(vars: Vec<Var>, lr: f64, momentum: f64) -> Self {
        let velocity = vec![None; vars.len()];
        Optimizer::Sgd { vars, velocity, lr, momentum }
    }

    pub fn adam(vars: Vec<Var>, lr: f64) -> candle_core::Result<Self> {
        if vars.iter().all(|v| matches!(v.device(), Device::Cpu)) {
            let m = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
            let v = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
            return Ok(Optimizer::AdamCpu { vars, m, v, t: 0, lr });
        }
        candle_adam(vars, lr)
    }

    /// The optimiser's state as named tensors, saved with a training checkpoint so a resumed
    /// run continues exactly; `None` for candle's AdamW (GPU), whose moments are not readable.
    pub fn state(&self) -> candle_core::Result<Option<Vec<(String, Tensor)>>> {
        match self {
            Optimizer::Sgd { velocity, .. } => Ok(Some(
                velocity
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.as_ref().map(|v| (format!("optimizer.velocity.{i}"), v.clone())))
                    .collect(),
            )),
            Optimizer::AdamCpu { m, v, t, .. } => {
                let mut out = vec![("optimizer.t".to_string(), Tensor::new(&[f64::from(*t)], &Device::Cpu)?)];
                for (i, (m, v)) in m.iter().zip(v).enumerate() {
                    out.push((format!("optimizer.m.{i}"), Tensor::from_slice(m, m.len(), &Device::Cpu)?));
                    out.push((format!("optimizer.v.{i}"), Tensor::from_slice(v, v.len(), &Device::Cpu)?));
                }
                Ok(Some(out))
            }
            Optimizer::Adam(_) => Ok(None),
        }
    }

    /// Restores the state [`Optimizer::state`] saved (for the same variables in the same order).
    pub fn load_state(&mut self, saved: &std::collections::HashMap<String, Tensor>) -> candle_core::Result<()> {
        let get = |name: String| {
            saved.get(&name).ok_or_else(|| candle_core::Error::Msg(format!("the checkpoint lacks {name}")))
        };
        match self {
            Optimizer::Sgd { vars, velocity, .. } => {
                for (i, (var, v)) in vars.iter().zip(velocity.iter_mut()).enumerate() {
                    *v = match saved.get(&format!("optimizer.velocity.{i}")) {
                        Some(t) => Some(t.to_device(var.device())?.reshape(var.shape())?),
                        None => None,
                    };
                }
                Ok(())
            }
            Optimizer::AdamCpu { vars, m, v, t, .. } => {
                *t = get("optimizer.t".into())?.to_vec1::<f64>()?[0] as i32;
                for (i, var) in vars.iter().enumerate() {
                    let (mi, vi) = (get(format!("optimizer.m.{i}"))?, get(format!("optimizer.v.{i}"))?);
                    if mi.elem_count() != var.elem_count() || vi.elem_count() != var.elem_count() {
                        candle_core::bail!("the checkpoint's optimiser state {i} does not fit its variable");
                    }
                    m[i] = mi.to_vec1()?;
                    v[i] = vi.to_vec1()?;
                }
                Ok(())
            }
            Optimizer::Adam(_) => candle_core::bail!("candle's AdamW state cannot be restored"),
        }
    }

    /// Back-propagates `loss` and updates every variable once.
    pub fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    pub fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        match self {
            Optimizer::Sgd { vars, velocity, lr, momentum } => {
                for (var, v) in vars.iter().zip(velocity.iter_mut()) {
                    let Some(g) = grads.get(var.as_tensor()) else { continue };
                    let next = match v.take() {
                        Some(previous) => ((previous * *momentum)? + g)?,
                        None => g.clone(),
                    };
                    var.set(&(var.as_tensor() - (&next * *lr)?)?)?;
                    *v = Some(next);
                }
                Ok(())
            }
            Optimizer::AdamCpu { vars, m, v, t, lr } => {
                *t += 1;
                let step = (*lr / (1.0 - BETA1.powi(*t))) as f32;
                let correction2 = (1.0 - BETA2.powi(*t)) as f32;
                let (b1, b2, eps) = (BETA1 as f32, BETA2 as f32, EPS as f32);
                for ((var, m), v) in vars.iter().zip(m.iter_mut()).zip(v.iter_mut()) {
                    let Some(g) = grads.get(var.as_tensor()) else { continue };
                    let update = AdamUpdate {
                        moments: RefCell::new((m.as_mut_slice(), v.as_mut_slice())),
                        step,
                        correction2,
                        b1,
                        b2,
                        eps,
                    };
                    var.as_tensor().inplace_op2(&g.contiguous()?, &update)?;
                }
                Ok(())
            }
            Optimizer::Adam(adam) => adam.step(grads),
        }
    }
}

/// One Adam update of a parameter's values in place, from its gradient; the moments live in
/// the optimiser.
struct AdamUpdate<'a> {
    moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
    step: f32,
    correction2: f32,
    b1: f32,
    b2: f32,
    eps: f32,
}

impl InplaceOp2 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "adam-update"
    }

    fn cpu_fwd(&self, w: &mut CpuStorage, wl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(w), CpuStorage::F32(g)) = (w, g) else {
            candle_core::bail!("adam-update: f32 values and gradients expected")
        };
        let (Some((w0, w1)), Some((g0, g1))) = (wl.contiguous_offsets(), gl.contiguous_offsets()) else {
            candle_core::bail!("adam-update: contiguous values and gradients expected")
        };
        let (w, g) = (&mut w[w0..w1], &g[g0..g1]);
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        if w.len() != g.len() || w.len() != m.len() || w.len() != v.len() {
            candle_core::bail!("adam-update: {} values, {} gradients, {} moments", w.len(), g.len(), m.len())
        }
        let AdamUpdate { step, correction2, b1, b2, eps, .. } = *self;
        // Chunks of the values on every core.
        const CHUNK: usize = 1 << 14;
        w.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((w, m), v), g)| {
                for i in 0..w.len() {
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    w[i] -= step * m[i] / ((v[i] / correction2).sqrt() + eps);
                }
            });
        Ok(())
    }
}

/// candle-nn's AdamW without weight decay, which is Adam.
fn candle_adam(vars: Vec<Var>, lr: f64) -> candle_core::Result<Optimizer> {
    let params = ParamsAdamW { lr, beta1: BETA1, beta2: BETA2, eps: EPS, weight_decay: 0.0 };
    Ok(Optimizer::Adam(Box::new(AdamW::new(vars, params)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fused_cpu_adam_matches_candles_adamw_without_decay() {
        let make = || {
            let values: Vec<f32> = (0..60).map(|i| (i as f32 * 0.37).sin()).collect();
            Var::from_tensor(&Tensor::from_vec(values, (6, 10), &Device::Cpu).unwrap()).unwrap()
        };
        let (ours, theirs) = (make(), make());
        let mut fused = Optimizer::adam(vec![ours.clone()], 0.01).unwrap();
        assert!(matches!(fused, Optimizer::AdamCpu { .. }));
        let mut reference = candle_adam(vec![theirs.clone()], 0.01).unwrap();
        for _ in 0..5 {
            for (var, opt) in [(&ours, &mut fused), (&theirs, &mut reference)] {
                let loss =
                    (var.as_tensor().sqr().unwrap().sum_all().unwrap() + var.as_tensor().sum_all().unwrap()).unwrap();
                opt.backward_step(&loss).unwrap();
            }
        }
        let a: Vec<f32> = ours.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = theirs.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let start: Vec<f32> = make().as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert!(a.iter().zip(&start).any(|(x, y)| (x - y).abs() > 0.04), "five steps of 0.01 moved the values");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
}
