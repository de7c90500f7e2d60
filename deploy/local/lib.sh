# Shared helpers for deploy/local scripts. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="$ROOT/.local"
mkdir -p "$STATE"

PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
PG_USER="${PG_USER:-postgres}"
PG_PASSWORD="${PG_PASSWORD:-postgres}"
KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
NISSHI_VERSION="0.8.1"

log() { printf '\033[1m[switchyard]\033[0m %s\n' "$*" >&2; }

# Root runs apt directly; others need sudo.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  local host=$1 port=$2 what=$3 secs=${4:-60}
  for _ in $(seq 1 "$((secs * 5))"); do
    port_open "$host" "$port" && return 0
    sleep 0.2
  done
  log "$what did not answer on $host:$port within ${secs}s"
  return 1
}

pg_url() { echo "postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$1"; }

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
      log "installing rust toolchain with rustup"
      curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    }
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

# Where cargo puts release binaries (honours CARGO_TARGET_DIR).
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
