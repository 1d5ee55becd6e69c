#!/usr/bin/env bash
# Runs the whole pipeline on one machine: DCGM CSV -> producer -> broker -> two consumers ->
# MongoDB -> REST API. Prints how many records were stored and a working curl command, then
# stops everything it started.
#
#   scripts/demo.sh [CSV]      # default CSV: data/dcgm_sample.csv
#
# MONGODB_URI: use that MongoDB instead of starting a MongoDB-wire server (secantusd-py).
# KEEP_RUNNING=1: leave the services up until Ctrl-C so the API can be explored.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
csv=${1:-${CSV:-data/dcgm_sample.csv}}
if [ ! -r "$csv" ]; then
    echo "error: cannot read CSV file '$csv'; pass an existing DCGM export, e.g. make demo CSV=path/to/export.csv" >&2
    exit 2
fi

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/telemetry-demo.XXXXXX")
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$run_dir"
    exit "$status"
}
trap cleanup EXIT INT TERM

log() { printf '==> %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    local url=$1 name=$2
    for _ in $(seq 1 300); do
        curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: $name did not become ready at $url within 30 s; its log: $run_dir/$name.log" >&2
    tail -n 20 "$run_dir/$name.log" >&2 || true
    exit 1
}
start() {
    local name=$1
    shift
    "$@" >"$run_dir/$name.log" 2>&1 &
    pids+=($!)
}

if [ -z "${MONGODB_URI:-}" ]; then
    bash scripts/install-deps.sh --demo
fi
python3 -c 'import pymongo' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check pymongo

log "building the workspace binaries"
cargo build --quiet --bins --locked
bin="$root/target/debug"

if [ -z "${MONGODB_URI:-}" ]; then
    mongo_port=$(free_port)
    start mongodb secantusd-py --host 127.0.0.1 --port "$mongo_port" --storage-path "$run_dir/mongodb"
    export MONGODB_URI="mongodb://127.0.0.1:$mongo_port"
    for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$mongo_port") 2>/dev/null && break; sleep 0.1; done
fi
export MONGODB_DATABASE=${MONGODB_DATABASE:-telemetry-demo-$$}
export RUST_LOG=${RUST_LOG:-warn}

amqp_port=$(free_port)
broker_admin=$(free_port)
BROKER_PORT=$amqp_port ADMIN_PORT=$broker_admin start broker "$bin/telemetry-broker"
wait_http "http://127.0.0.1:$broker_admin/readyz" broker
export AMQP_URL="amqp://guest:guest@127.0.0.1:$amqp_port/%2f"

consumer_admin=()
for i in 1 2; do
    port=$(free_port)
    consumer_admin+=("$port")
    CONSUMER_MODE=shared ADMIN_PORT=$port start "consumer-$i" "$bin/telemetry-consumer"
    wait_http "http://127.0.0.1:$port/readyz" "consumer-$i"
done

token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
printf 'demo:%s\n' "$token" >"$run_dir/tokens"
api_port=$(free_port)
API_PORT=$api_port ADMIN_PORT=$(free_port) API_TOKENS_FILE="$run_dir/tokens" start metrics "$bin/telemetry-metrics"
wait_http "http://127.0.0.1:$api_port/healthz" metrics

rows=$(python3 -c 'import csv,sys; print(sum(1 for _ in csv.reader(open(sys.argv[1], newline=""))) - 1)' "$csv")
log "publishing $rows rows from $csv"
if ! "$bin/telemetry-producer" --csv-path "$csv"; then
    echo "error: the producer failed; see the messages above" >&2
    exit 1
fi

count_stored() {
    python3 - "$MONGODB_URI" "$MONGODB_DATABASE" <<'PY'
import sys, pymongo
client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000)
print(client[sys.argv[2]]["metrics"].count_documents({}))
PY
}
log "waiting for the consumers to store $rows records"
stored=0
for _ in $(seq 1 600); do
    stored=$(count_stored)
    [ "$stored" -ge "$rows" ] && break
    sleep 0.2
done

gpus=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$api_port/api/v1/gpus?limit=1000" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
first_gpu=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$api_port/api/v1/gpus?limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["uuid"])')

cat <<REPORT

Stored $stored of $rows records in $MONGODB_DATABASE.metrics; the API lists $gpus GPUs.

Try the API (token for this run only):
  curl -H "Authorization: Bearer $token" "http://127.0.0.1:$api_port/api/v1/gpus?limit=5"
  curl -H "Authorization: Bearer $token" "http://127.0.0.1:$api_port/api/v1/gpus/$first_gpu/telemetry?sort=desc&limit=5"
REPORT

if [ "${KEEP_RUNNING:-0}" = 1 ]; then
    log "services are running; press Ctrl-C to stop them"
    wait
fi
if [ "$stored" -ne "$rows" ]; then
    echo "error: stored $stored records but the CSV has $rows rows" >&2
    exit 1
fi
