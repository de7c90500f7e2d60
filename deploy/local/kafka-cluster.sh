#!/usr/bin/env bash
# A three-node Apache Kafka cluster (KRaft, every node broker+controller) on loopback for fault
# tests: clients on 127.0.0.1:11092,12092,13092, controllers on :11093,12093,13093; replication
# factor 3, min.insync.replicas=2, unclean leader election off, internal topics RF 3.
# Data in .local/kafka/cluster/nN. The integration-test harness drives it through this script.
#   kafka-cluster.sh up          start every node that is not running (formats once); waits
#   kafka-cluster.sh kill N      kill -9 node N (a crash)
#   kafka-cluster.sh start N     start node N again (same data) and wait until it answers
#   kafka-cluster.sh pause N     SIGSTOP node N;  resume N: SIGCONT
#   kafka-cluster.sh bootstrap   print the bootstrap servers
#   kafka-cluster.sh down        stop every node (SIGTERM; data kept);  reset: down + delete data
source "$(dirname "$0")/lib.sh"

CLUSTER="$STATE/kafka/cluster"
VOTERS="1@127.0.0.1:11093,2@127.0.0.1:12093,3@127.0.0.1:13093"
BS="127.0.0.1:11092,127.0.0.1:12092,127.0.0.1:13092"
HEAP="${KAFKA_CLUSTER_HEAP:-384m}"

node_dir() { echo "$CLUSTER/n$1"; }
node_pid() { cat "$(node_dir "$1")/pid" 2>/dev/null; }
running() { local p; p="$(node_pid "$1")" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

prepare() {
  ensure_kafka_jars
  local cid
  if [ -f "$CLUSTER/cluster-id" ]; then cid="$(cat "$CLUSTER/cluster-id")"; else
    mkdir -p "$CLUSTER"
    cid="$(ktool kafka.tools.StorageTool random-uuid)"
    echo "$cid" >"$CLUSTER/cluster-id"
  fi
  for n in 1 2 3; do
    kafka_node_properties "$(node_dir "$n")" "$n" "1${n}092" "1${n}093" "$VOTERS" 3
    kafka_format "$(node_dir "$n")" "$cid"
  done
}

start_node() {
  local n=$1
  if running "$n"; then return 0; fi
  if port_open 127.0.0.1 "1${n}092" || port_open 127.0.0.1 "1${n}093"; then
    log "port 1${n}092 or 1${n}093 is taken by a process this checkout did not start (another" \
      "checkout's cluster? stop it with its deploy/local/kafka-cluster.sh down)"
    return 1
  fi
  kafka_start "$(node_dir "$n")" "$HEAP"
}

case "${1:-up}" in
  up)
    prepare
    # Serial starts are as fast as parallel ones on 2 cores, but the quorum needs 2 of 3 voters
    # before any node finishes starting: start all, then wait for each.
    for n in 1 2 3; do start_node "$n"; done
    for n in 1 2 3; do kafka_wait "$(node_dir "$n")" "1${n}092" 180; done
    log "Kafka cluster ready: $BS"
    ;;
  kill)
    p="$(node_pid "$2")" && kill -9 "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do running "$2" || break; sleep 0.1; done
    ;;
  start)
    start_node "$2"
    kafka_wait "$(node_dir "$2")" "1${2}092" 180
    ;;
  pause) kill -STOP "$(node_pid "$2")" ;;
  resume) kill -CONT "$(node_pid "$2")" ;;
  bootstrap) echo "$BS" ;;
  down | reset)
    for n in 1 2 3; do p="$(node_pid "$n")" && kill -CONT "$p" 2>/dev/null && kill "$p" 2>/dev/null || true; done
    for n in 1 2 3; do for _ in $(seq 1 150); do running "$n" || break; sleep 0.2; done; done
    for n in 1 2 3; do p="$(node_pid "$n")" && kill -9 "$p" 2>/dev/null || true; done
    [ "$1" = reset ] && rm -rf "$CLUSTER"
    log "Kafka cluster stopped"
    ;;
  *) echo "usage: $0 up|kill N|start N|pause N|resume N|bootstrap|down|reset" >&2; exit 2 ;;
esac
