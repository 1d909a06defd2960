#!/usr/bin/env bash
# Exact pair search speed, side by side with FAISS on the same vectors and thread count:
#   - LFW 5,000: 5,000 LFW faces drawn at random (seed 0), the method's scale;
#   - LFW 13,233: every LFW face;
#   - synthetic 80,000: 16,000 identities x 5 images, 128-d (the full source dataset's size).
# Vectors of LFW faces come from the pretrained descriptor (computed once, ~7 min, cached in
# bench/cache/). For each set the budget is one pair per image, as in the method (5,238 pairs
# from 5,000 faces); the threshold mode then uses the budget's largest distance.
#
# Usage: bash bench/pairs.sh [threads] [repeats]      (defaults: all cores, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
repeats=${2:-3}
cache=bench/cache
mkdir -p "$cache"
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore faiss-cpu==1.15.1 numpy
cargo build --release --quiet --example lfw_embeddings --example bench_pairs

if [ ! -f "$cache/lfw.f32" ]; then
    ./target/release/examples/lfw_embeddings ../shared/datasets/lfw/images_deepfunneled "$cache/lfw.tmp"
    mv "$cache/lfw.tmp.ids" "$cache/lfw.ids" && mv "$cache/lfw.tmp.f32" "$cache/lfw.f32"
fi
python3 - "$cache" <<'PY'
import sys
import numpy as np
cache = sys.argv[1]
x = np.fromfile(f"{cache}/lfw.f32", dtype="<f4").reshape(-1, 128)
ids = np.loadtxt(f"{cache}/lfw.ids", dtype=np.int64)
pick = np.sort(np.random.default_rng(0).choice(len(x), 5000, replace=False))
x[pick].tofile(f"{cache}/lfw5000.f32")
np.savetxt(f"{cache}/lfw5000.ids", ids[pick], fmt="%d")
rng = np.random.default_rng(1)
centres = rng.standard_normal((16000, 128), dtype=np.float32) * 0.09
synthetic = np.repeat(centres, 5, axis=0) + rng.standard_normal((80000, 128), dtype=np.float32) * 0.03
synthetic.astype("<f4").tofile(f"{cache}/synthetic80000.f32")
np.savetxt(f"{cache}/synthetic80000.ids", np.repeat(np.arange(16000), 5), fmt="%d")
PY

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for set in lfw5000 lfw synthetic80000; do
    n=$(wc -l < "$cache/$set.ids")
    echo "== $set: $n vectors, $threads threads" >&2
    line=$(./target/release/examples/bench_pairs "$cache/$set.f32" "$cache/$set.ids" "$threads" "$n" "$repeats")
    echo "$line" | sed "s/^{/{\"set\":\"$set\",/" | tee -a "$results"
    threshold=$(echo "$line" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["threshold"])')
    python3 bench/pairs_faiss.py "$cache/$set.f32" "$threads" "$threshold" "$repeats" \
        | sed "s/^{/{\"set\":\"$set\",/" | tee -a "$results"
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print(f"{'set':<15} {'n':>6} {'implementation':<34} {'pairs':>7} {'seconds':>8} {'Mpairs/s':>9} {'GFLOP/s':>8} {'MiB':>6}")
for r in rows:
    if r["mode"] == "gemm":
        continue
    print(f"{r['set']:<15} {r['n']:>6} {r['impl'] + ' (' + r['mode'] + ')':<34} {r['pairs']:>7} "
          f"{r['seconds']:>8.3f} {r['pairs_scanned_per_s'] / 1e6:>9.1f} {r['gflops']:>8.1f} {r['peak_rss_mib']:>6.0f}")
print()
for s in dict.fromkeys(r["set"] for r in rows):
    ours = next(r for r in rows if r["set"] == s and r["impl"] == "facesim" and r["mode"] == "threshold")
    mine_budget = next(r for r in rows if r["set"] == s and r["impl"] == "facesim" and r["mode"] == "budget")
    faiss = next(r for r in rows if r["set"] == s and r["mode"] == "threshold" and r["impl"] != "facesim")
    numpy = next(r for r in rows if r["set"] == s and r["mode"] == "gemm")
    same = "same pairs count" if faiss["pairs"] == ours["pairs"] else f"PAIR COUNTS DIFFER ({faiss['pairs']})"
    print(f"{s}: threshold mode {faiss['seconds'] / ours['seconds']:.2f}x FAISS range search ({same}); "
          f"budget mode {faiss['seconds'] / mine_budget['seconds']:.2f}x; "
          f"{ours['gflops']:.0f} GFLOP/s = {ours['gflops'] / ours['gemm_peak_gflops']:.0%} of gemm's "
          f"{ours['gemm_peak_gflops']:.0f} and {ours['gflops'] / numpy['gflops']:.0%} of numpy's {numpy['gflops']:.0f}")
PY
