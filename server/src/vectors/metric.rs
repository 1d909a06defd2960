//! How two embeddings are compared: the two metrics a model can declare, and the reference
//! Euclidean distance every exact answer is checked against.

/// The API's `DistanceMetric` number of [`Metric::Euclidean`] (also stored in `ModelRecord`).
pub const EUCLIDEAN: i32 = 1;
/// The API's `DistanceMetric` number of [`Metric::Cosine`].
pub const COSINE: i32 = 2;

/// How a model's embeddings are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Euclidean distance; smaller is more similar.
    Euclidean,
    /// Cosine similarity; larger is more similar.
    Cosine,
}

impl Metric {
    /// The API's `DistanceMetric` number.
    pub fn number(self) -> i32 {
        match self {
            Metric::Euclidean => EUCLIDEAN,
            Metric::Cosine => COSINE,
        }
    }

    pub fn from_number(n: i32) -> Option<Self> {
        match n {
            EUCLIDEAN => Some(Metric::Euclidean),
            COSINE => Some(Metric::Cosine),
            _ => None,
        }
    }

    /// The score of two embeddings under this metric.
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Euclidean => euclidean(a, b),
            Metric::Cosine => {
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let norms = (a.iter().map(|x| x * x).sum::<f32>() * b.iter().map(|x| x * x).sum::<f32>()).sqrt();
                if norms > 0.0 {
                    dot / norms
                } else {
                    0.0
                }
            }
        }
    }

    /// Whether score `a` is better (more similar) than score `b`.
    pub fn better(self, a: f32, b: f32) -> bool {
        match self {
            Metric::Euclidean => a < b,
            Metric::Cosine => a > b,
        }
    }

    /// Whether `score` passes a threshold given in this metric's units.
    pub fn within(self, score: f32, threshold: f32) -> bool {
        match self {
            Metric::Euclidean => score <= threshold,
            Metric::Cosine => score >= threshold,
        }
    }
}

/// The reference squared distance: the sum of squared differences in index order, in f32. Exact
/// searches report this value (not a faster formula's), so every path gives the same numbers.
pub fn squared_euclidean(x: &[f32], y: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let d = a - b;
        sum += d * d;
    }
    sum
}

/// The reference Euclidean distance, `√`[`squared_euclidean`].
pub fn euclidean(a: &[f32], b: &[f32]) -> f32 {
    squared_euclidean(a, b).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_score_order_and_threshold_both_ways() {
        let (a, b) = ([3.0f32, 0.0], [0.0f32, 4.0]);
        assert_eq!(euclidean(&a, &b), 5.0);
        assert_eq!(Metric::Cosine.score(&a, &b), 0.0);
        assert_eq!(Metric::Cosine.score(&a, &[6.0, 0.0]), 1.0);
        assert_eq!(Metric::Cosine.score(&a, &[0.0, 0.0]), 0.0, "a zero vector is unlike everything");
        assert!(Metric::Euclidean.better(0.2, 0.3) && Metric::Cosine.better(0.3, 0.2));
        assert!(Metric::Euclidean.within(0.5, 0.5) && !Metric::Euclidean.within(0.6, 0.5));
        assert!(Metric::Cosine.within(0.5, 0.5) && !Metric::Cosine.within(0.4, 0.5));
        for m in [Metric::Euclidean, Metric::Cosine] {
            assert_eq!(Metric::from_number(m.number()), Some(m));
        }
        assert_eq!(Metric::from_number(0), None);
    }
}
