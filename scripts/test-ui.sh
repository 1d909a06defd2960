#!/usr/bin/env bash
# Browser tests of the annotation UI: installs Debian's Chromium when it is missing (no browser
# download by a test tool) and the UI's npm packages, builds the UI (TypeScript client generated
# from proto/ by buf's own compiler, no protoc), then drives the real server through headless
# Chromium with playwright-core. In CI the committed dist/ must equal the fresh build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
        || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends chromium >/dev/null; }
fi
cargo build --quiet -p facesim-server -p facesim-client

cd annotation-ui
# `npm install`, not `npm ci`: the lock file holds only the platform packages of buf that the
# registry serves here, and `npm ci` refuses a lock without the others; install still keeps to the
# locked versions.
npm install --no-audit --no-fund --loglevel=error
npm run --silent build
if [ "${CI:-}" = true ] && ! git diff --quiet -- dist; then
    echo "annotation-ui/dist differs from a fresh build: run 'npm run build' in annotation-ui and commit dist/" >&2
    git diff --stat -- dist >&2
    exit 1
fi
node --test tests/
