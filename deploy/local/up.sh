#!/usr/bin/env bash
# Starts what switchyard needs locally (PostgreSQL, Apache Kafka) and applies deploy/topics.toml.
# Idempotent: running it again leaves running services alone. With SWITCHYARD_BOOTSTRAP_SERVERS
# set, your Kafka is used and none is started.
source "$(dirname "$0")/lib.sh"

"$ROOT/deploy/local/postgres.sh" switchyard deptrans
"$ROOT/deploy/local/kafka.sh"
ensure_cargo
cd "$ROOT"
cargo build --release -q --bin switchyard
"$BIN"/switchyard --bootstrap-servers "$BOOTSTRAP" topics apply --file deploy/topics.toml
