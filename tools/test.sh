#!/usr/bin/env bash
# The test command: sets up whatever is missing (tools/setup-host.sh), then runs
# lint, type checks, the host-side tests and, in one boot of the QEMU lab with
# two ports of each model (paired on hubs), every lab test.
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

if [ "${1:-}" != "--host" ]; then
    step "lab tests (QEMU: 2x e1000, 2x e1000e, 2x igb)"
    pytest_rc "$venv/hwnic" lab run --timeout 1500 \
        --nic e1000 --nic e1000 --nic e1000e --nic e1000e --nic igb --nic igb \
        -- python -m pytest -v -p no:cacheprovider tests/lab
fi
step "all checks passed in $((SECONDS - start)) s"
