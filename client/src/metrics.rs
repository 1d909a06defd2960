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
