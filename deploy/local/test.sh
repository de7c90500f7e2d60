#!/usr/bin/env bash
# Every check and test of switchyard, as CI runs it: starts PostgreSQL and the broker, checks
# formatting and lints, builds once (release), then runs all tests in parallel against the real
# broker and PostgreSQL.
source "$(dirname "$0")/lib.sh"

"$ROOT/deploy/local/up.sh"
cd "$ROOT"
ensure_cargo
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

log "format and lints"
cargo fmt --all --check
cargo clippy --release --workspace --all-targets -q -- -D warnings

log "build"
cargo build --release --workspace --bins --tests -q

log "tests"
cargo nextest run --release --workspace --no-fail-fast --failure-output final
log "all tests passed"
