//! Exact nearest-pair search over a set of embeddings, without ever holding all N² distances.
//!
//! The distance matrix is visited in square blocks of its upper triangle. Each block's dot
//! products come from one matrix multiply (`gemm`), and the norm identity
//! ‖x − y‖² = ‖x‖² + ‖y‖² − 2 x·y screens the block cheaply. The identity loses a little precision,
//! so the screen keeps a safety margin and every pair that passes it has its distance recomputed
//! directly; that direct value ([`squared_euclidean`]) is the one compared, sorted and
//! reported. Results are therefore exactly those of a naive loop over all pairs, in a fixed order:
//! distance, then the first row, then the second.
//!
//! Blocks run in parallel on a dedicated thread pool. Memory is the vectors, one block of dot
//! products per thread and the output.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::vectors::{blocks, squared_euclidean};

/// Rows per block. 256 × 256 dot products (256 KiB) stay in a core's L2 cache.
const BLOCK: usize = 256;

/// Relative slack of the screen: the norm identity's rounding error, bounded generously. With
/// d terms the error of a float dot product stays below d·2⁻²⁴·‖x‖‖y‖ (6e-6 for d = 128);
/// 1e-4 · (‖x‖² + ‖y‖²) covers it up to d ≈ 1,600 with room to spare.
const SLACK: f32 = 1e-4;

/// Row-major vectors of one dimension.
#[derive(Debug, Clone, Copy)]
pub struct Vectors<'a> {
    data: &'a [f32],
    dim: usize,
}

impl<'a> Vectors<'a> {
    /// `data` holds `data.len() / dim` rows. Panics when the length is not a multiple of `dim`.
    pub fn new(data: &'a [f32], dim: usize) -> Self {
        assert!(dim > 0 && data.len().is_multiple_of(dim), "vector data must be whole rows");
        Vectors { data, dim }
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// One pair of rows, `a < b`, and its exact distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    pub a: u32,
    pub b: u32,
    pub squared: f32,
}

impl Found {
    pub fn distance(&self) -> f32 {
        self.squared.sqrt()
    }

    /// The total order of results: distance, then rows.
    fn cmp_key(&self, other: &Self) -> CmpOrdering {
        self.squared.total_cmp(&other.squared).then(self.a.cmp(&other.a)).then(self.b.cmp(&other.b))
    }
}

impl Eq for Found {}
impl PartialOrd for Found {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Found {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.cmp_key(other)
    }
}

/// Which pairs count at all.
pub struct PairFilter<'a> {
    /// A group (identity) per row; pairs inside one group are skipped unless `same_group`.
    pub groups: &'a [u64],
    pub same_group: bool,
    /// Pairs to leave out, e.g. those proposed before. Called only for pairs that pass the
    /// distance screen, so it may be a hash lookup.
    pub skip: &'a (dyn Fn(u32, u32) -> bool + Sync),
}

impl PairFilter<'_> {
    fn keeps(&self, a: usize, b: usize) -> bool {
        (self.same_group || self.groups[a] != self.groups[b]) && !(self.skip)(a as u32, b as u32)
    }
}

/// How the search ends early: cancelled, or the output grew past its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SearchStop {
    #[error("the search was cancelled")]
    Cancelled,
    #[error("more than {0} pairs match")]
    TooMany(usize),
}

/// Progress and cancellation, shared by the worker threads.
pub struct Control<'a> {
    pub threads: usize,
    pub cancel: &'a AtomicBool,
    /// Called now and then with (blocks done, blocks in all).
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
}

/// A block of the upper triangle: rows `i0..i1` against rows `j0..j1`, `j0 >= i0`.
#[derive(Debug, Clone, Copy)]
struct Block {
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

fn blocks(n: usize) -> Vec<Block> {
    let starts: Vec<usize> = (0..n).step_by(BLOCK).collect();
    let mut out = Vec::with_capacity(starts.len() * (starts.len() + 1) / 2);
    for (bi, &i0) in starts.iter().enumerate() {
        for &j0 in &starts[bi..] {
            out.push(Block { i0, i1: (i0 + BLOCK).min(n), j0, j1: (j0 + BLOCK).min(n) });
        }
    }
    out
}

/// Dot products of a block into `out` (row-major, `(i1-i0) × (j1-j0)`).
fn block_dots(v: &Vectors<'_>, b: Block, out: &mut Vec<f32>) {
    let k = v.dim;
    blocks::dots(&v.data[b.i0 * k..b.i1 * k], &v.data[b.j0 * k..b.j1 * k], k, 1, out);
}

/// Squared norms, shrunk by the screen's slack.
fn screen_norms(v: &Vectors<'_>) -> Vec<f32> {
    (0..v.len()).map(|i| v.row(i).iter().map(|x| x * x).sum::<f32>() * (1.0 - SLACK)).collect()
}

/// Runs `visit` on every block, on `control.threads` threads that each take the next block not yet
/// taken, and returns each thread's state. Stops visiting once `cancel` is set.
fn scan<S: Send>(
    v: &Vectors<'_>,
    control: &Control<'_>,
    init: impl Fn() -> S + Sync,
    visit: impl Fn(&mut S, Block, &[f32]) + Sync,
) -> Result<Vec<S>, SearchStop> {
    let all = blocks(v.len());
    let total = all.len() as u64;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let step = (all.len() / 200).max(1);
    let worker = || {
        let mut state = init();
        let mut dots = Vec::new();
        loop {
            if control.cancel.load(Ordering::Relaxed) {
                break;
            }
            let Some(&block) = all.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
            block_dots(v, block, &mut dots);
            visit(&mut state, block, &dots);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(step) || n == all.len() {
                (control.progress)(n as u64, total);
            }
        }
        state
    };
    let states = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..control.threads.max(1))
            .map(|i| std::thread::Builder::new().name(format!("pair-search-{i}")).spawn_scoped(scope, worker))
            .collect();
        let mut states = vec![worker()];
        for handle in handles {
            match handle {
                Ok(h) => states.push(h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))),
                // A thread that could not start leaves its share to the others.
                Err(e) => tracing::warn!("cannot start a search thread: {e}"),
            }
        }
        states
    });
    if control.cancel.load(Ordering::Relaxed) {
        return Err(SearchStop::Cancelled);
    }
    Ok(states)
}

/// Calls `hit(a, b, screen)` for each pair of the block with `a < b` whose screened squared
/// distance is at most `cut()`.
#[inline]
fn screen_block(block: Block, dots: &[f32], norms: &[f32], cut: impl Fn() -> f32, mut hit: impl FnMut(usize, usize)) {
    let width = block.j1 - block.j0;
    let col_norms = &norms[block.j0..block.j1];
    for (r, row) in dots.chunks_exact(width).enumerate() {
        let a = block.i0 + r;
        // Only the upper triangle: on the diagonal block, columns after the row.
        let first = if block.i0 == block.j0 { r + 1 } else { 0 };
        if first >= width {
            continue;
        }
        let limit = cut() - norms[a];
        for (c, (&dot, &nb)) in row[first..].iter().zip(&col_norms[first..]).enumerate() {
            if nb - 2.0 * dot <= limit {
                hit(a, block.j0 + first + c);
            }
        }
    }
}

/// Every pair (after `filter`) whose distance (as [`Found::distance`] reports it) is at most
/// `max_distance`, sorted. Fails with
/// [`SearchStop::TooMany`] as soon as more than `cap` pairs match.
pub fn within(
    v: &Vectors<'_>,
    filter: &PairFilter<'_>,
    max_distance: f32,
    cap: usize,
    control: &Control<'_>,
) -> Result<Vec<Found>, SearchStop> {
    within_band(v, filter, 0.0, max_distance, cap, control)
}

/// Every pair (after `filter`) with `min_distance <= distance <= max_distance`, sorted by
/// distance; stops with `TooMany` past `cap` pairs.
pub fn within_band(
    v: &Vectors<'_>,
    filter: &PairFilter<'_>,
    min_distance: f32,
    max_distance: f32,
    cap: usize,
    control: &Control<'_>,
) -> Result<Vec<Found>, SearchStop> {
    // Pairs are kept by their reported distance (the square root), so that a pair shown with
    // distance d is always within a threshold of d; the screen's cut sits a little above d².
    let cut = max_distance * max_distance * (1.0 + 1e-6);
    let norms = screen_norms(v);
    let count = AtomicUsize::new(0);
    let overflow = AtomicBool::new(false);
    let cancel_or_overflow = AtomicBool::new(false);
    let inner = Control { threads: control.threads, cancel: &cancel_or_overflow, progress: control.progress };
    let states = scan(v, &inner, Vec::new, |found: &mut Vec<Found>, block, dots| {
        if control.cancel.load(Ordering::Relaxed) {
            cancel_or_overflow.store(true, Ordering::Relaxed);
            return;
        }
        screen_block(
            block,
            dots,
            &norms,
            || cut,
            |a, b| {
                if !filter.keeps(a, b) {
                    return;
                }
                let squared = squared_euclidean(v.row(a), v.row(b));
                let distance = squared.sqrt();
                if distance <= max_distance && distance >= min_distance {
                    found.push(Found { a: a as u32, b: b as u32, squared });
                    if count.fetch_add(1, Ordering::Relaxed) + 1 > cap {
                        overflow.store(true, Ordering::Relaxed);
                        cancel_or_overflow.store(true, Ordering::Relaxed);
                    }
                }
            },
        );
    });
    if overflow.load(Ordering::Relaxed) {
        return Err(SearchStop::TooMany(cap));
    }
    if control.cancel.load(Ordering::Relaxed) {
        return Err(SearchStop::Cancelled);
    }
    let mut all: Vec<Found> = states?.into_iter().flatten().collect();
    all.sort_unstable();
    Ok(all)
}

/// The `k` nearest pairs (after `filter`), sorted; fewer when fewer pairs exist.
pub fn nearest(
    v: &Vectors<'_>,
    filter: &PairFilter<'_>,
    k: usize,
    control: &Control<'_>,
) -> Result<Vec<Found>, SearchStop> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let norms = screen_norms(v);
    // The largest squared distance still worth looking at: the worst of the best k found by any
    // one thread, shared as f32 bits (squared distances are never negative, so the bit order of
    // the floats is their numeric order).
    let shared_cut = AtomicU32::new(f32::INFINITY.to_bits());
    let states = scan(v, control, BinaryHeap::<Found>::new, |heap, block, dots| {
        screen_block(
            block,
            dots,
            &norms,
            || f32::from_bits(shared_cut.load(Ordering::Relaxed)),
            |a, b| {
                if !filter.keeps(a, b) {
                    return;
                }
                let squared = squared_euclidean(v.row(a), v.row(b));
                let candidate = Found { a: a as u32, b: b as u32, squared };
                if heap.len() < k {
                    heap.push(candidate);
                } else if candidate < *heap.peek().expect("heap is full") {
                    heap.pop();
                    heap.push(candidate);
                } else {
                    return;
                }
                if heap.len() == k {
                    let worst = heap.peek().expect("heap is full").squared.to_bits();
                    shared_cut.fetch_min(worst, Ordering::Relaxed);
                }
            },
        );
    })?;
    let mut all: Vec<Found> = states.into_iter().flat_map(BinaryHeap::into_vec).collect();
    all.sort_unstable();
    all.truncate(k);
    Ok(all)
}

/// Greedy cap of pairs per row: walks `sorted` in order and keeps a pair while both its rows
/// have fewer than `per_row` kept pairs. Returns the kept pairs, at most `limit` of them.
pub fn cap_per_row(sorted: &[Found], rows: usize, per_row: usize, limit: usize) -> Vec<Found> {
    let mut used = vec![0usize; rows];
    let mut out = Vec::new();
    for pair in sorted {
        if out.len() == limit {
            break;
        }
        let (a, b) = (pair.a as usize, pair.b as usize);
        if used[a] < per_row && used[b] < per_row {
            used[a] += 1;
            used[b] += 1;
            out.push(*pair);
        }
    }
    out
}

/// The `k` nearest pairs when each row may take part in at most `per_row` of them (greedy in
/// distance order). The greedy choice over a sorted prefix of all pairs equals the greedy choice
/// over all pairs as far as it goes, so the prefix grows until it yields `k` pairs or holds
/// every pair.
pub fn nearest_capped(
    v: &Vectors<'_>,
    filter: &PairFilter<'_>,
    k: usize,
    per_row: usize,
    control: &Control<'_>,
) -> Result<Vec<Found>, SearchStop> {
    let mut prefix = k.saturating_mul(2).max(64);
    loop {
        let sorted = nearest(v, filter, prefix, control)?;
        let kept = cap_per_row(&sorted, v.len(), per_row, k);
        if kept.len() == k || sorted.len() < prefix {
            return Ok(kept);
        }
        prefix = prefix.saturating_mul(4);
    }
}

/// Equal-width histogram of the distances of all pairs (after `filter`'s group rule; `skip` is
/// not consulted). Uses the screened distances, which differ from the exact ones by less than
/// the slack (relative 1e-4).
pub struct Histogram {
    pub min: f32,
    pub max: f32,
    pub counts: Vec<u64>,
    pub total: u64,
    /// Pairs with distance ≤ the mark.
    pub within_mark: u64,
}

/// Two passes: the range, then the counts.
pub fn histogram(
    v: &Vectors<'_>,
    groups: &[u64],
    same_group: bool,
    bins: usize,
    mark: f32,
    control: &Control<'_>,
) -> Result<Histogram, SearchStop> {
    let norms: Vec<f32> = (0..v.len()).map(|i| v.row(i).iter().map(|x| x * x).sum::<f32>()).collect();
    let distance = |a: usize, block: Block, c: usize, dot: f32| -> f32 {
        (norms[a] + norms[block.j0 + c] - 2.0 * dot).max(0.0).sqrt()
    };
    // Visits each kept pair of a block with its distance.
    let each = |block: Block, dots: &[f32], f: &mut dyn FnMut(f32)| {
        let width = block.j1 - block.j0;
        for (r, row) in dots.chunks_exact(width).enumerate() {
            let a = block.i0 + r;
            let first = if block.i0 == block.j0 { r + 1 } else { 0 };
            for (c, &dot) in row.iter().enumerate().skip(first) {
                if same_group || groups[a] != groups[block.j0 + c] {
                    f(distance(a, block, c, dot));
                }
            }
        }
    };
    let ranges = scan(
        v,
        control,
        || (f32::INFINITY, f32::NEG_INFINITY, 0u64),
        |(lo, hi, n), block, dots| {
            each(block, dots, &mut |d| {
                *lo = lo.min(d);
                *hi = hi.max(d);
                *n += 1;
            })
        },
    )?;
    let (min, max, total) = ranges
        .into_iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY, 0), |(l, h, n), (a, b, m)| (l.min(a), h.max(b), n + m));
    if total == 0 {
        return Ok(Histogram { min: 0.0, max: 0.0, counts: vec![0; bins], total: 0, within_mark: 0 });
    }
    let width = (max - min) / bins as f32;
    let counts = scan(
        v,
        control,
        || (vec![0u64; bins], 0u64),
        |(counts, marked), block, dots| {
            each(block, dots, &mut |d| {
                let bin = if width > 0.0 { (((d - min) / width) as usize).min(bins - 1) } else { 0 };
                counts[bin] += 1;
                if d <= mark {
                    *marked += 1;
                }
            })
        },
    )?;
    let mut out = Histogram { min, max, counts: vec![0; bins], total, within_mark: 0 };
    for (c, marked) in counts {
        for (o, x) in out.counts.iter_mut().zip(c) {
            *o += x;
        }
        out.within_mark += marked;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n * dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn naive(v: &Vectors<'_>, groups: &[u64], same: bool, skip: &dyn Fn(u32, u32) -> bool) -> Vec<Found> {
        let mut all = Vec::new();
        for a in 0..v.len() {
            for b in a + 1..v.len() {
                if (same || groups[a] != groups[b]) && !skip(a as u32, b as u32) {
                    all.push(Found { a: a as u32, b: b as u32, squared: squared_euclidean(v.row(a), v.row(b)) });
                }
            }
        }
        all.sort_unstable();
        all
    }

    fn quiet() -> (AtomicBool, impl Fn(u64, u64) + Sync) {
        (AtomicBool::new(false), |_, _| {})
    }

    #[test]
    fn matches_the_naive_reference_exactly() {
        // Sizes straddle the block edge; groups of 3 rows like identities with several images.
        for (n, dim, seed) in [(1, 8, 1), (2, 3, 2), (97, 16, 3), (BLOCK + 37, 128, 4), (2 * BLOCK + 1, 32, 5)] {
            let data = random(n, dim, seed);
            let v = Vectors::new(&data, dim);
            let groups: Vec<u64> = (0..n as u64).map(|i| i / 3).collect();
            let skip = |a: u32, b: u32| (a + b).is_multiple_of(11);
            for same in [false, true] {
                let reference = naive(&v, &groups, same, &skip);
                let filter = PairFilter { groups: &groups, same_group: same, skip: &skip };
                for threads in [1, 2] {
                    let (cancel, progress) = quiet();
                    let control = Control { threads, cancel: &cancel, progress: &progress };
                    for k in [0, 1, 10, 500, reference.len(), reference.len() + 5] {
                        let got = nearest(&v, &filter, k, &control).unwrap();
                        assert_eq!(got, reference[..k.min(reference.len())], "n={n} k={k} same={same}");
                    }
                    if let Some(median) = reference.get(reference.len() / 2) {
                        let threshold = median.distance();
                        let got = within(&v, &filter, threshold, usize::MAX, &control).unwrap();
                        let expected: Vec<Found> =
                            reference.iter().filter(|f| f.distance() <= threshold).copied().collect();
                        assert_eq!(got, expected, "n={n} threshold={threshold}");
                    }
                    for per_row in [1, 2] {
                        for k in [1, 7, 100] {
                            let got = nearest_capped(&v, &filter, k, per_row, &control).unwrap();
                            assert_eq!(got, cap_per_row(&reference, n, per_row, k), "n={n} k={k} per_row={per_row}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ties_are_broken_by_rows_and_duplicates_have_distance_zero() {
        // Four copies of one vector and one far away: six zero distances, ordered by rows.
        let mut data = [0.5f32; 4 * 4].to_vec();
        data.extend([9.0f32; 4]);
        let v = Vectors::new(&data, 4);
        let groups = [1, 2, 3, 4, 5];
        let filter = PairFilter { groups: &groups, same_group: false, skip: &|_, _| false };
        let (cancel, progress) = quiet();
        let control = Control { threads: 2, cancel: &cancel, progress: &progress };
        let got = nearest(&v, &filter, 6, &control).unwrap();
        let rows: Vec<(u32, u32)> = got.iter().map(|f| (f.a, f.b)).collect();
        assert_eq!(rows, [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]);
        assert!(got.iter().all(|f| f.squared == 0.0));
        assert_eq!(within(&v, &filter, 0.0, 100, &control).unwrap(), got);
    }

    #[test]
    fn stops_on_cancel_and_on_too_many() {
        let data = random(300, 8, 9);
        let v = Vectors::new(&data, 8);
        let groups: Vec<u64> = (0..300).collect();
        let filter = PairFilter { groups: &groups, same_group: false, skip: &|_, _| false };
        let (cancel, progress) = quiet();
        let control = Control { threads: 2, cancel: &cancel, progress: &progress };
        assert_eq!(within(&v, &filter, 100.0, 1000, &control), Err(SearchStop::TooMany(1000)));
        cancel.store(true, Ordering::SeqCst);
        assert_eq!(nearest(&v, &filter, 5, &control), Err(SearchStop::Cancelled));
    }

    #[test]
    fn histogram_counts_every_pair_once() {
        let data = random(400, 16, 11);
        let v = Vectors::new(&data, 16);
        let groups: Vec<u64> = (0..400u64).map(|i| i / 4).collect();
        let reference = naive(&v, &groups, false, &|_, _| false);
        let (cancel, progress) = quiet();
        let control = Control { threads: 2, cancel: &cancel, progress: &progress };
        let mark = reference[1000].distance();
        let h = histogram(&v, &groups, false, 20, mark, &control).unwrap();
        assert_eq!(h.total as usize, reference.len());
        assert_eq!(h.counts.iter().sum::<u64>(), h.total);
        assert!((h.min - reference[0].distance()).abs() < 1e-4);
        assert!((h.max - reference.last().unwrap().distance()).abs() < 1e-4);
        // The screened distances may move a pair across the mark only within the slack.
        let lo = reference.iter().filter(|f| f.distance() <= mark * (1.0 - 1e-4)).count() as u64;
        let hi = reference.iter().filter(|f| f.distance() <= mark * (1.0 + 1e-4)).count() as u64;
        assert!((lo..=hi).contains(&h.within_mark), "{lo} <= {} <= {hi}", h.within_mark);
    }
}
