#!/usr/bin/env bash
# Starts and stops the database peers the tests run against, idempotently, on spare ports:
#   - PostgreSQL (the machine's own, started if down)
#   - MariaDB with the binlog on (a private instance; the machine's own has it off)
#   - MongoDB wire-protocol emulator (nx-27017, PyPI)
#   - BigQuery REST emulator (bqemulator, PyPI)
#   - TLS peers (`tls`): a test CA, a private PostgreSQL that accepts only TLS
#     (hostssl), a MariaDB with require_secure_transport, and the MongoDB emulator
#     behind TLS with SCRAM users; their certificates name only `localhost`
# Usage: scripts/peers.sh start|stop|status|env|clean [postgres|mariadb|mongo|bigquery|tls|all]
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

# Binlog settings every MariaDB peer runs with (a CDC source's prerequisites).
MARIADB_BINLOG=(--server-id=1 --log-bin=mysql-bin --binlog-format=ROW --binlog-row-image=FULL
  --binlog-row-metadata=FULL --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci)

mariadb_init() {
  local dir=$1
  [ -d "$dir/mysql" ] && return
  mkdir -p "$dir"
  mariadb-install-db --no-defaults --datadir="$dir" --user="$(id -un)" \
    --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
    >"$STATE/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: see $STATE/mariadb-install.log"
}

start_mariadb() {
  command -v mariadbd >/dev/null || apt_install mariadb-server mariadb-client
  local dir=$STATE/mariadb port
  port=$(get_port MARIADB_PORT)
  if [ -n "$port" ] && alive "$dir.pid" && mariadb_ping "$port" >/dev/null 2>&1; then
    log "mariadb (binlog) already up on $port"
    return
  fi
  # A server of this data directory whose port was lost would hold its lock.
  alive "$dir.pid" && stop_pidfile mariadb "$dir.pid"
  port=$(pick_port "${port:-3307}")
  mariadb_init "$dir"
  nohup mariadbd --no-defaults --datadir="$dir" --user="$(id -un)" --port="$port" \
    --bind-address=127.0.0.1 --socket="$dir.sock" --pid-file="$dir.pid" --log-error="$dir.err" \
    --skip-name-resolve "${MARIADB_BINLOG[@]}" >/dev/null 2>&1 &
  wait_until "mariadb on $port" 240 mariadb_ping "$port"
  set_port MARIADB_PORT "$port"
  log "mariadb (binlog) up on $port"
}

# ---- TLS peers -------------------------------------------------------------------
TLS=$STATE/tls
# Local test credentials of the TLS peers (not secrets: they guard loopback test servers).
TLS_PASSWORD=warp-peer-password
# For scripts/peers/ready.py, which asks the TLS emulator over TLS with a SCRAM user.
export WARP_PEER_TLS_DIR=$TLS WARP_PEER_TLS_PASSWORD=$TLS_PASSWORD

tls_material() {
  [ -f "$TLS/server.crt" ] && return
  command -v openssl >/dev/null || apt_install openssl
  mkdir -p "$TLS"
  local subj=/O=cartridge-warp-tests
  for ca in ca other-ca; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "$subj/CN=$ca" \
      -keyout "$TLS/$ca.key" -out "$TLS/$ca.crt" 2>/dev/null
  done
  # The certificate names `localhost` only: 127.0.0.1 is a host name it does not hold.
  openssl req -newkey rsa:2048 -nodes -subj "$subj/CN=localhost" \
    -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$TLS/server.ext"
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
    -CAcreateserial -days 3650 -extfile "$TLS/server.ext" -out "$TLS/server.crt" 2>/dev/null
  cat "$TLS/server.crt" "$TLS/ca.crt" >"$TLS/server-chain.crt"
  chmod 644 "$TLS"/*.crt
  log "test CA and localhost certificate in $TLS"
}

pg_bin() { echo "/usr/lib/postgresql/$(ls /etc/postgresql | head -1)/bin/$1"; }
# The cluster runs as the `postgres` user, who may not enter this checkout (CI clones
# under /root): its data lives under /var/tmp, one directory per checkout.
PG_TLS_DIR=/var/tmp/cartridge-warp-peers-$(echo "$STATE" | md5sum | cut -c1-8)/pg-tls
as_postgres() { runuser -u postgres -- "$@"; }

start_pg_tls() {
  tls_material
  local dir=$PG_TLS_DIR port
  port=$(get_port PG_TLS_PORT)
  if [ -n "$port" ] && pg_isready -h localhost -p "$port" -q; then
    log "postgres (TLS only) already up on $port"
    return
  fi
  port=$(pick_port "${port:-5442}")
  if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir" && chmod 755 "$(dirname "$dir")" && chown postgres:postgres "$dir" && chmod 700 "$dir"
    as_postgres "$(pg_bin initdb)" -D "$dir" --auth-local=trust --auth-host=scram-sha-256 \
      >"$STATE/pg-tls-init.log" 2>&1 || die "initdb failed: see $STATE/pg-tls-init.log"
    cat >"$dir/pg_hba.conf" <<HBA
local     all all               trust
hostssl   all all 127.0.0.1/32  scram-sha-256
hostssl   all all ::1/128       scram-sha-256
hostnossl all all 0.0.0.0/0     reject
hostnossl all all ::/0          reject
HBA
  fi
  # On every start: the data directory outlives a checkout's .peers (it is keyed by the
  # checkout's path), and a new .peers has a new CA. A server left running on it by an
  # earlier run of this checkout is stopped first.
  if as_postgres "$(pg_bin pg_ctl)" -D "$dir" status >/dev/null 2>&1; then
    as_postgres "$(pg_bin pg_ctl)" -D "$dir" -m fast -w stop >/dev/null
  fi
  install -o postgres -g postgres -m 600 "$TLS/server.key" "$dir/server.key"
  install -o postgres -g postgres -m 644 "$TLS/server-chain.crt" "$dir/server.crt"
  as_postgres "$(pg_bin pg_ctl)" -D "$dir" -l "$dir/server.log" -w -t 120 \
    -o "-c port=$port -c listen_addresses=localhost -c unix_socket_directories=$dir -c ssl=on -c max_connections=200" \
    start >/dev/null || die "private PostgreSQL did not start: see $dir/server.log"
  as_postgres psql -h "$dir" -p "$port" -d postgres -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'warp_user') THEN
    CREATE ROLE warp_user LOGIN CREATEDB PASSWORD '$TLS_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE warehouse OWNER warp_user'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'warehouse') \\gexec
SQL
  set_port PG_TLS_PORT "$port"
  log "postgres (TLS only, hostssl) up on $port"
}

stop_pg_tls() {
  local dir=$PG_TLS_DIR
  [ -f "$dir/postmaster.pid" ] && as_postgres "$(pg_bin pg_ctl)" -D "$dir" -m fast -w stop >/dev/null 2>&1 \
    && log "postgres (TLS) stopped"
  true
}

start_mariadb_tls() {
  tls_material
  command -v mariadbd >/dev/null || apt_install mariadb-server mariadb-client
  local dir=$STATE/mariadb-tls port
  port=$(get_port MARIADB_TLS_PORT)
  if [ -n "$port" ] && alive "$dir.pid" && mariadb_ping "$port" >/dev/null 2>&1; then
    log "mariadb (TLS required) already up on $port"
    return
  fi
  alive "$dir.pid" && stop_pidfile mariadb-tls "$dir.pid"
  port=$(pick_port "${port:-3317}")
  mariadb_init "$dir"
  nohup mariadbd --no-defaults --datadir="$dir" --user="$(id -un)" --port="$port" \
    --bind-address=127.0.0.1 --socket="$dir.sock" --pid-file="$dir.pid" --log-error="$dir.err" \
    --skip-name-resolve "${MARIADB_BINLOG[@]}" --ssl-ca="$TLS/ca.crt" \
    --ssl-cert="$TLS/server.crt" --ssl-key="$TLS/server.key" --require-secure-transport=ON \
    >/dev/null 2>&1 &
  # Plain TCP is refused, so readiness is asked over the socket.
  wait_until "mariadb (TLS) on $port" 240 mariadb-admin --socket="$dir.sock" -uroot ping
  mariadb --socket="$dir.sock" -uroot -e \
    "CREATE USER IF NOT EXISTS 'warp'@'%' IDENTIFIED BY '$TLS_PASSWORD';
     GRANT ALL PRIVILEGES ON *.* TO 'warp'@'%';"
  set_port MARIADB_TLS_PORT "$port"
  log "mariadb (TLS required, binlog) up on $port"
}

run_mongo_tls() {
  WARP_MONGO_TLS_CERT=$TLS/server-chain.crt WARP_MONGO_TLS_KEY=$TLS/server.key \
    WARP_MONGO_USERS=admin:$TLS_PASSWORD WARP_MONGO_ADVERTISE_HOST=localhost \
    exec_bg "$VENV/bin/python" "$ROOT/scripts/peers/mongo_launcher.py" --db memory -p "$1" \
    --log-file "$STATE/mongo-tls.log" --pid-file "$STATE/mongo-tls.daemon.pid"
}

start_tls() {
  tls_material
  start_pg_tls
  start_mariadb_tls
  start_python_peer mongo-tls MONGO_TLS_PORT 27227 run_mongo_tls
}

stop_tls() {
  stop_pg_tls
  stop_pidfile mariadb-tls "$STATE/mariadb-tls.pid"
  stop_pidfile mongo-tls "$STATE/mongo-tls.pid"
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
  if [ -f "$TLS/ca.crt" ]; then
    echo "WARP_TEST_TLS_DIR=$TLS"
    echo "WARP_TEST_TLS_PASSWORD=$TLS_PASSWORD"
    p=$(get_port PG_TLS_PORT); [ -n "$p" ] && echo "WARP_TEST_PG_TLS_PORT=$p"
    p=$(get_port MARIADB_TLS_PORT); [ -n "$p" ] && echo "WARP_TEST_MARIADB_TLS_PORT=$p"
    p=$(get_port MONGO_TLS_PORT); [ -n "$p" ] && echo "WARP_TEST_MONGO_TLS_PORT=$p"
  fi
  true
}

status() {
  pg_isready -h 127.0.0.1 -p 5432 -q && echo "postgres: up on 5432" || echo "postgres: down"
  local p
  p=$(get_port MARIADB_PORT)
  { [ -n "$p" ] && mariadb_ping "$p" >/dev/null 2>&1 && echo "mariadb: up on $p"; } || echo "mariadb: down"
  for name in mongo bigquery mongo-tls; do
    local var=${name^^}_PORT
    var=${var//-/_}
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
  start:tls) start_postgres; ensure_venv; start_tls ;;
  start:all)
    start_postgres
    start_mariadb
    start_python_peer mongo MONGO_PORT 27217 run_mongo
    start_python_peer bigquery BIGQUERY_PORT 9050 run_bigquery
    start_tls
    ;;
  stop:mariadb) stop_pidfile mariadb "$STATE/mariadb.pid" ;;
  stop:mongo) stop_pidfile mongo "$STATE/mongo.pid" ;;
  stop:bigquery) stop_pidfile bigquery "$STATE/bigquery.pid" ;;
  stop:tls) stop_tls ;;
  stop:all)
    stop_pidfile mariadb "$STATE/mariadb.pid"
    stop_pidfile mongo "$STATE/mongo.pid"
    stop_pidfile bigquery "$STATE/bigquery.pid"
    stop_tls
    ;;
  status:*) status ;;
  env:*) print_env ;;
  clean:*)
    "$0" stop all
    rm -rf "$STATE" "$(dirname "$PG_TLS_DIR")"
    log "removed $STATE"
    ;;
  *) die "usage: $0 start|stop|status|env|clean [postgres|mariadb|mongo|bigquery|tls|all]" ;;
esac
