#!/usr/bin/env bash
# Face descriptor throughput on this machine's CPU, side by side on the same 150x150 face crops:
#   facesim's Candle port, dlib's own C++ implementation of the same network (dlib-bin), and
#   face-api on the tfjs WebAssembly backend (SIMD).
# Also reports how far dlib's original descriptors are from face-api's (which the Candle port
# reproduces to ~2e-6, see server/tests/descriptor_reference.rs).
#
# Usage: bash bench/descriptor.sh [seconds-per-measurement]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 numpy
(cd tools/faceapi-reference && npm ci --no-audit --no-fund --silent)
cargo build --release --quiet --example descriptor_inputs --example bench_descriptor

./target/release/examples/descriptor_inputs "$work/inputs" >/dev/null
results="$work/results.jsonl"
./target/release/examples/bench_descriptor "$work/inputs" "$seconds" | tee -a "$results"
python3 bench/descriptor_dlib.py "$work/inputs" "$seconds" "$work/dlib.json" | tee -a "$results"
node tools/faceapi-reference/bench.mjs "$work/inputs" models/face-api "$seconds" | tee -a "$results"

python3 - "$results" "$work/dlib.json" server/tests/fixtures/faceapi_descriptors.json <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print(f"{'implementation':<44} {'batch':>5} {'images/s':>9} {'threads':>7} {'peak MiB':>8}  vs fastest peer")
for batch in (1, 32):
    these = [r for r in rows if r["batch"] == batch]
    peers = [r for r in these if not r["impl"].startswith("facesim")]
    best_peer = max(peers, key=lambda r: r["images_per_s"])
    for r in these:
        ratio = r["images_per_s"] / best_peer["images_per_s"]
        print(f"{r['impl']:<44} {batch:>5} {r['images_per_s']:>9.1f} {r['threads']:>7} {r['peak_rss_mib']:>8}  {ratio:.2f}x")
dlib = json.load(open(sys.argv[2]))
ref = json.load(open(sys.argv[3]))["descriptors"]
worst = max(abs(a - b) for n in ref for a, b in zip(dlib[n], ref[n]))
print(f"\nmax |dlib - face-api| over {len(ref)} descriptors: {worst:.2e} (face-api stores weights as uint8)")
PY
