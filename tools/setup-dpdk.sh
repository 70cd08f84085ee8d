#!/usr/bin/env bash
# Install DPDK's testpmd (22.11 on bookworm) for tools/compare_dpdk.py; only
# that comparison needs it, not tools/test.sh or tools/run.sh. In Debian,
# dpdk-testpmd is in `dpdk-dev`, not in `dpdk`, and the poll-mode driver for
# e1000, e1000e and igb ports is `librte-net-e1000-23`, only a Recommends of
# `dpdk`: all three are named. The QEMU lab guest shares the host's root file
# system, so installing on the host is what makes testpmd there in the lab.
# Idempotent: does nothing when testpmd and the e1000 driver are there.
set -euo pipefail
say() { printf '[setup-dpdk] %s\n' "$*" >&2; }

pmd_e1000=$(ls /usr/lib/*/dpdk/pmds-*/librte_net_e1000.so* 2>/dev/null | head -1 || true)
if command -v dpdk-testpmd >/dev/null && [ -n "$pmd_e1000" ]; then
    say "ready: $(command -v dpdk-testpmd)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "dpdk-testpmd is missing; run this script as root (it uses apt-get)"
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
packages=(dpdk dpdk-dev librte-net-e1000-23)
say "installing ${packages[*]} (apt-get)"
if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
    say "apt-get install failed: refreshing the package lists and trying again"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
command -v dpdk-testpmd >/dev/null || { say "dpdk is installed but dpdk-testpmd is not on PATH"; exit 1; }
say "ready: $(command -v dpdk-testpmd)"
