//! Pair search speed: the exact search that `ProposePairs` runs, on vectors from a file, plus
//! the machine's matrix-multiply rate for comparison. Prints JSON lines; `bench/pairs.sh` runs
//! it beside FAISS on the same vectors.
//!
//! cargo run --release -p facesim-server --example bench_pairs -- \
//!     <vectors.f32> <ids file or -> <threads> <budget> [repeats]
//!
//! With a budget k it first finds the k nearest pairs (budget mode), then all pairs within the
//! k-th distance (threshold mode, the method's rule) and reports both. Pairs of one identity are
//! included, as FAISS has no notion of identity; `-` as ids file gives every row its own.

#[path = "support/peak_rss.rs"]
mod peak_rss;

use peak_rss::peak_rss_mib;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use facesim_server::proposal::search::{self, Control, PairFilter, Vectors};
use facesim_server::vectors::blocks;

const DIM: usize = 128;

/// GFLOP/s of a large single-precision product of the search's shape (k = 128) through the same
/// blocked product (`vectors::blocks::dots`) and thread count: the ceiling the search could reach.
fn gemm_rate(threads: usize) -> f64 {
    let (m, n, k) = (4096, 4096, DIM);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 97) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..n * k).map(|i| (i % 89) as f32 * 0.01).collect();
    let mut c = Vec::new();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        blocks::dots(&a, &b, k, threads, &mut c);
        best = best.min(started.elapsed().as_secs_f64());
    }
    std::hint::black_box(&c);
    2.0 * (m * n * k) as f64 / best / 1e9
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, ids, threads, budget, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: bench_pairs <vectors.f32> <ids|-> <threads> <budget> [repeats]");
    };
    let threads: usize = threads.parse()?;
    let budget: usize = budget.parse()?;
    let repeats: usize = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(3);
    let bytes = std::fs::read(path)?;
    let data: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let v = Vectors::new(&data, DIM);
    let n = v.len();
    let groups: Vec<u64> = if ids == "-" {
        (0..n as u64).collect()
    } else {
        std::fs::read_to_string(ids)?.lines().map(|l| l.trim().parse()).collect::<Result<_, _>>()?
    };
    anyhow::ensure!(groups.len() == n, "{n} vectors but {} ids", groups.len());
    let cancel = AtomicBool::new(false);
    let control = Control { threads, cancel: &cancel, progress: &|_, _| {} };
    let filter = PairFilter { groups: &groups, same_group: true, skip: &|_, _| false };
    let scanned = n as f64 * (n as f64 - 1.0) / 2.0;
    // Only the upper triangle is multiplied: n(n-1)/2 dot products of 2·d flops each.
    let flops = scanned * 2.0 * DIM as f64;

    let time = |f: &dyn Fn() -> usize| -> (f64, usize) {
        let mut best = f64::INFINITY;
        let mut found = 0;
        for _ in 0..repeats {
            let started = Instant::now();
            found = f();
            best = best.min(started.elapsed().as_secs_f64());
        }
        (best, found)
    };
    let nearest = search::nearest(&v, &filter, budget, &control)?;
    let threshold = nearest.last().map(|f| f.distance()).unwrap_or(0.0);
    let (budget_s, _) = time(&|| search::nearest(&v, &filter, budget, &control).map(|r| r.len()).unwrap_or(0));
    let (within_s, within_n) =
        time(&|| search::within(&v, &filter, threshold, usize::MAX, &control).map(|r| r.len()).unwrap_or(0));
    let peak = gemm_rate(threads);
    for (mode, seconds, pairs) in [("budget", budget_s, nearest.len()), ("threshold", within_s, within_n)] {
        println!(
            "{}",
            serde_json::json!({
                "impl": "facesim", "mode": mode, "n": n, "threads": threads, "pairs": pairs,
                "threshold": threshold, "seconds": seconds, "pairs_scanned_per_s": scanned / seconds,
                "gflops": flops / seconds / 1e9, "gemm_peak_gflops": peak, "peak_rss_mib": peak_rss_mib(),
            })
        );
    }
    Ok(())
}
