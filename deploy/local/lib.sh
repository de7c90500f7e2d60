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
# A user with their own Kafka sets this one variable: no local broker is started, and every
# script, service and test uses it.
BOOTSTRAP="${SWITCHYARD_BOOTSTRAP_SERVERS:-$KAFKA_HOST:$KAFKA_PORT}"
export SWITCHYARD_TEST_BOOTSTRAP="${SWITCHYARD_TEST_BOOTSTRAP:-$BOOTSTRAP}"
KAFKA_DIR="$ROOT/deploy/kafka"
KAFKA_LIB="$STATE/kafka/lib"

# Every line says how long the outermost script has been running, so a slow phase shows.
export SWITCHYARD_T0="${SWITCHYARD_T0:-$(date +%s)}"
log() {
  local t=$(($(date +%s) - SWITCHYARD_T0))
  printf '\033[1m[switchyard +%d:%02d]\033[0m %s\n' $((t / 60)) $((t % 60)) "$*" >&2
}

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

# --- Apache Kafka from Maven Central -----------------------------------------------------------

# The Kafka version pinned in deploy/kafka/pom.xml.
kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_DIR/pom.xml"; }

# A JDK >= 17 and Maven, installed with apt when missing.
ensure_java() {
  local v=0
  if command -v java >/dev/null 2>&1; then
    v="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')"
  fi
  if [ "${v:-0}" -lt 17 ] || ! command -v mvn >/dev/null 2>&1; then
    log "installing a JDK (>= 17) and Maven with apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  fi
}

# Copies Kafka's jars (deploy/kafka/pom.xml) once into .local/kafka/lib; reused afterwards,
# fetched again only when the pom changes.
ensure_kafka_jars() {
  ensure_java
  local stamp="$KAFKA_LIB/.pom.sha256" want
  want="$(sha256sum "$KAFKA_DIR/pom.xml" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  # One fetch at a time (parallel tests may call ktool at once): wait for the other one.
  mkdir -p "$STATE/kafka"
  exec 9>"$STATE/kafka/.fetch.lock"
  flock 9
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then flock -u 9; return 0; fi
  log "fetching Apache Kafka $(kafka_version) jars from Maven Central into .local/kafka/lib"
  rm -rf "$KAFKA_LIB"
  mkdir -p "$KAFKA_LIB"
  mvn -B -q -f "$KAFKA_DIR/pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB" -Dstyle.color=never >&2
  echo "$want" >"$stamp"
  flock -u 9
}

# Runs one of Kafka's tools: ktool <main class> [args...]
ktool() {
  ensure_kafka_jars
  java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.yaml" \
    -cp "$KAFKA_LIB/*" "$@"
}

# Writes <dir>/server.properties for one combined broker+controller node.
#   kafka_node_properties DIR NODE_ID CLIENT_PORT CONTROLLER_PORT VOTERS REPLICATION
kafka_node_properties() {
  local dir=$1 id=$2 port=$3 cport=$4 voters=$5 rf=$6 min_isr
  min_isr=$(( rf >= 3 ? 2 : 1 ))
  mkdir -p "$dir/data" "$dir/logs"
  cat >"$dir/server.properties" <<PROPS
# Written by deploy/local/lib.sh (kafka_node_properties); edit the script, not this file.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$min_isr
unclean.leader.election.enable=false
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# small-machine trims, as Kafka's own test harness
num.network.threads=2
num.io.threads=4
background.threads=2
num.replica.fetchers=1
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=2097152
log.initial.task.delay.ms=100
# faster failure detection for kill tests (defaults 9000 / 2000 / 30000)
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
replica.lag.time.max.ms=10000
# classic groups (what librdkafka uses by default) and KIP-848 groups: short sessions, so a
# killed consumer's partitions move within seconds
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
PROPS
}

# Formats <dir>/data once (same cluster id on every node of a cluster).
kafka_format() {
  local dir=$1 cluster_id=$2
  if [ -f "$dir/data/meta.properties" ]; then return 0; fi
  ktool kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" \
    -c "$dir/server.properties" >"$dir/logs/format.log" 2>&1 \
    || { cat "$dir/logs/format.log" >&2; return 1; }
}

# Starts the node in <dir> in the background; its pid goes to <dir>/pid.
kafka_start() {
  local dir=$1 heap=${2:-512m}
  ensure_kafka_jars
  # A restart waits for this start's "Kafka Server started", not the last one's.
  [ -f "$dir/logs/server.log" ] && mv -f "$dir/logs/server.log" "$dir/logs/server.log.prev"
  nohup java -Xms"$heap" -Xmx"$heap" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$dir/logs" \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.yaml" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$dir/server.properties" >>"$dir/logs/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
}

# Waits until the node's client port answers and it logged "Kafka Server started".
kafka_wait() {
  local dir=$1 port=$2 secs=${3:-120}
  for _ in $(seq 1 "$((secs * 5))"); do
    if port_open 127.0.0.1 "$port" && grep -q "Kafka Server started" "$dir/logs/server.log" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$(cat "$dir/pid" 2>/dev/null)" 2>/dev/null; then
      log "Kafka node in $dir exited; last lines of its log:"
      tail -30 "$dir/logs/server.log" "$dir/logs/stdout.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
  log "Kafka node in $dir did not start within ${secs}s"
  tail -30 "$dir/logs/server.log" >&2 2>/dev/null || true
  return 1
}

# schemathesis (PyPI), for the API attack tests, in its own virtualenv under .local.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv="$STATE/schemathesis"
  if "$venv/bin/schemathesis" --version 2>/dev/null | grep -q " $SCHEMATHESIS_VERSION\$"; then
    return
  fi
  # CPython 3.11.7 crashed inside hypothesis once under the full suite ("AST constructor
  # recursion depth mismatch"): pyenv's 3.12, under which it ran clean, is taken when the machine has it.
  local py=python3 newer=""
  if command -v pyenv >/dev/null 2>&1; then
    newer="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -1)"
    [ -z "$newer" ] || py="$(pyenv root)/versions/$newer/bin/python3"
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into .local/schemathesis ($("$py" --version))"
  if ! "$py" -m venv --clear "$venv"; then
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    python3 -m venv --clear "$venv"
  fi
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
}
