#!/usr/bin/env bash
# Pipeline benchmark: end-to-end events/s of the service through a real
# broker (Tansu, in memory) as a ratio to a bare rdkafka consume + decode of
# the same topics, measured in the same run, plus memory per customer at 1M
# customers. Release build. Arguments go to the bench:
#   --events N (default 1000000)  --memory-customers N (default 1000000)
#   --skip-memory  --skip-pipeline
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${TANSU_BIN:-}" ]]; then
    if command -v tansu >/dev/null 2>&1; then
        TANSU_BIN="$(command -v tansu)"
    elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]]; then
        TANSU_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    else
        echo "tansu not found: run scripts/test.sh once (it installs it) or set TANSU_BIN" >&2
        exit 2
    fi
fi
export TANSU_BIN
echo "nproc: $(nproc); tansu: $TANSU_BIN" >&2
cargo bench --bench pipeline -- "$@"
