#!/usr/bin/env bash
# Runs every test of facesim: installs what the tests need beyond Rust (the Python gRPC tooling
# for the language-neutrality check), then `cargo test` over the whole workspace. The end-to-end
# tests start the real server on loopback ports with temporary data dirs.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/python/requirements.txt

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# One closing line over every test binary, so the total is visible at a glance.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "facesim tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
