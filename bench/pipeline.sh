#!/usr/bin/env bash
# Whole face pipeline throughput on this machine's CPU (detect → landmarks → align → describe),
# side by side on the same decoded 250x250 LFW photos:
#   facesim's Candle pipeline (both cores: detection per image on a thread pool, descriptors in
#   batches), dlib's own pipeline (dlib-bin: HOG detector, 5-point shape, resnet descriptor; one
#   process per core) and face-api on the tfjs WebAssembly backend with SIMD
#   (detectSingleFace(...).withFaceLandmarks().withFaceDescriptor(); one process per core).
# Then the end-to-end import of N photos (files sent, faces found and cropped, embeddings
# computed: `dataset import --wait`) through the real server and CLI, in center mode (the
# pipeline before detection) and detect mode, in files/s.
#
# Usage: bash bench/pipeline.sh [seconds-per-measurement] [photos to import]   (defaults 30, 2000)
#        PARTS=import bash bench/pipeline.sh ...   runs only the import part (PARTS=speed: the other)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
import_n=${2:-2000}
lfw=../shared/datasets/lfw/images_deepfunneled
threads=$(nproc)
work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 numpy
(cd tools/faceapi-reference && npm ci --no-audit --no-fund --silent)
cargo build --release --quiet --example bench_pipeline --bin facesim-server --bin facesim

# 200 photos: the first image of the first 200 people (by name) with at least one image.
python3 - "$lfw" "$work/inputs" <<'PY'
import json, os, sys
import dlib
lfw, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
index = []
for person in sorted(os.listdir(lfw)):
    if len(index) == 200:
        break
    if not os.path.isdir(os.path.join(lfw, person)):
        continue
    files = sorted(f for f in os.listdir(os.path.join(lfw, person)) if f.endswith(".jpg"))
    if files:
        image = dlib.load_rgb_image(os.path.join(lfw, person, files[0]))
        name = files[0][:-4]
        image.tofile(os.path.join(out, f"{name}.rgb"))
        index.append({"name": name, "width": image.shape[1], "height": image.shape[0]})
json.dump(index, open(os.path.join(out, "index.json"), "w"))
PY

parts=${PARTS:-speed,import}
if [[ $parts == *speed* ]]; then
results="$work/results.jsonl"
./target/release/examples/bench_pipeline "$work/inputs" "$seconds" | tee -a "$results"
(cd bench && python3 pipeline_dlib.py "$work/inputs" "$seconds" "$threads") | tee -a "$results"
for k in $(seq "$threads"); do
    node tools/faceapi-reference/bench_pipeline.mjs "$work/inputs" models/face-api "$seconds" > "$work/faceapi.$k" &
done
wait
python3 - "$work"/faceapi.* <<'PY' | tee -a "$results"
import json, sys
runs = [json.loads(open(p).read()) for p in sys.argv[1:]]
first = runs[0]
print(json.dumps({
    "impl": f"{first['impl']}, {len(runs)} processes",
    "images_per_s": round(sum(r["images"] / r["seconds"] for r in runs), 2),
    "faces_found": first["faces_found"],
    "threads": len(runs),
    "peak_rss_mib": sum(r["peak_rss_mib"] for r in runs),
}))
PY

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
best_peer = max((r for r in rows if not r["impl"].startswith("facesim")), key=lambda r: r["images_per_s"])
print()
print(f"{'implementation':<58} {'images/s':>9} {'faces':>6} {'peak MiB':>8}  vs fastest peer")
for r in rows:
    print(f"{r['impl']:<58} {r['images_per_s']:>9.1f} {r['faces_found']:>6.1%} {r['peak_rss_mib']:>8}  "
          f"{r['images_per_s'] / best_peer['images_per_s']:.2f}x")
PY

fi

if [[ $parts == *import* ]]; then
# End-to-end import through the real server: N LFW photos, center mode, then detect mode.
mkdir -p "$work/photos"
find "$lfw" -name '*.jpg' | sort > "$work/all.txt"
head -n "$import_n" "$work/all.txt" | while read -r f; do
    person=$(basename "$(dirname "$f")")
    mkdir -p "$work/photos/$person" && cp "$f" "$work/photos/$person/"
done
export FACESIM_ADMIN_TOKEN=pipeline-bench-admin-token FACESIM_TOKEN=pipeline-bench-admin-token
export FACESIM_SERVER=http://127.0.0.1:50997
echo
# A fresh server and data dir per mode (the store keeps one copy of identical files).
for mode in center detect; do
    ./target/release/facesim-server --addr 127.0.0.1:50997 --data-dir "$work/data-$mode" > "$work/server-$mode.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do ./target/release/facesim health > /dev/null 2>&1 && break; sleep 0.3; done
    started=$(date +%s.%N)
    ./target/release/facesim dataset import "$work/photos" --dataset "import-$mode" --face-mode "$mode" --wait \
        > "$work/import-$mode.txt" 2>&1
    ended=$(date +%s.%N)
    kill "$server_pid" && wait "$server_pid" || true
    server_pid=
    python3 - "$mode" "$started" "$ended" "$import_n" "$work/import-$mode.txt" <<'PY'
import sys
mode, start, end, n, log = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
lines = [l for l in open(log).read().splitlines() if l.strip()]
print(f"import of {n} LFW photos, {mode} mode: {end - start:.1f} s, {n / (end - start):.1f} files/s  ({lines[-1] if lines else ''})")
PY
done
fi
