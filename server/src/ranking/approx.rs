//! The approximate index for large galleries: an HNSW graph (`usearch`) over a gallery's
//! vectors, squared Euclidean for Euclidean models and cosine for cosine ones. Results are
//! re-scored from the gallery's own vectors, so scores are exact and only the candidate set is
//! approximate (its recall is measured against exact search in the tests and in
//! `bench/rank.sh`).
//!
//! Crate choice (measured 2026-11 on this project's 2-core machine, 20,000 clustered 128-d
//! vectors, M = 16, efConstruction = 200, ef = 128, one query at a time): `usearch` 2.26 builds
//! in 4.5 s and answers in 0.34 ms (p50) at recall@10 0.996, close to FAISS's IndexHNSWFlat
//! (3.2 s, 0.23 ms); `hnsw_rs` 0.3 took 9.4 s and 2.5 ms (with this module's SIMD distance);
//! `instant-distance` 0.6 took 113 s and 1.7 ms and has no filtered search; `hnsw` 0.11
//! (rust-cv) is unmaintained. `usearch` also walks the graph with a filter, so identity and
//! dataset filters stay inside the search. It is C++ under a `cxx` bridge (needs a C++
//! compiler at build time), with its own SIMD distance kernels.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::gallery::{sort_hits, Gallery, Hit};
use crate::vectors::Metric;

/// Default neighbours per node (HNSW's M). 32 rather than the usual 16: on the clustered
/// 128-d benchmark gallery (200,000 vectors, FAISS IndexHNSWFlat, recall@10) M = 16 needs
/// efSearch 256 for 0.95 (0.76 ms a query) while M = 32 gives 0.97 at efSearch 64 (0.53 ms),
/// for a 1.5x longer build (BENCHMARKS.md).
pub const DEFAULT_CONNECTIONS: usize = 32;
/// The candidate list while building.
pub const EF_CONSTRUCTION: usize = 200;

/// How the graph stores its copy of the vectors. The walk through the graph only picks
/// candidates; every candidate is then re-scored from the gallery's own f32 vectors, so the
/// scores returned are exact whatever the graph stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphPrecision {
    /// Half precision (the default): half the memory read per distance, so on a 100,000 x 128
    /// gallery searches took about 0.7x the time and the build about 0.5x, at the same recall
    /// as f32 (BENCHMARKS.md). Fits embeddings whose components stay within +/-65,504.
    #[default]
    F16,
    /// Full precision: twice the graph's vector memory.
    F32,
}

impl std::str::FromStr for GraphPrecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(GraphPrecision::F16),
            "f32" => Ok(GraphPrecision::F32),
            other => Err(format!("unknown HNSW precision '{other}': use f16 or f32")),
        }
    }
}

impl std::fmt::Display for GraphPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GraphPrecision::F16 => "f16",
            GraphPrecision::F32 => "f32",
        })
    }
}

/// How a graph is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct GraphOptions {
    /// HNSW's M (neighbours per node); 0 means [`DEFAULT_CONNECTIONS`].
    pub connections: usize,
    pub precision: GraphPrecision,
}

impl GraphOptions {
    /// M as built.
    pub fn connections(&self) -> usize {
        if self.connections == 0 {
            DEFAULT_CONNECTIONS
        } else {
            self.connections
        }
    }
}

/// Why no graph was made.
#[derive(Debug, thiserror::Error)]
pub enum ApproxError {
    /// The library failed (it reports allocation failures and bad sizes).
    #[error("cannot build the HNSW graph: {0}")]
    Library(String),
    #[error("the HNSW build was stopped")]
    Stopped,
}

fn failed(e: impl std::fmt::Display) -> ApproxError {
    ApproxError::Library(e.to_string())
}

fn path_str(path: &Path) -> Result<&str, ApproxError> {
    path.to_str().ok_or_else(|| ApproxError::Library(format!("{} is not a UTF-8 path", path.display())))
}

/// The library's settings for a graph of `dim`-float vectors.
fn index_options(dim: usize, metric: Metric, options: GraphOptions) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: match metric {
            Metric::Euclidean => MetricKind::L2sq,
            Metric::Cosine => MetricKind::Cos,
        },
        quantization: match options.precision {
            GraphPrecision::F16 => ScalarKind::F16,
            GraphPrecision::F32 => ScalarKind::F32,
        },
        connectivity: options.connections(),
        expansion_add: EF_CONSTRUCTION,
        // A floor only: each search asks for at least its `ef` candidates (see `search`).
        expansion_search: 16,
        multi: false,
    }
}

/// Search contexts per core. The library keeps one scratch context (visited set, candidate
/// heaps; about 130 KB at a million rows) per search running at once and fails a search that
/// finds none free, so the graph reserves this many and [`Contexts`] makes further searches
/// wait for one. More than one per core keeps the cores busy while a search waits on memory.
const SEARCH_CONTEXTS_PER_CORE: usize = 4;

/// Counts the graph's free search contexts; a search takes one for its duration, waiting when
/// all are taken (under load, a queue in front of the cores rather than failed searches).
struct Contexts {
    free: Mutex<usize>,
    returned: Condvar,
}

impl Contexts {
    fn new(count: usize) -> Self {
        Contexts { free: Mutex::new(count), returned: Condvar::new() }
    }

    fn take(&self) -> ContextGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        ContextGuard(self)
    }
}

struct ContextGuard<'a>(&'a Contexts);

impl Drop for ContextGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.returned.notify_one();
    }
}

/// An HNSW graph over a gallery, for the metric it was built for. Keys are gallery rows.
pub struct Approx {
    // Declared before `_mapped`: the graph is dropped before the memory it views.
    graph: Index,
    metric: Metric,
    contexts: Contexts,
    /// The saved graph in memory, when the graph is a view of it (see [`Approx::load`]).
    _mapped: Option<memmap2::Mmap>,
}

impl Approx {
    /// Builds the graph with one insertion thread per core (about ten minutes for a million
    /// rows of 128 floats on two cores). Setting `stop` ends the build early (server shutdown).
    pub fn build(
        gallery: &Gallery,
        metric: Metric,
        options: GraphOptions,
        stop: &AtomicBool,
    ) -> Result<Self, ApproxError> {
        let n = gallery.len();
        let graph = Index::new(&index_options(gallery.dim(), metric, options)).map_err(failed)?;
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n.max(1));
        graph.reserve_capacity_and_threads(n.max(1), threads).map_err(failed)?;
        let graph_ref = &graph;
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        for row in (t..n).step_by(threads) {
                            if stop.load(Ordering::Relaxed) {
                                return Err(ApproxError::Stopped);
                            }
                            graph_ref.add(row as u64, gallery.vector(row)).map_err(failed)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| w.join().expect("an HNSW insertion thread panicked"))
        })?;
        Self::ready(graph, n, metric)
    }

    /// Reads a graph that [`Approx::save`] wrote for this gallery with these options (seconds,
    /// where building takes minutes). A file of another gallery size, dimension or M is
    /// refused, so the caller builds instead; the file name should also say which gallery it
    /// was built for (see [`Gallery::fingerprint`]). The file is read whole into one block of
    /// memory asked of the kernel in 2 MB pages, which the library then reads in place (a
    /// view): with 4 KB pages every hop of a search through a large graph also misses the TLB,
    /// and searches of a 1M graph took about 1.25x as long (BENCHMARKS.md).
    pub fn load(path: &Path, gallery: &Gallery, metric: Metric, options: GraphOptions) -> Result<Self, ApproxError> {
        use std::io::Read;
        let io = |e: std::io::Error| ApproxError::Library(format!("{}: {e}", path.display()));
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len() as usize;
        let mut memory = memmap2::MmapOptions::new().len(len.max(1)).map_anon().map_err(io)?;
        // Best effort: without huge pages the view works the same, only slower.
        let _ = memory.advise(memmap2::Advice::HugePage);
        file.read_exact(&mut memory[..len]).map_err(io)?;
        let memory = memory.make_read_only().map_err(io)?;
        let wanted = index_options(gallery.dim(), metric, options);
        let graph = Index::new(&wanted).map_err(failed)?;
        // SAFETY: the view reads `memory`, which the returned value owns, never changes and
        // drops after the graph (field order).
        unsafe { graph.view_from_buffer(&memory[..len]) }.map_err(failed)?;
        let shape = (graph.size(), graph.dimensions(), graph.connectivity());
        if shape != (gallery.len(), gallery.dim(), wanted.connectivity) {
            return Err(ApproxError::Library(format!(
                "{} holds {} vectors of {} dimensions with M = {}, the gallery has {} of {} (M = {})",
                path.display(),
                shape.0,
                shape.1,
                shape.2,
                gallery.len(),
                gallery.dim(),
                wanted.connectivity
            )));
        }
        let mut approx = Self::ready(graph, gallery.len(), metric)?;
        approx._mapped = Some(memory);
        Ok(approx)
    }

    /// Writes the graph to `path`: into a temporary file beside it, synced, then renamed over
    /// it, so a crash leaves the old file or none, never half a graph under the real name.
    pub fn save(&self, path: &Path) -> Result<(), ApproxError> {
        let io = |e: std::io::Error| ApproxError::Library(format!("{}: {e}", path.display()));
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("tmp");
        self.graph.save(path_str(&tmp)?).map_err(failed)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
    }

    /// A built or loaded graph, with its search contexts reserved.
    fn ready(graph: Index, n: usize, metric: Metric) -> Result<Self, ApproxError> {
        let cores = std::thread::available_parallelism().map_or(1, |t| t.get());
        let contexts = cores * SEARCH_CONTEXTS_PER_CORE;
        graph.reserve_capacity_and_threads(n.max(1), contexts).map_err(failed)?;
        Ok(Approx { graph, metric, contexts: Contexts::new(contexts), _mapped: None })
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The `k` best rows `keep` accepts, searching with a candidate list of `ef`, best first.
    /// A `selective` filter is applied while walking the graph (so rows it refuses don't take
    /// the candidates' places); otherwise the walk is unfiltered, which is faster, and `keep`
    /// only sorts out the candidates found, so it should refuse at most a few rows (the
    /// query's own image). May return fewer than `k` when the filter is very selective (or
    /// none if the library fails, which is logged): the caller then searches exactly.
    pub fn search(
        &self,
        gallery: &Gallery,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(usize) -> bool,
        selective: bool,
    ) -> Vec<Hit> {
        // The library widens its candidate list to the number of results asked for, so asking
        // for `ef` results is a search with `ef` candidates; the best `k` are kept below.
        let wanted = ef.max(k + 1);
        let _context = self.contexts.take();
        let found = if selective {
            self.graph.filtered_search(query, wanted, |key| keep(key as usize))
        } else {
            self.graph.search(query, wanted)
        };
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "HNSW search failed; searching exactly");
                return Vec::new();
            }
        };
        let mut hits: Vec<Hit> = found
            .keys
            .iter()
            .map(|&key| key as usize)
            .filter(|&row| row < gallery.len() && keep(row))
            .map(|row| Hit { row, score: self.metric.score(query, gallery.vector(row)) })
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
        for (metric, precision) in [
            (Metric::Euclidean, GraphPrecision::F16),
            (Metric::Cosine, GraphPrecision::F16),
            (Metric::Euclidean, GraphPrecision::F32),
        ] {
            let options = GraphOptions { connections: 0, precision };
            let index = Approx::build(&g, metric, options, &AtomicBool::new(false)).expect("graph");
            let (mut total, queries) = (0.0, 50);
            for qi in 0..queries {
                let q: Vec<f32> = g.vector(qi * 71).iter().map(|x| x + 0.01).collect();
                let exact = &g.top_k(&[&q], metric, 10, &|_, _| true)[0];
                let approx = index.search(&g, &q, 10, 64, &|_| true, false);
                assert_eq!(approx.len(), 10);
                for a in &approx {
                    // Exact f32 scores, whatever the graph stores.
                    assert_eq!(a.score, metric.score(&q, g.vector(a.row)));
                }
                total += recall(exact, &approx);
                let odd = index.search(&g, &q, 10, 64, &|row| row % 2 == 1, true);
                assert_eq!(odd.len(), 10, "{metric:?}: a filter applied in the walk still finds k rows");
                assert!(odd.iter().all(|h| h.row % 2 == 1), "{metric:?}: the filter holds");
                // An unselective filter (the query's own row) is applied to the candidates.
                let own = index.search(&g, &q, 10, 64, &|row| row != qi * 71, false);
                assert_eq!(own.len(), 10);
                assert!(own.iter().all(|h| h.row != qi * 71), "{metric:?}: the own row is left out");
            }
            let mean = total / queries as f64;
            assert!(mean >= 0.95, "{metric:?} {precision}: recall@10 {mean}");
        }
    }

    #[test]
    fn a_saved_graph_loads_with_the_same_answers_and_only_for_its_own_gallery() {
        let g = clustered(3_000, 24);
        let options = GraphOptions { connections: 12, precision: GraphPrecision::F16 };
        let built = Approx::build(&g, Metric::Cosine, options, &AtomicBool::new(false)).expect("graph");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("graphs").join("g.usearch");
        built.save(&path).expect("saved");
        assert!(!path.with_extension("tmp").exists(), "the temporary file was renamed");
        let loaded = Approx::load(&path, &g, Metric::Cosine, options).expect("loaded");
        assert_eq!(loaded.metric(), Metric::Cosine);
        for qi in 0..40 {
            let q = g.vector(qi * 37);
            assert_eq!(
                loaded.search(&g, q, 10, 32, &|_| true, false),
                built.search(&g, q, 10, 32, &|_| true, false),
                "query {qi}"
            );
        }
        // Another gallery, another M, or a damaged file: refused, so the caller builds.
        let other = clustered(2_000, 24);
        assert!(Approx::load(&path, &other, Metric::Cosine, options).is_err());
        let m16 = GraphOptions { connections: 16, ..options };
        assert!(Approx::load(&path, &g, Metric::Cosine, m16).is_err());
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        assert!(Approx::load(&path, &g, Metric::Cosine, options).is_err());
        assert!(Approx::load(&dir.path().join("none.usearch"), &g, Metric::Cosine, options).is_err());
    }

    #[test]
    fn many_more_concurrent_searches_than_cores_all_get_answers() {
        let g = clustered(2_000, 16);
        let options = GraphOptions { connections: 0, precision: GraphPrecision::F16 };
        let index = Approx::build(&g, Metric::Euclidean, options, &AtomicBool::new(false)).expect("graph");
        let cores = std::thread::available_parallelism().map_or(1, |t| t.get());
        let searchers = cores * SEARCH_CONTEXTS_PER_CORE * 4;
        let barrier = std::sync::Barrier::new(searchers);
        let answered: usize = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..searchers)
                .map(|t| {
                    let (index, g, barrier) = (&index, &g, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        (0..20)
                            .filter(|i| {
                                let q = g.vector((t * 20 + i) % g.len());
                                index.search(g, q, 10, 64, &|_| true, false).len() == 10
                            })
                            .count()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("searcher")).sum()
        });
        assert_eq!(answered, searchers * 20, "every search found its 10 rows (none failed for want of a context)");
    }
}
