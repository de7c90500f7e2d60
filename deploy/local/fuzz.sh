#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that read untrusted bytes (targets in fuzz/): builds
# them with libFuzzer and sanitizer coverage on stable Rust, runs each for SECONDS (default 60)
# from its committed corpus, and prints executions and crashes per target. A crash exits
# non-zero, leaving the input in fuzz/artifacts/<target>/ (replay: the binary plus that file).
#
#   deploy/local/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_UPDATE_CORPUS=1 ...   keep what a run found in fuzz/corpus/<target> (else a temp dir)
#   FUZZ_SEED=N ...            libFuzzer's seed (test.sh fixes it so a CI run is repeatable)
source "$(dirname "$0")/lib.sh"
ensure_cargo
cd "$ROOT/fuzz"

SECONDS_EACH="${1:-60}"
shift || true
ALL=(envelope uid_notify driver_status mark_notify domain_event retry_headers proxy_framing
  proxy_path callback_jwt)
TARGETS=("${@:-${ALL[@]}}")
[ "$#" -gt 0 ] || TARGETS=("${ALL[@]}")

TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
# What cargo-fuzz passes (without its nightly-only sanitizer): inline 8-bit counters, a PC
# table and compare tracing for libFuzzer, `--cfg fuzzing` for the crates' entry points. With
# --target the flags skip build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$ROOT/fuzz/target}"
log "building ${#TARGETS[@]} fuzz targets"
cargo build --release --locked -q --target "$TRIPLE" $(printf -- '--bin %s ' "${TARGETS[@]}")
BIN_DIR="$CARGO_TARGET_DIR/$TRIPLE/release"
log "built; running each for ${SECONDS_EACH} s"

failed=0
printf '| target | seconds | executions | corpus | crashes |\n|---|---:|---:|---:|---:|\n'
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  if [ "${FUZZ_UPDATE_CORPUS:-0}" = 1 ]; then
    dirs=("corpus/$t")
  else
    scratch="$(mktemp -d)"
    dirs=("$scratch" "corpus/$t")
  fi
  out="$(mktemp)"
  status=0
  "$BIN_DIR/$t" "${dirs[@]}" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    ${FUZZ_SEED:+-seed="$FUZZ_SEED"} \
    >"$out" 2>&1 || status=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)"
  corpus="$(grep -o 'corp: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)"
  crashes=0
  if [ "$status" != 0 ]; then
    crashes=1
    failed=1
    log "$t failed (exit $status); the end of its output:"
    tail -40 "$out" >&2
  fi
  printf '| %s | %s | %s | %s | %s |\n' "$t" "$SECONDS_EACH" "${runs:-0}" "${corpus:-0}" "$crashes"
  rm -f "$out"
  [ -z "${scratch:-}" ] || rm -rf "$scratch"
  scratch=""
done
exit "$failed"
