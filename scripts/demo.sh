#!/usr/bin/env bash
# Demo: a sample shop in a binlog-enabled MariaDB replicated into PostgreSQL.
# Starts the databases it needs, loads the shop, runs cartridge-warp (snapshot, then
# streaming), applies live changes (including a schema change), shows both sides and
# ends with `cartridge-warp status`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
scripts/peers.sh start postgres
scripts/peers.sh start mariadb
set -a
# shellcheck disable=SC1090
source <(scripts/peers.sh env)
set +a
my_port=${WARP_TEST_MARIADB_URL##*:}
mariadb_cli() { mariadb --protocol=tcp -h127.0.0.1 -P"$my_port" -uroot "$@"; }
psql_cli() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -q "$@"; }

echo "== building cartridge-warp"
cargo build -q -p warp-cli
bin=target/debug/cartridge-warp

echo "== loading the sample shop into MariaDB (port $my_port)"
mariadb_cli -e "DROP DATABASE IF EXISTS demo_shop; CREATE DATABASE demo_shop"
mariadb_cli demo_shop < examples/demo/shop.sql
psql_cli -c "DROP SCHEMA IF EXISTS demo_shop CASCADE; DROP SCHEMA IF EXISTS demo_shop_meta CASCADE"

export CARTRIDGE_WARP_SOURCE__CONNECTION_STRING="mysql://root@127.0.0.1:$my_port/demo_shop"
export CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING="postgresql://postgres@127.0.0.1:5432/postgres"
config=examples/demo/config.yaml
"$bin" validate --config "$config" --check-connections

log=$(mktemp -t cartridge-warp-demo.XXXXXX.log)
echo "== cartridge-warp run (log: $log)"
"$bin" run --config "$config" >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT

wait_for() { # wait_for "what" "psql query printing t when done"
  for _ in $(seq 300); do
    [ "$(psql_cli -Atc "$2" 2>/dev/null)" = "t" ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "cartridge-warp exited:"; cat "$log"; exit 1; }
    sleep 0.2
  done
  echo "timed out waiting for $1"; cat "$log"; exit 1
}
wait_for "the snapshot" "SELECT (SELECT count(*) FROM demo_shop.orders) = 5000 AND (SELECT count(*) FROM demo_shop.customers) = 200"
echo "snapshot copied: 5000 orders, 200 customers, 50 products"

echo "== applying live changes at the source"
cat examples/demo/live-changes.sql
mariadb_cli demo_shop < examples/demo/live-changes.sql
wait_for "the live changes" "SELECT EXISTS (SELECT 1 FROM demo_shop.products WHERE id = 3 AND discontinued = 1)
  AND (SELECT count(*) FROM demo_shop.orders WHERE is_deleted) = 10
  AND EXISTS (SELECT 1 FROM demo_shop.orders WHERE id = 5001)"

echo "== PostgreSQL now (bookkeeping columns included)"
psql_cli -c "SELECT id, status, total, placed_at, _cartridge_op AS op, _cartridge_version AS version, is_deleted
             FROM demo_shop.orders WHERE id IN (1, 4990, 5001) ORDER BY id"
psql_cli -c "SELECT id, sku, price, in_stock, discontinued, attributes FROM demo_shop.products WHERE id IN (2, 3) ORDER BY id"

sleep 2.5 # the status table is refreshed every 2 s
echo "== cartridge-warp status (while running)"
"$bin" status --config "$config"

kill -TERM "$pid"
wait "$pid"
trap - EXIT
echo "== stopped cleanly (SIGTERM drains the batch in hand); final status"
"$bin" status --config "$config"
