#!/usr/bin/env bash
# Ranking speed and quality, side by side with FAISS on the same vectors and queries:
#   1. in-process, one query at a time on one thread: facesim's exact gallery search vs FAISS
#      IndexFlatL2 on the 13,233 LFW descriptors, and facesim's HNSW graph (usearch, M=32 as the
#      server's default, efConstruction=200) vs FAISS IndexHNSWFlat (same M, efConstruction) on
#      a synthetic clustered 128-d gallery of N vectors, searched at efSearch 64, 128, 256 and
#      512, with recall@10 against exact search;
#   2. retrieval quality of the descriptor on LFW (people with >= 2 images, every image a probe):
#      mAP and Rank@1/5/10 (numpy, the same definitions as `facesim eval retrieval`);
#   3. over gRPC, `facesim bench rank` (concurrent clients, QPS, p50/p99, recall@10 against
#      exact answers) against the real server: on the LFW descriptors (13,233, exact) and on the
#      N synthetic vectors (approximate), both served with `--rank-bench-gallery`, queried by
#      embedding; then on the bundled demo gallery as imported (2,115 faces, stored-image
#      queries) with `facesim eval retrieval`.
# LFW descriptors come from bench/pairs.sh's cache (bench/cache/lfw.f32).
#
# Usage: bash bench/rank.sh [N synthetic] [clients]      (defaults: 1000000, 8)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
clients=${2:-8}
cache=bench/cache
threads=$(nproc)
mkdir -p "$cache"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore faiss-cpu==1.15.1 numpy
cargo build --release --quiet --example bench_rank_index --example lfw_embeddings --bin facesim-server --bin facesim
if [ ! -f "$cache/lfw.f32" ]; then
    ./target/release/examples/lfw_embeddings ../shared/datasets/lfw/images_deepfunneled "$cache/lfw.tmp"
    mv "$cache/lfw.tmp.ids" "$cache/lfw.ids" && mv "$cache/lfw.tmp.f32" "$cache/lfw.f32"
fi
python3 - "$cache" "$n" <<'PY'
import sys
import numpy as np
cache, n = sys.argv[1], int(sys.argv[2])
lfw = np.fromfile(f"{cache}/lfw.f32", dtype="<f4").reshape(-1, 128)
rng = np.random.default_rng(3)
lfw[rng.choice(len(lfw), 1000, replace=False)].tofile(f"{cache}/lfw-queries.f32")
# Face-like: identities as cluster centres, 5 images each.
centres = rng.standard_normal((n // 5, 128), dtype=np.float32) * 0.09
x = np.repeat(centres, 5, axis=0) + rng.standard_normal((n // 5 * 5, 128), dtype=np.float32) * 0.03
x.astype("<f4").tofile(f"{cache}/rank-synthetic.f32")
(x[rng.choice(len(x), 1000, replace=False)] + rng.standard_normal((1000, 128), dtype=np.float32) * 0.01
 ).astype("<f4").tofile(f"{cache}/rank-synthetic-queries.f32")
PY

echo "== in-process, LFW 13,233 descriptors, exact" >&2
./target/release/examples/bench_rank_index "$cache/lfw.f32" "$cache/lfw-queries.f32" 10 128 no
python3 bench/rank_faiss.py "$cache/lfw.f32" "$cache/lfw-queries.f32" 10 128 "$threads" no
echo "== in-process, synthetic $n x 128, exact and HNSW" >&2
./target/release/examples/bench_rank_index "$cache/rank-synthetic.f32" "$cache/rank-synthetic-queries.f32" 10 64,128,256,512 yes 32
python3 bench/rank_faiss.py "$cache/rank-synthetic.f32" "$cache/rank-synthetic-queries.f32" 10 64,128,256,512 "$threads" yes 32

echo "== retrieval on LFW (descriptor)" >&2
python3 - "$cache" <<'PY'
import sys
import numpy as np
cache = sys.argv[1]
x = np.fromfile(f"{cache}/lfw.f32", dtype="<f4").reshape(-1, 128)
ids = np.loadtxt(f"{cache}/lfw.ids", dtype=np.int64)
counts = np.bincount(ids)
keep = counts[ids] >= 2
x, ids = x[keep], ids[keep]
sq = (x * x).sum(1)
d = sq[:, None] + sq[None, :] - 2 * x @ x.T
np.fill_diagonal(d, np.inf)
aps, first = [], []
for p in range(len(x)):
    order = np.argsort(d[p], kind="stable")[:-1]
    rel = ids[order] == ids[p]
    hits = np.flatnonzero(rel)
    aps.append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
    first.append(hits[0] + 1)
first = np.array(first)
print(f"LFW retrieval, descriptor/v1: {len(x)} probes, {len(set(ids))} identities: mAP {np.mean(aps):.4f}, "
      + ", ".join(f"Rank@{k} {np.mean(first <= k):.4f}" for k in (1, 5, 10)))
PY

work=$(mktemp -d)
server_pid=
trap 'kill $server_pid 2>/dev/null; rm -rf "$work"' EXIT
token=bench-admin-token-0123456789
export FACESIM_TOKEN=$token
# start_server DIR ARGS...: a server on data dir DIR and its own port.
start_server() {
    local dir=$1
    shift
    [ -n "$server_pid" ] && kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
    local port=50$((RANDOM % 900 + 100))
    FACESIM_ADMIN_TOKEN=$token ./target/release/facesim-server --addr "127.0.0.1:$port" \
        --data-dir "$dir" "$@" > "$dir.log" 2>&1 &
    server_pid=$!
    export FACESIM_SERVER=http://127.0.0.1:$port
    until ./target/release/facesim health >/dev/null 2>&1; do sleep 1; done
}

echo "== over gRPC, LFW descriptors (13,233) served as the gallery, 1, 2 and $clients clients, exact" >&2
start_server "$work/lfw" --rank-bench-gallery "$cache/lfw.f32"
for c in 1 2 "$clients"; do
    ./target/release/facesim bench rank --clients "$c" --seconds 15 --mode exact --queries "$cache/lfw-queries.f32"
done
echo "== over gRPC, synthetic $n x 128 served as the gallery, 1, 2 and $clients clients, approximate (ef 320)" >&2
# The data dir stays in the cache: the server saves its HNSW graph there (about 25 minutes to
# build at 1M on 2 cores) and reads it back in seconds on the next run of this script.
start_server "$cache/rank-server-$n" --rank-bench-gallery "$cache/rank-synthetic.f32" --rank-ef 320
for c in 1 2 "$clients"; do
    ./target/release/facesim bench rank --clients "$c" --seconds 20 --mode approximate \
        --queries "$cache/rank-synthetic-queries.f32" --recall-sample 300
done

echo "== over gRPC, demo gallery as imported, $clients clients" >&2
start_server "$work/demo" --demo
# Wait for the demo's embeddings (the gallery is complete when the embedding job ends).
until ./target/release/facesim jobs list 2>/dev/null | grep -q "embedding.*succeeded"; do sleep 2; done
sleep 2
./target/release/facesim eval retrieval --dataset lfw-demo
./target/release/facesim bench rank --clients "$clients" --seconds 20 --mode exact
./target/release/facesim bench rank --clients "$clients" --seconds 20 --mode approximate
