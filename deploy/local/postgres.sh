#!/usr/bin/env bash
# Makes sure PostgreSQL answers on $PG_HOST:$PG_PORT: starts an installed cluster, or installs
# one with apt on a fresh Debian machine. Idempotent.
source "$(dirname "$0")/lib.sh"

if ! command -v pg_isready >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  log "installing PostgreSQL with apt"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

if ! port_open "$PG_HOST" "$PG_PORT"; then
  log "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for v in $(ls /etc/postgresql 2>/dev/null); do
      as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
  fi
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
