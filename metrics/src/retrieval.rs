//! Retrieval metrics: each item a probe against all the others, mean average precision and the
//! share of probes whose first match is within the first K results (Rank@K).

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
mod tests {
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
