#!/usr/bin/env python3
"""Offline validation of everything under deploy/ (no cluster, no container engine).

    python deploy/check.py sync    rewrite the PrometheusRule from deploy/prometheus/rules.yaml
    python deploy/check.py         render and validate every kustomization, then prove each
                                   validator rejects its known-bad fixture (deploy/tests/bad)

Run through scripts/deploy-check.sh, which provides the tools: kubectl (kustomize),
kubernetes-validate, the Prometheus-Operator models, jsonschema, yamllint, promtool.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
KUSTOMIZE = DEPLOY / "kustomize"
RULES = DEPLOY / "prometheus" / "rules.yaml"
RULE_MANIFEST = KUSTOMIZE / "monitoring" / "prometheusrule.yaml"
DASHBOARD = KUSTOMIZE / "monitoring" / "cartridge-warp.json"
BAD = DEPLOY / "tests" / "bad"
K8S_VERSION = "1.30.0"
# Every kustomization a user may apply; rendered and validated as a whole.
TARGETS = ["cluster", "overlays/ecommerce", "overlays/users", "overlays/analytics",
           "overlays/development", "overlays/ecommerce-cnpg", "monitoring", "pod-monitor",
           "ingress", "postgres"]
OVERLAY_CONFIGS = {"ecommerce": "seed-ecommerce.yaml", "users": "users-mysql.yaml",
                   "analytics": "analytics-bigquery.yaml", "development": "development-multi.yaml"}
# The issue's sizing: replicas, CPU limit, memory limit.
SIZING = {"ecommerce": (3, "2", "4Gi"), "users": (2, "1", "2Gi"),
          "analytics": (1, "1", "2Gi"), "development": (1, "4", "8Gi")}

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def run(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def rule_manifest():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    head = ("# Generated from deploy/prometheus/rules.yaml by `python deploy/check.py sync`;\n"
            "# edit that file (it is unit-tested with promtool), not this one.\n")
    body = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "cartridge-warp-alerts"}, "spec": {"groups": groups}}
    return head + yaml.safe_dump(body, sort_keys=False, width=200)


# --- Prometheus-Operator kinds: JSON schemas from the pydantic models, closed --------
def operator_schemas():
    from cloudcoil.models.prometheus_operator import v1

    def close(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for v in node.values():
                close(v)
        elif isinstance(node, list):
            for v in node:
                close(v)
        return node

    return {kind: close(getattr(v1, kind).model_json_schema(by_alias=True))
            for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")}


def validate_operator_docs(docs, schemas, where, report=True):
    import jsonschema
    ok = True
    for doc in docs:
        schema = schemas.get(doc.get("kind"))
        if schema is None:
            continue
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
        for e in errors[:5] if report else []:
            fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {'/'.join(map(str, e.path))}: {e.message}")
        ok &= not errors
    return ok


def kubernetes_validate(path):
    out = run("kubernetes-validate", "--strict", "--quiet", "-k", K8S_VERSION, str(path))
    return out.returncode == 0, out.stdout + out.stderr


def promtool_rules(groups):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": groups}, f)
    out = run("promtool", "check", "rules", f.name)
    return out.returncode == 0, out.stdout + out.stderr


def dashboard_groups(dashboard):
    """Each panel query as a recording rule, so promtool parses it."""
    rules = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = (target["expr"].replace("$__rate_interval", "5m")
                    .replace("$schema", ".+"))
            rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr})
    return [{"name": "dashboard", "rules": rules}]


def check_dashboard(dashboard, where):
    for key in ("uid", "title", "panels", "templating"):
        if key not in dashboard:
            fail(f"{where}: dashboard has no {key}")
            return False
    ids = [p["id"] for p in dashboard["panels"]]
    if len(ids) != len(set(ids)) or any(not p.get("targets") for p in dashboard["panels"]):
        fail(f"{where}: panel ids repeat or a panel has no query")
        return False
    ok, out = promtool_rules(dashboard_groups(dashboard))
    if not ok:
        fail(f"{where}: a panel query does not parse:\n{out}")
    return ok


# --- what the seed and the issue require of the rendered overlays --------------------
def find(docs, kind):
    return [d for d in docs if d and d.get("kind") == kind]


def check_overlay(name, docs):
    dep = find(docs, "Deployment")[0]
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    replicas, cpu, mem = SIZING[name]
    if dep["spec"]["replicas"] != replicas or c["resources"]["limits"] != {"cpu": cpu, "memory": mem}:
        fail(f"{name}: expected {replicas} replicas with {cpu} CPU / {mem}")
    want_args = (["run", "--mode=multi", "--config=/etc/cartridge-warp/config.yaml"] if name == "development"
                 else ["run", "--mode=single", "--schema=$(SCHEMA_NAME)", "--config=/etc/cartridge-warp/config.yaml"])
    if c["command"] != ["cartridge-warp"] or c["args"] != want_args:
        fail(f"{name}: command/args differ from the seed: {c['command']} {c['args']}")
    env = {e["name"] for e in c["env"]}
    for var in ("SCHEMA_NAME", "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING", "PROMETHEUS_METRICS_ENABLED",
                "PROMETHEUS_METRICS_PORT", "LOG_LEVEL", "POD_NAME", "POD_NAMESPACE"):
        if var not in env:
            fail(f"{name}: env {var} missing")
    if name != "analytics" and "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING" not in env:
        fail(f"{name}: source connection string not from the Secret")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    probes = {k: c[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    if ports != {"metrics": 8080, "health": 8081} or probes != {
            "livenessProbe": "/health", "readinessProbe": "/ready", "startupProbe": "/startup"}:
        fail(f"{name}: ports {ports} / probes {probes} differ from the seed")
    sc = spec["securityContext"]
    if not (sc.get("runAsNonRoot") and sc.get("runAsUser") == 1000 and spec.get("tolerations")
            and spec["affinity"]["podAntiAffinity"]):
        fail(f"{name}: non-root uid 1000, tolerations and anti-affinity required")
    labels = dep["spec"]["selector"]["matchLabels"]
    if labels != {"app": "cartridge-warp", "schema": name}:
        fail(f"{name}: selector {labels}")
    for monitor in find(docs, "ServiceMonitor"):
        if monitor["spec"]["selector"]["matchLabels"].get("schema") != name:
            fail(f"{name}: the ServiceMonitor would scrape other schemas")
    services = {s["metadata"]["name"]: s["spec"] for s in find(docs, "Service")}
    main = services.get(f"cartridge-warp-{name}")
    if main is None:
        fail(f"{name}: no Service cartridge-warp-{name} (the alert's job name)")
    elif name == "development" and not any(p.get("nodePort") == 30080 for p in main["ports"]):
        fail("development: NodePort 30080 missing")
    if not any(s.get("clusterIP") == "None" for s in services.values()):
        fail(f"{name}: no headless Service")
    config = KUSTOMIZE / "overlays" / name / "config.yaml"
    if config.read_text() != (ROOT / "examples" / OVERLAY_CONFIGS[name]).read_text():
        fail(f"{name}: config.yaml differs from examples/{OVERLAY_CONFIGS[name]} (copy it over)")


def render(target):
    out = run("kubectl", "kustomize", str(KUSTOMIZE / target))
    if out.returncode != 0:
        fail(f"{target}: kustomize: {out.stderr.strip()}")
        return None
    return out.stdout


def check():
    out = run("yamllint", "--strict", "-c", str(DEPLOY / ".yamllint"), str(DEPLOY))
    if out.returncode != 0:
        fail(f"yamllint:\n{out.stdout}{out.stderr}")
    if RULE_MANIFEST.read_text() != rule_manifest():
        fail(f"{RULE_MANIFEST.relative_to(ROOT)} is stale: run `python deploy/check.py sync`")
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES.with_name("rules.test.yaml"))]):
        out = run("promtool", *args)
        if out.returncode != 0:
            fail(f"promtool {' '.join(args[:2])}:\n{out.stdout}{out.stderr}")
    schemas = operator_schemas()
    rendered_dir = ROOT / "target" / "deploy-rendered"
    rendered_dir.mkdir(parents=True, exist_ok=True)
    for target in TARGETS:
        text = render(target)
        if text is None:
            continue
        path = rendered_dir / (target.replace("/", "-") + ".yaml")
        path.write_text(text)
        docs = [d for d in yaml.safe_load_all(text) if d]
        ok, out = kubernetes_validate(path)
        if not ok:
            fail(f"{target}: kubernetes-validate --strict:\n{out}")
        validate_operator_docs(docs, schemas, target)
        for rule in find(docs, "PrometheusRule"):
            ok, out = promtool_rules(rule["spec"]["groups"])
            if not ok:
                fail(f"{target}: PrometheusRule does not pass promtool:\n{out}")
        for cm in find(docs, "ConfigMap"):
            for key, value in cm.get("data", {}).items():
                if key.endswith(".json"):
                    check_dashboard(json.loads(value), f"{target}: {key}")
        name = target.removeprefix("overlays/")
        if name in SIZING:
            check_overlay(name, docs)
        if target == "overlays/ecommerce-cnpg":
            env = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
            dest = [e for e in env if e["name"] == "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING"]
            if dest[0]["valueFrom"]["secretKeyRef"] != {"name": "warehouse-app", "key": "uri"}:
                fail("ecommerce-cnpg: the destination does not come from the operator's Secret")
        print(f"ok   {target}: {len(docs)} objects")
    check_dockerfile()
    check_rejections(schemas)


def check_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    stages = [l for l in text.splitlines() if l.upper().startswith("FROM ")]
    user = [l for l in text.splitlines() if l.upper().startswith("USER ")]
    if len(stages) < 2 or not user or user[-1].split()[1] not in ("1000", "1000:1000"):
        fail("Dockerfile: needs a build stage, a runtime stage, and USER 1000 last")
    if "--features" not in text or "ARG FEATURES" not in text:
        fail("Dockerfile: the per-source build argument (FEATURES) is missing")
    print("ok   Dockerfile: multi-stage, uid 1000, FEATURES build argument")


# --- every validator must reject its known-bad fixture --------------------------------
def check_rejections(schemas):
    rejected = {
        # deploy/.yamllint ignores the fixtures; the same rules, inline, do not.
        "yamllint (duplicate key)": run("yamllint", "--strict", "-d",
                                        "{extends: default, rules: {document-start: disable}}",
                                        str(BAD / "duplicate-key.yaml")).returncode != 0,
        "kubernetes-validate (unknown field)": not kubernetes_validate(BAD / "deployment-unknown-field.yaml")[0],
        "kubernetes-validate (wrong type)": not kubernetes_validate(BAD / "service-wrong-type.yaml")[0],
        "operator schema (unknown ServiceMonitor field)": not validate_operator_docs(
            [yaml.safe_load((BAD / "servicemonitor-unknown-field.yaml").read_text())], schemas, "fixture",
            report=False),
        "promtool check rules (bad PromQL)": run("promtool", "check", "rules",
                                                 str(BAD / "rules-bad-expr.yaml")).returncode != 0,
        "promtool test rules (alert that never fires)": run("promtool", "test", "rules",
                                                            str(BAD / "rules-wrong.test.yaml")).returncode != 0,
        "dashboard query check (bad PromQL)": not promtool_rules(dashboard_groups(
            json.loads((BAD / "dashboard-bad-query.json").read_text())))[0],
    }
    for what, ok in rejected.items():
        print(f"{'ok  ' if ok else 'FAIL'} rejects known-bad input: {what}")
        if not ok:
            failures.append(f"validator accepted its known-bad fixture: {what}")


def main():
    if sys.argv[1:] == ["sync"]:
        RULE_MANIFEST.write_text(rule_manifest())
        print(f"wrote {RULE_MANIFEST.relative_to(ROOT)}")
        return 0
    check()
    if failures:
        print(f"\n{len(failures)} problem(s) in deploy/", file=sys.stderr)
        return 1
    print("\ndeploy/: every manifest renders and validates; every validator rejects its bad fixture")
    return 0


if __name__ == "__main__":
    sys.exit(main())
