//! The losses of the method and of the kinship papers. Each takes a batch's tower outputs (or
//! derived distances) and the targets `y` (1 similar, 0 dissimilar, in between for soft labels)
//! and returns a scalar tensor.

use candle_core::Tensor;

/// Contrastive loss: J = 1/(2N) Σ [y d² + (1 − y) max(τ − d, 0)²].
pub fn contrastive(d: &Tensor, y: &Tensor, tau: f64) -> candle_core::Result<Tensor> {
    let n = d.dim(0)? as f64;
    let similar = (y * d.sqr()?)?;
    let dissimilar = ((1.0 - y)? * (tau - d)?.relu()?.sqr()?)?;
    (similar + dissimilar)?.sum_all()? / (2.0 * n)
}

/// GAML's geometry-aware loss: J = ½ Σ S (d − d₀)² + α Σ D max(τ − d, 0), where d₀ is the
/// distance of the normalised inputs and d that of the normalised outputs.
pub fn geometry_aware(d: &Tensor, d0: &Tensor, y: &Tensor, alpha: f64, tau: f64) -> candle_core::Result<Tensor> {
    let keep = (y * (d - d0)?.sqr()?)?.sum_all()?;
    let push = ((1.0 - y)? * (tau - d)?.relu()?)?.sum_all()?;
    (keep * 0.5)? + (push * alpha)?
}

/// Mining contrastive loss on cosine similarities `s` (in the spirit of multi-similarity
/// mining). Hard pairs are selected first: a similar pair is kept when its similarity is below
/// the most similar dissimilar pair of the batch plus ε, a dissimilar pair when its similarity
/// is above the least similar similar pair minus ε. Then
/// J = 1/α log(1 + Σ_P exp(−α (s − λ))) + 1/β log(1 + Σ_N exp(β (s − λ))),
/// so α weighs the similar pairs, β the dissimilar ones and λ is the similarity they are
/// pushed across. Targets at or above 0.5 count as similar.
pub fn mining_contrastive(
    s: &Tensor,
    y: &Tensor,
    alpha: f64,
    beta: f64,
    lambda: f64,
    epsilon: f64,
) -> candle_core::Result<Tensor> {
    let values = s.to_vec1::<f32>()?;
    let targets = y.to_vec1::<f32>()?;
    let positive = |i: usize| targets[i] >= 0.5;
    let (mut hardest_negative, mut easiest_positive) = (f32::NEG_INFINITY, f32::INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if positive(i) {
            easiest_positive = easiest_positive.min(v);
        } else {
            hardest_negative = hardest_negative.max(v);
        }
    }
    let eps = epsilon as f32;
    let keep_positive: Vec<f32> =
        (0..values.len()).map(|i| f32::from(positive(i) && values[i] < hardest_negative + eps)).collect();
    let keep_negative: Vec<f32> =
        (0..values.len()).map(|i| f32::from(!positive(i) && values[i] > easiest_positive - eps)).collect();
    // A batch with one class only has nothing to compare against: every pair of it is kept.
    let all_positive = hardest_negative == f32::NEG_INFINITY;
    let all_negative = easiest_positive == f32::INFINITY;
    let keep_positive: Vec<f32> = if all_positive { vec![1.0; values.len()] } else { keep_positive };
    let keep_negative: Vec<f32> = if all_negative { vec![1.0; values.len()] } else { keep_negative };
    let device = s.device();
    let kp = Tensor::from_vec(keep_positive, values.len(), device)?;
    let kn = Tensor::from_vec(keep_negative, values.len(), device)?;
    let pos = ((s - lambda)? * -alpha)?.exp()?.mul(&kp)?.sum_all()?;
    let neg = ((s - lambda)? * beta)?.exp()?.mul(&kn)?.sum_all()?;
    ((pos + 1.0)?.log()? / alpha)? + ((neg + 1.0)?.log()? / beta)?
}

/// log(1 + e^z), computed without overflow.
fn softplus(z: &Tensor) -> candle_core::Result<Tensor> {
    z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// Binary cross-entropy on logits of "similar", averaged over the batch.
pub fn bce(logits: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    (softplus(logits)? - (y * logits)?)?.mean_all()
}

/// Focal loss on logits: BCE weighted by (1 − p_t)^γ, which lowers the weight of easy pairs.
pub fn focal(logits: &Tensor, y: &Tensor, gamma: f64) -> candle_core::Result<Tensor> {
    let log_p = softplus(&logits.neg()?)?.neg()?;
    let log_not_p = softplus(logits)?.neg()?;
    let ce = ((y * &log_p)? + ((1.0 - y)? * &log_not_p)?)?.neg()?;
    let p = candle_nn::ops::sigmoid(logits)?;
    let p_t = ((y * &p)? + ((1.0 - y)? * (1.0 - &p)?)?)?;
    ((1.0 - p_t)?.powf(gamma)? * ce)?.mean_all()
}
