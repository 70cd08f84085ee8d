"""Inside the lab: DPDK's testpmd on a port, driven through its command line.

For comparisons in the same guest, on the same emulated NICs as hwnic (like
:mod:`hwnic.lab.kernel` does with the kernel driver and pktgen):
:class:`Hugepages` reserves 2 MiB pages and mounts a hugetlbfs for DPDK, and
gives both back afterwards; :class:`TestPmd` runs one ``dpdk-testpmd`` on one
vfio-pci port in interactive mode (``-i``) with commands written to its stdin
(a pipe) and its answers read up to the next prompt; :func:`parse_port_stats`
reads ``show port stats all``.

Each testpmd gets its own ``--file-prefix`` (two can run side by side) and
two lcores: the main one runs the command line, the other one busy-polls
the port, so a sender and a receiver can poll on different vCPUs.
DPDK is not a dependency of hwnic: ``tools/setup-dpdk.sh`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hwnic.errors import LabError

TESTPMD = "dpdk-testpmd"
SETUP_HINT = "install DPDK on the host first: tools/setup-dpdk.sh (as root)"
PROMPT = "testpmd> "
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
PROC_MOUNTS = Path("/proc/mounts")
HUGEPAGE_KIB = 2048  # the 2 MiB x86-64 hugepage testpmd gets by default
DEFAULT_HUGEPAGES = 512  # 1 GiB: two testpmd and hwnic's DMA memory, in a 3 GiB guest
BURST = 32  # frames per rte_eth_rx_burst / tx_burst
# testpmd's default pool is sized for every lcore DPDK could have (~155k mbufs,
# 340 MB); a few rings' worth is plenty for one queue and saves hugepages.
MBUFS = 8192
START_TIMEOUT = 180.0  # s to the first prompt: EAL init loads ~380 PMD plugins under TCG
COMMAND_TIMEOUT = 60.0  # s for one command's answer (``start`` waits for the link)
QUIT_TIMEOUT = 30.0  # s for ``quit`` to close the port and exit
KILL_TIMEOUT = 5.0  # s after SIGTERM before SIGKILL
READ_CHUNK = 4096
TAIL_CHARS = 2000  # of testpmd's output, quoted in errors
# "RX-packets: 12   RX-missed: 0   RX-bytes: 768": one name: number pair each.
STAT_FIELD = re.compile(r"([A-Za-z][A-Za-z-]*):\s+(\d+)")
_KIB = {"K": 1, "M": 1024, "G": 1024 * 1024}  # hugetlbfs pagesize= suffixes
PORT_HEADER = re.compile(r"NIC statistics for port (\d+)")


@dataclass(frozen=True)
class PortStats:
    """One port's counters from ``show port stats all`` (totals since start)."""

    rx_packets: int = 0
    rx_missed: int = 0  # dropped by the NIC for want of RX descriptors
    rx_errors: int = 0
    rx_nombuf: int = 0  # dropped for want of mbufs
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_bytes: int = 0

    def __sub__(self, other: PortStats) -> PortStats:
        return PortStats(**{k: getattr(self, k) - getattr(other, k) for k in _FIELDS})


_FIELDS = tuple(PortStats.__dataclass_fields__)
_NAMES = {
    "RX-packets": "rx_packets",
    "RX-missed": "rx_missed",
    "RX-errors": "rx_errors",
    "RX-nombuf": "rx_nombuf",
    "RX-bytes": "rx_bytes",
    "TX-packets": "tx_packets",
    "TX-errors": "tx_errors",
    "TX-bytes": "tx_bytes",
}


def parse_port_stats(text: str) -> dict[int, PortStats]:
    """The per-port counters in the output of ``show port stats all``.

    Only the totals are taken; the "Throughput (since last show)" rates
    (Rx-pps, ...) depend on when the previous ``show`` ran, so they are left
    out and rates are computed from totals and the caller's own clock.
    """
    ports: dict[int, PortStats] = {}
    port: int | None = None
    values: dict[str, int] = {}
    for line in text.splitlines():
        header = PORT_HEADER.search(line)
        if header:
            if port is not None:
                ports[port] = PortStats(**values)
            port, values = int(header.group(1)), {}
            continue
        if port is None:
            continue
        for name, number in STAT_FIELD.findall(line):
            if name in _NAMES:
                values[_NAMES[name]] = int(number)
    if port is not None:
        ports[port] = PortStats(**values)
    return ports


# -- hugepages ----------------------------------------------------------------------


def hugetlbfs_mount(mounts: str, page_kib: int = HUGEPAGE_KIB) -> str | None:
    """A hugetlbfs mount point for pages of ``page_kib`` in /proc/mounts text, if any."""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "hugetlbfs":
            continue
        size = re.search(r"pagesize=(\d+)([KMG])", fields[3])
        if size is None:  # no pagesize option: the default size, 2 MiB on x86-64
            return fields[1]
        if int(size.group(1)) * _KIB[size.group(2)] == page_kib:
            return fields[1]
    return None


class Hugepages:
    """Reserve ``count`` 2 MiB hugepages and find or mount a hugetlbfs; undo both on exit.

    virtme-ng's guest mounts no hugetlbfs, and DPDK needs one. The previous
    ``nr_hugepages`` is put back at the end (the pages go back to the guest),
    and a hugetlbfs mounted here is unmounted.
    """

    def __init__(self, count: int = DEFAULT_HUGEPAGES) -> None:
        self.count = count
        self.previous: int | None = None
        self.mounted: Path | None = None
        self.path = ""

    def __enter__(self) -> Hugepages:
        try:
            self.previous = int(NR_HUGEPAGES.read_text())
            if self.previous < self.count:
                NR_HUGEPAGES.write_text(f"{self.count}\n")
            got = int(NR_HUGEPAGES.read_text())
            if got < self.count:
                raise LabError(
                    f"only {got} of {self.count} 2 MiB hugepages could be reserved",
                    "give the lab more memory: hwnic lab run --memory 3G",
                )
            found = hugetlbfs_mount(PROC_MOUNTS.read_text())
            if found is None:
                self.mounted = Path(tempfile.mkdtemp(prefix="hwnic-hugetlbfs-"))
                _run("mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", str(self.mounted))
                found = str(self.mounted)
            self.path = found
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.mounted is not None:
            with contextlib.suppress(LabError):
                _run("umount", str(self.mounted))
            with contextlib.suppress(OSError):
                self.mounted.rmdir()
            self.mounted = None
        if self.previous is not None:
            with contextlib.suppress(OSError):
                NR_HUGEPAGES.write_text(f"{self.previous}\n")
            self.previous = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise LabError(f"{' '.join(cmd)}: {proc.stderr.strip()}", "run this as root in the lab")


# -- testpmd ------------------------------------------------------------------------


def testpmd_argv(
    bdf: str,
    *,
    prefix: str,
    main_lcore: int,
    forward_mode: str,
    huge_dir: str | None = None,
    lcores: str = "0,1",
    iova_mode: str | None = None,
    txpkts: int | None = None,
    eth_peer: str | None = None,
    burst: int = BURST,
    mbufs: int = MBUFS,
) -> list[str]:
    """The command line of one interactive testpmd on one port (EAL options, then its own)."""
    eal = [
        TESTPMD,
        "-l",
        lcores,
        "--main-lcore",
        str(main_lcore),
        "--file-prefix",
        prefix,
        "-a",
        bdf,
        "--no-telemetry",
    ]
    if huge_dir:
        eal += ["--huge-dir", huge_dir]
    if iova_mode:
        eal += [f"--iova-mode={iova_mode}"]
    app = [
        "-i",
        "--no-lsc-interrupt",
        f"--burst={burst}",
        f"--forward-mode={forward_mode}",
        "--nb-cores=1",
        "--rxq=1",
        "--txq=1",
        f"--total-num-mbufs={mbufs}",
    ]
    if txpkts is not None:
        app.append(f"--txpkts={txpkts}")
    if eth_peer is not None:
        app.append(f"--eth-peer=0,{eth_peer}")  # txonly's destination MAC (port 0: the only one)
    return [*eal, "--", *app]


class TestPmd:
    """One ``dpdk-testpmd -i`` process on one port; commands in, answers out.

    Its stdout goes through ``stdbuf -oL`` (line-buffered: testpmd's printf
    would otherwise sit in a 4 KiB buffer behind a pipe) to a reader thread.
    Leaving the ``with`` block sends ``quit`` (testpmd stops and closes the
    port), then SIGTERM, then SIGKILL, so no testpmd outlives it.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, argv: list[str], *, name: str = "testpmd") -> None:
        self.argv = argv
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = bytearray()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._eof = False

    # -- the process ---------------------------------------------------------------

    def __enter__(self) -> TestPmd:
        stdbuf = shutil.which("stdbuf")
        if shutil.which(TESTPMD) is None:
            raise LabError(f"{TESTPMD} not found on PATH", SETUP_HINT)
        argv = [stdbuf, "-oL", "-eL", *self.argv] if stdbuf else self.argv
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-out", daemon=True)
        self._reader.start()
        try:
            self._wait_prompt(0, START_TIMEOUT, "start")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, READ_CHUNK)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._out += chunk
                self._cond.notify_all()

    def output(self) -> str:
        """Everything testpmd printed so far."""
        with self._cond:
            return self._out.decode(errors="replace")

    def _tail(self) -> str:
        return self.output()[-TAIL_CHARS:].strip()

    def _wait_prompt(self, start: int, timeout: float, what: str) -> str:
        """Output from ``start`` up to the next prompt after it (which is consumed)."""
        deadline = time.monotonic() + timeout
        needle = PROMPT.encode()
        with self._cond:
            while True:
                at = self._out.find(needle, start)
                if at >= 0:
                    return self._out[start:at].decode(errors="replace")
                if self._eof:
                    raise LabError(
                        f"{self.name} exited during {what!r}; its output ends:\n{self._tail()}",
                        "check the port is on vfio-pci and hugepages are reserved",
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(
                        f"{self.name} gave no prompt within {timeout:.0f} s of {what!r}; "
                        f"its output ends:\n{self._tail()}",
                        "the guest may be overloaded; try again, or a longer timeout",
                    )
                self._cond.wait(left)

    def command(self, line: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """Send one command; its answer (what testpmd printed before the next prompt)."""
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise LabError(f"{self.name} is not running", "use TestPmd in a with block")
        with self._cond:
            # Past the prompt that is waiting now, so the answer ends at the next one.
            start = self._out.rfind(PROMPT.encode()) + len(PROMPT)
        try:
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:
            raise LabError(f"{self.name} has exited; its output ends:\n{self._tail()}") from None
        return self._wait_prompt(start, timeout, line)

    def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.write(b"quit\n")
                proc.stdin.flush()
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(QUIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(KILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(KILL_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()

    # -- what the comparisons use ------------------------------------------------------

    def stats(self, port: int = 0) -> PortStats:
        text = self.command("show port stats all")
        ports = parse_port_stats(text)
        if port not in ports:
            raise LabError(f"{self.name}: no statistics for port {port} in:\n{text.strip()}")
        return ports[port]

    def rx_packets(self) -> int:
        return self.stats().rx_packets

    def start(self) -> None:
        self.command("start")

    def stop(self) -> None:
        self.command("stop")

    def set_txpkts(self, length: int) -> None:
        """Frame length (no FCS) of what ``txonly`` sends from the next ``start`` on."""
        self.command(f"set txpkts {length}")
