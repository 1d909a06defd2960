"""FAISS peer of bench_rank_index: IndexFlatL2 (exact) and IndexHNSWFlat (M as given, default
32 as facesim's, efConstruction=200, efSearch=ef) on the same vectors and queries, one query at a
time on one thread for latency (the graph is built with all threads). Prints JSON lines.

usage: python3 bench/rank_faiss.py <vectors.f32> <queries.f32> <k> <ef[,ef...]> <build threads> [yes|no] [M]
(one graph, searched once per ef given)
"""
import json
import sys
import time

import faiss
import numpy as np

vectors, queries, k, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[5])
efs = [int(e) for e in sys.argv[4].split(",")]
with_hnsw = len(sys.argv) < 7 or sys.argv[6] == "yes"
m = int(sys.argv[7]) if len(sys.argv) > 7 else 32
x = np.fromfile(vectors, dtype="<f4").reshape(-1, 128)
q = np.fromfile(queries, dtype="<f4").reshape(-1, 128)
n = len(x)


def timed(index):
    faiss.omp_set_num_threads(1)
    times, found = [], []
    for row in q:
        t = time.perf_counter()
        _, ids = index.search(row[None, :], k)
        times.append((time.perf_counter() - t) * 1000)
        found.append(ids[0])
    times = np.array(times)
    return times, found


flat = faiss.IndexFlatL2(128)
flat.add(x)
times, exact = timed(flat)
print(json.dumps({"impl": "faiss", "index": "IndexFlatL2", "n": n, "k": k,
                  "p50_ms": round(float(np.percentile(times, 50)), 4),
                  "p99_ms": round(float(np.percentile(times, 99)), 4),
                  "qps_1_thread": round(len(q) / (times.sum() / 1000), 1)}))
if with_hnsw:
    faiss.omp_set_num_threads(threads)
    hnsw = faiss.IndexHNSWFlat(128, m)
    hnsw.hnsw.efConstruction = 200
    t = time.perf_counter()
    hnsw.add(x)
    build = time.perf_counter() - t
    for ef in efs:
        hnsw.hnsw.efSearch = ef
        times, found = timed(hnsw)
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, found)])
        print(json.dumps({"impl": "faiss", "index": "IndexHNSWFlat", "m": m, "n": n, "k": k, "ef": ef,
                          "build_s": round(build, 1),
                          "p50_ms": round(float(np.percentile(times, 50)), 4),
                          "p99_ms": round(float(np.percentile(times, 99)), 4),
                          "qps_1_thread": round(len(q) / (times.sum() / 1000), 1),
                          "recall": round(float(recall), 4)}), flush=True)
