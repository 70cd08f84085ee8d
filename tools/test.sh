#!/usr/bin/env bash
# The test command: sets up whatever is missing (tools/setup-host.sh), then runs
# lint, type checks, the host-side tests and, in one boot of the QEMU lab with
# two ports of each model (paired on hubs), every lab test, then the suite
# again on one pair given by address, as on a real machine (tools/lab-suite.sh).
#   tools/test.sh            everything
#   tools/test.sh --host     skip the lab (no QEMU boot)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { printf '\n== %s (at %ds)\n' "$*" $((SECONDS - start)); }
# pytest exits 5 when it collected no tests: that is not a failure here.
pytest_rc() { local rc=0; "$@" || rc=$?; [ "$rc" -eq 5 ] && rc=0; return "$rc"; }

step "setup"
tools/setup-host.sh
venv=.venv/bin

step "ruff"
"$venv/ruff" check hwnic tests tools
step "mypy"
"$venv/mypy"
step "host tests"
pytest_rc "$venv/python" -m pytest tests/host

# hwnic lab run exits 75 when the emulator failed, not the tests: QEMU crashed
# (e.g. a TCG assertion while booting) or the guest as a whole stopped (no
# heartbeat; where each vCPU was is printed). That boot is retried once.
GUEST_FROZE=75
lab() {
    "$venv/hwnic" lab run --timeout 1500 \
        --nic e1000 --nic e1000 --nic e1000e --nic e1000e --nic igb --nic igb \
        -- tools/lab-suite.sh
}
if [ "${1:-}" != "--host" ]; then
    step "lab tests (QEMU: 2x e1000, 2x e1000e, 2x igb; then real-port mode on the igb pair)"
    rc=0
    lab || rc=$?
    if [ "$rc" -eq "$GUEST_FROZE" ]; then
        step "the emulator failed (see above); booting the lab once more"
        lab
    elif [ "$rc" -ne 0 ]; then
        exit "$rc"
    fi
fi
step "all checks passed in $((SECONDS - start)) s"
