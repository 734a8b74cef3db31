#!/usr/bin/env bash
# Runs one loadtest scenario against a fresh socket-gateway and then against a fresh Node
# Socket.IO peer (loadtest/peers/node-socketio), one after the other, and prints the ratios.
# Usage: loadtest/scripts/compare.sh NAME SCENARIO [loadtest args, without --url/--jwt-secret/--json]
#   e.g. loadtest/scripts/compare.sh fanout-100x100 fanout --subscribers 10000 --channels 100 --publishers 10 --max
# Env: SHARDS (2), GW_PORT (3000), PEER_PORT (3001), OUT (bench-out),
#      GW_BIN (target/release/socket-gateway), LT_BIN (target/release/loadtest),
#      TARGETS ("gateway peer": which servers, in this order), GW_EXTRA (extra gateway flags).
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=${1:?name}; SCEN=${2:?scenario}; shift 2
SHARDS=${SHARDS:-2}; GW_PORT=${GW_PORT:-3000}; PEER_PORT=${PEER_PORT:-3001}; OUT=${OUT:-bench-out}
GW_BIN=${GW_BIN:-target/release/socket-gateway}; LT_BIN=${LT_BIN:-target/release/loadtest}
TARGETS=${TARGETS:-gateway peer}
# Extra gateway flags, e.g. GW_EXTRA=--no-pin when the load generator shares the cores.
GW_EXTRA=${GW_EXTRA:-}
SECRET=bench-secret
PEER_DIR=loadtest/peers/node-socketio
mkdir -p "$OUT"
[ -d "$PEER_DIR/node_modules" ] || (cd "$PEER_DIR" && npm ci --no-audit --no-fund >/dev/null)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

for T in $TARGETS; do
  LOG="$OUT/$NAME-$T.server.log"
  if [ "$T" = gateway ]; then
    PORT=$GW_PORT
    "$GW_BIN" serve --listen 127.0.0.1:$PORT --shards "$SHARDS" --jwt-secret $SECRET --log-level warn \
      --max-events-per-sec 0 $GW_EXTRA >"$LOG" 2>&1 &
  else
    PORT=$PEER_PORT
    node "$PEER_DIR/server.js" --port $PORT --jwt-secret $SECRET >"$LOG" 2>&1 &
  fi
  PID=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
  sleep 1
  echo "== $NAME on $T (pid $PID), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  C0=$(cpu_ticks $PID)
  EXTRA=()
  # connect measures the server's memory per connection from its pid.
  [ "$SCEN" = connect ] && EXTRA=(--server-pid "$PID")
  "$LT_BIN" "$SCEN" --url http://127.0.0.1:$PORT --jwt-secret $SECRET --json "$OUT/$NAME-$T.json" --quiet "${EXTRA[@]}" "$@" \
    | tee "$OUT/$NAME-$T.txt" || echo "(loadtest exit $?)"
  C1=$(cpu_ticks $PID)
  HWM=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status" 2>/dev/null || echo 0)
  echo "server CPU during the run: $(awk -v d=$((C1 - C0)) -v t="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", d/t}') s; peak RSS $(( HWM / 1024 )) MiB; load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/$NAME-$T.txt"
  if ! kill -0 $PID 2>/dev/null; then echo "SERVER DIED"; fi
  kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true
done

if [ "$SCEN" = connect ] && [ -f "$OUT/$NAME-gateway.json" ] && [ -f "$OUT/$NAME-peer.json" ]; then
  jq -rn --slurpfile g "$OUT/$NAME-gateway.json" --slurpfile p "$OUT/$NAME-peer.json" '
    def r(a; b): if (b // 0) == 0 then "-" else ((a / b * 100 | round) / 100 | tostring) + "x" end;
    def row(name; a; b): "\(name)\t\(a)\t\(b)\t\(r(a; b))";
    ($g[0]) as $G | ($p[0]) as $P |
    "metric\tgateway\tpeer\tgateway/peer",
    row("succeeded"; $G.succeeded; $P.succeeded),
    row("connects/s"; ($G.achieved_rate|round); ($P.achieved_rate|round)),
    row("RSS B/conn"; ($G.server.rss_per_connection_bytes|round); ($P.server.rss_per_connection_bytes|round)),
    row("PSS B/conn"; ($G.server.pss_per_connection_bytes|round); ($P.server.pss_per_connection_bytes|round)),
    row("connect p99 ms"; $G.latency.p99_ms; $P.latency.p99_ms)
  ' | column -t -s $'\t' | tee "$OUT/$NAME-compare.txt"
elif [ -f "$OUT/$NAME-gateway.json" ] && [ -f "$OUT/$NAME-peer.json" ]; then
  jq -rn --slurpfile g "$OUT/$NAME-gateway.json" --slurpfile p "$OUT/$NAME-peer.json" '
    def r(a; b): if b == 0 then "-" else ((a / b * 100 | round) / 100 | tostring) + "x" end;
    def row(name; a; b): "\(name)\t\(a)\t\(b)\t\(r(a; b))";
    ($g[0]) as $G | ($p[0]) as $P |
    "metric\tgateway\tpeer\tgateway/peer",
    row("deliveries/s"; ($G.deliveries_per_sec|round); ($P.deliveries_per_sec|round)),
    row("sent/s"; ($G.sends_per_sec|round); ($P.sends_per_sec|round)),
    row("p50 ms"; $G.latency.p50_ms; $P.latency.p50_ms),
    row("p99 ms"; $G.latency.p99_ms; $P.latency.p99_ms),
    row("p99.9 ms"; $G.latency.p999_ms; $P.latency.p999_ms),
    row("max ms"; $G.latency.max_ms; $P.latency.max_ms),
    "lost\t\($G.lost)\t\($P.lost)",
    "dup/ooo\t\($G.duplicated)/\($G.out_of_order)\t\($P.duplicated)/\($P.out_of_order)",
    "dropped\t\($G.dropped)\t\($P.dropped)",
    "conn failed\t\($G.conn_failed)\t\($P.conn_failed)"
  ' | column -t -s $'\t' | tee "$OUT/$NAME-compare.txt"
fi
