#!/usr/bin/env bash
# A short real training run for the record: GAML and the Siamese CNN trained on LFW's
# identity-labelled development pairs (pairsDevTrain.txt, 1,100 same + 1,100 different people)
# and evaluated on pairsDevTest.txt (500 + 500), next to the pretrained descriptor.
#
# Everything goes through the real server and the `facesim` CLI: the images the two lists name
# are cut to their centred 160x160 square (the framing of deep-funneled LFW the descriptor
# expects, as `facesim eval lfw` does) and imported as dataset `lfw-dev`; training splits
# DevTrain 8:1:1 (validation picks the kept epoch and the threshold), DevTest is never seen in
# training.
#
# Usage: bash bench/train_lfw.sh [gaml-epochs] [cnn-epochs] [cnn-batch]   (defaults: 40, 2, 100)
set -euo pipefail
cd "$(dirname "$0")/.."
gaml_epochs=${1:-40}
cnn_epochs=${2:-2}
cnn_batch=${3:-100}
lfw=../shared/datasets/lfw
cache=bench/cache
work=$(mktemp -d)
token=bench-admin-token-0123456789
port=50$((RANDOM % 900 + 100))
cleanup() { [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

python3 -m venv "$cache/venv"
"$cache/venv/bin/pip" install --quiet --disable-pip-version-check pillow==12.2.0
if [ ! -d "$cache/lfw-dev" ]; then
    "$cache/venv/bin/python" - "$lfw" "$cache/lfw-dev.tmp" <<'PY'
import os, sys
from PIL import Image
lfw, out = sys.argv[1], sys.argv[2]
wanted = set()
for name in ("pairsDevTrain.txt", "pairsDevTest.txt"):
    for line in open(os.path.join(lfw, name)).read().splitlines()[1:]:
        f = line.split()
        pairs = [(f[0], f[1]), (f[0], f[2])] if len(f) == 3 else [(f[0], f[1]), (f[2], f[3])]
        wanted.update((n, int(k)) for n, k in pairs)
for name, k in sorted(wanted):
    src = os.path.join(lfw, "images_deepfunneled", name, f"{name}_{k:04d}.jpg")
    img = Image.open(src).convert("RGB")
    w, h = img.size
    img = img.crop(((w - 160) // 2, (h - 160) // 2, (w + 160) // 2, (h + 160) // 2))
    os.makedirs(os.path.join(out, name), exist_ok=True)
    img.save(os.path.join(out, name, f"{name}_{k:04d}.jpg"), quality=95)
print(f"{len(wanted)} images cut to 160x160", file=sys.stderr)
PY
    mv "$cache/lfw-dev.tmp" "$cache/lfw-dev"
fi

cargo build --release --quiet --bin facesim-server --bin facesim
FACESIM_ADMIN_TOKEN=$token ./target/release/facesim-server --data-dir "$work/data" --addr "127.0.0.1:$port" \
    2>"$work/server.log" &
server_pid=$!
export FACESIM_SERVER=http://127.0.0.1:$port FACESIM_TOKEN=$token
facesim=./target/release/facesim
for _ in $(seq 1 120); do $facesim health >/dev/null 2>&1 && break; sleep 1; done
$facesim dataset import "$cache/lfw-dev" --dataset lfw-dev --wait >&2

train=(--pairs "$lfw/pairsDevTrain.txt" --dataset lfw-dev --seed 1)
test=(--pairs "$lfw/pairsDevTest.txt" --dataset lfw-dev)
$facesim train start --arch gaml "${train[@]}" --epochs "$gaml_epochs" --name "gaml lfw-devtrain" | tail -n 4
$facesim train start --arch cnn "${train[@]}" --epochs "$cnn_epochs" --batch-size "$cnn_batch" \
    --name "cnn lfw-devtrain" | tail -n 4
for model in descriptor/v1 gaml/1 cnn/2; do
    $facesim train evaluate --model "$model" "${test[@]}"
done
echo
echo "DevTest (1,000 pairs, never seen in training); thresholds chosen on DevTrain's validation split:"
$facesim train evaluations
echo
$facesim models list
$facesim models show gaml/1 --plots bench/results/lfw-gaml
$facesim models show cnn/2 --plots bench/results/lfw-cnn
