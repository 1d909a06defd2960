//! The approximate index for large galleries: an HNSW graph (`hnsw_rs`) over a gallery's
//! vectors. Cosine galleries are indexed by their unit vectors, where Euclidean order is cosine
//! order. Results are re-scored from the gallery's own vectors, so scores are exact and only the
//! candidate set is approximate (its recall is measured against exact search in the tests and in
//! `bench/rank.sh`).
//!
//! Crate choice (checked 2026-11): `hnsw_rs` 0.3 builds in parallel, searches with a filter
//! (identity and dataset filters stay inside the graph walk) and is maintained; `instant-distance`
//! 0.6 has neither filtered search nor releases since 2023; `hnsw` 0.11 (rust-cv) is unmaintained;
//! `usearch` needs a C++ build.

use hnsw_rs::anndists::dist::DistL2;
use hnsw_rs::hnsw::Hnsw;

use super::gallery::{sort_hits, Gallery, Hit};
use crate::models::Metric;

/// Graph parameters: neighbours per node and the candidate list while building. 16 / 200 are the
/// usual defaults for 100-1,000-dimensional embeddings.
pub const MAX_CONNECTIONS: usize = 16;
pub const EF_CONSTRUCTION: usize = 200;
const MAX_LAYERS: usize = 16;

/// An HNSW graph over a gallery, for the metric it was built for.
pub struct Approx {
    graph: Hnsw<'static, f32, DistL2>,
    metric: Metric,
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

impl Approx {
    /// Builds the graph on all cores (rayon). Minutes for a million rows on two cores.
    pub fn build(gallery: &Gallery, metric: Metric) -> Self {
        let n = gallery.len();
        let graph = Hnsw::new(MAX_CONNECTIONS, n.max(1), MAX_LAYERS, EF_CONSTRUCTION, DistL2 {});
        // Euclidean graphs take the gallery's rows as they are; cosine graphs their unit vectors.
        let units: Vec<Vec<f32>> = match metric {
            Metric::Euclidean => Vec::new(),
            Metric::Cosine => (0..n).map(|row| unit(gallery.vector(row))).collect(),
        };
        let items: Vec<(&[f32], usize)> = (0..n)
            .map(|row| match metric {
                Metric::Euclidean => (gallery.vector(row), row),
                Metric::Cosine => (units[row].as_slice(), row),
            })
            .collect();
        graph.parallel_insert_slice(&items);
        Approx { graph, metric }
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The `k` best rows `keep` accepts, searching with a candidate list of `ef`, best first.
    /// May return fewer than `k` when the filter is very selective.
    pub fn search(
        &self,
        gallery: &Gallery,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<Hit> {
        let q = match self.metric {
            Metric::Euclidean => query.to_vec(),
            Metric::Cosine => unit(query),
        };
        let filter = |id: &usize| keep(*id);
        let found = self.graph.search_filter(&q, k, ef.max(k), Some(&filter));
        let mut hits: Vec<Hit> = found
            .iter()
            .map(|n| Hit { row: n.d_id, score: self.metric.score(query, gallery.vector(n.d_id)) })
            .collect();
        sort_hits(&mut hits, self.metric);
        hits.truncate(k);
        hits
    }
}

/// Share of the exact top-`k` rows an approximate answer found.
pub fn recall(exact: &[Hit], approx: &[Hit]) -> f64 {
    if exact.is_empty() {
        return 1.0;
    }
    let found = exact.iter().filter(|e| approx.iter().any(|a| a.row == e.row)).count();
    found as f64 / exact.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranking::gallery::GalleryBuilder;
    use rand::{Rng, SeedableRng};

    /// Clustered vectors, as face embeddings are: 400 centres, 10 points around each.
    fn clustered(n: usize, dim: usize) -> Gallery {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let centres: Vec<Vec<f32>> = (0..400).map(|_| (0..dim).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
        let mut b = GalleryBuilder::new(dim);
        for i in 0..n {
            let c = &centres[i % centres.len()];
            let v: Vec<f32> = c.iter().map(|x| x + 0.1 * (rng.random::<f32>() - 0.5)).collect();
            b.push(i as u64 + 1, (i % centres.len()) as u64 + 1, "p", "ds", &v);
        }
        b.build()
    }

    #[test]
    fn hnsw_finds_nearly_all_exact_neighbours_with_exact_scores_and_honours_filters() {
        let g = clustered(4_000, 32);
        for metric in [Metric::Euclidean, Metric::Cosine] {
            let index = Approx::build(&g, metric);
            let (mut total, queries) = (0.0, 50);
            for qi in 0..queries {
                let q: Vec<f32> = g.vector(qi * 71).iter().map(|x| x + 0.01).collect();
                let exact = &g.top_k(&[&q], metric, 10, &|_, _| true)[0];
                let approx = index.search(&g, &q, 10, 64, &|_| true);
                assert_eq!(approx.len(), 10);
                for a in &approx {
                    assert!((a.score - metric.score(&q, g.vector(a.row))).abs() < 1e-6);
                }
                total += recall(exact, &approx);
                let odd = index.search(&g, &q, 10, 64, &|row| row % 2 == 1);
                assert!(odd.iter().all(|h| h.row % 2 == 1), "{metric:?}: the filter holds");
            }
            let mean = total / queries as f64;
            assert!(mean >= 0.95, "{metric:?}: recall@10 {mean}");
        }
    }
}
