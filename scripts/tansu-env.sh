# Sourced by scripts/test.sh and scripts/bench-pipeline.sh: finds the Tansu
# test broker (TANSU_BIN, PATH, then ~/.cargo/bin), installing it when
# TANSU_INSTALL=1, and exports TANSU_BIN.
if [[ -z "${TANSU_BIN:-}" ]]; then
    if command -v tansu >/dev/null 2>&1; then
        TANSU_BIN="$(command -v tansu)"
    elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]]; then
        TANSU_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    elif [[ "${TANSU_INSTALL:-0}" == 1 ]]; then
        echo "installing the Tansu test broker (once; takes a few minutes)..." >&2
        cargo install tansu --locked --features dynostore,libsql
        TANSU_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    else
        echo "tansu not found: run scripts/test.sh once (it installs it) or set TANSU_BIN" >&2
        exit 2
    fi
fi
export TANSU_BIN
