#!/usr/bin/env bash
# Benchmarks talaria-proxy against Debian's nginx (`proxy_pass`) in front of the same local
# backend, with the same load generator and concurrency; writes bench-results/proxy.md.
#   CONCURRENCY=32 BENCH_SECONDS=10 ROUNDS=2 deploy/local/bench-proxy.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CONCURRENCY=${CONCURRENCY:-32}
BENCH_SECONDS=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-2}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "installing nginx from Debian" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -p switchyard-proxy --bins
PROXY_BIN=$TARGET_DIR/release/switchyard-proxy
BENCH_BIN=$TARGET_DIR/release/proxy-bench

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

"$BENCH_BIN" serve --addr-file "$TMP/addrs" &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
for _ in $(seq 100); do [ -s "$TMP/addrs" ] && break; sleep 0.1; done
BACKEND=$(sed -n 's/^backend=//p' "$TMP/addrs")
LOOKUPS=$(sed -n 's/^lookups=//p' "$TMP/addrs")
PROXY_PORT=$("$BENCH_BIN" free-port)
PARTNER_PORT=$("$BENCH_BIN" free-port)
OPS_PORT=$("$BENCH_BIN" free-port)
NGINX_PORT=$("$BENCH_BIN" free-port)

cat >"$TMP/proxy.toml" <<TOML
listen = "127.0.0.1:$PROXY_PORT"
partner_listen = "127.0.0.1:$PARTNER_PORT"
ops_listen = "127.0.0.1:$OPS_PORT"
allowed_hosts = ["127.0.0.1", "localhost"]

# proxy-bench's load generator sends x-proxy-key: bench-caller-token-0123456789.
[callers.bench]
token_sha256 = "$(printf %s bench-caller-token-0123456789 | sha256sum | cut -d' ' -f1)"
backends = ["bench-plain", "bench-full"]

[backends.bench-plain]
base_url = "http://$BACKEND"
allowed_prefixes = ["/v1"]
api_key = { value = "bench-api-key" }

[backends.bench-full]
base_url = "http://$BACKEND"
allowed_prefixes = ["/v1"]
identity = "bench"
api_key = { value = "bench-api-key" }
jwt = { alg = "HS256", kid = "bench-1", secret = "bench-secret-bench-secret-bench-secret", issuer = "talaria-proxy", audience = "bench-partner" }

[identity.bench]
personal_url = "http://$LOOKUPS/v1/phones/retrieve"
partner_url = "http://$LOOKUPS/v1/users/lookup"
cache_capacity = 2000000
TOML

mkdir -p "$TMP/nginx"
cat >"$TMP/nginx.conf" <<NGINX
worker_processes auto;
pid $TMP/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  upstream backend { server $BACKEND; keepalive 256; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX

RUST_LOG=warn "$PROXY_BIN" --config "$TMP/proxy.toml" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
"$NGINX" -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf"
wait_port "$PROXY_PORT"
wait_port "$NGINX_PORT"

mkdir -p bench-results
"$BENCH_BIN" compare \
  --direct "http://$BACKEND" \
  --nginx "http://127.0.0.1:$NGINX_PORT" \
  --proxy "http://127.0.0.1:$PROXY_PORT" \
  --proxy-pid "$PROXY_PID" \
  --backend-pid "$BACKEND_PID" \
  --nginx-pid "$(cat "$TMP/nginx.pid")" \
  --concurrency "$CONCURRENCY" \
  --seconds "$BENCH_SECONDS" \
  --rounds "$ROUNDS" \
  --out bench-results/proxy.md
