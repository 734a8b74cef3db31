#!/usr/bin/env bash
# Runs the `connect` scenario against a fresh release gateway, N times.
# Usage: loadtest/scripts/bench-connect.sh CONNECTIONS RUNS [extra loadtest args...]
# Env: SHARDS (2), RATE (100000 = as fast as the server takes them), HOLD (30), SETTLE (3),
#      SOURCES (127.0.0.1,127.0.0.2), PORT (3000), OUT (bench-out),
#      GW_BIN (target/release/socket-gateway), LT_BIN (target/release/loadtest).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:?connections}; RUNS=${2:-3}; shift 2 || true
SHARDS=${SHARDS:-2}; RATE=${RATE:-100000}; HOLD=${HOLD:-30}; SETTLE=${SETTLE:-3}
SOURCES=${SOURCES:-127.0.0.1,127.0.0.2}; PORT=${PORT:-3000}; OUT=${OUT:-bench-out}
SECRET=bench-secret
GW_BIN=${GW_BIN:-target/release/socket-gateway}; LT_BIN=${LT_BIN:-target/release/loadtest}
mkdir -p "$OUT"
for i in $(seq 1 "$RUNS"); do
  "$GW_BIN" serve --listen 127.0.0.1:$PORT --shards "$SHARDS" \
    --jwt-secret $SECRET --log-level warn >"$OUT/gw-$N-$SHARDS-$i.log" 2>&1 &
  GW=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$OUT/gw-$N-$SHARDS-$i.log" && break; sleep 0.1; done
  sleep 1; echo "load: $(cut -d" " -f1-3 /proc/loadavg)"
  "$LT_BIN" connect --url http://127.0.0.1:$PORT --connections "$N" --rate "$RATE" \
    --hold "$HOLD" --settle "$SETTLE" --jwt-secret $SECRET --source-addrs "$SOURCES" \
    --server-pid $GW --json "$OUT/connect-$N-$SHARDS-$i.json" --quiet "$@" \
    | tee "$OUT/connect-$N-$SHARDS-$i.txt" || echo "loadtest exit $?"
  if ! kill -0 $GW 2>/dev/null; then echo "GATEWAY DIED during run $i"; fi
  kill $GW 2>/dev/null || true; wait $GW 2>/dev/null || true
  echo "--- server log ($(wc -l <"$OUT/gw-$N-$SHARDS-$i.log") lines):"; head -5 "$OUT/gw-$N-$SHARDS-$i.log"
done
