#!/usr/bin/env bash
# Soak: 10 min of fan-out with churn against a release gateway; samples the gateway's RSS every 10 s.
# Usage: loadtest/scripts/soak.sh   (env: GW_BIN, LT_BIN, OUT, PORT, DURATION seconds, default 600)
# Pass: RSS flat over the last minutes, sessions back to 0 after the run, no loss/dup/reorder.
set -u
GW_BIN=${GW_BIN:-target/release/socket-gateway}; LT_BIN=${LT_BIN:-target/release/loadtest}
OUT=${OUT:-soak-out}; SECRET=soak-secret; PORT=${PORT:-3400}; mkdir -p "$OUT"
"$GW_BIN" serve --listen 127.0.0.1:$PORT --shards 2 --jwt-secret $SECRET --log-level warn \
  --max-events-per-sec 0 > "$OUT/gw.log" 2>&1 &
GW=$!; sleep 2
( while kill -0 $GW 2>/dev/null; do
    echo "$(date +%s) rss_kib=$(awk '/VmRSS/{print $2}' /proc/$GW/status) sessions=$(curl -s localhost:$PORT/metrics | awk '/^socket_gateway_engineio_sessions/{s+=$2} END{print s+0}')"
    sleep 10; done ) > "$OUT/rss.txt" &
"$LT_BIN" churn --url http://127.0.0.1:$PORT --jwt-secret $SECRET \
  --subscribers 5000 --channels 100 --publishers 8 --rate 400 --churn-rate 100 \
  --warmup 30 --duration ${DURATION:-600} --json "$OUT/soak.json" > "$OUT/soak.txt" 2>&1
sleep 30; tail -4 "$OUT/rss.txt"; kill -TERM $GW; wait $GW
