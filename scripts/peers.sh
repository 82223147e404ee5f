#!/usr/bin/env bash
# Starts and stops the database peers the tests run against, idempotently, on spare ports:
#   - PostgreSQL (the machine's own, started if down)
#   - MariaDB with the binlog on (a private instance; the machine's own has it off)
#   - MongoDB wire-protocol emulator (nx-27017, PyPI)
#   - BigQuery REST emulator (bqemulator, PyPI)
# Usage: scripts/peers.sh start|stop|status|env|clean [postgres|mariadb|mongo|bigquery|all]
# `env` prints the WARP_TEST_* variables the test suites read.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${WARP_PEERS_DIR:-$ROOT/.peers}
PORTS=$STATE/ports.env
VENV=$STATE/venv
PY_PACKAGES=(nx-27017==0.8.1 pymongo==4.20.1 bqemulator==1.4.0 numpy==2.4.6)

log() { echo "peers: $*" >&2; }
die() { log "$*"; exit 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p=$1
  while port_in_use "$p"; do p=$((p + 1)); done
  echo "$p"
}
get_port() { [ -f "$PORTS" ] && sed -n "s/^$1=//p" "$PORTS" || true; }
set_port() {
  touch "$PORTS"
  { grep -v "^$1=" "$PORTS" || true; echo "$1=$2"; } > "$PORTS.tmp"
  mv "$PORTS.tmp" "$PORTS"
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_until() {
  local what=$1 tries=$2
  shift 2
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  die "$what did not become ready (logs in $STATE)"
}
apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to install $*"
  log "installing $* (Debian packages)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

start_postgres() {
  command -v pg_isready >/dev/null || apt_install postgresql
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  fi
  wait_until postgres 120 pg_isready -h 127.0.0.1 -p 5432 -q
}

mariadb_ping() { mariadb-admin --protocol=tcp -h127.0.0.1 -P"$1" -uroot ping; }

start_mariadb() {
  command -v mariadbd >/dev/null || apt_install mariadb-server mariadb-client
  local dir=$STATE/mariadb port
  port=$(get_port MARIADB_PORT)
  if [ -n "$port" ] && alive "$dir.pid" && mariadb_ping "$port" >/dev/null 2>&1; then
    log "mariadb (binlog) already up on $port"
    return
  fi
  port=$(pick_port "${port:-3307}")
  if [ ! -d "$dir/mysql" ]; then
    mkdir -p "$dir"
    mariadb-install-db --no-defaults --datadir="$dir" --user="$(id -un)" \
      --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
      >"$STATE/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: see $STATE/mariadb-install.log"
  fi
  nohup mariadbd --no-defaults --datadir="$dir" --user="$(id -un)" --port="$port" \
    --bind-address=127.0.0.1 --socket="$dir.sock" --pid-file="$dir.pid" --log-error="$dir.err" \
    --skip-name-resolve --server-id=1 --log-bin=mysql-bin --binlog-format=ROW \
    --binlog-row-image=FULL --binlog-row-metadata=FULL \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci >/dev/null 2>&1 &
  wait_until "mariadb on $port" 240 mariadb_ping "$port"
  set_port MARIADB_PORT "$port"
  log "mariadb (binlog) up on $port"
}

ensure_venv() {
  local marker=$VENV/.installed-$(echo "${PY_PACKAGES[*]}" | md5sum | cut -c1-8)
  [ -f "$marker" ] && return
  log "installing Python emulators into $VENV (${PY_PACKAGES[*]})"
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}" >"$STATE/pip.log" 2>&1 \
    || die "pip install failed: see $STATE/pip.log"
  touch "$marker"
}

start_python_peer() {
  local name=$1 var=$2 default=$3
  shift 3
  ensure_venv
  local port pid=$STATE/$name.pid
  port=$(get_port "$var")
  if [ -n "$port" ] && alive "$pid" && "$VENV/bin/python" "$ROOT/scripts/peers/ready.py" "$name" "$port" 2>/dev/null; then
    log "$name already up on $port"
    return
  fi
  alive "$pid" && kill "$(cat "$pid")" 2>/dev/null || true
  port=$(pick_port "${port:-$default}")
  "$@" "$port" >"$STATE/$name.out" 2>&1 &
  echo $! >"$pid"
  wait_until "$name on $port" 240 "$VENV/bin/python" "$ROOT/scripts/peers/ready.py" "$name" "$port"
  set_port "$var" "$port"
  log "$name up on $port"
}

run_mongo() {
  exec_bg "$VENV/bin/python" "$ROOT/scripts/peers/mongo_launcher.py" --db memory -p "$1" \
    --log-file "$STATE/mongo.log" --pid-file "$STATE/mongo.daemon.pid"
}

run_bigquery() {
  local grpc
  grpc=$(pick_port $(($1 + 10)))
  exec_bg "$VENV/bin/python" "$ROOT/scripts/peers/bigquery_launcher.py" start --rest-host 127.0.0.1 \
    --rest-port "$1" --grpc-port "$grpc" --project test-project --ephemeral
}

exec_bg() { exec "$@"; }

stop_pidfile() {
  local name=$1 pid=$2
  if alive "$pid"; then
    kill "$(cat "$pid")" 2>/dev/null || true
    for _ in $(seq 80); do alive "$pid" || break; sleep 0.25; done
    alive "$pid" && kill -9 "$(cat "$pid")" 2>/dev/null || true
    log "$name stopped"
  fi
  rm -f "$pid"
}

print_env() {
  echo "WARP_TEST_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres"
  local p
  p=$(get_port MARIADB_PORT); [ -n "$p" ] && echo "WARP_TEST_MARIADB_URL=mysql://root@127.0.0.1:$p"
  p=$(get_port MONGO_PORT); [ -n "$p" ] && echo "WARP_TEST_MONGO_URL=mongodb://127.0.0.1:$p/?directConnection=true"
  p=$(get_port BIGQUERY_PORT); [ -n "$p" ] && echo "WARP_TEST_BIGQUERY_URL=http://127.0.0.1:$p/bigquery/v2"
  true
}

status() {
  pg_isready -h 127.0.0.1 -p 5432 -q && echo "postgres: up on 5432" || echo "postgres: down"
  local p
  p=$(get_port MARIADB_PORT)
  { [ -n "$p" ] && mariadb_ping "$p" >/dev/null 2>&1 && echo "mariadb: up on $p"; } || echo "mariadb: down"
  for name in mongo bigquery; do
    local var=${name^^}_PORT
    p=$(get_port "$var")
    { [ -n "$p" ] && [ -x "$VENV/bin/python" ] && "$VENV/bin/python" "$ROOT/scripts/peers/ready.py" "$name" "$p" 2>/dev/null \
      && echo "$name: up on $p"; } || echo "$name: down"
  done
}

cmd=${1:-start}
what=${2:-all}
mkdir -p "$STATE"
case "$cmd:$what" in
  start:postgres) start_postgres ;;
  start:mariadb) start_mariadb ;;
  start:mongo) start_python_peer mongo MONGO_PORT 27217 run_mongo ;;
  start:bigquery) start_python_peer bigquery BIGQUERY_PORT 9050 run_bigquery ;;
  start:all)
    start_postgres
    start_mariadb
    start_python_peer mongo MONGO_PORT 27217 run_mongo
    start_python_peer bigquery BIGQUERY_PORT 9050 run_bigquery
    ;;
  stop:mariadb) stop_pidfile mariadb "$STATE/mariadb.pid" ;;
  stop:mongo) stop_pidfile mongo "$STATE/mongo.pid" ;;
  stop:bigquery) stop_pidfile bigquery "$STATE/bigquery.pid" ;;
  stop:all)
    stop_pidfile mariadb "$STATE/mariadb.pid"
    stop_pidfile mongo "$STATE/mongo.pid"
    stop_pidfile bigquery "$STATE/bigquery.pid"
    ;;
  status:*) status ;;
  env:*) print_env ;;
  clean:*)
    "$0" stop all
    rm -rf "$STATE"
    log "removed $STATE"
    ;;
  *) die "usage: $0 start|stop|status|env|clean [postgres|mariadb|mongo|bigquery|all]" ;;
esac
