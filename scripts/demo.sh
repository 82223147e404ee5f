#!/usr/bin/env bash
# Demo: builds cartridge-warp, starts the local databases, validates the shipped
# configurations and runs the replication engine end to end (snapshot, then live
# changes, then status). Until the first database connector lands the pipeline runs over
# the engine's in-memory connectors; see README "Connectors".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
scripts/peers.sh start postgres
scripts/peers.sh start mariadb

echo "== building cartridge-warp"
cargo build -q -p warp-cli
bin=target/debug/cartridge-warp
"$bin" --version

echo "== validating the seed ConfigMap (credentials from the environment, masked in output)"
CARTRIDGE_WARP_SOURCE__CONNECTION_STRING="mongodb://admin:demo-password@127.0.0.1:27017/ecommerce_db" \
CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING="postgresql://postgres:demo-password@127.0.0.1:5432/postgres" \
  "$bin" validate --config examples/seed-ecommerce.yaml

echo "== running a pipeline: 10,000-row snapshot, then 101 live changes"
cargo run -q -p warp-core --features test-utils --example embedded
