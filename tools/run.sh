#!/usr/bin/env bash
# The main job: set up whatever is missing, boot the QEMU lab with two ports on
# one hub (igb by default), and benchmark them with hwnic: loopback, 64-byte
# frames for 20 s, live table, then a summary. Leaves results/bench.json and
# results/bench.png.
#
#   tools/run.sh                          two igb, the defaults above
#   tools/run.sh --nic e1000e             two e1000e instead
#   tools/run.sh --size imix --budget 16  any other option goes to 'hwnic bench loopback'
#   tools/run.sh --sweep budget=16,64,256 a sweep (then bench.png plots rate vs budget)
#   RESULTS=/some/dir tools/run.sh        another results directory
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
results=${RESULTS:-$root/results}
model=igb
bench_args=()
bounded=no
while [ $# -gt 0 ]; do
    case "$1" in
        --nic) model=${2:?--nic needs a model: e1000, e1000e or igb}; shift 2 ;;
        --nic=*) model=${1#--nic=}; shift ;;
        --count|--count=*|--duration|--duration=*) bounded=yes; bench_args+=("$1"); shift ;;
        *) bench_args+=("$1"); shift ;;
    esac
done
[ "$bounded" = yes ] || bench_args=(--duration 20 "${bench_args[@]}")

tools/setup-host.sh
mkdir -p "$results"
rm -f "$results/bench.json" "$results/bench.png"
status=0
.venv/bin/hwnic lab run --nic "$model" --nic "$model" --rwdir "$results" -- \
    hwnic bench loopback --size 64 "${bench_args[@]}" \
    --json "$results/bench.json" --plot "$results/bench.png" || status=$?
echo
if [ -f "$results/bench.json" ]; then
    echo "results: $results/bench.json (every figure and the settings)"
    echo "         $results/bench.png (rate over time, frames per DPC, ISR-to-DPC latency)"
else
    echo "no results were written (exit status $status); see the messages above" >&2
fi
exit "$status"
