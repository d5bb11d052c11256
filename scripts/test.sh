#!/usr/bin/env bash
# The test command: makes sure the Tansu test broker is installed, then runs
# every test (unit, integration against Tansu, doc, benches compile).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${TANSU_BIN:-}" ]]; then
    if command -v tansu >/dev/null 2>&1; then
        TANSU_BIN="$(command -v tansu)"
    elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]]; then
        TANSU_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    else
        echo "installing the Tansu test broker (once; takes a few minutes)..." >&2
        cargo install tansu --locked --features dynostore,libsql
        TANSU_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    fi
fi
export TANSU_BIN
echo "using Tansu at $TANSU_BIN" >&2

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --all-targets "$@"
    cargo test --doc
else
    cargo test --all-targets "$@"
fi
