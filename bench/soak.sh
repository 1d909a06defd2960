#!/usr/bin/env bash
# Soak: minutes of mixed load on loopback against a release server started on a fresh data dir
# with the bundled demo faces, at the server's real rules (1-second minimum answer time):
# annotators labelling at a human pace, services ranking back to back, a researcher retraining a
# GAML model back to back. Prints the error rate (goal 0), p50/p99 per RPC and the server's RSS
# over time, then the server's log lines at WARN or above.
#
# Usage: bash bench/soak.sh [seconds] [annotators] [rankers]      (defaults: 300, 16, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
annotators=${2:-16}
rankers=${3:-2}
work=$(mktemp -d)
token=bench-admin-token-0123456789
port=50$((RANDOM % 900 + 100))
cleanup() { [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet --bin facesim-server --bin facesim
FACESIM_ADMIN_TOKEN=$token ./target/release/facesim-server --demo --data-dir "$work/data" \
    --addr "127.0.0.1:$port" 2>"$work/server.log" &
server_pid=$!
export FACESIM_SERVER=http://127.0.0.1:$port FACESIM_TOKEN=$token
for _ in $(seq 1 120); do ./target/release/facesim health >/dev/null 2>&1 && break; sleep 1; done
./target/release/facesim jobs watch 1 >&2                   # the demo faces' embedding job

mkdir -p bench/results
status=0
./target/release/facesim bench soak --seconds "$seconds" --annotators "$annotators" --rankers "$rankers" \
    --server-pid "$server_pid" | tee bench/results/soak.json || status=$?

python3 - bench/results/soak.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"\n{r['seconds']:.0f} s, {r['annotators']} annotators, {r['rankers']} rankers, "
      f"{r['trainings_completed']} trainings completed")
print(f"calls {r['calls']}, errors {r['errors']} (rate {r['error_rate']:.2e})")
print(f"{'rpc':<14} {'ok':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
for name, v in sorted(r['rpc'].items()):
    print(f"{name:<14} {v['ok']:>8} {v['p50_ms']:>8.2f} {v['p99_ms']:>8.2f} {v['max_ms']:>8.1f}")
rss = [s['rss_mib'] for s in r['rss'] if s['rss_mib'] is not None]
print("server RSS MiB over time: " + " ".join(f"{x:.0f}" for x in rss))
PY
echo "server log lines at WARN/ERROR:"; grep -E "WARN|ERROR" "$work/server.log" | head -20 || echo "(none)"
exit $status
