#!/usr/bin/env bash
# Benchmark harness: starts PostgreSQL if needed, builds in release mode, and prints
# rows/s and peak memory beside the raw limits measured in the same run.
# Usage: scripts/bench.sh sink  [--rows N] [--runs N]
#        scripts/bench.sh mysql [--rows N] [--runs N] [--changes N] [--load N] [--load-secs N] [--json heavy]
#        scripts/bench.sh mongo [--docs N] [--changes N] [--runs N]
#        scripts/bench.sh fanout [--changes N] [--runs N]   (one hot table beside 50 idle ones)
#        scripts/bench.sh page [--tables N] [--requests N]  (status page answer times)
#        scripts/bench.sh verify [--rows N] [--changes N] [--runs N]  (background verification's cost)
#        scripts/bench.sh scale [--rows N] [--load N] [--replicas N]  (one table copied by 1, 2, 3 replicas while written)
# WARP_BENCH_KEEP=1 keeps each run's directory (config, replicator log) and prints it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/peers.sh start postgres
case "${1:-sink}" in mysql | fanout | page | verify | scale) scripts/peers.sh start mariadb ;; mongo) scripts/peers.sh start mongo ;; esac
set -a
# shellcheck disable=SC1090
source <(scripts/peers.sh env)
set +a
cargo build --release -q -p warp-bench -p warp-cli
exec target/release/warp-bench "$@"
