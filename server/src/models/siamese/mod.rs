//! The Siamese networks trained on crowd labels: one tower with shared weights applied to both
//! faces of a pair (the image CNN or the GAML net on descriptor vectors), the loss it is trained
//! with, and the distance it scores pairs by. Training (`crate::training`) fits them; this module
//! is everything needed to build, load, run and score one.
//!
//! `nets` holds the layers and towers, `conv` and `dense` the fused CPU ops behind them, `loss`
//! the losses, `input` the tensors the networks take.

mod conv;
mod dense;
pub mod input;
pub mod loss;
pub mod nets;
mod storage;
#[cfg(test)]
mod tests;

use std::path::Path;

use candle_core::{Device, Module, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use nets::{Builder, CnnTower, GamlTower, Head, EMBEDDING_DIM};

/// The architectures. Numbers match the API's `Architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    SiameseCnn = 1,
    SiameseGaml = 2,
}

impl Architecture {
    pub fn from_number(n: i32) -> Option<Self> {
        [Architecture::SiameseCnn, Architecture::SiameseGaml].into_iter().find(|a| *a as i32 == n)
    }

    /// The prefix of model ids of this architecture.
    pub fn slug(self) -> &'static str {
        match self {
            Architecture::SiameseCnn => "cnn",
            Architecture::SiameseGaml => "gaml",
        }
    }
}

/// The losses. Numbers match the API's `LossFunction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LossKind {
    Contrastive = 1,
    GeometryAware = 2,
    MiningContrastive = 3,
    HeadBce = 4,
    HeadFocal = 5,
    /// The mining loss with each batch's cross pairs of similar pairs as extra negatives.
    MiningInBatch = 6,
}

impl LossKind {
    pub fn from_number(n: i32) -> Option<Self> {
        use LossKind::*;
        [Contrastive, GeometryAware, MiningContrastive, HeadBce, HeadFocal, MiningInBatch]
            .into_iter()
            .find(|l| *l as i32 == n)
    }

    /// Whether models trained with this loss score pairs with a learned head.
    pub fn has_head(self) -> bool {
        matches!(self, LossKind::HeadBce | LossKind::HeadFocal)
    }

    /// Whether this is one of the mining losses (cosine distance, the paper's α, β, λ, ε).
    pub fn is_mining(self) -> bool {
        matches!(self, LossKind::MiningContrastive | LossKind::MiningInBatch)
    }
}

/// The settings of the losses (a training run's hyper-parameters hold them, flattened into the
/// same JSON object).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossSettings {
    /// τ of the contrastive and geometry-aware losses.
    pub margin: f64,
    /// GAML's α, or the mining loss's weight of similar pairs.
    pub alpha: f64,
    /// The mining loss's weight of dissimilar pairs.
    pub beta: f64,
    /// The mining loss's similarity threshold.
    pub lambda: f64,
    /// The mining loss's mining margin.
    pub epsilon: f64,
    /// γ of the focal loss.
    pub focal_gamma: f64,
}

impl LossSettings {
    fn mining(&self) -> loss::MiningSettings {
        loss::MiningSettings { alpha: self.alpha, beta: self.beta, lambda: self.lambda, epsilon: self.epsilon }
    }
}

/// Why a stored model cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model {id} has an unknown {what} number {number}")]
    Unknown { id: String, what: &'static str, number: i32 },
    #[error("cannot read the weights of model {id}: {source}")]
    Weights {
        id: String,
        #[source]
        source: Box<candle_core::Error>,
    },
}

/// Loads a registered model's network (its best weights) onto `device`. `input_dim` 0 in the
/// record means the descriptor's dimension.
pub fn load(record: &crate::store::ModelRecord, device: &Device) -> Result<Siamese, LoadError> {
    let unknown = |what, number| LoadError::Unknown { id: record.id.clone(), what, number };
    let architecture =
        Architecture::from_number(record.architecture).ok_or(unknown("architecture", record.architecture))?;
    let loss = LossKind::from_number(record.loss).ok_or(unknown("loss", record.loss))?;
    let input_dim = if record.input_dim == 0 { super::descriptor::DIM } else { record.input_dim as usize };
    Siamese::load(architecture, loss, input_dim, device, Path::new(&record.weights_path))
        .map_err(|source| LoadError::Weights { id: record.id.clone(), source: Box::new(source) })
}

#[derive(Clone)]
enum Tower {
    Cnn(CnnTower),
    Gaml(GamlTower),
}

pub struct Siamese {
    pub architecture: Architecture,
    pub loss: LossKind,
    tower: Tower,
    head: Option<Head>,
    vars: VarMap,
}

impl Siamese {
    /// A freshly initialised model; `input_dim` is the feature length for GAML.
    pub fn new(
        architecture: Architecture,
        loss: LossKind,
        input_dim: usize,
        device: &Device,
        seed: u64,
    ) -> candle_core::Result<Self> {
        let vars = VarMap::new();
        let mut builder = Builder::new(&vars, device, seed);
        let tower = match architecture {
            Architecture::SiameseCnn => Tower::Cnn(CnnTower::new(&mut builder)?),
            Architecture::SiameseGaml => Tower::Gaml(GamlTower::new(&mut builder, input_dim)?),
        };
        let head = match loss {
            _ if loss.has_head() => Some(Head::new(&mut builder, EMBEDDING_DIM)?),
            _ => None,
        };
        Ok(Siamese { architecture, loss, tower, head, vars })
    }

    /// A model with the weights of a safetensors file.
    pub fn load(
        architecture: Architecture,
        loss: LossKind,
        input_dim: usize,
        device: &Device,
        path: &Path,
    ) -> candle_core::Result<Self> {
        let mut model = Siamese::new(architecture, loss, input_dim, device, 0)?;
        model.vars.load(path)?;
        Ok(model)
    }

    pub fn save(&self, path: &Path) -> candle_core::Result<()> {
        self.vars.save(path)
    }

    /// Replaces the weights with those of a safetensors file (the best checkpoint).
    pub fn reload(&mut self, path: &Path) -> candle_core::Result<()> {
        self.vars.load(path)
    }

    /// The trainable variables, in the order of their names (the same order in every process,
    /// so an optimiser's saved state lines up with them after a restart).
    pub fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    /// The variables with their names, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.vars.data().lock().expect("not poisoned");
        let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    pub fn parameter_count(&self) -> usize {
        self.vars.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Whether the model's distance is 1 − cosine similarity (ranking then uses cosine).
    pub fn uses_cosine(&self) -> bool {
        self.loss.is_mining() || self.loss.has_head()
    }

    fn tower(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.tower {
            Tower::Cnn(t) => t.forward(x),
            Tower::Gaml(t) => t.forward(x),
        }
    }

    /// The embedding ranking uses: GAML's and cosine models' outputs are L2-normalised, so
    /// Euclidean distance and cosine similarity agree on the order.
    pub fn embed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.project(self.tower(x)?)
    }

    fn project(&self, f: Tensor) -> candle_core::Result<Tensor> {
        if matches!(self.tower, Tower::Gaml(_)) || self.uses_cosine() {
            nets::l2_normalize(&f)
        } else {
            Ok(f)
        }
    }

    /// The loss of a batch of pairs with targets `y`.
    pub fn loss(&self, xa: &Tensor, xb: &Tensor, y: &Tensor, h: &LossSettings) -> candle_core::Result<Tensor> {
        let (fa, fb) = self.both_sides(xa, xb)?;
        self.loss_of(fa, fb, xa, xb, y, h)
    }

    /// Distances of pairs (smaller = more similar), shape (N,).
    pub fn distances(&self, xa: &Tensor, xb: &Tensor) -> candle_core::Result<Tensor> {
        let (fa, fb) = self.both_sides(xa, xb)?;
        self.distances_of(fa.detach(), fb.detach())
    }

    /// Distances and the (detached) loss of a batch from one pass through the tower.
    pub fn distances_and_loss(
        &self,
        xa: &Tensor,
        xb: &Tensor,
        y: &Tensor,
        h: &LossSettings,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (fa, fb) = self.both_sides(xa, xb)?;
        let (fa, fb) = (fa.detach(), fb.detach());
        Ok((self.distances_of(fa.clone(), fb.clone())?, self.loss_of(fa, fb, xa, xb, y, h)?.detach()))
    }

    fn loss_of(
        &self,
        fa: Tensor,
        fb: Tensor,
        xa: &Tensor,
        xb: &Tensor,
        y: &Tensor,
        h: &LossSettings,
    ) -> candle_core::Result<Tensor> {
        match self.loss {
            LossKind::Contrastive => {
                loss::contrastive(&nets::euclidean(&self.project(fa)?, &self.project(fb)?)?, y, h.margin)
            }
            LossKind::GeometryAware => {
                let d0 = nets::euclidean(&nets::l2_normalize(xa)?, &nets::l2_normalize(xb)?)?;
                let d = nets::euclidean(&self.project(fa)?, &self.project(fb)?)?;
                loss::geometry_aware(&d, &d0, y, h.alpha, h.margin)
            }
            LossKind::MiningContrastive => loss::mining_labelled(&fa, &fb, y, &h.mining()),
            LossKind::MiningInBatch => loss::mining_in_batch(&fa, &fb, y, &h.mining()),
            LossKind::HeadBce => loss::bce(&self.head()?.logits(&fa, &fb)?, y),
            LossKind::HeadFocal => loss::focal(&self.head()?.logits(&fa, &fb)?, y, h.focal_gamma),
        }
    }

    fn distances_of(&self, fa: Tensor, fb: Tensor) -> candle_core::Result<Tensor> {
        match self.loss {
            LossKind::Contrastive | LossKind::GeometryAware => nets::euclidean(&self.project(fa)?, &self.project(fb)?),
            LossKind::MiningContrastive | LossKind::MiningInBatch => 1.0 - nets::cosine(&fa, &fb)?,
            LossKind::HeadBce | LossKind::HeadFocal => {
                1.0 - candle_nn::ops::sigmoid(&self.head()?.logits(&fa, &fb)?.detach())?
            }
        }
    }

    /// The tower's outputs for both sides, from one pass: the shared weights see the whole batch.
    fn both_sides(&self, xa: &Tensor, xb: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let n = xa.dim(0)?;
        let both = self.tower(&Tensor::cat(&[xa, xb], 0)?)?;
        Ok((both.narrow(0, 0, n)?, both.narrow(0, n, n)?))
    }

    fn head(&self) -> candle_core::Result<&Head> {
        self.head.as_ref().ok_or_else(|| candle_core::Error::Msg("this model has no similarity head".into()))
    }
}
