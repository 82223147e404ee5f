#!/usr/bin/env bash
# warp-core's modules in layers, bottom first: a module may import (`crate::x`) only
# from modules listed before it. Test modules (from `#[cfg(test)]` to the end of a
# file) may import anything. docs/architecture.md explains the layers.
set -euo pipefail
cd "$(dirname "$0")/../warp-core/src"

layers=(
  value mask metrics tls failpoint # leaves: import nothing of the crate
  schema config error position event watermark read_settings # the model and its settings
  lease source sink # the connector traits
  control # the control plane: status, reports, control-store traits
  engine # the pipeline
  testing # in-memory doubles for tests
)

rank() {
  local i
  for i in "${!layers[@]}"; do
    [ "${layers[$i]}" = "$1" ] && { echo "$i"; return; }
  done
  echo "module $1 has no layer in scripts/layers.sh" >&2
  exit 1
}

failed=0
for entry in *.rs */; do
  module=${entry%.rs}
  module=${module%/}
  [ "$module" = lib ] && continue
  mine=$(rank "$module")
  files=$([ -d "$module" ] && find "$module" -name '*.rs' || echo "$entry")
  # shellcheck disable=SC2086
  used=$(for f in $files; do sed '/#\[cfg(test)\]/,$d' "$f"; done |
    { grep -oE 'crate::[a-z_]+' || true; } | sed 's/crate:://' | sort -u)
  for other in $used; do
    [ "$other" = "$module" ] && continue
    if [ "$(rank "$other")" -gt "$mine" ]; then
      echo "warp-core: $module imports $other, a higher layer" >&2
      failed=1
    fi
  done
done
[ "$failed" = 0 ] && echo "warp-core layers: every import runs downward"
exit "$failed"
