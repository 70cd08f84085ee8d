#!/usr/bin/env bash
# hwnic against DPDK's testpmd in the QEMU lab, with one command: sets up what
# is missing (tools/setup-host.sh, then DPDK with tools/setup-dpdk.sh; both
# need root the first time), boots one lab with two ports of each model on
# hubs and runs tools/compare_dpdk.py in it. Leaves results/compare_dpdk.json
# (every run, the medians, the ratios hwnic / DPDK) and prints the tables.
#
#   tools/compare_dpdk.sh                        e1000, e1000e and igb; 3 runs of 5 s per cell
#   tools/compare_dpdk.sh --nic igb              only igb (repeat --nic for more models)
#   tools/compare_dpdk.sh --runs 5 --duration 3  any other option goes to tools/compare_dpdk.py
#   RESULTS=/some/dir tools/compare_dpdk.sh      another results directory
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
results=${RESULTS:-$root/results}
# testpmd needs 1 GiB of hugepages beside hwnic's memory and the guest's own.
memory=3G
# Under TCG one model takes 5 to 10 minutes with the defaults; more on a busy host.
lab_timeout=5400
models=()
tool_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --nic) models+=("${2:?--nic needs a model: e1000, e1000e or igb}"); shift 2 ;;
        --nic=*) models+=("${1#--nic=}"); shift ;;
        *) tool_args+=("$1"); shift ;;
    esac
done
[ ${#models[@]} -gt 0 ] || models=(e1000 e1000e igb)
nics=()
for m in "${models[@]}"; do nics+=(--nic "$m" --nic "$m"); done

tools/setup-host.sh
tools/setup-dpdk.sh
mkdir -p "$results"
out=$results/compare_dpdk.json
rm -f "$out"
# The guest cannot see the host's load; record it with the figures.
load=$(uptime)
echo "host load before: $load"
status=0
.venv/bin/hwnic lab run --memory "$memory" --timeout "$lab_timeout" --rwdir "$results" "${nics[@]}" -- \
    python tools/compare_dpdk.py --host-load "$load" --json "$out" "${tool_args[@]}" || status=$?
echo "host load after: $(uptime)"
if [ -f "$out" ]; then
    echo "results: $out"
else
    echo "no results were written (exit status $status); see the messages above" >&2
fi
exit "$status"
