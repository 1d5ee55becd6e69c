#!/usr/bin/env bash
# Validates the operator's output and its CRD without a cluster:
#  1. renders every example pipeline with `telemetry-operator render` and checks each object
#     against the Kubernetes 1.30 OpenAPI schemas with kubernetes-validate --strict (offline:
#     the schemas ship inside the package);
#  2. checks every example against the openAPIV3Schema of crds/telemetrypipelines.yaml
#     (unknown fields rejected, as `kubectl apply --validate=strict` does), and that every
#     example in operator/examples/invalid/ is rejected;
#  3. runs the Rust tests that evaluate the CRD's CEL rules, which no schema validator here
#     understands (they need an API server or kube's CEL evaluator).
# Exits non-zero on the first failure.
#
# OPERATOR_BIN: a telemetry-operator binary to use instead of building one.
# CRD_TESTS_DONE=1: skip step 3 because the caller already ran the workspace tests, which
# include it (scripts/test.sh sets both so that CI builds the workspace once).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
k8s_version="${K8S_VERSION:-1.30.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

operator="${OPERATOR_BIN:-}"
if [ -z "$operator" ]; then
    echo "== building telemetry-operator"
    cargo build --quiet -p telemetry-operator --bin telemetry-operator
    operator="$root/target/debug/telemetry-operator"
fi

echo "== rendering examples and validating against Kubernetes $k8s_version"
for example in operator/examples/*.yaml; do
    out="$work/$(basename "$example" .yaml).rendered.yaml"
    "$operator" render -f "$example" > "$out"
    kubernetes-validate --strict --quiet --kubernetes-version "$k8s_version" "$out"
    echo "ok   $example ($(grep -c '^kind:' "$out") objects)"
done

echo "== validating examples against crds/telemetrypipelines.yaml"
python3 - operator/examples crds/telemetrypipelines.yaml <<'PY'
import glob
import sys

import jsonschema
import yaml

examples_dir, crd_path = sys.argv[1], sys.argv[2]
with open(crd_path) as f:
    crd = yaml.safe_load(f)
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def strict(node):
    """Turns an OpenAPI v3 structural schema into JSON Schema that rejects unknown fields."""
    if isinstance(node, dict):
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        if node.get("x-kubernetes-int-or-string"):
            node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


# apiVersion, kind and metadata are checked by the API server itself, not by this schema.
strict(schema["properties"]["spec"])
validator = jsonschema.Draft7Validator(schema)
failures = 0
for path in sorted(glob.glob(f"{examples_dir}/*.yaml")):
    with open(path) as f:
        errors = list(validator.iter_errors(yaml.safe_load(f)))
    if errors:
        failures += 1
        for error in errors:
            print(f"FAIL {path}: {'.'.join(map(str, error.path))}: {error.message}")
    else:
        print(f"ok   {path}")

# min-replicas-above-max.yaml breaks a CEL rule only; the Rust test below rejects it.
cel_only = {"min-replicas-above-max.yaml"}
for path in sorted(glob.glob(f"{examples_dir}/invalid/*.yaml")):
    with open(path) as f:
        errors = list(validator.iter_errors(yaml.safe_load(f)))
    name = path.rsplit("/", 1)[-1]
    if name in cel_only:
        print(f"cel  {path}: schema accepts it; the CEL test must reject it")
    elif errors:
        print(f"ok   {path} rejected: {errors[0].message}")
    else:
        failures += 1
        print(f"FAIL {path}: accepted, but it is invalid")
sys.exit(1 if failures else 0)
PY

if [ "${CRD_TESTS_DONE:-0}" = 1 ]; then
    echo "== CEL rules and CRD freshness: checked by the workspace tests already run"
else
    echo "== evaluating CEL rules and checking the CRD is current"
    cargo test --quiet -p telemetry-operator --lib crd::tests
fi

echo "validate-k8s: all checks passed"
