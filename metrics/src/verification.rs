//! Verification metrics over scored pairs, where a score is a distance (smaller means
//! "similar") and a pair is predicted similar when its distance is at most the threshold:
//! ROC curve, ROC-AUC (Mann-Whitney, ties count one half), Matthews correlation coefficient,
//! accuracy, the thresholds chosen on a validation set (best MCC, best accuracy) and k-fold
//! accuracy as in the LFW protocol.

/// ROC-AUC: the probability that a random similar pair is nearer than a random dissimilar one.
/// `None` when either class is missing.
pub fn roc_auc(distances: &[f64], same: &[bool]) -> Option<f64> {
    let order = sorted(distances);
    let positives = same.iter().filter(|&&s| s).count();
    let negatives = same.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Walk groups of equal distance from the nearest; each similar pair beats the dissimilar
    // pairs farther away and shares half with those at its distance.
    let (mut wins, mut negatives_seen) = (0.0, 0usize);
    for group in groups(distances, &order) {
        let pos = group.iter().filter(|&&i| same[i]).count();
        let neg = group.len() - pos;
        let farther = negatives - negatives_seen - neg;
        wins += pos as f64 * (farther as f64 + neg as f64 / 2.0);
        negatives_seen += neg;
    }
    Some(wins / (positives as f64 * negatives as f64))
}

/// Confusion counts at a threshold: (tp, fp, tn, fn).
pub fn confusion(distances: &[f64], same: &[bool], threshold: f64) -> (u64, u64, u64, u64) {
    let mut c = (0, 0, 0, 0);
    for (&d, &s) in distances.iter().zip(same) {
        match (d <= threshold, s) {
            (true, true) => c.0 += 1,
            (true, false) => c.1 += 1,
            (false, false) => c.2 += 1,
            (false, true) => c.3 += 1,
        }
    }
    c
}

/// Matthews correlation coefficient of the prediction at `threshold` (0 when undefined, as
/// scikit-learn does).
pub fn mcc(distances: &[f64], same: &[bool], threshold: f64) -> f64 {
    let (tp, fp, tn, fn_) = confusion(distances, same, threshold);
    mcc_of(tp as f64, fp as f64, tn as f64, fn_ as f64)
}

fn mcc_of(tp: f64, fp: f64, tn: f64, fn_: f64) -> f64 {
    let denominator = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
    if denominator == 0.0 {
        0.0
    } else {
        (tp * tn - fp * fn_) / denominator
    }
}

/// Share of pairs classified right at `threshold`.
pub fn accuracy(distances: &[f64], same: &[bool], threshold: f64) -> f64 {
    let (tp, _, tn, _) = confusion(distances, same, threshold);
    (tp + tn) as f64 / distances.len().max(1) as f64
}

/// The threshold with the highest MCC on these pairs: midpoints between neighbouring distinct
/// distances are tried (and one below all); the smallest best one wins.
pub fn best_mcc_threshold(distances: &[f64], same: &[bool]) -> f64 {
    let order = sorted(distances);
    let positives = same.iter().filter(|&&s| s).count() as f64;
    let negatives = same.len() as f64 - positives;
    let first = order.first().map(|&i| distances[i] - 1.0).unwrap_or(0.0);
    let (mut best_t, mut best) = (first, mcc_of(0.0, 0.0, negatives, positives));
    let (mut tp, mut fp) = (0.0, 0.0);
    let all = groups(distances, &order);
    for (k, group) in all.iter().enumerate() {
        for &i in group {
            if same[i] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
        let value = mcc_of(tp, fp, negatives - fp, positives - tp);
        if value > best {
            let d = distances[group[0]];
            let next = all.get(k + 1).map(|g| distances[g[0]]).unwrap_or(d + 1.0);
            best_t = (d + next) / 2.0;
            best = value;
        }
    }
    best_t
}

/// ROC points (false positive rate, true positive rate, threshold), one per distinct distance
/// from the nearest, starting at (0, 0); at most `max_points` (evenly thinned, ends kept).
pub fn roc_curve(distances: &[f64], same: &[bool], max_points: usize) -> Vec<(f64, f64, f64)> {
    let order = sorted(distances);
    let positives = same.iter().filter(|&&s| s).count().max(1) as f64;
    let negatives = same.iter().filter(|&&s| !s).count().max(1) as f64;
    let first = order.first().map(|&i| distances[i]).unwrap_or(0.0);
    let mut points = vec![(0.0, 0.0, first - 1.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for group in groups(distances, &order) {
        for &i in &group {
            if same[i] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
        points.push((fp / negatives, tp / positives, distances[group[0]]));
    }
    if points.len() > max_points && max_points >= 2 {
        let last = points.len() - 1;
        let step = last as f64 / (max_points - 1) as f64;
        points = (0..max_points).map(|k| points[((k as f64 * step).round() as usize).min(last)]).collect();
    }
    points
}

/// The threshold with the best accuracy on these pairs (midpoints between neighbouring
/// distances are tried; the smallest best one wins), and that accuracy.
pub fn best_accuracy_threshold(distances: &[f64], same: &[bool]) -> (f64, f64) {
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
            let (threshold, _) = best_accuracy_threshold(&train_d, &train_s);
            (threshold, accuracy(&test_d, &test_s, threshold))
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

fn sorted(distances: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..distances.len()).collect();
    order.sort_by(|&a, &b| distances[a].total_cmp(&distances[b]));
    order
}

/// Runs of equal distance in sorted order.
fn groups(distances: &[f64], order: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for &i in order {
        match out.last_mut() {
            Some(group) if distances[group[0]] == distances[i] => group.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from scikit-learn 1.9.1 on these scores:
    //   from sklearn.metrics import roc_auc_score, matthews_corrcoef
    //   d = [0.2, 0.9, 0.4, 0.4, 1.3, 0.7, 0.3, 1.1, 0.4, 0.8, 0.65, 0.1]
    //   y = [1,   0,   1,   0,   0,   1,   1,   0,   1,   0,   0,    1]
    //   roc_auc_score(y, [-x for x in d])                    -> 0.9166666666666667
    //   matthews_corrcoef(y, [int(x <= 0.5) for x in d])     -> 0.6666666666666666
    //   matthews_corrcoef(y, [int(x <= 0.75) for x in d])    -> 0.7071067811865476
    const D: [f64; 12] = [0.2, 0.9, 0.4, 0.4, 1.3, 0.7, 0.3, 1.1, 0.4, 0.8, 0.65, 0.1];
    const Y: [bool; 12] = [true, false, true, false, false, true, true, false, true, false, false, true];

    #[test]
    fn auc_and_mcc_match_scikit_learn() {
        assert!((roc_auc(&D, &Y).unwrap() - 0.916_666_666_666_666_7).abs() < 1e-12);
        assert!((mcc(&D, &Y, 0.5) - 0.666_666_666_666_666_6).abs() < 1e-12);
        assert!((mcc(&D, &Y, 0.75) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(mcc(&[0.1, 0.2], &[true, true], 1.0), 0.0);
    }

    #[test]
    fn the_chosen_threshold_has_the_best_mcc() {
        let t = best_mcc_threshold(&D, &Y);
        let best = mcc(&D, &Y, t);
        for &candidate in &[0.0, 0.15, 0.25, 0.35, 0.45, 0.6, 0.675, 0.75, 0.85, 1.0, 1.2, 2.0] {
            assert!(mcc(&D, &Y, candidate) <= best + 1e-12, "{candidate} beats {t}");
        }
        assert_eq!(best_mcc_threshold(&[0.1, 0.2, 0.5, 0.6], &[true, true, false, false]), 0.35);
    }

    #[test]
    fn roc_curve_runs_from_origin_to_one_one() {
        let roc = roc_curve(&D, &Y, 100);
        assert_eq!((roc[0].0, roc[0].1), (0.0, 0.0));
        assert_eq!((roc.last().unwrap().0, roc.last().unwrap().1), (1.0, 1.0));
        // The area under the drawn curve (trapezoids) is the AUC.
        let area: f64 = roc.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum();
        assert!((area - roc_auc(&D, &Y).unwrap()).abs() < 1e-12);
        assert_eq!(roc_curve(&D, &Y, 3).len(), 3);
    }

    // Reference value from scikit-learn 1.9.1 (0.92, also 23 of 25 ordered pairs by hand):
    //   from sklearn.metrics import roc_auc_score
    //   d = [0.2, 0.9, 0.4, 0.4, 1.3, 0.7, 0.3, 1.1, 0.4, 0.8]
    //   y = [1,   0,   1,   0,   0,   1,   1,   0,   1,   0]
    //   roc_auc_score(y, [-x for x in d])
    const D10: [f64; 10] = [0.2, 0.9, 0.4, 0.4, 1.3, 0.7, 0.3, 1.1, 0.4, 0.8];
    const Y10: [bool; 10] = [true, false, true, false, false, true, true, false, true, false];
    const SKLEARN_AUC: f64 = 0.92;

    #[test]
    fn auc_matches_scikit_learn_on_a_second_set() {
        let auc = roc_auc(&D10, &Y10).unwrap();
        assert!((auc - SKLEARN_AUC).abs() < 1e-12, "{auc}");
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.2, 0.1], &[true, false]), Some(0.0));
    }

    #[test]
    fn best_threshold_separates_when_possible() {
        let (t, acc) = best_accuracy_threshold(&[0.1, 0.2, 0.5, 0.6], &[true, true, false, false]);
        assert_eq!((t, acc), (0.35, 1.0));
        let (t, acc) = best_accuracy_threshold(&D10, &Y10);
        assert!((accuracy(&D10, &Y10, t) - acc).abs() < 1e-12);
        // Only the different pair at 0.4 is on the wrong side of 0.75 = (0.7 + 0.8) / 2.
        assert_eq!((t, acc), (0.75, 0.9));
    }

    #[test]
    fn folds_choose_thresholds_elsewhere() {
        let fold_of: Vec<usize> = (0..10).map(|i| i % 2).collect();
        let per_fold = k_fold_accuracy(&D10, &Y10, &fold_of, 2);
        assert_eq!(per_fold.len(), 2);
        for (k, (t, acc)) in per_fold.iter().enumerate() {
            let test: Vec<usize> = (0..10).filter(|i| i % 2 == k).collect();
            let d: Vec<f64> = test.iter().map(|&i| D10[i]).collect();
            let y: Vec<bool> = test.iter().map(|&i| Y10[i]).collect();
            assert_eq!(*acc, accuracy(&d, &y, *t));
        }
        let (mean, std) = mean_std(&[0.9, 0.8, 1.0]);
        assert!((mean - 0.9).abs() < 1e-12 && (std - 0.1).abs() < 1e-12);
    }
}
