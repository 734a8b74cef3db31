#!/usr/bin/env bash
# Cross-instance fan-out: one scenario against (1) one gateway alone, (2) two gateways clustered
# through Redis (subscribers spread over both, publishers on the first), (3) two Node Socket.IO
# peers with the Redis adapter, the same way; then Redis commands per published message.
# Usage: loadtest/scripts/cluster-compare.sh NAME [fanout args, without --url/--jwt-secret/--json]
# Env: REDIS_URL (redis://127.0.0.1:6379), OUT (bench-out), GW_BIN, LT_BIN, TARGETS,
#      GW_EXTRA (extra gateway flags, e.g. "--recovery-window 0").
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=${1:?name}; shift
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}; OUT=${OUT:-bench-out}
GW_BIN=${GW_BIN:-target/release/socket-gateway}; LT_BIN=${LT_BIN:-target/release/loadtest}
TARGETS=${TARGETS:-gateway-1 gateway-2 peer-2}
SECRET=bench-secret; PEER_DIR=loadtest/peers/node-socketio
mkdir -p "$OUT"
[ -d "$PEER_DIR/node_modules" ] || (cd "$PEER_DIR" && npm ci --no-audit --no-fund >/dev/null)
rcli() { redis-cli -u "$REDIS_URL" "$@"; }
calls() { rcli info commandstats | awk -F'[:=,]' '/^cmdstat_/{s+=$3} END{print s+0}'; }
netin() { rcli info stats | awk -F: '/^total_net_input_bytes/{print $2+0}'; }

start() { # kind port prefix -> pid
  local log="$OUT/$NAME-$1-$2.server.log"
  if [ "$1" = gateway ]; then
    "$GW_BIN" serve --listen 127.0.0.1:$2 --shards ${SH:-1} --jwt-secret $SECRET --log-level warn \
      --max-events-per-sec 0 ${3:+--redis-url $REDIS_URL --redis-prefix $3} ${GW_EXTRA:-} >"$log" 2>&1 &
  else
    node "$PEER_DIR/server.js" --port $2 --jwt-secret $SECRET ${3:+--redis-url $REDIS_URL} >"$log" 2>&1 &
  fi
  echo $!
  for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
}

for T in $TARGETS; do
  PREFIX=bench$RANDOM
  case $T in
    gateway-1) PIDS="$(SH=2 start gateway 3100 '')"; URLS=http://127.0.0.1:3100 ;;
    gateway-2) PIDS="$(start gateway 3100 $PREFIX) $(start gateway 3101 $PREFIX)"
               URLS=http://127.0.0.1:3100,http://127.0.0.1:3101 ;;
    peer-2)    PIDS="$(start peer 3102 x) $(start peer 3103 x)"
               URLS=http://127.0.0.1:3102,http://127.0.0.1:3103 ;;
  esac
  sleep 2
  echo "== $NAME on $T, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  C0=$(calls); N0=$(netin)
  "$LT_BIN" fanout --url "$URLS" --jwt-secret $SECRET --json "$OUT/$NAME-$T.json" --quiet "$@" \
    | tee "$OUT/$NAME-$T.txt" || echo "(loadtest exit $?)"
  C1=$(calls); N1=$(netin)
  PUB=$(python3 - "$OUT/$NAME-$T.json" <<'PY' 2>/dev/null || echo 0
import json, sys
d = json.load(open(sys.argv[1]))
def total(v):
    return sum(total(x) for x in v) if isinstance(v, list) else (v if isinstance(v, (int, float)) else 0)
found = [total(v) for k, v in d.items() if k in ("published", "sent", "publishes")]
print(int(found[0]) if found else 0)
PY
)
  echo "redis commands during the run (setup included): $((C1 - C0)); bytes into redis: $((N1 - N0)); publishes: $PUB" | tee -a "$OUT/$NAME-$T.txt"
  kill $PIDS 2>/dev/null || true; wait $PIDS 2>/dev/null || true
  [ "$T" = gateway-2 ] && rcli --scan --pattern "$PREFIX:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
  sleep 1
done
