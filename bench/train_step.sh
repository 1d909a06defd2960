#!/usr/bin/env bash
# Training step speed, Candle (facesim) vs PyTorch CPU side by side: the same networks, losses,
# optimisers, batch and thread count, one step = both towers forward, loss, backward, update.
#   - Siamese CNN at the method's batch 500 (peak memory ~1.4 GB for facesim, ~3.3 GB for PyTorch);
#   - GAML at its default batch 100 on the descriptor's 128 features and on 2,622 (VGG-Face's).
#
# Usage: bash bench/train_step.sh [threads] [cnn-batch]      (defaults: all cores, 500)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
cnn_batch=${2:-500}
cache=bench/cache
mkdir -p "$cache"
python3 -m venv "$cache/venv"
# PyPI's Linux torch wheel is the CUDA build; it runs on the CPU once its CUDA libraries are there.
"$cache/venv/bin/pip" install --quiet --disable-pip-version-check torch==2.15.0 numpy==2.4.6
cargo build --release --quiet --example bench_train_step
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
results=$(mktemp)
trap 'rm -f "$results"' EXIT
run() {
    ./target/release/examples/bench_train_step "$1" "$2" "$3" ${4:-} | tee -a "$results"
    "$cache/venv/bin/python" bench/train_step_torch.py "$1" "$2" "$3" "$threads" ${4:-} | tee -a "$results"
}
run gaml 100 30 128
run gaml 100 10 2622
run cnn "$cnn_batch" 3
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{'model':<14} {'batch':>5} {'threads':>7}  {'facesim pairs/s':>15} {'PyTorch pairs/s':>15}  {'ratio':>6}")
for ours, peer in zip(rows[::2], rows[1::2]):
    print(f"{ours['model']:<14} {ours['batch']:>5} {ours['threads']:>7}  {ours['pairs_per_s']:>15.1f} "
          f"{peer['pairs_per_s']:>15.1f}  {ours['pairs_per_s'] / peer['pairs_per_s']:>5.2f}x")
PY
