#!/usr/bin/env bash
# The whole test suite: installs what it needs, starts the database peers, then
# formatting, lints, every test (nextest), doc tests, and the slim-build check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked

scripts/peers.sh start all
set -a
# shellcheck disable=SC1090
source <(scripts/peers.sh env)
set +a

echo "== fmt" && cargo fmt --all -- --check
echo "== clippy" && cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests" && cargo nextest run --workspace --all-targets --locked --no-fail-fast
echo "== doc tests" && cargo test --workspace --doc --locked
echo "== slim build (mongodb,postgres)" && \
  cargo check -p warp-cli --no-default-features --features mongodb,postgres --locked
