#!/usr/bin/env bash
# Starts what switchyard needs locally (PostgreSQL, Apache Kafka) and applies deploy/topics.toml.
# Idempotent: running it again leaves running services alone. With SWITCHYARD_BOOTSTRAP_SERVERS
# set, your Kafka is used and none is started.
source "$(dirname "$0")/lib.sh"

"$ROOT/deploy/local/postgres.sh" switchyard deptrans
"$ROOT/deploy/local/kafka.sh"
ensure_cargo
cd "$ROOT"
# test.sh has just built every binary of the workspace (with the workspace's features): building
# the CLI alone here would compile much of the tree again with another feature set.
[ "${SWITCHYARD_BUILT:-}" = 1 ] || cargo build --release -q --bin switchyard
"$BIN"/switchyard --bootstrap-servers "$BOOTSTRAP" topics apply --file deploy/topics.toml
