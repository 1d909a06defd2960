//! Ranking index speed and quality in-process: the exact gallery search and the HNSW graph that
//! `Rank` uses, on vectors from a file, one query at a time on one thread (a server answers
//! concurrent queries on separate threads). `bench/rank.sh` runs FAISS beside it on the same
//! vectors and queries.
//!
//! cargo run --release -p facesim-server --example bench_rank_index -- \
//!     <vectors.f32> <queries.f32> <k> <ef[,ef...]> [hnsw: yes|no] [M] [precision[,precision]] [graph.usearch]
//!
//! Prints JSON lines: exact latency, then for each graph precision (f16 and/or f32, default
//! f16) its build time, and latency and recall@k against exact for each ef (one graph per
//! precision, searched once per ef). With a graph file (one the server saved under
//! `<data dir>/hnsw/` for these vectors, M and precision), that graph is loaded instead of
//! built, so the server's graph can be timed in-process without a second build.

use std::time::Instant;

use facesim_server::ranking::approx::{recall, Approx, GraphOptions, GraphPrecision, DEFAULT_CONNECTIONS};
use facesim_server::ranking::gallery::GalleryBuilder;
use facesim_server::vectors::Metric;

const DIM: usize = 128;

fn read(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: bench_rank_index <vectors.f32> <queries.f32> <k> <ef[,ef...]> [yes|no] [M] [f16|f32[,...]] [graph.usearch]";
    assert!(args.len() >= 5, "{usage}");
    let (data, queries) = (read(&args[1]), read(&args[2]));
    let k: usize = args[3].parse().expect("k");
    let efs: Vec<usize> = args[4].split(',').map(|e| e.parse().expect("ef")).collect();
    let with_hnsw = args.get(5).is_none_or(|a| a == "yes");
    let connections: usize = args.get(6).map_or(0, |m| m.parse().expect("M"));
    let precisions: Vec<GraphPrecision> =
        args.get(7).map_or("f16", |p| p.as_str()).split(',').map(|p| p.parse().expect("precision")).collect();

    let mut builder = GalleryBuilder::new(DIM);
    for (i, v) in data.chunks_exact(DIM).enumerate() {
        builder.push(i as u64 + 1, i as u64 + 1, "", "bench", v);
    }
    let gallery = builder.build();
    let n = gallery.len();
    let queries: Vec<&[f32]> = queries.chunks_exact(DIM).collect();

    let mut exact = Vec::with_capacity(queries.len());
    let mut times = Vec::with_capacity(queries.len());
    for q in &queries {
        let t = Instant::now();
        let hits = gallery.top_k(&[q], Metric::Euclidean, k, &|_, _| true).remove(0);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        exact.push(hits);
    }
    let qps = queries.len() as f64 / (times.iter().sum::<f64>() / 1000.0);
    println!(
        "{{\"impl\":\"facesim\",\"index\":\"exact\",\"n\":{n},\"k\":{k},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"qps_1_thread\":{qps:.1}}}",
        quantile(&mut times, 0.5),
        quantile(&mut times, 0.99)
    );
    if !with_hnsw {
        return;
    }

    // One graph per precision; their searches alternate query by query, so a noisy machine
    // slows them alike.
    let mut graphs = Vec::new();
    for &precision in &precisions {
        let t = Instant::now();
        let options = GraphOptions { connections, precision };
        let graph = match args.get(8) {
            Some(path) => Approx::load(path.as_ref(), &gallery, Metric::Euclidean, options).expect("saved HNSW graph"),
            None => Approx::build(&gallery, Metric::Euclidean, options, &Default::default()).expect("HNSW graph"),
        };
        graphs.push((precision, graph, t.elapsed().as_secs_f64()));
    }
    let m = if connections == 0 { DEFAULT_CONNECTIONS } else { connections };
    for ef in efs {
        let mut times = vec![Vec::with_capacity(queries.len()); graphs.len()];
        let mut recalls = vec![0.0; graphs.len()];
        for (q, truth) in queries.iter().zip(&exact) {
            for (g, (_, graph, _)) in graphs.iter().enumerate() {
                let t = Instant::now();
                let hits = graph.search(&gallery, q, k, ef, &|_| true, false);
                times[g].push(t.elapsed().as_secs_f64() * 1000.0);
                recalls[g] += recall(truth, &hits);
            }
        }
        for (g, (precision, _, build_s)) in graphs.iter().enumerate() {
            let qps = queries.len() as f64 / (times[g].iter().sum::<f64>() / 1000.0);
            println!(
                "{{\"impl\":\"facesim\",\"index\":\"hnsw\",\"precision\":\"{precision}\",\"m\":{m},\"n\":{n},\"k\":{k},\"ef\":{ef},\"build_s\":{build_s:.1},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"qps_1_thread\":{qps:.1},\"recall\":{:.4}}}",
                quantile(&mut times[g], 0.5),
                quantile(&mut times[g], 0.99),
                recalls[g] / queries.len() as f64,
            );
        }
    }
}
