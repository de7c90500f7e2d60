#!/usr/bin/env bash
# Benchmarks: each figure is printed next to a baseline measured in the same run; nothing passes
# or fails on speed. Measured against the one broker the local setup runs (Apache Kafka, single
# node, deploy/local/kafka.sh; or yours with SWITCHYARD_BOOTSTRAP_SERVERS) and the local
# PostgreSQL. Results are appended, under a dated "## Run of ..." header, to
# bench-results/foundation.md (ingress, dispatcher, mark-notify, end to end),
# bench-results/operations.md (attempt log, circuit breaker) and bench-results/deptrans.md (topic -> queue).
#
# SWITCHYARD_BENCH_QUICK=1 runs every bench for a few seconds and writes to .local/bench-quick/
# instead: a check that the benches work, not figures to keep.
source "$(dirname "$0")/lib.sh"
"$ROOT/deploy/local/up.sh"
cd "$ROOT"
cargo build --release -q -p integration-tests --bin bench --bin deptrans_bench

if [ -n "${SWITCHYARD_BOOTSTRAP_SERVERS:-}" ]; then
  BROKER="${SWITCHYARD_BENCH_BROKER:-your Kafka from SWITCHYARD_BOOTSTRAP_SERVERS}"
else
  BROKER="${SWITCHYARD_BENCH_BROKER:-Apache Kafka $(kafka_version), single node, as deploy/local/kafka.sh starts it}"
fi
export SWITCHYARD_BENCH_BROKER="$BROKER" RUST_LOG="${RUST_LOG:-warn}"

if [ "${SWITCHYARD_BENCH_QUICK:-0}" = 1 ]; then
  RESULTS="$STATE/bench-quick"
  INGRESS=(--seconds 3) DISPATCH=(--records 20000) SEEN=(--seconds 5) E2E=(--seconds 5)
  ATTEMPT_LOG=(--records 20000 --rounds 1) BREAKER=(--records 20000 --off-seconds 5) FILTER=(--records 20000) DEPTRANS=(--drivers 2000 --rounds 5)
else
  RESULTS="$ROOT/bench-results"
  INGRESS=(--seconds 10) DISPATCH=(--records 200000) SEEN=(--seconds 60) E2E=(--seconds 60)
  ATTEMPT_LOG=(--records 100000 --rounds 2) BREAKER=(--records 100000 --off-seconds 20) FILTER=(--records 100000) DEPTRANS=()
fi
mkdir -p "$RESULTS"
RUN="## Run of $(date -u +%FT%TZ) ($BROKER)"
log "benchmarks against $BOOTSTRAP ($BROKER); results in $RESULTS"

OUT="$RESULTS/foundation.md"
printf '%s\n\n' "$RUN" >>"$OUT"
"$BIN"/bench ingress --concurrency 64 "${INGRESS[@]}" --out "$OUT"
"$BIN"/bench dispatch --concurrency 256 "${DISPATCH[@]}" --out "$OUT"
"$BIN"/bench filter "${FILTER[@]}" --out "$OUT"
"$BIN"/bench seen --rate 10000 "${SEEN[@]}" --out "$OUT"
"$BIN"/bench e2e --rate 1000 "${E2E[@]}" --out "$OUT"
"$BIN"/bench e2e --rate 10000 "${E2E[@]}" --out "$OUT"

OUT="$RESULTS/operations.md"
printf '%s\n\n' "$RUN" >>"$OUT"
"$BIN"/bench attempt-log "${ATTEMPT_LOG[@]}" --out "$OUT"
"$BIN"/bench breaker "${BREAKER[@]}" --out "$OUT"

# deptrans_bench prints plain lines: kept verbatim under the run header.
OUT="$RESULTS/deptrans.md"
{
  echo "$RUN"
  echo
  echo "\`deptrans_bench ${DEPTRANS[*]}\`; broker: $BOOTSTRAP; PostgreSQL $PG_HOST:$PG_PORT; machine: $(nproc) cores"
  echo
  echo '```'
  "$BIN"/deptrans_bench "${DEPTRANS[@]}"
  echo '```'
  echo
} | tee -a "$OUT"
