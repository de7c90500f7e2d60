#!/usr/bin/env bash
# Benchmarks of the foundation and mark-notify (prints figures; nothing passes or fails on
# speed). Results are appended to bench-results/foundation.md. The main figures use the local
# broker as it runs for users (nisshi, PostgreSQL storage); the ingress is also measured against
# a second nisshi with in-memory storage on port 9093, to keep the broker's storage out of that
# figure (labelled as such).
source "$(dirname "$0")/lib.sh"
"$ROOT/deploy/local/up.sh"
cd "$ROOT"
cargo build --release -q -p integration-tests --bin bench
OUT="$ROOT/bench-results/foundation.md"
echo "## Run of $(date -u +%FT%TZ)" >>"$OUT"

if ! port_open 127.0.0.1 9093; then
  nohup nisshi broker --listener-url tcp://127.0.0.1:9093 --advertised-listener-url tcp://127.0.0.1:9093 \
    --storage-engine memory://nisshi/ --group-initial-rebalance-delay 0s >"$STATE/nisshi-mem.log" 2>&1 &
  wait_port 127.0.0.1 9093 "nisshi (memory)" 30
fi
export RUST_LOG=warn
"$BIN"/bench ingress --out "$OUT"
SWITCHYARD_TEST_BOOTSTRAP=127.0.0.1:9093 SWITCHYARD_BENCH_BROKER="nisshi with in-memory storage: the broker's storage kept out of the figure" \
  "$BIN"/bench ingress --out "$OUT"
"$BIN"/bench dispatch --out "$OUT"
"$BIN"/bench seen --out "$OUT"
echo "## Run of $(date -u +%FT%TZ)" >>"$ROOT/bench-results/operations.md"
"$BIN"/bench attempt-log --out "$ROOT/bench-results/operations.md"
