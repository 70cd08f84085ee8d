"""Boot the lab with virtme-ng, run one command in it, and always clean up.

``vng`` runs in a session of its own, so QEMU (its grandchild) shares its
process group: on success, error, time-out, Ctrl-C or SIGTERM the whole
group is killed and waited for. Nothing outlives :func:`run`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import hwnic
from hwnic.errors import EmulatorFailed, GuestFroze, LabError, UsageError
from hwnic.lab import deps, kvm, watch
from hwnic.lab.control import ControlRelay
from hwnic.lab.guest import GuestSpec
from hwnic.lab.qemu import (
    DEFAULT_GUEST_CLOCK,
    GUEST_CLOCKS,
    LabPaths,
    VngOptions,
    vng_command,
)
from hwnic.lab.qmp import Qmp
from hwnic.lab.topology import DEFAULT_NICS, LabNic, plan_nics

DEFAULT_TIMEOUT = 3600.0  # s for the whole run; six NICs of pytest under TCG take minutes
DEFAULT_BOOT_TIMEOUT = 300.0  # s until the guest is ready (about 25 s seen under TCG)
DEFAULT_MEMORY = "2G"
DEFAULT_CPUS = 2
MEMORY_RE = re.compile(r"^[1-9]\d*[MG]$")
TERM_GRACE = 3.0  # s between SIGTERM and SIGKILL for QEMU's group
KILL_WAIT = 10.0  # s to wait for the group to be gone after SIGKILL
WAIT_POLL = 0.1
WATCH_POLL = 1.0  # s between looks at the guest's heartbeat
KICK_MIN_INTERVAL = 5.0  # s: one stall report is several kernel lines, one kick serves them
STDERR_TAIL = 20  # lines of QEMU/virtme-ng messages kept for error reports
READ_CHUNK = 65536
# QEMU itself failed (an assertion or a fatal signal), e.g. TCG's
# "iotlb_to_section: Assertion ... failed" seen once while the guest booted.
QEMU_CRASH = re.compile(r"^qemu-system-\w+: .*(Assertion .* failed|core dumped)")
# Harmless: the hubs are deliberately not connected to the host's network.
NOISE = (re.compile(rb"^qemu-system-\w+: warning: hub \d+ is not connected to host network"),)
# Host variables worth carrying into the guest command's environment.
PASS_ENV_PREFIXES = ("HWNIC_", "PYTEST_")
PASS_ENV = ("TERM", "LANG", "LC_ALL", "NO_COLOR", "FORCE_COLOR", "COLUMNS")


@dataclass
class LabConfig:
    command: list[str]
    nics: list[str] = field(default_factory=lambda: list(DEFAULT_NICS))
    timeout: float = DEFAULT_TIMEOUT
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    kvm: str = "auto"
    memory: str = DEFAULT_MEMORY
    cpus: int = DEFAULT_CPUS
    rwdirs: list[Path] = field(default_factory=list)
    cwd: Path = field(default_factory=Path.cwd)
    quiet: bool = False
    clock: str = DEFAULT_GUEST_CLOCK

    def check(self) -> None:
        """Raise :class:`UsageError` for anything wrong before booting."""
        if not self.command:
            raise UsageError("no command to run in the lab", "put it after '--'")
        if not MEMORY_RE.match(self.memory):
            raise UsageError(f"--memory '{self.memory}' is not a size", "e.g. 2G or 1536M")
        if self.cpus < 1:
            raise UsageError("--cpus must be at least 1")
        if self.timeout <= 0 or self.boot_timeout <= 0:
            raise UsageError("time-outs must be positive")
        if self.clock not in GUEST_CLOCKS:
            raise UsageError(f"--clock must be one of {', '.join(GUEST_CLOCKS)}")
        if self.kvm not in kvm.KVM_MODES:
            raise UsageError(f"--kvm must be one of {', '.join(kvm.KVM_MODES)}")
        for d in self.rwdirs:
            if not d.is_dir():
                raise UsageError(f"--rwdir {d} is not a directory")
            # vng pastes it unquoted into a shell line and splits on '='.
            if re.search(r"[\s=]", str(d)):
                raise UsageError(f"--rwdir {d}: spaces and '=' are not supported")
        plan_nics(self.nics)


class _Pump(threading.Thread):
    """Copy a child's output to one of our fds as it comes, dropping known noise."""

    def __init__(self, src: IO[bytes], dest_fd: int, keep_tail: bool = False) -> None:
        super().__init__(name=f"hwnic-lab-pump-{dest_fd}", daemon=True)
        self.src = src
        self.dest_fd = dest_fd
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL if keep_tail else 0)

    def _emit(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # our own stdout closed: keep draining
            os.write(self.dest_fd, data)

    def run(self) -> None:
        partial = b""
        while chunk := os.read(self.src.fileno(), READ_CHUNK):
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            out = b""
            for line in lines:
                if not any(p.match(line) for p in NOISE):
                    out += line + b"\n"
                    self.tail.append(line.decode(errors="replace"))
            # A line in progress goes out now (live output), unless it may be noise.
            if partial and not partial.startswith(b"qemu-system"):
                out += partial
                self.tail.append(partial.decode(errors="replace"))
                partial = b""
            self._emit(out)
        self._emit(partial)


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C so QEMU gets killed."""


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, the process group led by ``proc``; wait until it is gone."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, KILL_WAIT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                proc.wait(timeout=WAIT_POLL)  # reap vng itself
            if proc.returncode is not None and not _group_alive(pgid):
                return
            time.sleep(WAIT_POLL)
    raise LabError(f"QEMU's process group {pgid} survived SIGKILL", "check 'ps -g {pgid}'")


def _project_root() -> Path:
    return Path(hwnic.__file__).resolve().parent.parent


def _guest_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(PASS_ENV_PREFIXES) or k in PASS_ENV}
    pythonpath = [str(_project_root())]
    if os.environ.get("PYTHONPATH"):
        pythonpath.append(os.environ["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return env


class LabRun:
    """One boot of the lab running one command. Use :func:`run`."""

    def __init__(self, config: LabConfig) -> None:
        config.check()
        self.config = config
        self.nics: list[LabNic] = plan_nics(config.nics)
        self.started = time.monotonic()
        self.guest_ready = threading.Event()
        self.kicks = 0  # times the watch woke the vCPUs (hwnic.lab.watch)
        self._kicked = 0.0
        self._watched = 0.0
        self._stalls_seen = 0

    def say(self, message: str) -> None:
        if not self.config.quiet:
            elapsed = time.monotonic() - self.started
            print(f"hwnic lab [{elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)

    def _on_hello(self, request: dict[str, Any]) -> None:
        for nic in request.get("nics", []):
            self.say(
                f"{nic['qemu_id']} {nic['model']} {nic['mac']} hub {nic['hub']} "
                f"-> {nic['bdf']} vfio-pci"
            )
        if "ready" in request:
            self.say(
                f"guest ready: bootstrap started {request['setup_started']:.1f} s after the "
                f"kernel, NICs bound by {request['ready']:.1f} s"
            )
        self.say(f"running: {' '.join(self.config.command)}")
        self.guest_ready.set()

    def run(self) -> int:
        cfg = self.config
        tools = deps.find_tools()
        use_kvm = kvm.resolve(cfg.kvm, tools.qemu, tools.kernel)
        run_dir = Path(tempfile.mkdtemp(prefix="hwnic-lab-"))
        try:
            with _signals_unwind():
                return self._boot(tools, use_kvm, LabPaths(run_dir))
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def _boot(self, tools: deps.LabTools, use_kvm: bool, paths: LabPaths) -> int:
        cfg = self.config
        GuestSpec(
            command=cfg.command,
            cwd=str(cfg.cwd),
            nics=[n.to_dict() for n in self.nics],
            status_file=str(paths.status_file),
            path_prefix=[str(Path(sys.executable).parent)],
            env=_guest_env(),
            timeout=cfg.timeout,
            heartbeat_file=str(paths.heartbeat_file),
        ).save(paths.spec_file)
        guest_cmd = [
            "env", f"PYTHONPATH={_guest_env()['PYTHONPATH']}",
            sys.executable, "-m", "hwnic.lab.guest", str(paths.spec_file),
        ]  # fmt: skip
        # The guest root is read-only 9p: a tmpfs overlay lets the command write
        # caches in its working directory (lost at power-off; use --rwdir to keep).
        overlays = [] if self._cwd_is_shared() else [cfg.cwd]
        cmd = vng_command(
            VngOptions(
                vng=tools.vng, kernel=tools.kernel, qemu=tools.qemu, busybox=tools.busybox,
                kvm=use_kvm, cpus=cfg.cpus, memory=cfg.memory, guest_command=guest_cmd,
                cwd=cfg.cwd, rwdirs=cfg.rwdirs, overlay_dirs=overlays, clock=cfg.clock,
            ),
            self.nics, paths,
        )  # fmt: skip
        env = dict(os.environ)
        # vng starts virtme-run through PATH.
        env["PATH"] = os.pathsep.join([str(tools.vng.parent), env.get("PATH", "")])
        accel = "KVM" if use_kvm else "TCG"
        version = ".".join(map(str, tools.qemu_version))
        self.say(
            f"booting {tools.kernel.name} on QEMU {version} ({accel}, {cfg.cpus} CPUs, "
            f"{cfg.memory}), NICs: {' '.join(cfg.nics)}"
        )
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # QEMU ends up in this group: killable as one
        )
        assert proc.stdout is not None and proc.stderr is not None
        out = _Pump(proc.stdout, sys.stdout.fileno())
        err = _Pump(proc.stderr, sys.stderr.fileno(), keep_tail=True)
        out.start()
        err.start()
        qmp = Qmp(paths.qmp_socket)
        relay: ControlRelay | None = None
        try:
            qmp.connect(self.started + cfg.boot_timeout, alive=lambda: proc.poll() is None)
            self.say("QEMU is up")
            relay = ControlRelay(paths.control_socket, qmp, on_hello=self._on_hello)
            relay.start()
            rc = self._wait(proc, qmp, paths)
        finally:
            if relay is not None:
                relay.stop()
            qmp.close()
            kill_group(proc)
            out.join()
            err.join()
            proc.stdout.close()
            proc.stderr.close()
        return self._result(paths, rc, list(err.tail))

    def _cwd_is_shared(self) -> bool:
        cwd = self.config.cwd.resolve()
        return cwd == Path("/") or any(cwd.is_relative_to(d.resolve()) for d in self.config.rwdirs)

    def _wait(self, proc: subprocess.Popen[bytes], qmp: Qmp, paths: LabPaths) -> int:
        cfg = self.config
        while True:
            rc = proc.poll()
            if rc is not None:
                return int(rc)
            elapsed = time.monotonic() - self.started
            if not self.guest_ready.is_set() and elapsed > cfg.boot_timeout:
                raise LabError(
                    f"the guest was not ready within {cfg.boot_timeout:.0f} s; QEMU killed",
                    "raise --boot-timeout, or look at the messages above",
                )
            if elapsed > cfg.timeout:
                raise LabError(
                    f"the lab run exceeded --timeout {cfg.timeout:.0f} s; QEMU killed",
                    "raise --timeout",
                )
            if self.guest_ready.is_set():
                self._watch(qmp, paths)
            time.sleep(WAIT_POLL)

    def _watch(self, qmp: Qmp, paths: LabPaths) -> None:
        """Kick the vCPUs when the guest reports a stall or goes quiet; end a frozen run."""
        now = time.monotonic()
        if now - self._watched < WATCH_POLL:
            return
        self._watched = now
        age = watch.heartbeat_age(paths.heartbeat_file)
        stalls = watch.stall_reports(paths.heartbeat_file)
        if stalls > self._stalls_seen and now - self._kicked > KICK_MIN_INTERVAL:
            self._stalls_seen = stalls
            self._kick(qmp, "the guest kernel reported a stalled vCPU")
        if age is None:
            return
        if age > watch.STALL_AFTER:
            self._report_freeze(qmp, paths, age)
        if age > watch.KICK_AFTER and now - self._kicked > watch.KICK_AFTER:
            self._kick(qmp, f"no heartbeat for {age:.0f} s")

    def _kick(self, qmp: Qmp, why: str) -> None:
        """Wake every vCPU: an NMI to each, and a register read (QEMU kicks each vCPU thread)."""
        self._kicked = time.monotonic()
        self.kicks += 1
        try:
            qmp.execute("inject-nmi")
            qmp.execute("human-monitor-command", **{"command-line": "info registers -a"})
            self.say(f"{why}: kicked the vCPUs (NMI, register read), kick {self.kicks}")
        except LabError as exc:
            self.say(f"{why}: kicking the vCPUs failed ({exc})")

    def _report_freeze(self, qmp: Qmp, paths: LabPaths, age: float) -> None:
        """The guest stopped: say where its vCPUs are, then end the run."""
        symbols = watch.KernelSymbols(paths.symbols_file)
        try:
            status = qmp.execute("query-status")
            registers = qmp.execute(
                "human-monitor-command", **{"command-line": "info registers -a"}
            )
            self.say(f"guest stopped: no heartbeat for {age:.0f} s; QEMU status {status}")
            for line in watch.freeze_report(str(registers), symbols):
                self.say(line)
        except LabError as exc:
            self.say(f"guest stopped: no heartbeat for {age:.0f} s; QEMU did not answer ({exc})")
        raise GuestFroze(
            f"the guest stopped responding (no heartbeat for {age:.0f} s); QEMU killed",
            "a guest freeze under TCG (exit status 75): rerun; if it repeats, report the "
            "vCPU lines above",
        )

    def _result(self, paths: LabPaths, vng_rc: int, tail: list[str]) -> int:
        elapsed = time.monotonic() - self.started
        try:
            status = json.loads(paths.status_file.read_text())
        except (OSError, ValueError):
            status = {}
        if "status" in status:
            self.say(f"command exited with {status['status']}")
            return int(status["status"])
        if "error" in status:
            raise LabError(f"guest setup failed: {status['error']}", "see the messages above")
        last = "; ".join(line for line in tail[-3:] if line.strip()) or "no message"
        if any(QEMU_CRASH.search(line) for line in tail):
            raise EmulatorFailed(
                f"QEMU crashed after {elapsed:.0f} s ({last})",
                "an emulator bug, not the command's (exit status 75): rerun",
            )
        raise LabError(
            f"the guest stopped after {elapsed:.0f} s before the command finished "
            f"(vng exit {vng_rc}; last message: {last})",
            "a kernel panic or out of memory in the guest? try more --memory, see above",
        )


def run(config: LabConfig) -> int:
    """Boot the lab, run ``config.command`` in it, return the command's exit status."""
    return LabRun(config).run()
