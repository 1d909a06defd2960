//! Optimisers: SGD with momentum (PyTorch's form: v ← μv + g, w ← w − ηv), which candle-nn
//! lacks, and Adam, which is candle-nn's AdamW with no weight decay.

use candle_core::{backprop::GradStore, Tensor, Var};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW};

pub enum Optimizer {
    Sgd { vars: Vec<Var>, velocity: Vec<Option<Tensor>>, lr: f64, momentum: f64 },
    Adam(Box<AdamW>),
}

impl Optimizer {
    pub fn sgd(vars: Vec<Var>, lr: f64, momentum: f64) -> Self {
        let velocity = vec![None; vars.len()];
        Optimizer::Sgd { vars, velocity, lr, momentum }
    }

    pub fn adam(vars: Vec<Var>, lr: f64) -> candle_core::Result<Self> {
        let params = ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() };
        Ok(Optimizer::Adam(Box::new(AdamW::new(vars, params)?)))
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
            Optimizer::Adam(adam) => adam.step(grads),
        }
    }
}
