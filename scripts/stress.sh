#!/usr/bin/env bash
# The invariant stress suite in its long form: 60 random SIGKILLs per source over
# 50,000 rows under a random workload (CI runs the bounded form: 10 kills, 5,000 rows).
#   scripts/stress.sh                 # long form, a fresh seed
#   WARP_STRESS_SEED=123 scripts/stress.sh   # replay a seed from target/stress-report.txt
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/peers.sh start postgres mariadb mongo
set -a
# shellcheck disable=SC1090
source <(scripts/peers.sh env)
set +a
WARP_STRESS=long cargo nextest run -p warp-cli --test stress_e2e --no-capture --locked
echo "== report (target/stress-report.txt)"
tail -n 2 target/stress-report.txt
