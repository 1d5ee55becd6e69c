#!/usr/bin/env bash
# Builds the workspace once with source-based coverage instrumentation (cargo-llvm-cov), runs
# every test once with cargo-nextest, and reports line coverage.
#
#   scripts/coverage.sh           # `make coverage`: writes the reports, prints the summary
#   scripts/coverage.sh check     # `make coverage-check`, and scripts/test.sh with COVERAGE=1:
#                                 # the same, then fails below COVERAGE_MIN_LINES % (default 70)
#   scripts/coverage.sh report -p telemetry-core   # only the named packages, not --workspace
#
# Reports: target/coverage/lcov.info (for CI upload) and target/coverage/html/index.html.
#
# The integration tests start the workspace's binaries (the broker, the consumer, ...), not only
# their own test executables. Plain `cargo llvm-cov nextest` would build only the test targets,
# so this script takes cargo-llvm-cov's environment (`show-env`) and runs `cargo build --bins`
# and `cargo nextest run` in it: one instrumented build, one test run, and every process the
# tests start writes its own profile. A binary stopped with SIGKILL writes no profile, so only
# code run by processes that exit normally (SIGTERM, end of input) is counted.
#
# The instrumented build lives in target/llvm-cov-target, apart from the normal build.
# Servers the tests need (MongoDB-wire server, RabbitMQ, ...) come from scripts/install-deps.sh.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

mode=${1:-report}
case "$mode" in
    report | check) ;;
    *)
        echo "usage: $0 [report|check] [cargo package selection, default --workspace]" >&2
        exit 2
        ;;
esac
shift $(($# > 0 ? 1 : 0))
packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
    packages=(--workspace)
fi
min_lines=${COVERAGE_MIN_LINES:-70}
out="$root/target/coverage"
# The benchmark harness is exercised by scripts/bench.sh, not by the tests, so it is left out
# of the percentage.
ignore=${COVERAGE_IGNORE_REGEX:-'(^|/)bench/'}

log() { printf '==> %s\n' "$*" >&2; }

if ! cargo llvm-cov --version >/dev/null 2>&1; then
    log "cargo install cargo-llvm-cov --locked"
    cargo install cargo-llvm-cov --locked
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
    log "rustup component add llvm-tools-preview"
    rustup component add llvm-tools-preview
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo install cargo-nextest --locked"
    cargo install cargo-nextest --locked
fi

# Tools installed by scripts/install-deps.sh.
export PATH="$root/.run/tools/bin:$PATH"
export NODE_PATH="$root/.run/tools/node_modules"

export CARGO_TARGET_DIR="$root/target/llvm-cov-target"
# `--sh` is the name since cargo-llvm-cov 0.9; older versions call it `--export-prefix`.
coverage_env=$(cargo llvm-cov show-env --sh 2>/dev/null || cargo llvm-cov show-env --export-prefix)
eval "$coverage_env"

log "removing old profiles and workspace artifacts from $CARGO_TARGET_DIR"
cargo llvm-cov clean --workspace

log "cargo build ${packages[*]} --bins (instrumented)"
cargo build "${packages[@]}" --bins --locked

log "cargo nextest run ${packages[*]} (instrumented)"
tests_status=0
cargo nextest run "${packages[@]}" --locked --no-fail-fast || tests_status=$?

if [ -z "$(find "$CARGO_TARGET_DIR" -maxdepth 1 -name '*.profraw' -print -quit)" ]; then
    echo "coverage: no test wrote a profile, so the tests did not build or run (see the errors above)" >&2
    exit $((tests_status == 0 ? 1 : tests_status))
fi

# Report even after failed tests, so that the coverage of what passed is visible.
mkdir -p "$out"
log "writing $out/lcov.info and $out/html/"
cargo llvm-cov report --ignore-filename-regex "$ignore" --lcov --output-path "$out/lcov.info"
cargo llvm-cov report --ignore-filename-regex "$ignore" --html --output-dir "$out"

gate=()
if [ "$mode" = check ]; then
    gate=(--fail-under-lines "$min_lines")
fi
summary_status=0
cargo llvm-cov report --ignore-filename-regex "$ignore" --summary-only "${gate[@]}" || summary_status=$?

if [ "$tests_status" -ne 0 ]; then
    echo "coverage: tests failed (cargo nextest exit status $tests_status)" >&2
    exit "$tests_status"
fi
if [ "$summary_status" -ne 0 ]; then
    echo "coverage: line coverage is below ${min_lines}% (see the TOTAL row above); add tests for the uncovered code" >&2
    exit "$summary_status"
fi
