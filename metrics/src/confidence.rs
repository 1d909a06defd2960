//! How sure a score is: 95% confidence intervals for ROC-AUC and MCC by the stratified bootstrap
//! (the similar and the dissimilar pairs are resampled separately, so every resample keeps the
//! split's class counts), and the paired comparison of two models scored on the *same* pairs
//! (the AUC difference, resampling pairs once for both models). Resampling is seeded: the same
//! scores give the same interval.
//!
//! Percentile intervals: the 2.5th and 97.5th percentiles of the resampled statistic. With very
//! few pairs of a class the interval means little; [`MIN_PER_CLASS`] is the count under which
//! reports say so.

use crate::verification::{mcc, roc_auc};

/// Resamples of every interval (the floor is 1,000).
pub const RESAMPLES: usize = 2000;
/// Fewest pairs of each class (similar, dissimilar) for a split to be judged at all.
pub const MIN_PER_CLASS: usize = 20;

/// A value with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// Whether the whole interval lies above `x`.
    pub fn above(&self, x: f64) -> bool {
        self.low > x
    }

    /// Whether the whole interval lies below `x`.
    pub fn below(&self, x: f64) -> bool {
        self.high < x
    }
}

/// The class counts of a pair set: (similar, dissimilar).
pub fn class_counts(same: &[bool]) -> (usize, usize) {
    let similar = same.iter().filter(|&&s| s).count();
    (similar, same.len() - similar)
}

/// Whether a pair set holds enough of both classes to judge a model on it.
pub fn enough_pairs(same: &[bool]) -> bool {
    let (similar, dissimilar) = class_counts(same);
    similar >= MIN_PER_CLASS && dissimilar >= MIN_PER_CLASS
}

/// Why a split of `similar` and `dissimilar` pairs is too small to judge, in words, or `None`
/// when it is large enough.
pub fn too_few(similar: usize, dissimilar: usize) -> Option<String> {
    match (similar < MIN_PER_CLASS, dissimilar < MIN_PER_CLASS) {
        (false, false) => None,
        (true, true) => Some(format!(
            "too few similar ({similar}) and dissimilar ({dissimilar}) pairs to judge (need {MIN_PER_CLASS} of each)"
        )),
        (true, false) => Some(format!("too few similar pairs ({similar}) to judge (need {MIN_PER_CLASS})")),
        (false, true) => Some(format!("too few dissimilar pairs ({dissimilar}) to judge (need {MIN_PER_CLASS})")),
    }
}

/// ROC-AUC with its stratified-bootstrap 95% interval; `None` when a class is missing.
pub fn auc_interval(distances: &[f64], same: &[bool], seed: u64) -> Option<Estimate> {
    let value = roc_auc(distances, same)?;
    let samples = resample(same, seed, |picked| {
        let (d, s) = gather(picked, &[distances], same);
        roc_auc(&d[0], &s)
    });
    Some(percentile_interval(value, samples))
}

/// MCC at `threshold` with its stratified-bootstrap 95% interval; `None` when a class is missing.
pub fn mcc_interval(distances: &[f64], same: &[bool], threshold: f64, seed: u64) -> Option<Estimate> {
    let (similar, dissimilar) = class_counts(same);
    if similar == 0 || dissimilar == 0 {
        return None;
    }
    let value = mcc(distances, same, threshold);
    let samples = resample(same, seed, |picked| {
        let (d, s) = gather(picked, &[distances], same);
        Some(mcc(&d[0], &s, threshold))
    });
    Some(percentile_interval(value, samples))
}

/// What a paired comparison concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The candidate's AUC is higher: the interval of the difference lies above zero.
    Better,
    /// The candidate's AUC is lower: the interval lies below zero.
    Worse,
    /// The interval contains zero.
    NotDistinguishable,
    /// A class has fewer than [`MIN_PER_CLASS`] pairs: nothing can be concluded.
    TooFewPairs,
}

impl Verdict {
    pub fn words(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NotDistinguishable => "not distinguishable",
            Verdict::TooFewPairs => "too few pairs to tell",
        }
    }
}

/// Two models scored on the same pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedComparison {
    pub candidate_auc: f64,
    pub reference_auc: f64,
    /// Candidate AUC minus reference AUC, with its paired-bootstrap 95% interval.
    pub difference: Estimate,
    pub verdict: Verdict,
    pub similar: usize,
    pub dissimilar: usize,
}

/// Compares a candidate with a reference model on the same pairs: both distance lists are
/// indexed like `same`. Each resample draws the pairs once (stratified) and scores both models on
/// them, so what the two share cancels out. `None` when a class is missing.
pub fn compare_auc(candidate: &[f64], reference: &[f64], same: &[bool], seed: u64) -> Option<PairedComparison> {
    assert_eq!(candidate.len(), same.len(), "one candidate distance a pair");
    assert_eq!(reference.len(), same.len(), "one reference distance a pair");
    let candidate_auc = roc_auc(candidate, same)?;
    let reference_auc = roc_auc(reference, same)?;
    let samples = resample(same, seed, |picked| {
        let (d, s) = gather(picked, &[candidate, reference], same);
        Some(roc_auc(&d[0], &s)? - roc_auc(&d[1], &s)?)
    });
    let difference = percentile_interval(candidate_auc - reference_auc, samples);
    let (similar, dissimilar) = class_counts(same);
    let verdict = if !enough_pairs(same) {
        Verdict::TooFewPairs
    } else if difference.above(0.0) {
        Verdict::Better
    } else if difference.below(0.0) {
        Verdict::Worse
    } else {
        Verdict::NotDistinguishable
    };
    Some(PairedComparison { candidate_auc, reference_auc, difference, verdict, similar, dissimilar })
}

/// [`RESAMPLES`] values of `statistic` over stratified resamples of the pair indices (similar
/// and dissimilar pairs drawn with replacement, each class its own count).
fn resample(same: &[bool], seed: u64, statistic: impl Fn(&[usize]) -> Option<f64>) -> Vec<f64> {
    let similar: Vec<usize> = (0..same.len()).filter(|&i| same[i]).collect();
    let dissimilar: Vec<usize> = (0..same.len()).filter(|&i| !same[i]).collect();
    let mut rng = SplitMix64(seed ^ 0x5eed_f00d_cafe_d00d);
    let mut picked = Vec::with_capacity(same.len());
    let mut out = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        picked.clear();
        for class in [&similar, &dissimilar] {
            for _ in 0..class.len() {
                picked.push(class[rng.below(class.len())]);
            }
        }
        if let Some(value) = statistic(&picked) {
            out.push(value);
        }
    }
    out
}

/// The picked pairs' distances under each model, and their labels.
fn gather(picked: &[usize], models: &[&[f64]], same: &[bool]) -> (Vec<Vec<f64>>, Vec<bool>) {
    let distances = models.iter().map(|d| picked.iter().map(|&i| d[i]).collect()).collect();
    (distances, picked.iter().map(|&i| same[i]).collect())
}

/// The 2.5th and 97.5th percentiles (nearest rank) around the observed value.
fn percentile_interval(value: f64, mut samples: Vec<f64>) -> Estimate {
    if samples.is_empty() {
        return Estimate { value, low: value, high: value };
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    Estimate { value, low: at(0.025), high: at(0.975) }
}

/// A small, fast, seedable generator (SplitMix64) for resampling: the crate stays free of
/// dependencies, and the streams are fixed forever by this code, not by a library version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias for n far below 2⁶⁴ is negligible).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` similar pairs at distances around `similar_at`, `n` dissimilar around `dissimilar_at`,
    /// with a fixed spread so the classes overlap.
    fn pairs(n: usize, similar_at: f64, dissimilar_at: f64) -> (Vec<f64>, Vec<bool>) {
        let mut d = Vec::new();
        let mut s = Vec::new();
        for i in 0..n {
            let wobble = ((i as f64) * 0.618).fract() - 0.5;
            d.push(similar_at + 0.4 * wobble);
            s.push(true);
            d.push(dissimilar_at + 0.4 * wobble);
            s.push(false);
        }
        (d, s)
    }

    #[test]
    fn intervals_hold_the_value_shrink_with_more_pairs_and_repeat_with_the_seed() {
        let (d, s) = pairs(40, 0.5, 0.7);
        let small = auc_interval(&d, &s, 7).unwrap();
        assert!(small.low <= small.value && small.value <= small.high, "{small:?}");
        assert!(small.high - small.low > 0.01, "overlapping classes leave doubt: {small:?}");
        assert_eq!(auc_interval(&d, &s, 7), Some(small), "seeded");
        let (d4, s4) = pairs(400, 0.5, 0.7);
        let large = auc_interval(&d4, &s4, 7).unwrap();
        assert!(large.high - large.low < small.high - small.low, "{large:?} vs {small:?}");
        let m = mcc_interval(&d, &s, 0.6, 3).unwrap();
        assert!(m.low <= m.value && m.value <= m.high && m.value > 0.0, "{m:?}");
        assert_eq!(auc_interval(&[0.1, 0.2], &[true, true], 1), None);
    }

    #[test]
    fn a_clearly_better_model_is_better_and_a_copy_is_indistinguishable() {
        let (weak, s) = pairs(60, 0.5, 0.6);
        // The candidate separates the same pairs much more widely.
        let strong: Vec<f64> = weak.iter().zip(&s).map(|(d, &same)| if same { d - 0.3 } else { d + 0.3 }).collect();
        let better = compare_auc(&strong, &weak, &s, 1).unwrap();
        assert_eq!(better.verdict, Verdict::Better, "{better:?}");
        assert!(better.difference.value > 0.0 && better.difference.low > 0.0);
        assert_eq!(compare_auc(&weak, &strong, &s, 1).unwrap().verdict, Verdict::Worse);
        let same_model = compare_auc(&weak, &weak, &s, 1).unwrap();
        assert_eq!(same_model.verdict, Verdict::NotDistinguishable, "{same_model:?}");
        assert_eq!((same_model.difference.low, same_model.difference.high), (0.0, 0.0));
        // Ten pairs of a class are too few to conclude anything, however large the gap.
        let (few, fs) = pairs(10, 0.5, 0.6);
        let far: Vec<f64> = few.iter().zip(&fs).map(|(d, &same)| if same { d - 1.0 } else { d + 1.0 }).collect();
        let tiny = compare_auc(&far, &few, &fs, 1).unwrap();
        assert_eq!((tiny.verdict, tiny.similar, tiny.dissimilar), (Verdict::TooFewPairs, 10, 10));
        let (similar, dissimilar) = class_counts(&fs);
        assert!(too_few(similar, dissimilar).unwrap().contains("too few similar (10) and dissimilar (10)"));
        assert_eq!(too_few(60, 60), None);
        assert_eq!(too_few(19, 60).unwrap(), "too few similar pairs (19) to judge (need 20)");
    }

    #[test]
    fn the_interval_covers_the_truth_about_as_often_as_it_says() {
        // Many independent samples from one population of overlapping scores: the 95% interval
        // of each should hold the population's AUC in roughly 95% of them.
        let population_auc = {
            let (d, s) = pairs(5000, 0.5, 0.62);
            roc_auc(&d, &s).unwrap()
        };
        let mut rng = SplitMix64(99);
        let mut covered = 0;
        let trials = 60u64;
        for trial in 0..trials {
            let (mut d, mut s) = (Vec::new(), Vec::new());
            for _ in 0..60 {
                let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                let v = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                d.push(0.5 + 0.4 * u);
                s.push(true);
                d.push(0.62 + 0.4 * v);
                s.push(false);
            }
            let e = auc_interval(&d, &s, trial).unwrap();
            covered += u64::from(e.low <= population_auc && population_auc <= e.high);
        }
        assert!(covered >= trials * 85 / 100, "covered {covered} of {trials}");
    }
}
