#!/usr/bin/env bash
# Durable votes per second with concurrent annotators on loopback, side by side with a plain
# durable-insert peer (SQLite, one fsync'd transaction per vote, in-process).
#
# The server runs from a fresh data dir with the bundled demo faces and --min-answer-millis 0:
# this measures the server's vote path (lease bookkeeping, sled transaction, group commit, gRPC),
# not human pace, which the 1-second rule limits to one vote per second per annotator.
#
# Usage: bash bench/votes.sh [annotators] [seconds]      (defaults: 64, 20)
set -euo pipefail
cd "$(dirname "$0")/.."
annotators=${1:-64}
seconds=${2:-20}
work=$(mktemp -d)
token=bench-admin-token-0123456789
port=50$((RANDOM % 900 + 100))
cleanup() { [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet --bin facesim-server --bin facesim
FACESIM_ADMIN_TOKEN=$token ./target/release/facesim-server --demo --data-dir "$work/data" \
    --addr "127.0.0.1:$port" --min-answer-millis 0 2>"$work/server.log" &
server_pid=$!
export FACESIM_SERVER=http://127.0.0.1:$port FACESIM_TOKEN=$token
for _ in $(seq 1 120); do ./target/release/facesim health >/dev/null 2>&1 && break; sleep 1; done
./target/release/facesim jobs watch 1 >&2                   # the demo faces' embedding job
./target/release/facesim pairs propose --budget 200000 --batch-size 10000 >&2

results="$work/results.jsonl"
./target/release/facesim bench votes --annotators "$annotators" --seconds "$seconds" | tee -a "$results"
rss=$(ps -o rss= -p "$server_pid" | tr -d ' ')
python3 bench/votes_sqlite.py "$work" "$annotators" "$seconds" | tee -a "$results"

python3 - "$results" "$rss" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print(f"{'implementation':<62} {'votes/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
for r in rows:
    print(f"{r['impl']:<62} {r['votes_per_s']:>9.0f} {r['vote_p50_ms']:>7.2f} {r['vote_p99_ms']:>7.2f}")
ours, peer = rows[0], rows[1]
print(f"\nfacesim: {ours['votes_per_s'] / peer['votes_per_s']:.2f}x the peer's durable votes/s "
      f"with {ours['annotators']} annotators; server RSS after the run {int(sys.argv[2]) / 1024:.0f} MiB")
PY
