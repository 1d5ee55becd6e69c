#!/usr/bin/env bash
# Runs every test of the project: installs what the tests need, builds once, runs the Rust
# tests (under coverage with COVERAGE=1, failing below the line-coverage gate), then checks
# the generated CRD, the rendered Kubernetes objects and the Helm chart.
#
#   scripts/test.sh                # what `make test` runs
#   COVERAGE=1 scripts/test.sh     # what CI runs
#
# DCGM_CSV names the DCGM export for the end-to-end tests. When it is unset and the full export
# (dcgm_metrics_20250718_134233.csv) sits in ../shared/data beside the repository, the script
# uses that file. Otherwise the tests use the sample under data/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash scripts/install-deps.sh
export PATH="$root/.run/tools/bin:$PATH"
export NODE_PATH="$root/.run/tools/node_modules"

# In CI nothing is rebuilt, so incremental artifacts and full debug info only cost disk and
# link time: one instrumented build with them takes about 15 GB.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
    export CARGO_PROFILE_DEV_DEBUG=line-tables-only
fi

real_csv="$root/../shared/data/dcgm_metrics_20250718_134233.csv"
if [ -z "${DCGM_CSV:-}" ] && [ -f "$real_csv" ]; then
    export DCGM_CSV="$real_csv"
fi
echo "==> DCGM export for the end-to-end tests: ${DCGM_CSV:-$root/data/dcgm_sample.csv}"

if [ "${COVERAGE:-0}" = 1 ]; then
    bash scripts/coverage.sh check
    bin_dir="$root/target/llvm-cov-target/debug"
else
    cargo build --workspace --bins --locked
    cargo nextest run --workspace --locked --no-fail-fast
    bin_dir="$root/target/debug"
fi

# The workspace tests above include the CRD and CEL checks; reuse their build.
LLVM_PROFILE_FILE="${TMPDIR:-/tmp}/telemetry-validate-%p.profraw" OPERATOR_BIN="$bin_dir/telemetry-operator" \
    CRD_TESTS_DONE=1 bash scripts/validate-k8s.sh
bash scripts/check-helm.sh
