#!/usr/bin/env bash
# Every issue-4 comparison in one run, gateway then Node peer per scenario (compare.sh), open-loop
# saturation sweeps (saturation.sh), with the
# half-load points derived from the peer's own saturation in this run, then the fan-out floor
# (loadtest sink-server: one thread writing one pre-encoded frame per subscriber) and idle memory
# per connection at 10,000 and 19,000 connections.
# Usage: loadtest/scripts/compare-all.sh        (build first: cargo build --release -p socket-gateway -p loadtest)
# Env: OUT (bench-out), plus compare.sh's (SHARDS, GW_BIN, LT_BIN, ...). Takes ~12 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-bench-out}; mkdir -p "$OUT"
C=loadtest/scripts/compare.sh
LT_BIN=${LT_BIN:-target/release/loadtest}
D="--duration 10 --warmup 2 --max-inflight 256"
# Saturation: as fast as a bounded number of undelivered messages per publisher allows.
$C f1x10k-maxdw   fanout --subscribers 10000 --channels 1   --publishers 2  --max --window 8  --delivery-window 2 --membership subscribe $D
$C f100x100-maxdw fanout --subscribers 10000 --channels 100 --publishers 10 --max --window 32 --delivery-window 16 $D
$C direct-maxdw   direct --pairs 500 --max --window 8 --delivery-window 8 $D
# Open-loop saturation: each server at rising offered rates until it no longer keeps up; the
# closed-loop runs above bound the messages in flight, so their rate is in-flight / latency.
S=loadtest/scripts/saturation.sh
F1="fanout --subscribers 10000 --channels 1 --publishers 2 --membership subscribe --duration 8 --warmup 2 --max-inflight 256"
F2="fanout --subscribers 10000 --channels 100 --publishers 10 --duration 8 --warmup 2 --max-inflight 256"
$S peer    10000 f1x10k   "6 7 8 9 10"              -- $F1 | tee "$OUT/sat-f1x10k-peer.txt"
$S gateway 10000 f1x10k   "50 100 150 200 300"      -- $F1 | tee "$OUT/sat-f1x10k-gateway.txt"
$S peer    100   f100x100 "600 800 1000 1200"       -- $F2 | tee "$OUT/sat-f100x100-peer.txt"
$S gateway 100   f100x100 "5000 10000 15000 20000"  -- $F2 | tee "$OUT/sat-f100x100-gateway.txt"
# Half of the peer's saturation (open loop, coordinated omission corrected).
r1=$(jq '.deliveries_per_sec / 10000 / 2 * 10 | round / 10' "$OUT/f1x10k-maxdw-peer.json")
r2=$(jq '.deliveries_per_sec / 100 / 2 | round' "$OUT/f100x100-maxdw-peer.json")
r3=$(jq '.deliveries_per_sec / 2 | round' "$OUT/direct-maxdw-peer.json")
echo "half of the peer's saturation: 1x10k $r1 publishes/s, 100x100 $r2 publishes/s, direct $r3 msgs/s"
$C f1x10k-half-peer   fanout --subscribers 10000 --channels 1   --publishers 2  --rate "$r1" --membership subscribe $D
$C f100x100-half-peer fanout --subscribers 10000 --channels 100 --publishers 10 --rate "$r2" $D
$C direct-half-peer   direct --pairs 500 --rate "$r3" $D
# The floor for 1 x 10,000 at the same rate: no server does less work per publish than this.
"$LT_BIN" sink-server --listen 127.0.0.1:4000 --publish-rate "$r1" >"$OUT/sink.log" 2>&1 &
S=$!
sleep 1
echo "== f1x10k floor (loadtest sink-server --publish-rate $r1)"
"$LT_BIN" fanout --url http://127.0.0.1:4000 --jwt-secret S --subscribers 10000 --channels 1 --publishers 0 \
  --rate "$r1" $D --quiet --json "$OUT/f1x10k-floor.json" | tee "$OUT/f1x10k-floor.txt"
kill $S 2>/dev/null || true; wait $S 2>/dev/null || true
# Idle memory per connection.
for n in 10000 19000; do
  $C connect-$n connect --connections $n --rate 100000 --hold 3 --settle 3 --source-addrs 127.0.0.1,127.0.0.2
done
echo "== summary"; for f in "$OUT"/*-compare.txt; do echo "-- $(basename "$f" -compare.txt)"; cat "$f"; done
grep -h "saturation (highest" "$OUT"/sat-*.txt
