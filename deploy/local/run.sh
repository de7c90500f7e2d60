#!/usr/bin/env bash
# Quick start: the whole system on this machine. Starts PostgreSQL and Apache Kafka (or uses
# yours: SWITCHYARD_BOOTSTRAP_SERVERS), builds, then
# runs the ingress, the dispatcher (whose subscriber is a built-in sink that logs every webhook
# it receives) and deptrans (against local fakes of KRT and its upstream services, on ports
# 9301-9305) in the foreground. Ctrl-C stops them all.
source "$(dirname "$0")/lib.sh"

"$ROOT/deploy/local/up.sh"
cd "$ROOT"
log "building switchyard (release)"
cargo build --release -q --bins

# Every service talks to the same Kafka: the local one, or SWITCHYARD_BOOTSTRAP_SERVERS.
export SWITCHYARD_INGRESS_KAFKA__BOOTSTRAP_SERVERS="$BOOTSTRAP"
export SWITCHYARD_DISPATCHER_KAFKA__BOOTSTRAP_SERVERS="$BOOTSTRAP"
export SWITCHYARD_DEPTRANS_KAFKA__BOOTSTRAP_SERVERS="$BOOTSTRAP"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BIN"/switchyard-dispatcher --config deploy/dispatcher.example.toml & pids+=($!)
"$BIN"/switchyard-ingress --config deploy/ingress.example.toml & pids+=($!)
"$BIN"/deptrans_fakes & pids+=($!)
wait_port 127.0.0.1 9305 "deptrans fakes" 30
# The local fake KRT accepts the client secret "secret".
SWITCHYARD_DEPTRANS_KRT__CLIENT_SECRET=secret \
  "$BIN"/switchyard-deptrans --config deploy/deptrans.example.toml & pids+=($!)
wait_port 127.0.0.1 8080 ingress 30
wait_port 127.0.0.1 8090 sink 30
wait_port 127.0.0.1 8082 deptrans 30

cat <<TXT

  switchyard is running: ingress http://127.0.0.1:8080, dispatcher metrics http://127.0.0.1:8081/metrics
  Try it (the built-in sink logs the delivered webhook a moment later):

    curl -sS -X POST http://127.0.0.1:8080/v1/uid-notify -H 'content-type: application/json' \\
      -H 'Authorization: Bearer local-idp-token-change-me' \\
      -d '{"portal_uid": 4001, "phonish_uid": 7001, "event_type": "bind"}'

    curl -sS -X POST http://127.0.0.1:8080/4.0/mark-notify/v1/seen -H 'X-YaTaxi-UserId: user-1' \\
      -H 'Authorization: Bearer local-gateway-token-change-me' -d '{"tag": "promo", "id": "n-1"}'

    curl -sS -X POST http://127.0.0.1:8080/v1/driver-status -H 'content-type: application/json' \\
      -H 'Authorization: Bearer local-driver-status-token-change-me' \\
      -d '{"park_id": "park1", "driver_profile_id": "driver0", "status": "online", "updated_at": "'$(date -u +%FT%TZ)'"}'
    curl -sS http://127.0.0.1:8082/metrics | grep deptrans_sent   # pushed to the fake KRT

  Operate it: the admin page http://127.0.0.1:8081/admin (token local-admin-token-change-me),
  or the CLI:
    export SWITCHYARD_ADMIN_TOKEN=local-admin-token-change-me
    $BIN/switchyard subscribers
    $BIN/switchyard attempts local-sink

  Ctrl-C stops everything but Kafka and PostgreSQL (deploy/local/down.sh stops Kafka).

TXT
wait -n "${pids[@]}"
