#!/usr/bin/env bash
# The whole test suite: installs what it needs, starts the database peers, then
# formatting, lints, every test (nextest), doc tests, and the slim-build check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
if ! command -v promtool >/dev/null; then
  echo "installing promtool (Debian package prometheus)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# A CI run builds once: incremental compilation's cache would only take disk.
[ "${CI:-}" = true ] && export CARGO_INCREMENTAL=0

scripts/browser.sh
scripts/peers.sh start all
set -a
# shellcheck disable=SC1090
source <(scripts/peers.sh env)
set +a

echo "== fmt" && cargo fmt --all -- --check
echo "== clippy" && cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== warp-core layers" && scripts/layers.sh
echo "== deploy manifests (offline validators)" && scripts/deploy-check.sh
echo "== tests" && cargo nextest run --workspace --all-targets --locked --no-fail-fast
echo "== doc tests" && cargo test --workspace --doc --locked

# The engine suites again against a destination whose checkpoints live apart from its
# data (committed after it, as a warehouse destination's control store does).
echo "== engine suites, checkpoints apart from the data"
WARP_TEST_CHECKPOINTS=apart cargo nextest run -p warp-core --all-features --locked \
  --test engine --test feed --test ownership

# MySQL pins snapshot chunk positions with a brief table lock (MariaDB reports its own):
# force that path on MariaDB through the SIGKILL, crash-point and 51-table suites, and
# check it ran.
echo "== MySQL's table-lock snapshot path on MariaDB (stress, failpoints)"
mariadb_port=${WARP_TEST_MARIADB_URL##*:}
lock_count() {
  mariadb --protocol=tcp -h127.0.0.1 -P"$mariadb_port" -uroot -N \
    -e "SHOW GLOBAL STATUS LIKE 'Com_lock_tables'" | awk '{print $2}'
}
locks_before=$(lock_count)
WARP_MYSQL_SNAPSHOT_LOCK=table cargo nextest run -p warp-cli --locked \
  --test stress_e2e --test failpoints_e2e --test feed_e2e \
  -E 'test(mysql) | test(every_durable_step) | test(fifty_one_tables)'
[ "$(lock_count)" -gt "$locks_before" ] \
  || { echo "FAILED: the table-lock snapshot path was not taken" >&2; exit 1; }

# Last, because they replace target/debug/cartridge-warp with the slim binaries.
# Each slim build must still speak TLS to its databases (rustls is in every driver).
tls_check() {
  local out
  out=$(target/debug/cartridge-warp validate --check-connections --config "$1" 2>&1) \
    || { echo "$out" >&2; echo "FAILED: slim build ($2) cannot connect over TLS" >&2; exit 1; }
  echo "$out" | grep -E '^(source|destination)'
  [ "$(grep -c ', encrypted (' <<<"$out")" = 2 ] \
    || { echo "FAILED: slim build ($2) did not encrypt both connections" >&2; exit 1; }
}
echo "== slim build (mysql,postgres) over TLS: MariaDB verify_identity, PostgreSQL verify-full"
cargo build -q -p warp-cli --no-default-features --features mysql,postgres --locked
slim_config=$(mktemp --suffix=.yaml)
trap 'rm -f "$slim_config"' EXIT
cat >"$slim_config" <<YAML
source: { type: mysql, database: mysql, ssl_enabled: true, ssl_ca: "$WARP_TEST_TLS_DIR/ca.crt" }
destination: { type: postgresql }
schemas: [ { name: slim } ]
YAML
CARTRIDGE_WARP_SOURCE__CONNECTION_STRING="mysql://warp:$WARP_TEST_TLS_PASSWORD@localhost:$WARP_TEST_MARIADB_TLS_PORT/mysql" \
  CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING="postgresql://warp_user:$WARP_TEST_TLS_PASSWORD@localhost:$WARP_TEST_PG_TLS_PORT/warehouse?sslmode=verify-full&sslrootcert=$WARP_TEST_TLS_DIR/ca.crt" \
  tls_check "$slim_config" mysql,postgres

echo "== slim build (mongodb,postgres) over TLS: the seed's connection strings"
cargo build -q -p warp-cli --no-default-features --features mongodb,postgres --locked
CARTRIDGE_WARP_SOURCE__CONNECTION_STRING="mongodb://admin:$WARP_TEST_TLS_PASSWORD@localhost:$WARP_TEST_MONGO_TLS_PORT/ecommerce_db?ssl=true&authSource=admin&replicaSet=rs0" \
  CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING="postgresql://warp_user:$WARP_TEST_TLS_PASSWORD@localhost:$WARP_TEST_PG_TLS_PORT/warehouse?sslmode=require&connect_timeout=30" \
  SSL_CERT_FILE="$WARP_TEST_TLS_DIR/ca.crt" tls_check examples/seed-ecommerce.yaml mongodb,postgres

echo "== slim build (mongodb,postgres) refuses a MySQL source"
if out=$(CARTRIDGE_WARP_SOURCE__CONNECTION_STRING=mysql://u@127.0.0.1/x \
  CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING=postgresql://postgres@127.0.0.1/postgres \
  target/debug/cartridge-warp run --config examples/users-mysql.yaml 2>&1); then
  echo "FAILED: the slim build accepted a MySQL source" >&2
  exit 1
fi
echo "$out"
if ! grep -q 'built without the `mysql` feature' <<<"$out"; then
  echo "FAILED: the slim build's refusal does not name the missing feature" >&2
  exit 1
fi
echo "slim build check: ok"
