#!/usr/bin/env bash
# The main job: set up whatever is missing, boot the QEMU lab with two igb
# ports on one hub, and show them through hwnic (list + info per port).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-host.sh
exec .venv/bin/hwnic lab run --nic igb --nic igb -- sh -c \
    'hwnic list && for p in $(hwnic list --json | python -c "import json,sys; print(*[n[\"bdf\"] for n in json.load(sys.stdin)])"); do hwnic info "$p"; done'
