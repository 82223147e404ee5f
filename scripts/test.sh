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

scripts/peers.sh start all
set -a
# shellcheck disable=SC1090
source <(scripts/peers.sh env)
set +a

echo "== fmt" && cargo fmt --all -- --check
echo "== clippy" && cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== deploy manifests (offline validators)" && scripts/deploy-check.sh
echo "== tests" && cargo nextest run --workspace --all-targets --locked --no-fail-fast
echo "== doc tests" && cargo test --workspace --doc --locked

# Last, because it replaces target/debug/cartridge-warp with the slim binary.
echo "== slim build (mongodb,postgres) refuses a MySQL source"
cargo build -q -p warp-cli --no-default-features --features mongodb,postgres --locked
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
