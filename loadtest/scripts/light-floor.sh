#!/usr/bin/env bash
# Light load, 1 x 200 at 200 publishes/s: the floor (loadtest sink-server --publish-rate 200) and
# gateway variants, alternated, ROUNDS times; one latency line each, with the host's steal time
# during the run (ticks of /proc/stat: a hypervisor taking the CPU shows there, not in the figures).
# Env: GW (target/release/socket-gateway), ROUNDS (5), OUT (bench-out/light),
#      VARIANTS ("name:gateway flags;…", default: 2 shards pinned, 2 unpinned, 1 pinned; a name
#      written name=BIN runs that binary instead of GW, to compare two builds in one run).
set -u
cd "$(dirname "$0")/../.."
LT=target/release/loadtest; GW=${GW:-target/release/socket-gateway}; OUT=${OUT:-bench-out/light}; mkdir -p "$OUT"
ROUNDS=${ROUNDS:-5}
VARIANTS=${VARIANTS:-"pin2:--shards 2;nopin2:--shards 2 --no-pin;pin1:--shards 1"}
steal() { awk '/^cpu /{print $9}' /proc/stat; }
for r in $(seq 1 "$ROUNDS"); do
  s0=$(steal)
  $LT sink-server --listen 127.0.0.1:27900 --publish-rate 200 >"$OUT/sink-$r.log" 2>&1 &
  S=$!; sleep 1
  $LT fanout --url http://127.0.0.1:27900 --jwt-secret bench-secret --subscribers 200 --channels 1 --publishers 0 \
    --rate 200 --duration 10 --warmup 2 --quiet --json "$OUT/floor-$r.json" | grep -E "latency ms" | sed "s/^/floor r$r steal $(( $(steal) - s0 )) /"
  kill $S; wait $S 2>/dev/null
  IFS=';' read -ra vs <<< "$VARIANTS"
  for v in "${vs[@]}"; do
    name=${v%%:*}; args=${v#*:}; bin=$GW
    case $name in *=*) bin=${name#*=}; name=${name%%=*};; esac
    s0=$(steal)
    # shellcheck disable=SC2086
    $bin serve --listen 127.0.0.1:27901 $args --jwt-secret bench-secret --log-level warn --max-events-per-sec 0 >"$OUT/$name-$r.log" 2>&1 &
    G=$!; sleep 1.5
    # A gateway refuses a port another process listens on: say who, rather than a silent 0.
    kill -0 $G 2>/dev/null || { echo "$name r$r did not start: $(cat "$OUT/$name-$r.log")"; ss -ltnp | grep ':27901 '; continue; }
    $LT fanout --url http://127.0.0.1:27901 --jwt-secret bench-secret --subscribers 200 --channels 1 --publishers 1 \
      --rate 200 --duration 10 --warmup 2 --quiet --json "$OUT/$name-$r.json" | grep -E "latency ms" | sed "s/^/$name r$r steal $(( $(steal) - s0 )) /"
    kill $G; wait $G 2>/dev/null
  done
done
