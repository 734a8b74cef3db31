#!/usr/bin/env bash
# Reconnect storm after an instance is killed (see recovery-storm.mjs for what it measures).
# Usage: loadtest/scripts/recovery-storm.sh [recovery-storm.mjs flags, e.g. --clients 10000 --json out.json]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p socket-gateway --quiet
[ -d tests/js/node_modules/socket.io-client ] || npm ci --prefix tests/js --silent
# Every client socket is a file descriptor of this one process (and of the gateway it reaches).
ulimit -n "$(ulimit -Hn)"
exec node loadtest/scripts/recovery-storm.mjs "$@"
