#!/usr/bin/env bash
# Install what hwnic's lab and tests need on a Debian 12 (bookworm) host:
# QEMU 10 from bookworm-backports (the first QEMU with the igb model), a
# Debian guest kernel for virtme-ng, and the project's Python environment.
# Idempotent: every step checks first and does nothing when already done.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${HWNIC_VENV:-$here/.venv}
say() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null &&
        qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'
}
qemu_ok || need_apt+=(qemu)
ls /boot/vmlinuz-*-amd64 2>/dev/null | grep -vq cloud || need_apt+=(kernel)
command -v busybox >/dev/null || need_apt+=(busybox)
command -v tshark >/dev/null || need_apt+=(tshark)
command -v lspci >/dev/null || need_apt+=(pciutils)

if ((${#need_apt[@]})); then
    if [ "$(id -u)" != 0 ]; then
        say "missing: ${need_apt[*]}; run this script as root (it uses apt-get)"
        exit 1
    fi
    src=/etc/apt/sources.list.d/debian.sources
    bp=/etc/apt/sources.list.d/hwnic-backports.sources
    if [ ! -f "$bp" ]; then
        # Reuse the mirror this machine already uses for bookworm.
        uri=$(awk '/^URIs:/ {print $2; exit}' "$src" 2>/dev/null || true)
        if [ -z "$uri" ]; then
            uri=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
        fi
        [ -n "$uri" ] || { say "cannot find the Debian mirror in $src or /etc/apt/sources.list"; exit 1; }
        say "adding bookworm-backports from $uri"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" >"$bp"
    fi
    say "apt-get update"
    apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    say "installing QEMU 10 (backports), guest kernel, busybox, tshark"
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
    apt-get install -y -qq --no-install-recommends linux-image-amd64 busybox-static tshark pciutils \
        kmod iproute2 udev >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    python3 -m venv "$venv"
fi
stamp="$venv/.hwnic-installed"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ] || \
   [ -n "$(find "$here/native" -newer "$stamp" -type f 2>/dev/null | head -1)" ]; then
    say "installing hwnic and its dependencies into $venv"
    log="$venv/pip.log"
    if ! { "$venv/bin/pip" install -q --upgrade pip && "$venv/bin/pip" install -q -e "$here[dev]"; } >"$log" 2>&1; then
        cat "$log" >&2
        say "pip install failed (log above, also in $log)"
        exit 1
    fi
    touch "$stamp"
fi
say "ready: $venv"
