#!/usr/bin/env bash
# Light load, 1 x 200 at 200 publishes/s: the floor (loadtest sink-server --publish-rate 200) and
# the gateway (with each shard count of SHARDS_LIST), alternated, ROUNDS times; one latency line
# each. Env: GW (target/release/socket-gateway), ROUNDS (3), SHARDS_LIST ("2 1"), OUT, GW_EXTRA.
set -u
cd "$(dirname "$0")/../.."
LT=target/release/loadtest; GW=${GW:-target/release/socket-gateway}; OUT=${OUT:-bench-out/light}; mkdir -p $OUT
ROUNDS=${ROUNDS:-3}
for r in $(seq 1 $ROUNDS); do
  $LT sink-server --listen 127.0.0.1:47900 --publish-rate 200 >$OUT/sink-$r.log 2>&1 &
  S=$!; sleep 1
  $LT fanout --url http://127.0.0.1:47900 --jwt-secret bench-secret --subscribers 200 --channels 1 --publishers 0 --rate 200 --duration 10 --warmup 2 --quiet --json $OUT/floor-$r.json | grep -E "latency ms" | sed "s/^/floor  r$r /"
  kill $S; wait $S 2>/dev/null
  for sh in ${SHARDS_LIST:-2 1}; do
    $GW serve --listen 127.0.0.1:47901 --shards $sh --jwt-secret bench-secret --log-level warn --max-events-per-sec 0 ${GW_EXTRA:-} >$OUT/gw$sh-$r.log 2>&1 &
    G=$!; sleep 1.5
    $LT fanout --url http://127.0.0.1:47901 --jwt-secret bench-secret --subscribers 200 --channels 1 --publishers 1 --rate 200 --duration 10 --warmup 2 --quiet --json $OUT/gw$sh-$r.json | grep -E "latency ms" | sed "s/^/gw$sh    r$r /"
    kill $G; wait $G 2>/dev/null
  done
done
