#!/usr/bin/env bash
# Cross-instance fan-out: one scenario against (1) one gateway alone, (2) two gateways clustered
# through Redis (subscribers spread over both, publishers on the first), (3) two Node Socket.IO
# peers with the Redis adapter, the same way; then Redis commands per published message.
# More targets: gateway-3 (three gateways on one Redis), gateway-2-rc and gateway-3-rc (two or
# three gateways on a Redis Cluster of 3 primaries + 3 replicas, sharded pub/sub; started here with
# tests/js/redis_cluster.mjs unless RC_URL names one). Every target reports the CPU seconds each
# Redis primary spent during the run.
# Usage: loadtest/scripts/cluster-compare.sh NAME [fanout args, without --url/--jwt-secret/--json]
# Env: REDIS_URL (redis://127.0.0.1:6379), RC_URL (redis+cluster://…), OUT (bench-out), GW_BIN,
#      LT_BIN, TARGETS, GW_EXTRA (extra gateway flags, e.g. "--recovery-window 0").
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
# The Redis nodes a target uses: the one server, or the cluster's primaries.
NODES=$REDIS_URL
calls() { for u in $NODES; do redis-cli -u "$u" info commandstats; done | awk -F'[:=,]' '/^cmdstat_/{s+=$3} END{print s+0}'; }
netin() { for u in $NODES; do redis-cli -u "$u" info stats; done | awk -F: '/^total_net_input_bytes/{s+=$2} END{print s+0}'; }
cpu() { for u in $NODES; do redis-cli -u "$u" info cpu | awk -F: '/^used_cpu_(sys|user):/{s+=$2} END{printf "%.2f ", s}'; done; }
RC_PID=
cleanup() { [ -n "$RC_PID" ] && kill "$RC_PID" 2>/dev/null || true; }
trap cleanup EXIT
if [[ " $TARGETS " == *-rc* ]] && [ -z "${RC_URL:-}" ]; then
  node tests/js/redis_cluster.mjs >"$OUT/$NAME-rc.url" 2>"$OUT/$NAME-rc.err" &
  RC_PID=$!
  for _ in $(seq 1 300); do grep -q '^redis+cluster://' "$OUT/$NAME-rc.url" && break; sleep 0.1; done
  RC_URL=$(head -1 "$OUT/$NAME-rc.url")
  [ -n "$RC_URL" ] || { echo "could not start a Redis Cluster: $(cat "$OUT/$NAME-rc.err")"; exit 1; }
fi
rc_primaries() {
  local seed=${RC_URL#*://}; seed=${seed%%,*}
  redis-cli -h "${seed%:*}" -p "${seed#*:}" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 {split($2, a, "@"); print "redis://" a[1]}'
}

start() { # kind port prefix -> pid
  local log="$OUT/$NAME-$1-$2.server.log"
  if [ "$1" = gateway ]; then
    "$GW_BIN" serve --listen 127.0.0.1:$2 --shards ${SH:-1} --jwt-secret $SECRET --log-level warn \
      --max-events-per-sec 0 ${3:+--redis-url ${GW_REDIS:-$REDIS_URL} --redis-prefix $3} ${GW_EXTRA:-} >"$log" 2>&1 &
  else
    node "$PEER_DIR/server.js" --port $2 --jwt-secret $SECRET ${3:+--redis-url $REDIS_URL} >"$log" 2>&1 &
  fi
  echo $!
  for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
}

for T in $TARGETS; do
  PREFIX=bench$RANDOM
  NODES=$REDIS_URL; GW_REDIS=$REDIS_URL
  case $T in
    *-rc) NODES=$(rc_primaries); GW_REDIS=$RC_URL ;;
  esac
  case $T in
    gateway-1) PIDS="$(SH=2 start gateway 3100 '')"; URLS=http://127.0.0.1:3100 ;;
    gateway-2|gateway-2-rc) PIDS="$(start gateway 3100 $PREFIX) $(start gateway 3101 $PREFIX)"
               URLS=http://127.0.0.1:3100,http://127.0.0.1:3101 ;;
    gateway-3|gateway-3-rc) PIDS="$(start gateway 3100 $PREFIX) $(start gateway 3101 $PREFIX) $(start gateway 3104 $PREFIX)"
               URLS=http://127.0.0.1:3100,http://127.0.0.1:3101,http://127.0.0.1:3104 ;;
    peer-2)    PIDS="$(start peer 3102 x) $(start peer 3103 x)"
               URLS=http://127.0.0.1:3102,http://127.0.0.1:3103 ;;
  esac
  sleep 2
  echo "== $NAME on $T, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  C0=$(calls); N0=$(netin); U0=($(cpu))
  "$LT_BIN" fanout --url "$URLS" --jwt-secret $SECRET --json "$OUT/$NAME-$T.json" --quiet "$@" \
    | tee "$OUT/$NAME-$T.txt" || echo "(loadtest exit $?)"
  C1=$(calls); N1=$(netin); U1=($(cpu))
  CPU=""; for i in "${!U1[@]}"; do CPU+="$(python3 -c "print(f'{${U1[$i]} - ${U0[$i]}:.2f}')")s "; done
  echo "redis CPU seconds per node during the run: $CPU" | tee -a "$OUT/$NAME-$T.txt"
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
  case $T in
    gateway-2|gateway-3) rcli --scan --pattern "$PREFIX:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null ;;
  esac
  sleep 1
done
