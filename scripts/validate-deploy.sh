#!/usr/bin/env bash
# Validates deploy/kubernetes/ offline against the Kubernetes API schemas that the
# kubernetes-validate package ships (strict: unknown fields are errors), for the oldest
# and newest Kubernetes we document. The ServiceMonitor is a CRD (no schema in that
# package): it is checked against the fields the Prometheus Operator requires and
# against the Service it selects. The venv is kept in target/deploy-venv.
#   scripts/validate-deploy.sh        (make validate-deploy; part of make test)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/deploy-venv
version=1.37.0
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$version"; then
  rm -rf "$venv"
  # Debian's python3 (python3-venv from apt), not whatever python3 is first on PATH.
  py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==$version"
fi
manifests=(deploy/kubernetes/*.yaml)
for k in 1.29.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$k" "${manifests[@]}"
  echo "deploy/kubernetes: ${#manifests[@]} manifests valid for Kubernetes $k (strict)"
done
"$venv/bin/python" - <<'PY'
import sys, yaml
sm = yaml.safe_load(open("deploy/kubernetes/optional/servicemonitor.yaml"))
svc = yaml.safe_load(open("deploy/kubernetes/04-service.yaml"))
ds = yaml.safe_load(open("deploy/kubernetes/03-daemonset.yaml"))
errors = []
if sm.get("apiVersion") != "monitoring.coreos.com/v1" or sm.get("kind") != "ServiceMonitor":
    errors.append("not a monitoring.coreos.com/v1 ServiceMonitor")
spec = sm.get("spec", {})
allowed = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels",
           "podTargetLabels", "sampleLimit", "attachMetadata"}
errors += [f"unknown spec field {k}" for k in spec if k not in allowed]
sel = spec.get("selector", {}).get("matchLabels", {})
labels = svc["metadata"].get("labels", {})
if not sel or any(labels.get(k) != v for k, v in sel.items()):
    errors.append(f"selector {sel} does not match the Service's labels {labels}")
if svc["metadata"]["namespace"] not in spec.get("namespaceSelector", {}).get("matchNames", []):
    errors.append("namespaceSelector does not name the Service's namespace")
ports = {p["name"]: p for p in svc["spec"]["ports"]}
cports = {p["name"]: p["containerPort"]
          for c in ds["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
eps = spec.get("endpoints") or []
if not eps:
    errors.append("no endpoints")
for ep in eps:
    if ep.get("port") not in ports:
        errors.append(f"endpoint port {ep.get('port')} is not a Service port {list(ports)}")
    elif ports[ep["port"]]["targetPort"] not in cports:
        errors.append("Service targetPort is not a named container port")
ann = ds["spec"]["template"]["metadata"]["annotations"]
if int(ann["prometheus.io/port"]) not in cports.values():
    errors.append("prometheus.io/port is not the container's metrics port")
if errors:
    sys.exit("servicemonitor.yaml: " + "; ".join(errors))
print("deploy/kubernetes/optional/servicemonitor.yaml: fields, selector and port match the Service and DaemonSet")
PY
