#!/usr/bin/env bash
# Makes sure Apache Kafka answers for switchyard. Locally that is one combined broker+controller
# (KRaft) on 127.0.0.1:9092 run from the Maven Central jars of deploy/kafka/pom.xml, its data in
# .local/kafka/single. Formats once; idempotent: an answering broker is left alone.
# With SWITCHYARD_BOOTSTRAP_SERVERS set (your own Kafka), nothing is started.
#   deploy/local/kafka.sh          start (or keep) the broker
#   deploy/local/kafka.sh stop     stop the broker this script started (data is kept)
source "$(dirname "$0")/lib.sh"

NODE="$STATE/kafka/single"

if [ "${1:-start}" = stop ]; then
  if [ -f "$NODE/pid" ] && kill "$(cat "$NODE/pid")" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$(cat "$NODE/pid")" 2>/dev/null || break; sleep 0.2; done
    log "Kafka stopped"
  fi
  rm -f "$NODE/pid"
  exit 0
fi

if [ -n "${SWITCHYARD_BOOTSTRAP_SERVERS:-}" ]; then
  log "using your Kafka at $SWITCHYARD_BOOTSTRAP_SERVERS (SWITCHYARD_BOOTSTRAP_SERVERS); starting none"
  exit 0
fi
if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
  log "Kafka already answering on $KAFKA_HOST:$KAFKA_PORT"
  exit 0
fi

ensure_kafka_jars
kafka_node_properties "$NODE" 1 "$KAFKA_PORT" "$((KAFKA_PORT + 1))" "1@127.0.0.1:$((KAFKA_PORT + 1))" 1
if [ ! -f "$NODE/data/meta.properties" ]; then
  log "formatting Kafka storage in .local/kafka/single"
  kafka_format "$NODE" "$(ktool kafka.tools.StorageTool random-uuid)"
fi
log "starting Apache Kafka $(kafka_version) on $KAFKA_HOST:$KAFKA_PORT (log: .local/kafka/single/logs/server.log)"
kafka_start "$NODE" "${KAFKA_HEAP:-512m}"
kafka_wait "$NODE" "$KAFKA_PORT" 120
log "Kafka ready on $KAFKA_HOST:$KAFKA_PORT"
