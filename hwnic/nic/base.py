"""The miniport the three families share: lifecycle, interrupts, receive delivery.

A family subclass (``e1000.py``, ``e1000e.py``, ``igb.py``) supplies the
register-level steps (reset, ring programming, cause-to-message mapping, the
message ISR, masking and unmasking); this class does the rest the same way
for all of them:

* open: assume nothing about the NIC (a killed process may have left it
  running): mask, stop RX/TX, reset, mask again, and only then bus master
  on, DMA rings and buffers, program the NIC,
  then the NDIS order: set miniport attributes, register the interrupt (the
  ISR may run before registration returns, so everything it touches exists),
  map causes to the granted messages and unmask.
* ISR: line-based and MSI read ICR (zero: "not mine"), save the causes, mask
  all, ask for the default DPC. MSI-X ISRs mask only their own message.
* DPC: per message, drain its RX queues under the receive budget
  (``max_to_indicate`` in, ``more_pending`` out), handle link changes on the
  "other" cause. Each drain re-arms what it consumed (one tail write), so a
  long batch of more-pending re-runs never starves the NIC of descriptors.
* before re-enable: replenish RX descriptors with fresh buffers, so a view the
  consumer still holds is never written (seed 001).
* TX completions raise no interrupt: the send path reclaims what the NIC
  has written back (as ixy does, and as Linux cleans TX in its poll), which
  spares an ISR, a DPC and a TX-lock contention per sent batch.
* close (also on exceptions and Ctrl-C): mask every interrupt, stop RX and TX,
  deregister the interrupt, bus master off, and only then free DMA memory.
* reset (``Nic.reset``): deregister, quiesce, drain what already arrived,
  reset the NIC, re-arm the rings in place, register the interrupt again.
* an ``on_receive`` callback that raises gives its batch back (counted in
  ``callback_error_frames``); the DPC goes on with the other queues and then
  re-raises, so the framework records the error in ``interrupt.errors``.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hwnic import vfio
from hwnic.dma import DmaPool
from hwnic.errors import NicError, UsageError
from hwnic.ndis import (
    DEFAULT_TIME_BOUND,
    InterruptCharacteristics,
    InterruptType,
    IsrResult,
    MiniportAdapter,
    NdisInterrupt,
    ReceiveThrottleParameters,
    register_interrupt,
)
from hwnic.ndis.vfio_source import VfioInterruptSource
from hwnic.nic import quirks, regs
from hwnic.nic.descriptors import LEGACY_TX, RxFormat
from hwnic.nic.irq import ALL_CAUSES, InterruptMode, MessagePlan, SharedLine
from hwnic.nic.quirks import Flag
from hwnic.nic.ring import DESCRIPTOR_BYTES
from hwnic.nic.rx_ring import RxBatch, RxRing
from hwnic.nic.tx_ring import TxRing
from hwnic.vfio import Device

U32_MASK = 0xFFFFFFFF
# Defaults are the fast setting. Each DPC run and each tail write has a fixed
# cost (numpy calls, an MMIO exit) that a larger batch spreads over more
# frames. In the QEMU lab (igb, 64 B, same boot): budget 256 with a
# 1024-descriptor ring received 3x more frames/s than budget 64 with 512, and
# budget 512 another 1.1-1.7x over 256; 2048 descriptors let a loopback keep
# 1.5-2.5x more in flight than 1024 (4 MiB of buffers per ring).
DEFAULT_RING_SIZE = 2048
DEFAULT_BUDGET = 512
DEFAULT_BUFFER_SIZE = 2048
STANDARD_MAX_FRAME = 1518  # 1500 bytes of payload, the header and a VLAN tag (no FCS)
MAX_JUMBO_FRAME = 9018  # 9000 bytes of payload: hwnic's jumbo limit
RESET_TIMEOUT = 1.0  # seconds for CTRL.RST to self-clear
POLL_INTERVAL = 0.001
# A full TX ring frees up as the NIC sends; a short wait (it ends at the next
# tick of the scheduler) re-checks sooner than POLL_INTERVAL.
TX_BACKOFF = 0.0001


@dataclass
class NicConfig:
    """What ``hwnic.open`` takes. Defaults work on every supported NIC."""

    queues: int = 1  # RX/TX queue pairs; more than one spreads flows with RSS
    budget: int = DEFAULT_BUDGET  # max_to_indicate: frames a DPC may indicate per call
    ring_size: int = DEFAULT_RING_SIZE  # descriptors per ring (multiple of 8)
    buffer_size: int = DEFAULT_BUFFER_SIZE  # bytes per receive buffer
    # Longest frame received (no FCS). Above 1518, jumbo: RCTL.LPE, and a
    # frame spans buffers (RX and TX), up to 9018.
    max_frame: int = STANDARD_MAX_FRAME
    pool_factor: int = 2  # receive buffers per descriptor: room for held views
    interrupt: InterruptType | None = None  # insist on a type; None: best available
    zero_copy: bool = False  # deliver views into DMA buffers instead of copies
    promiscuous: bool = True  # accept every unicast/multicast frame (a test port)
    itr_us: float | None = None  # interrupt moderation interval; None: family default
    wait_link: float = 10.0  # seconds open() waits for link up (0: do not wait)
    time_bound: float = DEFAULT_TIME_BOUND  # seconds a DPC may keep re-running
    target_cpus: Sequence[int] | None = None  # DPC CPU per message
    backlog: int = 65536  # received frames kept for receive() before counting drops

    def check(self, max_queues: int) -> None:
        if not 1 <= self.queues <= max_queues:
            raise UsageError(f"queues={self.queues}", f"this NIC supports 1 to {max_queues}")
        if self.budget < 1:
            raise UsageError(f"budget={self.budget}", "the receive budget must be at least 1")
        if self.ring_size < 8 or self.ring_size % 8 or self.ring_size > 4096:
            raise UsageError(f"ring_size={self.ring_size}", "use a multiple of 8 from 8 to 4096")
        if not STANDARD_MAX_FRAME <= self.max_frame <= MAX_JUMBO_FRAME:
            raise UsageError(
                f"max_frame={self.max_frame}",
                f"use {STANDARD_MAX_FRAME} (standard) up to {MAX_JUMBO_FRAME} (jumbo)",
            )
        if self.buffer_size not in (1024, 2048, 4096):
            raise UsageError(f"buffer_size={self.buffer_size}", "use 1024, 2048 or 4096")
        if self.itr_us is not None and self.itr_us < 0:
            raise UsageError(f"itr_us={self.itr_us}", "moderation must be 0 or more µs")


@dataclass
class LinkState:
    up: bool
    speed_mbps: int
    full_duplex: bool


@dataclass
class _Delivery:
    """Received batches of one queue waiting for ``receive()``."""

    batches: collections.deque[RxBatch] = field(default_factory=collections.deque)
    frames: int = 0


class Nic:
    """A NIC driven through VFIO with the NDIS interrupt model; use ``hwnic.open``."""

    family: ClassVar[str] = ""
    rx_format: RxFormat  # a family may choose per instance (e1000e: RSS needs extended)
    max_queues: ClassVar[int] = 1

    def __init__(
        self,
        device: Device,
        config: NicConfig | None = None,
        *,
        on_receive: Callable[[int, RxBatch], None] | None = None,
        close_device: bool = False,
    ) -> None:
        self.device = device
        self.config = config or NicConfig()
        self.bar = device.bar(0)
        self.on_receive = on_receive
        self._close_device = close_device
        self._closed = False
        self.interrupt: NdisInterrupt | None = None
        self.dma: DmaPool | None = None
        self.rx: list[RxRing] = []
        self.tx: list[TxRing] = []
        self.rx_desc_iova: list[int] = []
        self.tx_desc_iova: list[int] = []
        self._tx_locks: list[threading.Lock] = []
        self._plans: list[MessagePlan] = []
        # Until a type is granted (an ISR may run during registration): ICR decides.
        self._mode: InterruptMode = SharedLine(self)
        self._delivery: list[_Delivery] = []
        self._delivered = threading.Condition()
        self.backlog_drops = 0
        self.link_changes = 0
        self._link_cond = threading.Condition()
        self._on_link: list[Callable[[LinkState], None]] = []
        self.resets = 0
        self.callback_errors = 0
        self.callback_error_frames = 0  # frames given back because on_receive raised
        self._dpc_error: dict[int, BaseException] = {}  # per message, raised when it settles
        self._hw_stats: dict[str, int] = {}
        self._hw_raw: dict[str, int] = {}
        # The one place a port's part and emulation are decided (hwnic.nic.quirks).
        self.quirks = quirks.for_ids(
            device.config_read(quirks.PCI_DEVICE_ID, 2),
            device.config_read(quirks.PCI_SUBSYSTEM_VENDOR_ID, 2),
            self.family,
            device.config_read(quirks.PCI_SUBSYSTEM_ID, 2),
        )
        self.config.check(min(self.max_queues, self.quirks.part.max_queues))
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------------

    def _open(self) -> None:
        cfg = self.config
        self.quiesce()
        self.reset_hw()
        self.mask_all()
        self.device.set_bus_master(True)
        self.dma = DmaPool(self.device)
        for queue in range(cfg.queues):
            self.rx.append(self._make_rx_ring(queue))
            self.tx.append(self._make_tx_ring(queue))
            self._tx_locks.append(threading.Lock())
            self._delivery.append(_Delivery())
        self.init_hw()
        for ring in self.rx:
            ring.replenish()
        self._register_interrupt()
        if cfg.wait_link:
            self.wait_link(True, cfg.wait_link)

    def quiesce(self) -> None:
        """Memory decode on, bus mastering off, every interrupt masked, RX and TX stopped.

        Safe on a NIC in any state: the first thing open() does.
        """
        self.device.set_bus_master(False)  # also turns memory decoding on
        self.mask_all()
        self.stop_hw()

    def _register_interrupt(self) -> None:
        cfg = self.config
        # NDIS order: attributes first, then the interrupt; the ISR may run
        # before register_interrupt returns, and all it needs exists by now.
        adapter = MiniportAdapter(f"{self.family} {self.device.bdf}")
        adapter.set_miniport_attributes(self, family=self.family, queues=cfg.queues)
        kind_counts = VfioInterruptSource(self.device).message_counts()
        self.interrupt = register_interrupt(
            adapter,
            self,
            self._characteristics(),
            VfioInterruptSource(self.device),
            prefer=cfg.interrupt,
            messages=self.messages_wanted(kind_counts),
            target_cpus=cfg.target_cpus,
            budget=cfg.budget,
            time_bound=cfg.time_bound,
        )
        # The one place the granted type is looked at: it picks the mode.
        mode = self.interrupt_mode(self.interrupt.granted_type)
        self._plans = mode.plan(len(self.interrupt.messages))
        mode.configure(self._plans)
        self._mode = mode
        mode.enable_all(self._plans)

    def reset(self, wait_link: float | None = None) -> None:
        """Reset the NIC under traffic and carry on with the same rings and buffers.

        The interrupt is deregistered first (so no ISR or DPC can touch a
        ring being rebuilt) and registered again afterwards with the same
        preference: ``interrupt`` is a new object, its statistics start over.
        Frames the NIC already wrote back are drained and indicated; posted
        TX frames it never completed are counted in ``tx[q].stats()
        ["reset_discards"]``. Senders wait on the TX locks meanwhile; zero-copy
        buffers consumers hold stay valid. Waits ``wait_link`` s (default:
        the config's) for the link to come back.
        """
        if self._closed:
            raise NicError(f"{self.device.bdf}: reset() on a closed NIC", "open it again")
        self.mask_all()
        self.stop_hw()
        # Before taking the TX locks: a DPC being waited for reclaims under them.
        if self.interrupt is not None:
            self.interrupt.deregister()
            self.interrupt = None
        for lock in self._tx_locks:
            lock.acquire()
        try:
            self.quiesce()
            for queue, ring in enumerate(self.rx):
                while (batch := ring.drain(ring.size)).count:
                    # A raising callback is counted in callback_errors; the reset goes on.
                    with contextlib.suppress(Exception):
                        self._indicate(queue, batch)
                ring.reset()
            for tx in self.tx:
                tx.reclaim()
                tx.reset()
            self._dpc_error.clear()
            self.reset_hw()
            self.mask_all()
            self.device.set_bus_master(True)
            self.init_hw()
            for ring in self.rx:
                ring.replenish()
            self._register_interrupt()
            self.resets += 1
        finally:
            for lock in self._tx_locks:
                lock.release()
        wait = self.config.wait_link if wait_link is None else wait_link
        if wait:
            self.wait_link(True, wait)

    def close(self) -> None:
        """Quiet the NIC and release everything; safe to call twice and after errors."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self.mask_all()
                self.stop_hw()
            finally:
                if self.interrupt is not None:
                    self.interrupt.deregister()
                self.mask_all()  # a DPC that ran during deregistration may have unmasked
                self.device.set_bus_master(False)
        finally:
            if self.dma is not None:
                self.dma.close()
            if self._close_device:
                self.device.close()

    def __enter__(self) -> Nic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- rings -------------------------------------------------------------------

    def _make_rx_ring(self, queue: int) -> RxRing:
        assert self.dma is not None
        cfg = self.config
        descs = self.dma.allocate(cfg.ring_size * self.rx_format.read_dtype.itemsize)
        # Zero-copy needs spare buffers to swap in for the ones consumers hold.
        pool_slots = cfg.ring_size * (cfg.pool_factor if cfg.zero_copy else 1)
        pool = self.dma.allocate(pool_slots * cfg.buffer_size)
        tail = self.rx_tail_offset(queue)
        write32, wmb = self.bar.write32, self.device_wmb
        self.rx_desc_iova.append(descs.iova)
        ring = RxRing(
            self.rx_format,
            descs.array(self.rx_format.read_dtype, (cfg.ring_size,)),
            descs.iova,
            pool.array(np.uint8, (pool_slots, cfg.buffer_size)),
            pool.iova,
            write_tail=lambda value: write32(tail, value),
            wmb=wmb,
            zero_copy=cfg.zero_copy,
            max_frame=cfg.max_frame,
        )
        ring.on_refill_needed = lambda: self._refill(queue)
        return ring

    def _refill(self, queue: int) -> None:
        """A consumer gave buffers back to a starved ring: queue its DPC to re-arm it.

        The DPC finds nothing to drain; ``before_enable`` replenishes, serialised
        with the ISR and other DPCs of the message as NDIS requires.
        """
        interrupt = self.interrupt
        if interrupt is None or interrupt.deregistered:
            return
        for message_id, plan in enumerate(self._plans):
            if queue in plan.rx:
                target = interrupt.messages[message_id].target_cpu
                interrupt.queue_dpc(message_id, 1 << target)

    def _make_tx_ring(self, queue: int) -> TxRing:
        assert self.dma is not None
        cfg = self.config
        descs = self.dma.allocate(cfg.ring_size * LEGACY_TX.itemsize)
        bufs = self.dma.allocate(cfg.ring_size * cfg.buffer_size)
        tail = self.tx_tail_offset(queue)
        write32 = self.bar.write32
        self.tx_desc_iova.append(descs.iova)
        return TxRing(
            descs.array(LEGACY_TX, (cfg.ring_size,)),
            descs.iova,
            bufs.array(np.uint8, (cfg.ring_size, cfg.buffer_size)),
            bufs.iova,
            write_tail=lambda value: write32(tail, value),
            wmb=self.device_wmb,
        )

    device_wmb = staticmethod(vfio.wmb)

    # -- interrupts: the NDIS handlers -------------------------------------------

    def _characteristics(self) -> InterruptCharacteristics:
        return InterruptCharacteristics(
            isr=self._isr,
            dpc=self._dpc,
            enable=self._enable,
            disable=self._disable,
            message_isr=self._message_isr,
            message_dpc=self._message_dpc,
            enable_message=self._enable_message,
            disable_message=self._disable_message,
            before_enable=self._before_enable,
        )

    def _isr(self, ctx: Any) -> IsrResult:
        return self._mode.isr(0)

    def _message_isr(self, ctx: Any, message_id: int) -> IsrResult:
        return self._mode.isr(message_id)

    def _dpc(self, ctx: Any, dpc_ctx: Any, throttle: ReceiveThrottleParameters) -> None:
        self._message_dpc(ctx, 0, dpc_ctx, throttle)

    def _message_dpc(
        self, ctx: Any, message_id: int, dpc_ctx: Any, throttle: ReceiveThrottleParameters
    ) -> None:
        plan = self._plans[message_id] if message_id < len(self._plans) else MessagePlan()
        if plan.other:
            causes = self._mode.other_causes(message_id)
            if causes & regs.Icr.LSC:
                self._link_changed()
        indicated = 0
        more = False
        budget = throttle.max_to_indicate
        for queue in plan.rx:
            batch = self.rx[queue].drain(max(1, budget - indicated))
            if batch.count:
                indicated += batch.count
                try:
                    self._indicate(queue, batch)
                except Exception as exc:
                    self._dpc_error.setdefault(message_id, exc)
            more = more or batch.more_pending
        throttle.indicated = indicated
        throttle.more_pending = more
        # Raised only once the message has no more pending: a raising DPC ends
        # its batch, and frames left in the ring would wait for the next one.
        if not more and message_id in self._dpc_error:
            raise self._dpc_error.pop(message_id)

    def _before_enable(self, ctx: Any, message_id: int) -> None:
        plan = self._plans[message_id] if message_id < len(self._plans) else MessagePlan()
        for queue in plan.rx:
            self.rx[queue].replenish()

    def _enable(self, ctx: Any) -> None:
        self._mode.enable(0)

    def _disable(self, ctx: Any) -> None:
        self._mode.disable(0)

    def _enable_message(self, ctx: Any, message_id: int) -> None:
        self._mode.enable(message_id)

    def _disable_message(self, ctx: Any, message_id: int) -> None:
        self._mode.disable(message_id)

    def rx_messages(self) -> list[int]:
        """Message ids that serve receive queues."""
        return [m for m, plan in enumerate(self._plans) if plan.rx]

    # -- receive delivery ----------------------------------------------------------

    def _indicate(self, queue: int, batch: RxBatch) -> None:
        """Hand a batch up: to the callback in DPC context, else to receive()."""
        if self.on_receive is not None:
            try:
                self.on_receive(queue, batch)
            except Exception:
                self.callback_errors += 1
                self.callback_error_frames += batch.count
                batch.release()  # the callback failed: its buffers go back to the ring
                raise
            return
        with self._delivered:
            waiting = sum(d.frames for d in self._delivery)
            if waiting + batch.count > self.config.backlog:
                self.backlog_drops += batch.count
                batch.release()
                return
            d = self._delivery[queue]
            d.batches.append(batch)
            d.frames += batch.count
            self._delivered.notify_all()

    def receive(self, timeout: float | None = None, queue: int | None = None) -> RxBatch | None:
        """The oldest received batch (of ``queue``, or any), waiting up to ``timeout`` s."""
        queues = range(len(self._delivery)) if queue is None else (queue,)

        def ready() -> int | None:
            for q in queues:
                if self._delivery[q].batches:
                    return q
            return None

        with self._delivered:
            q = ready()
            if q is None and timeout != 0:
                self._delivered.wait_for(lambda: ready() is not None, timeout)
                q = ready()
            if q is None:
                return None
            d = self._delivery[q]
            batch = d.batches.popleft()
            d.frames -= batch.count
            return batch

    # -- transmit --------------------------------------------------------------------

    def send(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        lengths: np.ndarray | None = None,
        *,
        queue: int = 0,
        timeout: float | None = 1.0,
        desc_bits: int = 0,
    ) -> int:
        """Post frames on a TX queue; waits up to ``timeout`` s while the ring is full.

        Returns how many were posted (fewer than given only on timeout).
        ``desc_bits`` go into each descriptor's second quadword (family options:
        igb's IEEE 1588 timestamp request, ``hwnic/nic/igb_ptp.py``).
        """
        ring, lock = self.tx[queue], self._tx_locks[queue]
        total = len(frames)
        done = 0
        deadline: float | None = None  # the clock is read only once the ring is full
        while done < total:
            with lock:
                ring.reclaim()
                if lengths is None:
                    n = ring.post(frames[done:], desc_bits=desc_bits)
                else:
                    n = ring.post(frames[done:], lengths[done:], desc_bits=desc_bits)
            done += n
            if done < total:
                if n:
                    continue  # room appeared as the NIC went on: no wait
                if timeout is not None:
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + timeout
                    if now >= deadline:
                        break
                time.sleep(TX_BACKOFF)  # back-pressure: the NIC is behind
        return done

    @property
    def tx_in_flight(self) -> int:
        """Frames posted on the TX queues that the NIC has not completed yet."""
        for ring, lock in zip(self.tx, self._tx_locks, strict=True):
            with lock:
                ring.reclaim()
        return sum(ring.in_flight for ring in self.tx)

    def flush(self, timeout: float = 1.0) -> bool:
        """Wait up to ``timeout`` s until the NIC has sent every posted frame.

        For TX-only work (a sender about to close): returns True once nothing
        is in flight, False if frames were still queued at the deadline.
        """
        deadline = time.monotonic() + timeout
        while self.tx_in_flight:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)
        return True

    # -- link ----------------------------------------------------------------------------

    @property
    def link(self) -> LinkState:
        up, speed, duplex = regs.link_from_status(self.bar.read32(regs.STATUS))
        return LinkState(up, speed, duplex)

    def on_link_change(self, callback: Callable[[LinkState], None]) -> None:
        """Call ``callback(state)`` from the DPC on every link change."""
        self._on_link.append(callback)

    def _link_changed(self) -> None:
        state = self.link
        with self._link_cond:
            self.link_changes += 1
            self._link_cond.notify_all()
        for callback in self._on_link:
            callback(state)

    def wait_link(self, up: bool = True, timeout: float = 10.0) -> bool:
        """Wait until the link is ``up`` (or down); raises NicError on timeout."""
        deadline = time.monotonic() + timeout
        with self._link_cond:
            while self.link.up != up:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NicError(
                        f"{self.device.bdf}: link still {'down' if up else 'up'} after {timeout} s",
                        "check the cable / peer (in the lab: the hub and set_link)",
                    )
                # LSC wakes us; the poll interval covers a NIC with LSC masked.
                self._link_cond.wait(min(left, 0.05))
        return True

    # -- statistics ----------------------------------------------------------------------

    def hw_stats(self) -> dict[str, int]:
        """The NIC's statistics registers, accumulated (they clear on read)."""
        read32 = self.bar.read32
        for name, offset in regs.STATS32.items():
            value = read32(offset)
            if Flag.EMU_STATS_NOT_CLEARED in self.quirks and name in quirks.EMU_STATS_NOT_CLEARED:
                value, self._hw_raw[name] = value - self._hw_raw.get(name, 0), value
            self._hw_stats[name] = self._hw_stats.get(name, 0) + value
        for name, offset in regs.STATS64.items():
            low = read32(offset)
            value = low | (read32(offset + 4) << 32)
            self._hw_stats[name] = self._hw_stats.get(name, 0) + value
        return dict(self._hw_stats)

    def stats(self) -> dict[str, Any]:
        """Driver, hardware and interrupt statistics as one JSON-ready dict."""
        return {
            "bdf": self.device.bdf,
            "family": self.family,
            "interrupt_type": str(self.interrupt.granted_type) if self.interrupt else None,
            "rx": [ring.stats() for ring in self.rx],
            "tx": [ring.stats() for ring in self.tx],
            "backlog_drops": self.backlog_drops,
            "callback_errors": self.callback_errors,
            "callback_error_frames": self.callback_error_frames,
            "resets": self.resets,
            "link_changes": self.link_changes,
            "hw": self.hw_stats(),
            "interrupts": self.interrupt.stats.to_dict() if self.interrupt else {},
        }

    # -- what each family provides ----------------------------------------------------------

    def rx_tail_offset(self, queue: int) -> int:
        return regs.RDT(queue)

    def tx_tail_offset(self, queue: int) -> int:
        return regs.TDT(queue)

    def mask_all(self) -> None:
        self.bar.write32(regs.IMC, ALL_CAUSES)

    def reset_hw(self) -> None:
        """CTRL.RST and wait for it to self-clear (see quirks.Flag.EMU_RST_NOOP)."""
        self.bar.write32(regs.CTRL, self.bar.read32(regs.CTRL) | regs.Ctrl.RST)
        deadline = time.monotonic() + RESET_TIMEOUT
        while self.bar.read32(regs.CTRL) & regs.Ctrl.RST:
            if time.monotonic() > deadline:
                raise NicError(f"{self.device.bdf}: CTRL.RST did not clear", "power-cycle the NIC")
            time.sleep(POLL_INTERVAL)
        self.mask_all()
        self.bar.read32(regs.ICR)

    def stop_hw(self) -> None:
        """Stop receiving and transmitting."""
        self.bar.write32(regs.RCTL, 0)
        self.bar.write32(regs.TCTL, 0)

    def init_hw(self) -> None:
        raise NotImplementedError

    def messages_wanted(self, counts: Any) -> int | None:
        return None

    def interrupt_mode(self, kind: InterruptType) -> InterruptMode:
        """How this family serves ``kind``; line-based and MSI are the same for all."""
        if kind is InterruptType.MSIX:
            raise NotImplementedError(f"{self.family} has no MSI-X mode")
        return SharedLine(self)

    def line_causes(self) -> int:
        """IMS for line-based and MSI operation."""
        return int(regs.Icr.RXT0 | regs.Icr.RXDMT0 | regs.Icr.RXO | regs.Icr.LSC)

    # -- helpers the families share ------------------------------------------------------------

    def program_ring(self, dbal: int, iova: int) -> None:
        """A ring's base, length (ring_size descriptors), head and tail; DBAL at ``dbal``."""
        write32 = self.bar.write32
        base = dbal - regs.DBAL
        write32(base + regs.DBAL, iova & U32_MASK)
        write32(base + regs.DBAH, iova >> 32)
        write32(base + regs.DLEN, self.config.ring_size * DESCRIPTOR_BYTES)
        write32(base + regs.DH, 0)
        write32(base + regs.DT, 0)

    def begin_init(self) -> None:
        """RX and TX off while the rings are programmed (TCTL keeps short packets padded)."""
        self.bar.write32(regs.RCTL, 0)
        self.bar.write32(regs.TCTL, regs.Tctl.PSP)

    def start_tx(self, tctl: int, tipg: int | None = None) -> None:
        """Transmit on; 8254x/82574: no TX interrupt delay and the part's TIPG first."""
        if tipg is not None:
            self.bar.write32(regs.TIDV, 0)
            self.bar.write32(regs.TADV, 0)
            self.bar.write32(regs.TIPG, tipg)
        self.bar.write32(regs.TCTL, tctl)

    def program_rss(self, reta: bytes, mrqc_enable: int) -> None:
        """RSS over the queues: hash in place of the checksum, RETA and key, MRQC."""
        self.bar.write32(regs.RXCSUM, regs.RXCSUM_PCSD)
        regs.write_rss_tables(self.bar.write32, reta, regs.RSS_DEFAULT_KEY)
        self.bar.write32(regs.MRQC, mrqc_enable | regs.MRQC_RSS_FIELDS)

    def no_rx_delay(self) -> None:
        """8254x/82574: no receive delay timers; moderation is ITR's job alone."""
        self.bar.write32(regs.RDTR, 0)
        self.bar.write32(regs.RADV, 0)
        self.bar.write32(regs.ITR, self.itr_value(0))

    def start_rx(self, rctl: int = 0) -> None:
        """Receive on: the address filters, long packets when jumbo, CRC stripped."""
        bits = regs.Rctl.EN | self.set_filters() | self.long_packets() | regs.Rctl.SECRC
        self.bar.write32(regs.RCTL, int(bits) | rctl)

    def long_packets(self) -> int:
        """RCTL.LPE when frames longer than a standard one are wanted (jumbo)."""
        return int(regs.Rctl.LPE) if self.config.max_frame > STANDARD_MAX_FRAME else 0

    def set_filters(self) -> int:
        """Receive address 0 from the NIC's own MAC, clear multicast table; RCTL filter bits."""
        for i in range(regs.MTA_ENTRIES):
            self.bar.write32(regs.MTA + 4 * i, 0)
        bits = regs.Rctl.BAM
        if self.config.promiscuous:
            bits |= regs.Rctl.UPE | regs.Rctl.MPE
        return int(bits)

    @property
    def mac(self) -> str:
        return regs.mac_from_ra(self.bar.read32(regs.RAL0), self.bar.read32(regs.RAH0))

    def phy_write(self, reg: int, value: int, timeout: float = 1.0) -> None:
        """Write a PHY register through MDIC and wait for READY."""
        self.bar.write32(
            regs.MDIC,
            (value & regs.MDIC_DATA_MASK)
            | (reg << regs.MDIC_REG_SHIFT)
            | (regs.PHY_ADDRESS << regs.MDIC_PHY_SHIFT)
            | regs.MDIC_OP_WRITE,
        )
        deadline = time.monotonic() + timeout
        while True:
            mdic = self.bar.read32(regs.MDIC)
            if mdic & regs.MDIC_ERROR:
                raise NicError(f"{self.device.bdf}: MDIC write of PHY register {reg} failed")
            if mdic & regs.MDIC_READY:
                return
            if time.monotonic() > deadline:
                raise NicError(f"{self.device.bdf}: MDIC did not complete")
            time.sleep(POLL_INTERVAL)

    def itr_value(self, default_us: float) -> int:
        """The ITR register value (256 ns units) for the configured moderation."""
        us = default_us if self.config.itr_us is None else self.config.itr_us
        return round(us * 1000 / regs.ITR_UNIT_NS)
