#!/usr/bin/env bash
# Redis commands while 10,000 idle recoverable sockets sit on one instance (2 shards, the default
# window of 120 s: their states are renewed every quarter of it). Resets Redis's commandstats once
# they are connected, prints them a minute later.
# Env: GW_BIN (target/release/socket-gateway), LT_BIN (target/release/loadtest), PORT (27950),
#      REDIS_URL (redis://127.0.0.1:6379), N (10000).
set -euo pipefail
cd "$(dirname "$0")/../.."
GW_BIN=${GW_BIN:-target/release/socket-gateway}; LT_BIN=${LT_BIN:-target/release/loadtest}
PORT=${PORT:-27950}; REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}; N=${N:-10000}
PREFIX=renew$$
"$GW_BIN" serve --listen 127.0.0.1:$PORT --shards 2 --jwt-secret bench-secret --log-level warn \
  --redis-url "$REDIS_URL" --redis-prefix $PREFIX >/dev/null 2>&1 &
G=$!
sleep 1.5
"$LT_BIN" connect --url http://127.0.0.1:$PORT --jwt-secret bench-secret --connections "$N" --rate 100000 \
  --hold 75 --settle 2 --source-addrs 127.0.0.1,127.0.0.2 --quiet &
L=$!
sleep 12
redis-cli -u "$REDIS_URL" CONFIG RESETSTAT >/dev/null
sleep 60
redis-cli -u "$REDIS_URL" INFO commandstats | grep cmdstat_ | sed 's/,usec_per_call.*//'
echo "over 60 s, $N idle recoverable sockets"
wait $L || true
kill $G; wait $G 2>/dev/null || true
redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null
