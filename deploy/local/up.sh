#!/usr/bin/env bash
# Starts what switchyard needs locally (PostgreSQL, the broker) and applies deploy/topics.toml.
# Idempotent: running it again leaves running services alone.
source "$(dirname "$0")/lib.sh"

"$ROOT/deploy/local/postgres.sh" nisshi switchyard deptrans
"$ROOT/deploy/local/broker.sh"
ensure_cargo
cd "$ROOT"
cargo build --release -q --bin switchyard
"$BIN"/switchyard --bootstrap-servers "$KAFKA_HOST:$KAFKA_PORT" topics apply --file deploy/topics.toml
