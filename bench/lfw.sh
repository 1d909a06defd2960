#!/usr/bin/env bash
# LFW View 2 (10 folds, 6,000 pairs) from the raw deep-funneled files, side by side:
#   1. facesim through the real server and CLI: `facesim eval lfw` (detect → largest face →
#      68 landmarks → dlib chip → descriptor/v1, face-api's weights), as users run it;
#   2. dlib's own full pipeline (dlib-bin: HOG detector, 5-point shape predictor,
#      compute_face_descriptor with the full-precision weights), bench/lfw_dlib.py;
#   3. the pipeline's variants in one process (face-api vs dlib weights in the Candle network,
#      largest vs central face, mirrored chip averaged in), the `lfw_variants` example.
# All three score the same way: Euclidean distance, each fold's threshold the best-accuracy
# midpoint on the other nine folds.
#
# Usage: bash bench/lfw.sh        (about 75 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
lfw=../shared/datasets/lfw
work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 numpy
cargo build --release --quiet --example lfw_variants --bin facesim-server --bin facesim

export FACESIM_ADMIN_TOKEN=lfw-bench-admin-token FACESIM_TOKEN=lfw-bench-admin-token
export FACESIM_SERVER=http://127.0.0.1:50996
./target/release/facesim-server --addr 127.0.0.1:50996 --data-dir "$work/data" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do ./target/release/facesim health > /dev/null 2>&1 && break; sleep 0.3; done
echo "== facesim eval lfw (server + CLI)"
./target/release/facesim eval lfw --pairs "$lfw/pairs.txt" --concurrency 4
kill "$server_pid" && wait "$server_pid" || true
server_pid=

echo "== dlib's full pipeline"
python3 bench/lfw_dlib.py "$lfw/pairs.txt" "$lfw/images_deepfunneled"

echo "== variants of facesim's pipeline (in process)"
./target/release/examples/lfw_variants "$lfw/pairs.txt" "$lfw/images_deepfunneled"
