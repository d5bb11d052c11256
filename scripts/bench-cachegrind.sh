#!/usr/bin/env bash
# Deterministic per-event cost: instructions and simulated last-level-cache
# data misses per event of the backtest (decode included) and of a
# decode-only pass over the same file, counted by valgrind's cachegrind in
# the same run, with their ratios. Wall-clock ratios (`cargo bench --bench
# ratio`) vary by 10-20% between runs on a shared 2-core machine; these
# counts do not, so a change to the engine can be judged by them.
#
#   scripts/bench-cachegrind.sh [--ll BYTES] [--light N] [--standard N]
#
# Workloads, made by the project's generator (seed 42): the standard profile
# with 500 customers over 120 days (~310k events) and the light profile with
# 50,000 customers over 28 days (~440k events). `--ll` sets the simulated
# last-level cache (default 4 MiB: past it, a random read here costs
# 150-250 ns, measured with a pointer chase on this machine).
# Needs valgrind (Debian package `valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."

LL=4194304
LIGHT=50000
STANDARD=500
while [[ $# -gt 0 ]]; do
    case "$1" in
        --ll) LL="$2"; shift 2 ;;
        --light) LIGHT="$2"; shift 2 ;;
        --standard) STANDARD="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }

cargo build --release --quiet
bench=$(cargo bench --bench ratio --no-run --message-format=json 2>/dev/null \
    | grep '"kind":\["bench"\]' | grep '"name":"ratio"' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[[ -x "$bench" ]] || { echo "could not build the ratio bench" >&2; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
target/release/churnwatch generate --seed 42 --customers "$STANDARD" >"$dir/standard.jsonl" 2>/dev/null
target/release/churnwatch generate --seed 42 --customers "$LIGHT" --profile light >"$dir/light.jsonl" 2>/dev/null

# Prints "instructions ll_data_misses events" of one pass.
count() {
    local pass=$1 file=$2 out="$dir/cg.out"
    local events
    events=$(valgrind --tool=cachegrind --cache-sim=yes --LL="$LL,16,64" \
        --cachegrind-out-file="$out" "$bench" --bench --pass "$pass" "$file" 2>/dev/null \
        | awk '{print $2}')
    # The summary line holds Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw.
    awk -v e="$events" '/^summary:/ {print $2, $7 + $10, e}' "$out"
}

printf '%-44s %14s %14s\n' "" "instructions" "LL data misses"
# Per event, beyond reading the input (a pass that only splits the file's
# lines is subtracted from both: its misses are the input streaming through).
for w in standard light; do
    f="$dir/$w.jsonl"
    read -r ir0 ll0 _ < <(count read "$f")
    read -r ir1 ll1 n < <(count decode "$f")
    read -r ir2 ll2 _ < <(count full "$f")
    awk -v w="$w" -v n="$n" -v ir0="$ir0" -v ll0="$ll0" -v ir1="$ir1" -v ll1="$ll1" \
        -v ir2="$ir2" -v ll2="$ll2" 'BEGIN {
        d_ir = (ir1 - ir0) / n; d_ll = (ll1 - ll0) / n
        f_ir = (ir2 - ir0) / n; f_ll = (ll2 - ll0) / n
        printf "%s (%d events)\n", w, n
        printf "  %-42s %14.0f %14.2f\n", "decode only, per event", d_ir, d_ll
        printf "  %-42s %14.0f %14.2f\n", "backtest (decode included), per event", f_ir, f_ll
        printf "  %-42s %14.3f\n", "ratio decode / backtest (instructions)", d_ir / f_ir
    }'
done
