#!/usr/bin/env bash
# Pipeline benchmark: end-to-end events/s of the service through a real
# broker (Tansu, in memory) as a ratio to a bare rdkafka consume + decode of
# the same topics, measured in the same run, plus memory per customer at 1M
# customers. Release build. Arguments go to the bench:
#   --events N (default 3000000)  --rounds N (default 5; the median ratio is
#   the figure)  --memory-customers N (default 1000000)
#   --skip-memory  --skip-pipeline
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ " $* " == *" --skip-pipeline "* ]]; then
    # Memory only: no broker needed.
    echo "nproc: $(nproc)" >&2
else
    TANSU_INSTALL=0 source scripts/tansu-env.sh
    echo "nproc: $(nproc); tansu: $TANSU_BIN" >&2
fi
cargo bench --bench pipeline -- "$@"
