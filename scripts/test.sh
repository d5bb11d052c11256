#!/usr/bin/env bash
# The test command: makes sure the Tansu test broker is installed, then runs
# every test (unit, integration against Tansu, doc, benches compile).
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_INSTALL=1 source scripts/tansu-env.sh
echo "using Tansu at $TANSU_BIN" >&2

# tests/dashboards.rs runs a real Prometheus (and promtool, amtool) from the
# Debian packages and parses docker-compose.yml with PyYAML.
missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
if ((${#missing[@]})); then
    echo "installing ${missing[*]} (once)..." >&2
    sudo=""
    [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# scripts/check-deploy.py needs PyYAML for whichever python3 is first on PATH.
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
    python3 -m pip install --quiet pyyaml >&2 || { command -v apt-get >/dev/null && apt-get install -y -qq python3-yaml >&2; }
fi

# tests/kafka_service.rs parses alerts with the official CloudEvents Python
# SDK, from a venv of its own (pinned version).
CE_SDK_VERSION=2.2.0
if ! target/cevenv/bin/python -c "import cloudevents, sys; from importlib.metadata import version; sys.exit(version('cloudevents') != '$CE_SDK_VERSION')" >/dev/null 2>&1; then
    echo "installing the CloudEvents Python SDK $CE_SDK_VERSION (once)..." >&2
    mkdir -p target
    python3 -m venv target/cevenv >&2 || {
        command -v apt-get >/dev/null && apt-get install -y -qq python3-venv >&2 && python3 -m venv target/cevenv >&2
    }
    target/cevenv/bin/python -m pip install --quiet "cloudevents==$CE_SDK_VERSION" >&2
fi

if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first: nextest's summary line must close the output.
    cargo test --doc --quiet
    cargo nextest run --all-targets "$@"
else
    cargo test --all-targets "$@"
fi
