#!/usr/bin/env bash
# Runs inside the lab guest (tools/test.sh boots it once): the hardware suite
# twice on the same NICs.
#   1. as the QEMU lab: every lab test, on every model, links flapped by QEMU;
#   2. as a real machine would: HWNIC_LAB unset, one cabled pair given by PCI
#      address (--hwnic-ports), links flapped through the port's own PHY;
#      tests that need the emulator skip with their reason.
# Exit status: the first failure's, else 0 (pytest's "no tests" counts as 0).
set -uo pipefail
cd "$(dirname "$0")/.."
PORTS_MODEL=${PORTS_MODEL:-igb}
# Files that make sense on real ports (the rest are covered in pass 1).
PORTS_TESTS=(
    tests/lab/test_vfio_lab.py tests/lab/test_ndis_lab.py tests/lab/test_nic_lab.py
    tests/lab/test_bench_lab.py tests/lab/test_reliability_lab.py
)
rc() { local r=$1; [ "$r" -eq 5 ] && r=0; echo "$r"; }

echo "== pass 1: the QEMU lab (HWNIC_LAB=1, every model)"
python -m pytest -v -p no:cacheprovider tests/lab
first=$(rc $?)

ports=$(python -c "from hwnic.lab.guest import lab_pairs; a, b = lab_pairs()['$PORTS_MODEL']; print(a.address + ',' + b.address)")
echo "== pass 2: real-port mode (HWNIC_LAB unset, --hwnic-ports $ports)"
env -u HWNIC_LAB -u HWNIC_LAB_NICS python -m pytest -v -p no:cacheprovider \
    --hwnic-ports "$ports" -k "not quiet_on_every_exit" "${PORTS_TESTS[@]}"
second=$(rc $?)

[ "$first" -ne 0 ] && exit "$first"
exit "$second"
