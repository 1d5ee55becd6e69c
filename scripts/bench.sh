#!/usr/bin/env bash
# Builds the workspace in release mode and runs the benchmark harness, which starts the
# built-in broker, a private RabbitMQ node, a MongoDB-wire server and the pipeline services on
# loopback, prints Markdown tables and stops everything it started.
#
#   scripts/bench.sh                  # full run (what `make bench` runs), about 15-20 minutes
#   scripts/bench.sh --quick          # smoke run with small counts, under a minute once built
#   scripts/bench.sh --sections broker,api
#
# Extra arguments go to telemetry-bench; `telemetry-bench --help` lists them. The report is
# also written to .run/bench/report.md (BENCH_OUTPUT overrides). DCGM_CSV names the real DCGM
# export; it defaults to ../shared/data/dcgm_metrics_20250718_134233.csv beside the
# repository when that file exists, else the sample under data/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

real_csv="$root/../shared/data/dcgm_metrics_20250718_134233.csv"
if [ -z "${DCGM_CSV:-}" ] && [ -f "$real_csv" ]; then
    export DCGM_CSV="$real_csv"
fi
if [ -n "${DCGM_CSV:-}" ] && [ -z "${CSV_PATH:-}" ]; then
    export CSV_PATH="$DCGM_CSV"
fi

for tool in wrk /usr/lib/rabbitmq/bin/rabbitmq-server; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is not installed; run scripts/install-deps.sh (wrk: apt-get install wrk)" >&2
        exit 1
    fi
done

echo "==> building release binaries"
cargo build --release --locked --workspace --bins

mkdir -p .run/bench
export BENCH_OUTPUT="${BENCH_OUTPUT:-$root/.run/bench/report.md}"
export RUST_LOG="${RUST_LOG:-warn,telemetry_bench=info}"

echo "==> running target/release/telemetry-bench $*"
target/release/telemetry-bench "$@"
echo "==> report written to $BENCH_OUTPUT"
