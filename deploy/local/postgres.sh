#!/usr/bin/env bash
# Makes sure PostgreSQL answers on $PG_HOST:$PG_PORT: starts an installed cluster, or installs
# one with apt on a fresh Debian machine. Idempotent.
source "$(dirname "$0")/lib.sh"

if ! port_open "$PG_HOST" "$PG_PORT"; then
  # The server itself, not only the client tools (pg_isready and psql come without it).
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL with apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  # A server without a cluster (installed with policy-rc.d or the cluster dropped): make one.
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    v="$(ls /usr/lib/postgresql | sort -n | tail -1)"
    log "creating PostgreSQL cluster $v/main"
    as_root pg_createcluster "$v" main >/dev/null
  fi
  log "starting PostgreSQL"
  pg_lsclusters -h | while read -r v name port status _; do
    [ "$status" = online ] || as_root pg_ctlcluster --skip-systemctl-redirect "$v" "$name" start || true
  done
  wait_port "$PG_HOST" "$PG_PORT" PostgreSQL 60
fi

# A freshly installed cluster uses password auth on TCP: give postgres the documented password.
if ! PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  log "setting the local postgres password"
  as_root su postgres -c "psql -Atqc \"ALTER USER postgres PASSWORD '$PG_PASSWORD'\"" >/dev/null
fi

for db in "$@"; do
  if ! PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -Atqc \
      "select 1 from pg_database where datname = '$db'" | grep -q 1; then
    PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE \"$db\"" >/dev/null
    log "created database $db"
  fi
done
log "PostgreSQL ready on $PG_HOST:$PG_PORT"
