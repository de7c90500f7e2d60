#!/usr/bin/env bash
# Stops the local Kafka broker (and the fault-test cluster, if one runs) started by the scripts.
# Their data stays in .local/kafka; PostgreSQL is left running.
source "$(dirname "$0")/lib.sh"
"$ROOT/deploy/local/kafka.sh" stop
if [ -d "$STATE/kafka/cluster" ]; then "$ROOT/deploy/local/kafka-cluster.sh" down; fi
