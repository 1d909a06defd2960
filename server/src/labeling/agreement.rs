//! Inter-annotator agreement. Each unit (a pair) is given as the number of votes per category.

/// Fleiss' kappa over units that each have the same number n ≥ 2 of ratings. `None` when there
/// are no such units or chance agreement is total (every vote in one category).
pub fn fleiss_kappa(units: &[Vec<u32>]) -> Option<f64> {
    let n = units.first()?.iter().sum::<u32>() as f64;
    if n < 2.0 || units.iter().any(|u| u.iter().sum::<u32>() as f64 != n) {
        return None;
    }
    let categories = units[0].len();
    let count = units.len() as f64;
    let observed: f64 = units
        .iter()
        .map(|u| (u.iter().map(|&c| (c as f64) * (c as f64)).sum::<f64>() - n) / (n * (n - 1.0)))
        .sum::<f64>()
        / count;
    let expected: f64 = (0..categories)
        .map(|j| {
            let share = units.iter().map(|u| u[j] as f64).sum::<f64>() / (count * n);
            share * share
        })
        .sum();
    if (1.0 - expected).abs() < 1e-12 {
        return None;
    }
    Some((observed - expected) / (1.0 - expected))
}

/// Krippendorff's alpha for nominal data. Units with fewer than two ratings carry no pairing
/// information and are left out, as the coefficient prescribes. `None` without variation.
pub fn krippendorff_alpha_nominal(units: &[Vec<u32>]) -> Option<f64> {
    let categories = units.first()?.len();
    // Coincidence matrix: each ordered pair of ratings within a unit, weighted 1/(m_u - 1).
    let mut o = vec![vec![0f64; categories]; categories];
    for u in units {
        let m = u.iter().sum::<u32>() as f64;
        if m < 2.0 {
            continue;
        }
        for c in 0..categories {
            for k in 0..categories {
                let pairs = if c == k { u[c] as f64 * (u[c] as f64 - 1.0) } else { u[c] as f64 * u[k] as f64 };
                o[c][k] += pairs / (m - 1.0);
            }
        }
    }
    let totals: Vec<f64> = o.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = totals.iter().sum();
    if n <= 1.0 {
        return None;
    }
    let disagreement_observed: f64 = (0..categories)
        .flat_map(|c| (0..categories).map(move |k| (c, k)))
        .filter(|(c, k)| c != k)
        .map(|(c, k)| o[c][k])
        .sum();
    let disagreement_expected: f64 = (0..categories)
        .flat_map(|c| (0..categories).map(move |k| (c, k)))
        .filter(|(c, k)| c != k)
        .map(|(c, k)| totals[c] * totals[k])
        .sum::<f64>()
        / (n - 1.0);
    if disagreement_expected == 0.0 {
        return None;
    }
    Some(1.0 - disagreement_observed / disagreement_expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleiss_kappa_matches_the_textbook_example() {
        // Fleiss (1971) as worked through in many textbooks: 10 subjects, 14 raters, 5 categories,
        // kappa = 0.210.
        let table = [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ];
        let units: Vec<Vec<u32>> = table.iter().map(|r| r.to_vec()).collect();
        let kappa = fleiss_kappa(&units).unwrap();
        assert!((kappa - 0.2099).abs() < 1e-3, "{kappa}");
    }

    #[test]
    fn krippendorff_alpha_matches_the_published_example() {
        // Krippendorff's "Computing Krippendorff's alpha-reliability" (2011), nominal example:
        // 4 observers, 12 units with missing values, alpha = 0.743.
        let observers: [[u32; 12]; 4] = [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, 0, 0, 0],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, 0, 3],
            [0, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 0],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, 0],
        ];
        let units: Vec<Vec<u32>> = (0..12)
            .map(|u| {
                let mut counts = vec![0u32; 5];
                for o in &observers {
                    if o[u] > 0 {
                        counts[o[u] as usize - 1] += 1;
                    }
                }
                counts
            })
            .collect();
        let alpha = krippendorff_alpha_nominal(&units).unwrap();
        assert!((alpha - 0.743).abs() < 1e-3, "{alpha}");
    }

    #[test]
    fn perfect_and_chance_agreement() {
        let perfect = vec![vec![3, 0], vec![0, 3], vec![3, 0]];
        assert!((fleiss_kappa(&perfect).unwrap() - 1.0).abs() < 1e-12);
        assert!((krippendorff_alpha_nominal(&perfect).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(fleiss_kappa(&[vec![3, 0], vec![3, 0]]), None, "no variation: undefined");
        assert_eq!(fleiss_kappa(&[]), None);
        // Every unit split 2-1 the same way: agreement below chance.
        let split = vec![vec![2, 1], vec![1, 2], vec![2, 1], vec![1, 2]];
        assert!(fleiss_kappa(&split).unwrap() < 0.0);
    }
}
