#!/usr/bin/env bash
# End-to-end exactness check of the Candle ports of face-api: builds the reference inputs, runs
# face-api's original networks on them in Node (pure-JS TensorFlow.js CPU backend), then runs the
# Rust tests that compare the Candle ports with those fresh results: the descriptor (max
# |difference| < 1e-3), and the face detector with the 68-point landmarks (box corners and points
# within 0.5 px, scores within 1e-3), and the age and gender net (age within 0.01 years, P(male)
# within 1e-3). Then dlib's own C++ descriptor (dlib-bin) on the same
# inputs against the Candle network loaded from dlib's full-precision file (< 1e-4).
#
# Usage: bash tools/faceapi-reference/check.sh [--update]   (--update also rewrites the fixtures)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd tools/faceapi-reference && npm ci --no-audit --no-fund --silent)
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 numpy
cargo run --quiet --example descriptor_inputs -- "$work/inputs"
node tools/faceapi-reference/reference.mjs "$work/inputs" models/face-api "$work/faceapi.json" | tail -1
FACESIM_DESCRIPTOR_FIXTURE="$work/faceapi.json" \
    cargo test --quiet --test descriptor_reference -- --nocapture
python3 bench/descriptor_dlib.py "$work/inputs" 0.1 "$work/dlib.json" > /dev/null
FACESIM_DLIB_DESCRIPTOR_FIXTURE="$work/dlib.json" \
    cargo test --quiet --test descriptor_dlib -- --nocapture
cargo run --quiet --example faces_inputs -- reference "$work/faces"
node tools/faceapi-reference/detect_reference.mjs "$work/faces" models/face-api "$work/faces.json" tiny cpu | tail -1
FACESIM_FACES_FIXTURE="$work/faces.json" \
    cargo test --quiet --test faces_reference -- --nocapture
node tools/faceapi-reference/traits_reference.mjs "$work/faces" models/face-api "$work/traits.json" | tail -1
FACESIM_TRAITS_FIXTURE="$work/traits.json" \
    cargo test --quiet --test faces_traits -- --nocapture
if [ "${1:-}" = "--update" ]; then
    cp "$work/faceapi.json" server/tests/fixtures/faceapi_descriptors.json
    cp "$work/faces.json" server/tests/fixtures/faceapi_faces.json
    cp "$work/traits.json" server/tests/fixtures/faceapi_traits.json
    cp "$work/dlib.json" server/tests/fixtures/dlib_descriptors.json
    echo "fixtures updated"
fi
