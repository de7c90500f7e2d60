#!/usr/bin/env bash
# Every check and test of switchyard, as CI runs it: starts PostgreSQL and Apache Kafka, checks
# formatting and lints, builds once (release), then runs all tests in parallel against the real
# Kafka and PostgreSQL (the fault tests start a 3-node cluster of their own).
source "$(dirname "$0")/lib.sh"

# Kafka's own tools (the Kafka-tools test) and the 3-node cluster of the fault tests run from
# these jars, also when SWITCHYARD_BOOTSTRAP_SERVERS names your Kafka.
ensure_kafka_jars
cd "$ROOT"
ensure_cargo
# A CI clone builds from nothing: incremental artifacts would only cost time and disk there.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# The admin page's browser test: Debian chromium driven by playwright-core (no browser download).
if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium for the admin page browser test"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    chromium fonts-dejavu-core
fi
if ! command -v npm >/dev/null 2>&1; then
  log "installing node and npm for the admin page browser test"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
fi
E2E="$ROOT/integration-tests/e2e"
if [ ! -f "$E2E/node_modules/.package-lock.json" ] \
  || [ "$E2E/package-lock.json" -nt "$E2E/node_modules/.package-lock.json" ]; then
  log "npm ci in integration-tests/e2e"
  (cd "$E2E" && npm ci --no-audit --no-fund)
fi

log "format and lints"
cargo fmt --all --check
cargo clippy --release --workspace --all-targets -q -- -D warnings

log "build"
cargo build --release --workspace --bins --tests -q

# After the build, so that up.sh uses the CLI just built instead of building it on its own.
SWITCHYARD_BUILT=1 "$ROOT/deploy/local/up.sh"
# The API attack tests (issue 15.5) run schemathesis from PyPI.
ensure_schemathesis

log "tests"
cargo nextest run --release --workspace --no-fail-fast --failure-output final

# Every test's captured output (nextest's JUnit report keeps passing tests' too) searched for the
# tokens, webhook secrets, API keys and licences the test sources name, and for phone numbers and
# JWTs by their shape (issue 15.7): one found fails the run.
log "secrets in test logs"
"$BIN"/log_scan "${CARGO_TARGET_DIR:-$ROOT/target}/nextest/default/junit.xml"

log "schemathesis against the ingress, admin and deptrans APIs (full reports: target/schemathesis/)"
for report in "${CARGO_TARGET_DIR:-$ROOT/target}"/schemathesis/*.txt; do
  echo "--- $(basename "$report" .txt)"
  sed -n '/^=* SUMMARY =*$/,$p' "$report"
done

# Every fuzz target for 10 s from its committed corpus (crash inputs found so far are kept there
# as regression-* seeds), with a fixed seed: a new crash fails the run and leaves its input in
# fuzz/artifacts/. Longer runs: deploy/local/fuzz.sh 600.
log "fuzz targets, 10 s each"
FUZZ_SEED=1 "$ROOT/deploy/local/fuzz.sh" 10
log "all tests passed"
