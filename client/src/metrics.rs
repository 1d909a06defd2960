//! Verification metrics over scored pairs: ROC-AUC, accuracy at a threshold, the best threshold
//! on a training set, and k-fold accuracy as in the LFW protocol. Distances: smaller means
//! "same"; a pair is predicted same when its distance is at most the threshold.

/// ROC-AUC of `distances` for the labels `same`: the probability that a random same pair is
/// nearer than a random different pair, ties counting one half (the Mann-Whitney statistic).
/// `None` when either class is empty.
pub fn roc_auc(distances: &[f64], same: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..distances.len()).collect();
    order.sort_by(|&a, &b| distances[a].total_cmp(&distances[b]));
    let (positives, negatives) = (same.iter().filter(|&&s| s).count(), same.iter().filter(|&&s| !s).count());
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Walk from the largest distance down; each same pair beats every different pair farther
    // away, and shares half the credit with different pairs at the same distance.
    let mut wins = 0.0;
    let mut negatives_farther = 0usize;
    let mut i = order.len();
    while i > 0 {
        let d = distances[order[i - 1]];
        let mut j = i;
        let (mut pos_here, mut neg_here) = (0usize, 0usize);
        while j > 0 && distances[order[j - 1]] == d {
            if same[order[j - 1]] {
                pos_here += 1;
            } else {
                neg_here += 1;
            }
            j -= 1;
        }
        wins += pos_here as f64 * (negatives_farther as f64 + neg_here as f64 / 2.0);
        negatives_farther += neg_here;
        i = j;
    }
    Some(wins / (positives as f64 * negatives as f64))
}

/// Share of pairs classified right at `threshold`.
pub fn accuracy_at(distances: &[f64], same: &[bool], threshold: f64) -> f64 {
    let right = distances.iter().zip(same).filter(|(&d, &s)| (d <= threshold) == s).count();
    right as f64 / distances.len().max(1) as f64
}

/// The threshold with the best accuracy on these pairs (midpoints between neighbouring
/// distances are tried; the smallest best one wins), and that accuracy.
pub fn best_threshold(distances: &[f64], same: &[bool]) -> (f64, f64) {
    let mut order: Vec<usize> = (0..distances.len()).collect();
    order.sort_by(|&a, &b| distances[a].total_cmp(&distances[b]));
    // Threshold below everything: every pair predicted different.
    let mut right = same.iter().filter(|&&s| !s).count() as i64;
    let first = order.first().map(|&i| distances[i] - 1.0).unwrap_or(0.0);
    let (mut best_t, mut best_right) = (first, right);
    let mut k = 0;
    while k < order.len() {
        let d = distances[order[k]];
        // Move every pair at distance d to "predicted same".
        while k < order.len() && distances[order[k]] == d {
            right += if same[order[k]] { 1 } else { -1 };
            k += 1;
        }
        if right > best_right {
            let next = order.get(k).map(|&i| distances[i]).unwrap_or(d + 1.0);
            best_t = (d + next) / 2.0;
            best_right = right;
        }
    }
    (best_t, best_right as f64 / distances.len().max(1) as f64)
}

/// Accuracy of each fold when the threshold is chosen on all the other folds.
pub fn k_fold_accuracy(distances: &[f64], same: &[bool], fold_of: &[usize], folds: usize) -> Vec<(f64, f64)> {
    (0..folds)
        .map(|k| {
            let split = |test: bool| -> (Vec<f64>, Vec<bool>) {
                (0..distances.len()).filter(|&i| (fold_of[i] == k) == test).map(|i| (distances[i], same[i])).unzip()
            };
            let (train_d, train_s) = split(false);
            let (test_d, test_s) = split(true);
            let (threshold, _) = best_threshold(&train_d, &train_s);
            (threshold, accuracy_at(&test_d, &test_s, threshold))
        })
        .collect()
}

/// Mean and sample standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference value from scikit-learn 1.9.1 (0.92, also 23 of 25 ordered pairs by hand):
    //   from sklearn.metrics import roc_auc_score
    //   d = [0.2, 0.9, 0.4, 0.4, 1.3, 0.7, 0.3, 1.1, 0.4, 0.8]
    //   y = [1,   0,   1,   0,   0,   1,   1,   0,   1,   0]
    //   roc_auc_score(y, [-x for x in d])
    const D: [f64; 10] = [0.2, 0.9, 0.4, 0.4, 1.3, 0.7, 0.3, 1.1, 0.4, 0.8];
    const Y: [bool; 10] = [true, false, true, false, false, true, true, false, true, false];
    const SKLEARN_AUC: f64 = 0.92;

    #[test]
    fn auc_matches_scikit_learn() {
        let auc = roc_auc(&D, &Y).unwrap();
        assert!((auc - SKLEARN_AUC).abs() < 1e-12, "{auc}");
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.2, 0.1], &[true, false]), Some(0.0));
    }

    #[test]
    fn best_threshold_separates_when_possible() {
        let (t, acc) = best_threshold(&[0.1, 0.2, 0.5, 0.6], &[true, true, false, false]);
        assert_eq!((t, acc), (0.35, 1.0));
        let (t, acc) = best_threshold(&D, &Y);
        assert!((accuracy_at(&D, &Y, t) - acc).abs() < 1e-12);
        // Only the different pair at 0.4 is on the wrong side of 0.75 = (0.7 + 0.8) / 2.
        assert_eq!((t, acc), (0.75, 0.9));
    }

    #[test]
    fn folds_choose_thresholds_elsewhere() {
        let fold_of: Vec<usize> = (0..10).map(|i| i % 2).collect();
        let per_fold = k_fold_accuracy(&D, &Y, &fold_of, 2);
        assert_eq!(per_fold.len(), 2);
        for (k, (t, acc)) in per_fold.iter().enumerate() {
            let test: Vec<usize> = (0..10).filter(|i| i % 2 == k).collect();
            let d: Vec<f64> = test.iter().map(|&i| D[i]).collect();
            let y: Vec<bool> = test.iter().map(|&i| Y[i]).collect();
            assert_eq!(*acc, accuracy_at(&d, &y, *t));
        }
        let (mean, std) = mean_std(&[0.9, 0.8, 1.0]);
        assert!((mean - 0.9).abs() < 1e-12 && (std - 0.1).abs() < 1e-12);
    }
}

/// Retrieval figures of one probe set: mean average precision and the share of probes whose
/// first correct match is within the first K results (Rank@K), for each K asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieval {
    pub probes: usize,
    pub map: f64,
    pub rank_at: Vec<(usize, f64)>,
}

/// Every item a probe against all the others, ranked by `score` (`larger_is_better` for cosine
/// similarity, else a distance), a match being an item of the same group. Probes without any
/// other item of their group are skipped. Ties keep item order.
pub fn retrieval(
    items: usize,
    groups: &[u64],
    score: impl Fn(usize, usize) -> f32,
    larger_is_better: bool,
    ks: &[usize],
) -> Retrieval {
    let mut sum_ap = 0.0;
    let mut hits_at = vec![0usize; ks.len()];
    let mut probes = 0;
    let mut order: Vec<(f32, usize)> = Vec::with_capacity(items);
    for p in 0..items {
        let relevant = (0..items).filter(|&j| j != p && groups[j] == groups[p]).count();
        if relevant == 0 {
            continue;
        }
        probes += 1;
        order.clear();
        order.extend((0..items).filter(|&j| j != p).map(|j| (score(p, j), j)));
        if larger_is_better {
            order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        } else {
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        let (mut found, mut precision_sum, mut first) = (0usize, 0.0, None);
        for (rank, &(_, j)) in order.iter().enumerate() {
            if groups[j] == groups[p] {
                found += 1;
                precision_sum += found as f64 / (rank + 1) as f64;
                first.get_or_insert(rank + 1);
                if found == relevant {
                    break;
                }
            }
        }
        sum_ap += precision_sum / relevant as f64;
        for (i, &k) in ks.iter().enumerate() {
            if first.is_some_and(|f| f <= k) {
                hits_at[i] += 1;
            }
        }
    }
    let share = |n: usize| if probes == 0 { 0.0 } else { n as f64 / probes as f64 };
    Retrieval {
        probes,
        map: if probes == 0 { 0.0 } else { sum_ap / probes as f64 },
        rank_at: ks.iter().zip(&hits_at).map(|(&k, &n)| (k, share(n))).collect(),
    }
}

#[cfg(test)]
mod retrieval_tests {
    use super::*;

    #[test]
    fn average_precision_and_rank_at_k_by_hand() {
        // Points on a line; groups: A = {0, 2}, B = {1, 3}, C = {4} (no match, not a probe).
        let x = [0.0f32, 1.0, 1.5, 5.0, 10.0];
        let groups = [1, 2, 1, 2, 3];
        let r = retrieval(5, &groups, |a, b| (x[a] - x[b]).abs(), false, &[1, 2]);
        assert_eq!(r.probes, 4);
        // Probe 0: ranked 1 (d1), 2 (d1.5 match) → AP 1/2, first at 2.
        // Probe 1: ranked 2 (0.5), 0 (1), 3 (4 match) → AP 1/3, first at 3.
        // Probe 2: ranked 1 (0.5), 0 (1.5 match) → AP 1/2, first at 2.
        // Probe 3: ranked 4 (5)... distances 3.5 (2), 4 (1), 5 (0, 4) → match 1 at rank 2 → AP 1/2.
        let expected_map = (0.5 + 1.0 / 3.0 + 0.5 + 0.5) / 4.0;
        assert!((r.map - expected_map).abs() < 1e-12, "{}", r.map);
        assert_eq!(r.rank_at, vec![(1, 0.0), (2, 0.75)]);
        // Similarities: the negated distance ranks the same way.
        let s = retrieval(5, &groups, |a, b| -(x[a] - x[b]).abs(), true, &[1, 2]);
        assert_eq!(s, r);
    }
}
