#!/usr/bin/env bash
# Checks the Helm chart helm/telemetry-operator:
#   1. its crds/ copy of the TelemetryPipeline CRD equals crds/telemetrypipelines.yaml;
#   2. `helm lint --strict` passes with the default values and with ci/all-features-values.yaml;
#   3. both renderings, CRD included, pass `kubernetes-validate --strict` for Kubernetes
#      $KUBE_VERSION (default 1.30.0). Kinds served by CRDs are not in its bundled schemas, so they
#      are split off: TelemetryPipeline objects are validated against the CRD's openAPIV3Schema
#      (unknown fields rejected), and the ServiceMonitor is checked against the Service it selects;
#   4. the ServiceMonitor is rendered only when the cluster serves monitoring.coreos.com/v1;
#   5. every values file in ci/invalid/ is rejected by helm.
# Exits non-zero when any check fails, after running all of them.
#
#   scripts/check-helm.sh                   # helm from .run/tools/bin (scripts/install-deps.sh)
#   HELM=helm KUBE_VERSION=1.31.0 scripts/check-helm.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
chart="$root/helm/telemetry-operator"
kube_version=${KUBE_VERSION:-1.30.0}

helm=${HELM:-$root/.run/tools/bin/helm}
if [ ! -x "$helm" ]; then
    helm=$(command -v helm || true)
fi
if [ -z "$helm" ]; then
    echo "check-helm: helm not found; run scripts/install-deps.sh or set HELM=/path/to/helm" >&2
    exit 2
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "check-helm: kubernetes-validate not found; run scripts/install-deps.sh" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
step() { printf '==> %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    failed+=("$1")
}

# --- 1. CRD copy ---------------------------------------------------------------------------
step "CRD copy in the chart matches crds/telemetrypipelines.yaml"
if [ ! -f "$root/crds/telemetrypipelines.yaml" ]; then
    fail "crds/telemetrypipelines.yaml is missing; run \`make crds\`"
elif ! cmp -s "$root/crds/telemetrypipelines.yaml" "$chart/crds/telemetrypipelines.yaml"; then
    fail "helm/telemetry-operator/crds/telemetrypipelines.yaml differs from crds/telemetrypipelines.yaml; run \`make crds\`"
fi

# --- 2. lint -------------------------------------------------------------------------------
values_sets=(default all-features)
# Sets values_args to the helm arguments of one values set.
select_values() {
    values_args=()
    if [ "$1" = all-features ]; then
        values_args=(--values "$chart/ci/all-features-values.yaml")
    fi
}

for set in "${values_sets[@]}"; do
    step "helm lint --strict ($set values)"
    select_values "$set"
    if ! "$helm" lint --strict --kube-version "$kube_version" "${values_args[@]}" "$chart" >"$work/lint-$set.log" 2>&1; then
        cat "$work/lint-$set.log" >&2
        fail "helm lint --strict failed with the $set values"
    fi
done

# --- 3. render and validate ----------------------------------------------------------------
render() {
    local set=$1 out=$2
    shift 2
    select_values "$set"
    "$helm" template telemetry "$chart" --namespace telemetry --include-crds \
        --kube-version "$kube_version" "${values_args[@]}" "$@" >"$out"
}

# Splits a rendering into built-in kinds (written to $3) and CRD-served kinds, which it checks
# itself. Prints one line per problem and exits 1 when there is any.
split_and_check() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys

import jsonschema
import yaml

rendering, crd_path, builtin_path = sys.argv[1:4]
docs = [doc for doc in yaml.safe_load_all(open(rendering)) if doc]
problems = []


def closed(schema):
    """Copy of a structural schema that rejects unknown fields, as the API server's strict field
    validation does, except where the CRD preserves unknown fields. anyOf/oneOf/allOf branches
    stay open, because each branch lists only some of the properties."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: closed(sub) for name, sub in schema["properties"].items()}
    if "items" in schema:
        schema["items"] = closed(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = closed(schema["additionalProperties"])
    elif "properties" in schema and "additionalProperties" not in schema:
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    return schema


crd_schemas = {}
try:
    crd = yaml.safe_load(open(crd_path))
    for version in crd["spec"]["versions"]:
        api_version = f'{crd["spec"]["group"]}/{version["name"]}'
        crd_schemas[(api_version, crd["spec"]["names"]["kind"])] = closed(version["schema"]["openAPIV3Schema"])
except FileNotFoundError:
    problems.append(f"{crd_path} is missing; run `make crds`")

services = [doc for doc in docs if doc.get("kind") == "Service"]
builtin = []
for doc in docs:
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    name = f'{kind}/{doc.get("metadata", {}).get("name")}'
    if (api_version, kind) in crd_schemas:
        # The API server checks apiVersion, kind and metadata itself; the CRD schema covers the
        # rest.
        envelope = ("apiVersion", "kind", "metadata")
        body = {key: value for key, value in doc.items() if key not in envelope}
        schema = dict(crd_schemas[(api_version, kind)])
        schema["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k not in envelope}
        for error in jsonschema.Draft7Validator(schema).iter_errors(body):
            path = ".".join(str(part) for part in error.absolute_path) or "(root)"
            problems.append(f"{name}: {path}: {error.message}")
    elif kind == "TelemetryPipeline":
        problems.append(f"{name}: apiVersion {api_version} is not served by crds/telemetrypipelines.yaml")
    elif kind == "ServiceMonitor":
        if api_version != "monitoring.coreos.com/v1":
            problems.append(f"{name}: apiVersion is {api_version}, expected monitoring.coreos.com/v1")
        spec = doc.get("spec", {})
        selector = spec.get("selector", {}).get("matchLabels", {})
        selected = [
            svc for svc in services
            if selector and all(svc["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
        ]
        if len(selected) != 1:
            problems.append(f"{name}: selector {selector} matches {len(selected)} Services, expected 1")
        else:
            port_names = {port.get("name") for port in selected[0]["spec"]["ports"]}
            for endpoint in spec.get("endpoints", []):
                if endpoint.get("port") not in port_names:
                    problems.append(f'{name}: endpoint port {endpoint.get("port")!r} is not a port of the Service ({sorted(port_names)})')
    else:
        builtin.append(doc)

with open(builtin_path, "w") as out:
    yaml.safe_dump_all(builtin, out, sort_keys=False)
for problem in problems:
    print(problem)
sys.exit(1 if problems else 0)
PY
}

for set in "${values_sets[@]}"; do
    step "helm template ($set values) | kubernetes-validate --strict --kubernetes-version $kube_version"
    rendering="$work/render-$set.yaml"
    if ! render "$set" "$rendering" --api-versions monitoring.coreos.com/v1 2>"$work/render-$set.log"; then
        cat "$work/render-$set.log" >&2
        fail "helm template failed with the $set values"
        continue
    fi

    if ! split_and_check "$rendering" "$root/crds/telemetrypipelines.yaml" "$work/builtin-$set.yaml" >"$work/crd-kinds-$set.log" 2>&1; then
        sed 's/^/    /' "$work/crd-kinds-$set.log" >&2
        fail "objects of CRD-served kinds are invalid with the $set values"
    fi

    # kubernetes-validate only warns about a kind it has no schema for; here that means a wrong
    # apiVersion or kind, so it counts as a failure.
    if ! kubernetes-validate --strict --kubernetes-version "$kube_version" "$work/builtin-$set.yaml" >"$work/validate-$set.log" 2>&1 \
        || grep -q "Couldn't find schema" "$work/validate-$set.log"; then
        grep -v '^INFO' "$work/validate-$set.log" | sed 's/^/    /' >&2
        fail "kubernetes-validate --strict rejected the $set rendering"
    fi
done

# --- 4. ServiceMonitor only where its API exists --------------------------------------------
step "ServiceMonitor rendered only when monitoring.coreos.com/v1 is served"
count_service_monitors() { grep -c '^kind: ServiceMonitor$' "$1" || true; }
if render all-features "$work/without-monitoring.yaml" 2>/dev/null \
    && render all-features "$work/with-monitoring.yaml" --api-versions monitoring.coreos.com/v1 2>/dev/null; then
    without=$(count_service_monitors "$work/without-monitoring.yaml")
    with=$(count_service_monitors "$work/with-monitoring.yaml")
    [ "$without" = 0 ] || fail "ServiceMonitor rendered although the cluster lacks monitoring.coreos.com/v1 ($without found)"
    [ "$with" = 1 ] || fail "expected 1 ServiceMonitor with monitoring.coreos.com/v1 served, found $with"
else
    fail "helm template failed with the all-features values"
fi

# --- 5. invalid values are rejected -------------------------------------------------------
for values in "$chart"/ci/invalid/*.yaml; do
    name=${values#"$chart/"}
    step "helm rejects $name"
    if "$helm" template telemetry "$chart" --values "$values" >/dev/null 2>"$work/invalid.log"; then
        fail "helm accepted $name; values.schema.json or the templates must reject it"
    else
        grep -m 3 -E 'Error|^- ' "$work/invalid.log" | sed 's/^/    rejected as expected: /'
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    printf '\ncheck-helm: %d check(s) failed:\n' "${#failed[@]}" >&2
    printf '  - %s\n' "${failed[@]}" >&2
    exit 1
fi
printf '\ncheck-helm: all checks passed\n'
