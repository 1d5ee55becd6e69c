#!/usr/bin/env bash
# Runs cargo-fuzz targets for a bounded time each, starting from the seeds in fuzz/seeds/ and
# growing the corpus in fuzz/corpus/ (git-ignored). A crash stops the run, exits non-zero and
# leaves the input under fuzz/artifacts/<target>/; replay it with
#   cargo fuzz run <target> fuzz/artifacts/<target>/<file>
#
#   fuzz/run.sh SECONDS TARGET...        # `make fuzz` runs: fuzz/run.sh 60 labels dcgm_csv
#
# cargo-fuzz needs the nightly-only -Z flags of rustc. The nightly toolchain is used when rustup
# has it; otherwise the stable compiler runs with RUSTC_BOOTSTRAP=1, which unlocks those flags.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 SECONDS TARGET..." >&2
    exit 2
fi
seconds=$1
shift
case "$seconds" in
    '' | *[!0-9]*)
        echo "fuzz: SECONDS must be a whole number of seconds, got '$seconds'" >&2
        exit 2
        ;;
esac

cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> cargo install cargo-fuzz --locked" >&2
    cargo install cargo-fuzz --locked
fi

if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "==> no nightly toolchain; using the stable compiler with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

for target in "$@"; do
    if [ ! -d "seeds/$target" ]; then
        echo "fuzz: unknown target '$target'; targets: $(ls seeds | tr '\n' ' ')" >&2
        exit 2
    fi
    mkdir -p "corpus/$target"
    echo "==> fuzzing $target for ${seconds}s"
    "${fuzz[@]}" run --release "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
