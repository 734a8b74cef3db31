#!/usr/bin/env bash
# Light load, 1 x 200 at 200 publishes/s, with the server alone on CPU 1 and the one-thread load
# client alone on CPU 0 (taskset): the floor (loadtest sink-server --publish-rate 200) against the
# relay floor (loadtest sink-server --relay: the same trivial sender, each frame started by the
# client's publish, so the publish's trip in is in it) and the gateway (one shard, pinned to
# CPU 1), alternated ROUNDS (5) times, with the host's steal ticks.
# Env: GW (target/release/socket-gateway), ROUNDS, OUT; VARIANTS ("name:gateway flags;…", each
#      gateway run under taskset -c 1; default "gw1:--shards 1 --cpus 1"; a name written name=BIN
#      runs that binary instead of GW, to compare two builds in one run).
set -u
cd "$(dirname "$0")/../.."
LT=target/release/loadtest; GW=${GW:-target/release/socket-gateway}; OUT=${OUT:-bench-out/light-isolated}; mkdir -p "$OUT"
steal() { awk '/^cpu /{print $9}' /proc/stat; }
for r in $(seq 1 ${ROUNDS:-5}); do
  s0=$(steal)
  taskset -c 1 $LT sink-server --listen 127.0.0.1:27900 --publish-rate 200 >$OUT/sink-$r.log 2>&1 &
  S=$!; sleep 1
  taskset -c 0 $LT fanout --url http://127.0.0.1:27900 --jwt-secret bench-secret --subscribers 200 --channels 1 --publishers 0 --rate 200 --duration 10 --warmup 2 --quiet --json $OUT/floor-$r.json | grep -E "latency ms" | sed "s/^/floor r$r steal $(( $(steal) - s0 )) /"
  kill $S; wait $S 2>/dev/null
  s0=$(steal)
  taskset -c 1 $LT sink-server --listen 127.0.0.1:27902 --relay >$OUT/relay-$r.log 2>&1 &
  S=$!; sleep 1
  taskset -c 0 $LT fanout --url http://127.0.0.1:27902 --jwt-secret bench-secret --subscribers 200 --channels 1 --publishers 1 --rate 200 --duration 10 --warmup 2 --quiet --json $OUT/relay-$r.json | grep -E "latency ms" | sed "s/^/relay r$r steal $(( $(steal) - s0 )) /"
  kill $S; wait $S 2>/dev/null
  IFS=';' read -ra vs <<< "${VARIANTS:-gw1:--shards 1 --cpus 1}"
  for v in "${vs[@]}"; do
    name=${v%%:*}; args=${v#*:}; bin=$GW
    case $name in *=*) bin=${name#*=}; name=${name%%=*};; esac
    s0=$(steal)
    # shellcheck disable=SC2086
    taskset -c 1 $bin serve --listen 127.0.0.1:27901 $args --jwt-secret bench-secret --log-level warn --max-events-per-sec 0 >$OUT/$name-$r.log 2>&1 &
    G=$!; sleep 1.5
    taskset -c 0 $LT fanout --url http://127.0.0.1:27901 --jwt-secret bench-secret --subscribers 200 --channels 1 --publishers 1 --rate 200 --duration 10 --warmup 2 --quiet --json $OUT/$name-$r.json | grep -E "latency ms" | sed "s/^/$name r$r steal $(( $(steal) - s0 )) /"
    kill $G; wait $G 2>/dev/null
  done
done
