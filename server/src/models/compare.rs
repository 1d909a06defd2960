//! Two models side by side on the *same* labelled pairs: the candidate's test split (or, when
//! the candidate is the descriptor, which has none, the reference's) less the pairs the other
//! model trained or validated on, each pair scored by both
//! models as they decide, and the ROC-AUC difference with its paired-bootstrap 95% interval
//! (`facesim_metrics::confidence`). Activation's guard and `CompareModels` use this.

use std::collections::HashSet;
use std::sync::Arc;

use facesim_metrics::confidence::{self, PairedComparison, Verdict};

use super::descriptor::Descriptor;
use super::{Entry, ModelError, Registry, RegistryError};
use crate::dataset::Datasets;
use crate::store::{ComparisonRecord, Store, SPLIT_TEST};

/// Seeds the bootstrap: the same models on the same pairs always give the same interval.
const SEED: u64 = 0xc0ffee;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{0}")]
    NoSharedPairs(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// What the comparison needs to load and run models.
#[derive(Clone)]
pub struct Comparer {
    pub registry: Registry,
    pub descriptor: Arc<Descriptor>,
    pub store: Store,
    pub datasets: Datasets,
}

impl Comparer {
    /// Compares `candidate` with `reference` (empty: the active model) on their shared test pairs.
    pub fn compare(&self, candidate: &str, reference: &str) -> Result<ComparisonRecord, CompareError> {
        let reference = if reference.is_empty() { self.registry.active_id()? } else { reference.to_string() };
        let (candidate, reference) = (self.registry.get(candidate)?, self.registry.get(&reference)?);
        let pairs = shared_test_pairs(&candidate, &reference)?;
        let ids: Vec<(u64, u64)> = pairs.iter().map(|&(a, b, _)| (a, b)).collect();
        let score = |entry: &Entry| -> Result<Vec<Option<f64>>, CompareError> {
            let model = self.registry.load(&entry.id, &self.descriptor)?;
            Ok(model.pair_distances(&self.store, &self.datasets, &ids)?)
        };
        let (by_candidate, by_reference) = (score(&candidate)?, score(&reference)?);
        // Pairs whose images were deleted since training drop out for both models alike.
        let (mut c, mut r, mut same) = (Vec::new(), Vec::new(), Vec::new());
        for ((x, y), &(_, _, s)) in by_candidate.iter().zip(&by_reference).zip(&pairs) {
            if let (Some(x), Some(y)) = (x, y) {
                c.push(*x);
                r.push(*y);
                same.push(s);
            }
        }
        let Some(result) = confidence::compare_auc(&c, &r, &same, SEED) else {
            let (similar, dissimilar) = confidence::class_counts(&same);
            return Err(CompareError::NoSharedPairs(format!(
                "the shared test pairs of {} and {} hold {similar} similar and {dissimilar} dissimilar pairs; \
                 a comparison needs both",
                candidate.id, reference.id
            )));
        };
        Ok(record(&candidate.id, &reference.id, &result))
    }
}

/// The labelled test pairs two models share: (image a, image b, similar). They are the test
/// pairs of the candidate (of the reference when the candidate is the descriptor), less those
/// the other model learnt from (its training or validation pairs): a model scored on pairs it
/// was fitted to would look better than it is.
fn shared_test_pairs(candidate: &Entry, reference: &Entry) -> Result<Vec<(u64, u64, bool)>, CompareError> {
    let owner = candidate.record.as_ref().or(reference.record.as_ref()).ok_or_else(|| {
        CompareError::NoSharedPairs(format!(
            "{} and {} are both the pretrained descriptor; there is nothing to compare",
            candidate.id, reference.id
        ))
    })?;
    let other = if candidate.record.is_some() { reference.record.as_ref() } else { None };
    let learnt: HashSet<(u64, u64)> = other
        .and_then(|o| o.pairs.as_ref())
        .map(|p| {
            (0..p.split.len())
                .filter(|&i| p.split[i] != SPLIT_TEST)
                .flat_map(|i| [(p.image_a[i], p.image_b[i]), (p.image_b[i], p.image_a[i])])
                .collect()
        })
        .unwrap_or_default();
    let set = owner.pairs.as_ref();
    let pairs: Vec<(u64, u64, bool)> = set
        .map(|p| {
            (0..p.split.len())
                .filter(|&i| p.split[i] == SPLIT_TEST && !learnt.contains(&(p.image_a[i], p.image_b[i])))
                .map(|i| (p.image_a[i], p.image_b[i], p.target[i] >= 0.5))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return Err(CompareError::NoSharedPairs(format!(
            "model {} has no recorded test pairs that the other model did not learn from",
            owner.id
        )));
    }
    Ok(pairs)
}

/// The API's `ComparisonVerdict` number of a verdict.
pub fn verdict_number(verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Better => 1,
        Verdict::Worse => 2,
        Verdict::NotDistinguishable => 3,
        Verdict::TooFewPairs => 4,
    }
}

fn record(candidate: &str, reference: &str, c: &PairedComparison) -> ComparisonRecord {
    let d = c.difference;
    let counts = if c.verdict == Verdict::TooFewPairs {
        format!(
            "{} similar and {} dissimilar shared test pairs, fewer than {} of a class",
            c.similar,
            c.dissimilar,
            confidence::MIN_PER_CLASS
        )
    } else {
        format!("{} similar and {} dissimilar shared test pairs", c.similar, c.dissimilar)
    };
    let verdict = match c.verdict {
        Verdict::Better => format!("{candidate} is better than {reference}"),
        Verdict::Worse => format!("{candidate} is worse than {reference}"),
        Verdict::NotDistinguishable => format!("{candidate} is not distinguishable from {reference}"),
        Verdict::TooFewPairs => format!("too few pairs to tell {candidate} from {reference}"),
    };
    let summary = format!(
        "{verdict} on {counts}: ROC-AUC {:.4} vs {:.4}, difference {:+.4} (95% CI {:+.4} to {:+.4})",
        c.candidate_auc, c.reference_auc, d.value, d.low, d.high
    );
    ComparisonRecord {
        candidate: candidate.to_string(),
        reference: reference.to_string(),
        similar_pairs: c.similar as u64,
        dissimilar_pairs: c.dissimilar as u64,
        candidate_auc: c.candidate_auc,
        reference_auc: c.reference_auc,
        difference: d.value,
        difference_low: d.low,
        difference_high: d.high,
        verdict: verdict_number(c.verdict),
        summary,
    }
}

/// Whether a recorded comparison shows the candidate better.
pub fn is_better(record: &ComparisonRecord) -> bool {
    record.verdict == verdict_number(Verdict::Better)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ModelRecord, PairSetRecord, SPLIT_TRAIN, SPLIT_VALIDATION};

    fn entry(id: &str, pairs: &[(u64, u64, u32)]) -> Entry {
        let set = PairSetRecord {
            image_a: pairs.iter().map(|p| p.0).collect(),
            image_b: pairs.iter().map(|p| p.1).collect(),
            target: pairs.iter().map(|p| (p.0 % 2) as f32).collect(),
            split: pairs.iter().map(|p| p.2).collect(),
            pair_id: vec![0; pairs.len()],
        };
        let record = ModelRecord { id: id.into(), pairs: Some(set), ..Default::default() };
        Entry { id: id.into(), record: Some(record), active: false }
    }

    #[test]
    fn shared_test_pairs_leave_out_what_the_other_model_learnt_from() {
        let older = entry("gaml/1", &[(1, 2, SPLIT_TRAIN), (3, 4, SPLIT_VALIDATION), (5, 6, SPLIT_TEST)]);
        let newer = entry("gaml/2", &[(1, 2, SPLIT_TEST), (4, 3, SPLIT_TEST), (5, 6, SPLIT_TEST), (7, 8, SPLIT_TEST)]);
        let shared: Vec<(u64, u64)> =
            shared_test_pairs(&newer, &older).unwrap().into_iter().map(|(a, b, _)| (a, b)).collect();
        assert_eq!(shared, [(5, 6), (7, 8)], "gaml/1 trained on (1, 2) and validated on (3, 4)");
        let descriptor = Entry { id: "descriptor/v1".into(), record: None, active: true };
        assert_eq!(shared_test_pairs(&newer, &descriptor).unwrap().len(), 4, "the descriptor learnt from none");
        assert_eq!(shared_test_pairs(&descriptor, &older).unwrap().len(), 1, "the reference's own test pairs");
    }
}
