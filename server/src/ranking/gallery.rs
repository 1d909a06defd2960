//! A gallery: every embedded image of one model, in memory, with exact (brute-force) search.
//!
//! A single query (the common case) is scored row by row with the SIMD kernels of
//! [`crate::vectors::kernel`], one pass over the gallery's memory. Several queries at once (`BatchRank`)
//! get dot products a block of rows at a time with one matrix multiply (`gemm`, which picks the
//! CPU's SIMD kernels at run time), so each block is read once for all of them; Euclidean
//! distances then use ‖g − q‖² = ‖g‖² + ‖q‖² − 2 g·q, and the reported distances of the results
//! are recomputed directly, so rounding in the identity can at most swap near-ties.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::vectors::{blocks, kernel, Metric};

/// Up to this many queries are scored row by row with the vector kernels; more share `gemm`.
const ROW_BY_ROW_MAX: usize = 2;
/// Gallery rows per matrix multiply: 1,024 rows × 128 floats = 512 KiB, about a core's L2.
const BLOCK_ROWS: usize = 1024;
/// Extra candidates kept before the direct recomputation of Euclidean distances.
const RECHECK: usize = 8;

/// What the gallery knows of an image besides its vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub image_id: u64,
    pub identity_id: u64,
    /// Index into [`Gallery::dataset_names`].
    pub dataset: u32,
}

/// One result: a gallery row and its score under the search's metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub score: f32,
}

/// Builds a gallery row by row.
pub struct GalleryBuilder {
    dim: usize,
    data: Vec<f32>,
    rows: Vec<Row>,
    datasets: Vec<String>,
    identity_names: HashMap<u64, String>,
}

impl GalleryBuilder {
    pub fn new(dim: usize) -> Self {
        GalleryBuilder { dim, data: Vec::new(), rows: Vec::new(), datasets: Vec::new(), identity_names: HashMap::new() }
    }

    /// Adds an image. Vectors of another length are refused (returns false).
    pub fn push(&mut self, image_id: u64, identity_id: u64, identity: &str, dataset: &str, vector: &[f32]) -> bool {
        if vector.len() != self.dim || vector.iter().any(|v| !v.is_finite()) {
            return false;
        }
        let dataset = match self.datasets.iter().position(|d| d == dataset) {
            Some(i) => i as u32,
            None => {
                self.datasets.push(dataset.to_string());
                (self.datasets.len() - 1) as u32
            }
        };
        self.identity_names.entry(identity_id).or_insert_with(|| identity.to_string());
        self.data.extend_from_slice(vector);
        self.rows.push(Row { image_id, identity_id, dataset });
        true
    }

    pub fn build(self) -> Gallery {
        let dim = self.dim;
        let sq_norms = self.data.chunks_exact(dim).map(|v| kernel::dot(v, v)).collect();
        let row_of = self.rows.iter().enumerate().map(|(i, r)| (r.image_id, i)).collect();
        Gallery {
            dim,
            data: self.data,
            sq_norms,
            rows: self.rows,
            row_of,
            datasets: self.datasets,
            identity_names: self.identity_names,
        }
    }
}

/// The embedded images of one model.
pub struct Gallery {
    dim: usize,
    data: Vec<f32>,
    sq_norms: Vec<f32>,
    rows: Vec<Row>,
    row_of: HashMap<u64, usize>,
    datasets: Vec<String>,
    identity_names: HashMap<u64, String>,
}

/// A score ordered so that the *worst* is greatest (the top of a max-heap of kept results).
#[derive(Clone, Copy, PartialEq)]
struct Worst {
    badness: f32,
    row: usize,
}

impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        self.badness.total_cmp(&other.badness).then(self.row.cmp(&other.row))
    }
}

/// Smaller is better, whatever the metric.
pub fn badness(metric: Metric, score: f32) -> f32 {
    match metric {
        Metric::Euclidean => score,
        Metric::Cosine => -score,
    }
}

impl Gallery {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// SHA-256 of the vectors in row order (hex), which is all an HNSW graph over the gallery
    /// depends on: a saved graph is reused only for a gallery with this fingerprint. About a
    /// quarter of a second for a million 128-d rows.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update((self.dim as u64).to_le_bytes());
        hash.update((self.rows.len() as u64).to_le_bytes());
        let mut buffer = Vec::with_capacity(64 * 1024);
        for chunk in self.data.chunks(16 * 1024) {
            buffer.clear();
            buffer.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            hash.update(&buffer);
        }
        hex::encode(hash.finalize())
    }

    pub fn row(&self, i: usize) -> Row {
        self.rows[i]
    }

    pub fn vector(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn row_of(&self, image_id: u64) -> Option<usize> {
        self.row_of.get(&image_id).copied()
    }

    pub fn dataset_names(&self) -> &[String] {
        &self.datasets
    }

    pub fn dataset_index(&self, name: &str) -> Option<u32> {
        self.datasets.iter().position(|d| d == name).map(|i| i as u32)
    }

    pub fn identity_name(&self, identity_id: u64) -> &str {
        self.identity_names.get(&identity_id).map_or("", String::as_str)
    }

    pub fn has_identity(&self, identity_id: u64) -> bool {
        self.identity_names.contains_key(&identity_id)
    }

    /// Calls `visit(query, row, score)` for every query and every row, scores under `metric`.
    /// Queries must have the gallery's dimension.
    pub fn for_each_score(&self, queries: &[&[f32]], metric: Metric, mut visit: impl FnMut(usize, usize, f32)) {
        let (dim, nq) = (self.dim, queries.len());
        if nq == 0 || self.is_empty() {
            return;
        }
        let mut q = Vec::with_capacity(nq * dim);
        for query in queries {
            assert_eq!(query.len(), dim, "query of the gallery's dimension");
            q.extend_from_slice(query);
        }
        let q_sq: Vec<f32> = queries.iter().map(|v| kernel::dot(v, v)).collect();
        if nq <= ROW_BY_ROW_MAX {
            for (row, (g, &g_sq)) in self.data.chunks_exact(dim).zip(&self.sq_norms).enumerate() {
                for (qi, query) in queries.iter().enumerate() {
                    let score = match metric {
                        Metric::Euclidean => kernel::sq_l2(g, query).sqrt(),
                        Metric::Cosine => cosine(kernel::dot(g, query), g_sq, q_sq[qi]),
                    };
                    visit(qi, row, score);
                }
            }
            return;
        }
        let mut dots = Vec::new();
        for start in (0..self.len()).step_by(BLOCK_ROWS) {
            let end = (start + BLOCK_ROWS).min(self.len());
            blocks::dots(&self.data[start * dim..end * dim], &q, dim, 1, &mut dots);
            for (offset, row_dots) in dots.chunks_exact(nq).enumerate() {
                let row = start + offset;
                let g_sq = self.sq_norms[row];
                for (qi, &dot) in row_dots.iter().enumerate() {
                    let score = match metric {
                        Metric::Euclidean => (g_sq + q_sq[qi] - 2.0 * dot).max(0.0).sqrt(),
                        Metric::Cosine => cosine(dot, g_sq, q_sq[qi]),
                    };
                    visit(qi, row, score);
                }
            }
        }
    }

    /// The `k` best rows for each query among those `keep(query, row)` accepts, best first.
    pub fn top_k(
        &self,
        queries: &[&[f32]],
        metric: Metric,
        k: usize,
        keep: &dyn Fn(usize, usize) -> bool,
    ) -> Vec<Vec<Hit>> {
        let wanted = k + if metric == Metric::Euclidean { RECHECK } else { 0 };
        let mut heaps: Vec<BinaryHeap<Worst>> =
            (0..queries.len()).map(|_| BinaryHeap::with_capacity(wanted + 1)).collect();
        self.for_each_score(queries, metric, |qi, row, score| {
            let heap = &mut heaps[qi];
            let candidate = Worst { badness: badness(metric, score), row };
            if heap.len() == wanted && heap.peek().is_some_and(|w| candidate >= *w) {
                return;
            }
            if !keep(qi, row) {
                return;
            }
            heap.push(candidate);
            if heap.len() > wanted {
                heap.pop();
            }
        });
        heaps
            .into_iter()
            .enumerate()
            .map(|(qi, heap)| {
                let mut hits: Vec<Hit> = heap
                    .into_iter()
                    .map(|w| Hit {
                        row: w.row,
                        // Reported values come from the vectors directly (see the module's notes).
                        score: metric.score(queries[qi], self.vector(w.row)),
                    })
                    .collect();
                sort_hits(&mut hits, metric);
                hits.truncate(k);
                hits
            })
            .collect()
    }
}

/// Cosine similarity from a dot product and squared norms; 0 against a zero vector.
fn cosine(dot: f32, a_sq: f32, b_sq: f32) -> f32 {
    let norms = (a_sq * b_sq).sqrt();
    if norms > 0.0 {
        dot / norms
    } else {
        0.0
    }
}

/// Best first; ties by row, so results are deterministic.
pub fn sort_hits(hits: &mut [Hit], metric: Metric) {
    hits.sort_by(|a, b| badness(metric, a.score).total_cmp(&badness(metric, b.score)).then(a.row.cmp(&b.row)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_gallery(n: usize, dim: usize, seed: u64) -> Gallery {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut b = GalleryBuilder::new(dim);
        for i in 0..n {
            let v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
            assert!(b.push(i as u64 + 1, (i / 3) as u64 + 1, &format!("p{}", i / 3), "ds", &v));
        }
        b.build()
    }

    /// The naive answer: score every row directly, sort, cut.
    fn naive(g: &Gallery, q: &[f32], metric: Metric, k: usize, keep: impl Fn(usize) -> bool) -> Vec<Hit> {
        let mut all: Vec<Hit> =
            (0..g.len()).filter(|&r| keep(r)).map(|row| Hit { row, score: metric.score(q, g.vector(row)) }).collect();
        sort_hits(&mut all, metric);
        all.truncate(k);
        all
    }

    #[test]
    fn exact_search_matches_a_naive_scan_for_both_metrics_one_query_and_many() {
        // 130 = two 64-lane chunks plus a tail, so the vector kernels' every part is used.
        let g = random_gallery(2_500, 130, 1);
        let queries: Vec<Vec<f32>> =
            (0..5).map(|i| g.vector(i * 97).iter().map(|x| x * 0.9 + 0.01).collect()).collect();
        let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        for metric in [Metric::Euclidean, Metric::Cosine] {
            for batch in [&refs[..1], &refs[..2], &refs[..]] {
                let keep = |_: usize, row: usize| row % 7 != 3;
                let found = g.top_k(batch, metric, 10, &keep);
                assert_eq!(found.len(), batch.len());
                for (qi, hits) in found.iter().enumerate() {
                    let expected = naive(&g, batch[qi], metric, 10, |r| r % 7 != 3);
                    let rows: Vec<usize> = hits.iter().map(|h| h.row).collect();
                    let expected_rows: Vec<usize> = expected.iter().map(|h| h.row).collect();
                    assert_eq!(rows, expected_rows, "{metric:?} query {qi} of {}", batch.len());
                    for (h, e) in hits.iter().zip(&expected) {
                        assert!((h.score - e.score).abs() < 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn vectors_of_the_wrong_length_or_not_finite_are_refused() {
        let mut b = GalleryBuilder::new(3);
        assert!(!b.push(1, 1, "a", "d", &[1.0, 2.0]));
        assert!(!b.push(1, 1, "a", "d", &[1.0, f32::NAN, 2.0]));
        assert!(b.push(2, 1, "a", "d", &[1.0, 0.0, 2.0]));
        let g = b.build();
        assert_eq!((g.len(), g.row_of(2), g.row_of(1)), (1, Some(0), None));
        assert!(g.top_k(&[&[0.0, 0.0, 0.0]], Metric::Cosine, 5, &|_, _| true)[0][0].score == 0.0);
    }
}
