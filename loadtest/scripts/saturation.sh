#!/usr/bin/env bash
# Open-loop saturation: runs one scenario against a fresh server at each offered rate in turn
# (compare.sh with one target) and stops after the first rate the server no longer sustains:
# deliveries/s in the window below 97 % of offered, or p99 above P99_MAX_MS. The last sustained
# rate's deliveries/s is the server's saturation throughput.
# Usage: loadtest/scripts/saturation.sh gateway|peer DELIVERIES_PER_PUBLISH NAME RATES -- SCENARIO ARGS
#   e.g. loadtest/scripts/saturation.sh peer 10000 f1x10k "6 8 9 10" -- fanout --subscribers 10000 \
#          --channels 1 --publishers 2 --membership subscribe --duration 8 --warmup 2
# Env: P99_MAX_MS (2000), OUT (bench-out), and compare.sh's.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:?gateway|peer}; PER=${2:?deliveries per publish}; NAME=${3:?name}; RATES=${4:?rates}; shift 4
[ "${1:-}" = "--" ] && shift
P99_MAX_MS=${P99_MAX_MS:-2000}; export OUT=${OUT:-bench-out}
best=0
for r in $RATES; do
  TARGETS=$T loadtest/scripts/compare.sh "$NAME-$T-r$r" "$@" --rate "$r" >/dev/null 2>&1 || true
  J="$OUT/$NAME-$T-r$r-$T.json"
  [ -f "$J" ] || { echo "$T rate $r: no result"; break; }
  read -r got p99 lost < <(jq -r '"\(.deliveries_per_sec|round) \(.latency.p99_ms) \(.lost)"' "$J")
  offered=$(awk -v r="$r" -v n="$PER" 'BEGIN { printf "%d", r * n }')
  ok=$(awk -v g="$got" -v o="$offered" -v p="$p99" -v m="$P99_MAX_MS" 'BEGIN { print (g >= 0.97 * o && p <= m) ? 1 : 0 }')
  echo "$T $NAME rate $r: offered $offered/s, delivered $got/s, p99 $p99 ms, lost $lost -> $([ "$ok" = 1 ] && echo sustained || echo 'NOT sustained')"
  [ "$ok" = 1 ] || break
  best=$got
done
echo "$T $NAME saturation (highest sustained): $best deliveries/s"
