#!/usr/bin/env bash
# End-to-end exactness check of the Candle descriptor: builds the reference inputs, runs
# face-api's original network on them in Node (pure-JS TensorFlow.js CPU backend), then runs the
# Rust test that compares the Candle port with those fresh vectors (max |difference| < 1e-3).
#
# Usage: bash tools/faceapi-reference/check.sh [--update]   (--update also rewrites the fixture)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd tools/faceapi-reference && npm ci --no-audit --no-fund --silent)
cargo run --quiet --example descriptor_inputs -- "$work/inputs"
node tools/faceapi-reference/reference.mjs "$work/inputs" models/face-api "$work/faceapi.json" | tail -1
FACESIM_DESCRIPTOR_FIXTURE="$work/faceapi.json" \
    cargo test --quiet --test descriptor_reference -- --nocapture
if [ "${1:-}" = "--update" ]; then
    cp "$work/faceapi.json" server/tests/fixtures/faceapi_descriptors.json
    echo "fixture updated"
fi
