"""FAISS peer of bench_pairs: all pairs within a distance (IndexFlatL2 range search) and the k
nearest neighbours of every vector (IndexFlatL2 search), on the same vectors and thread count,
plus numpy's matrix-multiply rate for the same shape. Prints JSON lines.

usage: python3 bench/pairs_faiss.py <vectors.f32> <threads> <threshold> <repeats>
"""
import json
import resource
import sys
import time

import faiss
import numpy as np

path, threads, threshold, repeats = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
x = np.fromfile(path, dtype="<f4").reshape(-1, 128)
n = len(x)
faiss.omp_set_num_threads(threads)
index = faiss.IndexFlatL2(128)
index.add(x)


def best_of(f):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


# FAISS compares squared distances and keeps d^2 < radius; nudge the radius up by one ulp so the
# pair at exactly the threshold counts, as in facesim's d <= threshold.
radius = np.nextafter(np.float32(threshold) ** 2, np.float32(np.inf))
seconds, (lims, dist, labels) = best_of(lambda: index.range_search(x, float(radius)))
# Each unordered pair appears twice (i->j and j->i) and each vector finds itself: keep i < j.
rows = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
pairs = int(np.count_nonzero(rows < labels))
scanned = n * (n - 1) / 2
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
common = {"n": n, "threads": threads, "threshold": threshold, "peak_rss_mib": round(peak, 1)}
print(json.dumps({"impl": "faiss IndexFlatL2 range_search", "mode": "threshold", "pairs": pairs,
                  "seconds": seconds, "pairs_scanned_per_s": scanned / seconds,
                  "gflops": 2 * n * n * 128 / seconds / 1e9, **common}))
k = 10
seconds, _ = best_of(lambda: index.search(x, k))
print(json.dumps({"impl": f"faiss IndexFlatL2 search k={k}", "mode": "knn", "pairs": n * k,
                  "seconds": seconds, "pairs_scanned_per_s": scanned / seconds,
                  "gflops": 2 * n * n * 128 / seconds / 1e9, **common}))
a = np.random.default_rng(0).standard_normal((4096, 128), dtype=np.float32)
gemm_s, _ = best_of(lambda: a @ a.T)
print(json.dumps({"impl": "numpy matmul 4096x128x4096", "mode": "gemm", "seconds": gemm_s,
                  "gflops": 2 * 4096 * 4096 * 128 / gemm_s / 1e9, **common}))
