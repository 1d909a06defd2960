#!/usr/bin/env bash
# Runs every test of facesim: installs what the tests need beyond Rust (the Python gRPC tooling
# for the language-neutrality check; Chromium and the UI's npm packages for the browser tests),
# then `cargo test` over the whole workspace and the annotation UI's browser tests. The end-to-end
# tests start the real server on loopback ports with temporary data dirs.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/python/requirements.txt

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The annotation UI in a real browser against the real server.
bash scripts/test-ui.sh 2>&1 | tee -a "$log"
ui_status=${PIPESTATUS[0]}
set -e

# One closing line over every test binary and the browser tests, so the total is visible at a glance.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^# pass / { p += $3 } /^# fail / { f += $3 }
     END { printf "facesim tests: %d passed, %d failed\n", p, f }' "$log"
[ "$status" = 0 ] && [ "$ui_status" = 0 ]
