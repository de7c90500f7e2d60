#!/usr/bin/env bash
# Makes sure a Kafka-protocol broker answers on $KAFKA_HOST:$KAFKA_PORT. Locally that is nisshi
# (cargo install, once: the build takes 20-30 minutes on 2 cores) with its log in PostgreSQL, so
# a broker restart loses nothing. Idempotent: an answering broker is left alone.
source "$(dirname "$0")/lib.sh"

if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
  log "broker already answering on $KAFKA_HOST:$KAFKA_PORT"
  exit 0
fi

ensure_cargo
NISSHI="$(command -v nisshi || echo "$HOME/.cargo/bin/nisshi")"
if ! [ -x "$NISSHI" ] || ! "$NISSHI" --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
  log "installing nisshi $NISSHI_VERSION (one-time build, 20-30 minutes on 2 cores)"
  cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version
  NISSHI="$HOME/.cargo/bin/nisshi"
fi

"$(dirname "$0")/postgres.sh" nisshi
log "starting nisshi (log: .local/nisshi.log)"
nohup "$NISSHI" broker \
  --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
  --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
  --storage-engine "$(pg_url nisshi)?sslmode=disable" \
  --group-initial-rebalance-delay 0s \
  >"$STATE/nisshi.log" 2>&1 &
echo $! >"$STATE/nisshi.pid"
wait_port "$KAFKA_HOST" "$KAFKA_PORT" nisshi 60 || { tail -20 "$STATE/nisshi.log" >&2; exit 1; }
log "broker ready on $KAFKA_HOST:$KAFKA_PORT"
