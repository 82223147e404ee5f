#!/usr/bin/env bash
# The soak of issue 21 (not in CI): mixed load on three tables for WARP_SOAK_SECS (1800 by
# default) with a SIGKILL of the replicator every 20-60 s and one restart of a private
# PostgreSQL cluster (needs root), ending in row-for-row equality. Prints its report line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/peers.sh start postgres
scripts/peers.sh start mariadb
set -a
# shellcheck disable=SC1090
source <(scripts/peers.sh env)
set +a
export WARP_SOAK_SECS=${WARP_SOAK_SECS:-1800}
cargo nextest run -p warp-cli --test soak --run-ignored only --no-capture --locked
