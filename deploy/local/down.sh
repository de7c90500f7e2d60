#!/usr/bin/env bash
# Stops the local broker started by broker.sh. Its data stays in PostgreSQL.
source "$(dirname "$0")/lib.sh"
if [ -f "$STATE/nisshi.pid" ]; then
  kill "$(cat "$STATE/nisshi.pid")" 2>/dev/null || true
  rm -f "$STATE/nisshi.pid"
  log "broker stopped"
fi
