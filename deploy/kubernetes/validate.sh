#!/usr/bin/env bash
# Check the manifests without a cluster: every resource against the Kubernetes
# OpenAPI schema (kubernetes-validate --strict: unknown fields are errors), and
# that kustomization.yaml lists files that exist. What this does NOT check:
# admission (quotas, policies), that the images exist, kustomize's rendering
# (no kubectl/kustomize here), or that the pods start: no cluster was run.
#
#   deploy/kubernetes/validate.sh [KUBERNETES_VERSION ...]   (default 1.27.0 and the newest)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "validate.sh: kubernetes-validate is missing; run: pip install kubernetes-validate" >&2
    exit 1
fi

python3 - <<'PY'
import pathlib, sys, yaml
k = yaml.safe_load(pathlib.Path("kustomization.yaml").read_text())
missing = [r for r in k["resources"] if not pathlib.Path(r).is_file()]
if missing:
    sys.exit(f"validate.sh: kustomization.yaml lists missing files: {missing}")
PY

manifests=(configmap.yaml secret.example.yaml redis.yaml web.yaml ws.yaml nginx.yaml)
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(1.27.0 "")
for version in "${versions[@]}"; do
    args=(--strict --quiet)
    [ -z "$version" ] || args+=(-k "$version")
    kubernetes-validate "${args[@]}" "${manifests[@]}" ||
        { echo "validate.sh: schema check failed (Kubernetes ${version:-newest})" >&2; exit 1; }
    echo "validate.sh: ${#manifests[@]} files valid against Kubernetes ${version:-newest}"
done
