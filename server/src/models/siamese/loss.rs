//! The losses of the method and of the kinship papers. Each takes a batch's tower outputs (or
//! derived distances) and the targets `y` (1 similar, 0 dissimilar, in between for soft labels)
//! and returns a scalar tensor.

use candle_core::Tensor;

use super::nets::{cosine, l2_normalize};

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

/// Mining contrastive loss of the kinship-verification paper, on cosine similarities: `pos`
/// holds the similar pairs' similarities, `neg` the dissimilar ones', `n` the batch size N.
/// Hard pairs are selected first: a similar pair is kept when its similarity is below the most
/// similar dissimilar pair plus ε, a dissimilar pair when its similarity is above the least
/// similar similar pair minus ε. Then
/// J = 1/N · 1/α log(1 + Σ_P exp(−α (s − λ))) + 1/N · 1/β log(1 + Σ_N exp(β (s − λ))),
/// so α weighs the similar pairs, β the dissimilar ones and λ is the similarity they are
/// pushed across. When one side is empty there is nothing to mine against and every pair of the
/// other side is kept.
pub fn mining(pos: &Tensor, neg: &Tensor, n: f64, h: &MiningSettings) -> candle_core::Result<Tensor> {
    let MiningSettings { alpha, beta, lambda, epsilon } = *h;
    let (p, q) = (pos.to_vec1::<f32>()?, neg.to_vec1::<f32>()?);
    let hardest_negative = q.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let easiest_positive = p.iter().copied().fold(f32::INFINITY, f32::min);
    let eps = epsilon as f32;
    let keep_p: Vec<f32> = p.iter().map(|&v| f32::from(q.is_empty() || v < hardest_negative + eps)).collect();
    let keep_n: Vec<f32> = q.iter().map(|&v| f32::from(p.is_empty() || v > easiest_positive - eps)).collect();
    let device = pos.device();
    let mut total = Tensor::zeros((), pos.dtype(), device)?;
    if !p.is_empty() {
        let kp = Tensor::from_vec(keep_p, p.len(), device)?;
        let sum = ((pos - lambda)? * -alpha)?.exp()?.mul(&kp)?.sum_all()?;
        total = (total + ((sum + 1.0)?.log()? / (alpha * n))?)?;
    }
    if !q.is_empty() {
        let kn = Tensor::from_vec(keep_n, q.len(), device)?;
        let sum = ((neg - lambda)? * beta)?.exp()?.mul(&kn)?.sum_all()?;
        total = (total + ((sum + 1.0)?.log()? / (beta * n))?)?;
    }
    Ok(total)
}

/// The mining loss on labelled pairs: tower outputs `fa`, `fb` of a batch of N pairs with
/// targets `y` (at or above 0.5: similar); the labelled dissimilar pairs are the negatives.
pub fn mining_labelled(fa: &Tensor, fb: &Tensor, y: &Tensor, h: &MiningSettings) -> candle_core::Result<Tensor> {
    let s = cosine(fa, fb)?;
    let (similar, dissimilar) = classes(y)?;
    let n = fa.dim(0)? as f64;
    mining(&pick(&s, &similar)?, &pick(&s, &dissimilar)?, n, h)
}

/// The in-batch variant: the batch's P similar pairs (a_i, b_i) are the positives, and every
/// cross pair (a_i, b_j), i ≠ j — P² − P of them — is a negative beside the labelled dissimilar
/// pairs; N is P (the batch size when it holds no similar pair). Crowd labels are scarce, the
/// cross pairs cost nothing, and pairs of look-alikes are rarely look-alikes of each other.
pub fn mining_in_batch(fa: &Tensor, fb: &Tensor, y: &Tensor, h: &MiningSettings) -> candle_core::Result<Tensor> {
    let (similar, dissimilar) = classes(y)?;
    let s = cosine(fa, fb)?;
    let labelled_negatives = pick(&s, &dissimilar)?;
    let p = similar.len();
    if p == 0 {
        return mining(&pick(&s, &[])?, &labelled_negatives, fa.dim(0)? as f64, h);
    }
    let index = Tensor::from_vec(similar, p, fa.device())?;
    let a = l2_normalize(&fa.index_select(&index, 0)?)?;
    let b = l2_normalize(&fb.index_select(&index, 0)?)?;
    // All P × P cosines, row i: a_i against every b_j.
    let all = a.matmul(&b.t()?)?.flatten_all()?;
    let diagonal: Vec<u32> = (0..p as u32).map(|i| i * p as u32 + i).collect();
    let cross: Vec<u32> = (0..(p * p) as u32).filter(|k| k % (p as u32 + 1) != 0).collect();
    let positives = pick(&all, &diagonal)?;
    let negatives = Tensor::cat(&[&pick(&all, &cross)?, &labelled_negatives], 0)?;
    mining(&positives, &negatives, p as f64, h)
}

/// The mining losses' settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiningSettings {
    pub alpha: f64,
    pub beta: f64,
    pub lambda: f64,
    pub epsilon: f64,
}

/// Indices of the similar (target ≥ 0.5) and the dissimilar pairs.
fn classes(y: &Tensor) -> candle_core::Result<(Vec<u32>, Vec<u32>)> {
    let targets = y.to_vec1::<f32>()?;
    let similar = (0..targets.len() as u32).filter(|&i| targets[i as usize] >= 0.5).collect();
    let dissimilar = (0..targets.len() as u32).filter(|&i| targets[i as usize] < 0.5).collect();
    Ok((similar, dissimilar))
}

/// The entries `at` of the vector `v` (gradients flow back to them).
fn pick(v: &Tensor, at: &[u32]) -> candle_core::Result<Tensor> {
    if at.is_empty() {
        return Tensor::zeros(0, v.dtype(), v.device());
    }
    v.index_select(&Tensor::from_vec(at.to_vec(), at.len(), v.device())?, 0)
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
