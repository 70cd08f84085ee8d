"""The NIC models end to end: port A sends, port B (same hub) receives, per family.

Frames carry sequence numbers and checksummed payloads (hwnic.traffic), so a
loss, duplicate, reorder, cut or corruption fails a test. Every interrupt mode
each model offers is exercised.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

import hwnic
from hwnic import pci, traffic
from hwnic.ndis import InterruptType
from hwnic.nic.base import Nic
from hwnic.pytest_plugin import LinkControl, Pair, TestPort, rig_of

pytestmark = pytest.mark.lab

LabPair = Pair

RECEIVE_TIMEOUT = 60.0  # seconds for a whole test's traffic under TCG
LINK_TIMEOUT = 30.0
MODES = {
    "e1000": [InterruptType.LINE_BASED],
    "e1000e": [InterruptType.LINE_BASED, InterruptType.MSI, InterruptType.MSIX],
    "igb": [InterruptType.LINE_BASED, InterruptType.MSI, InterruptType.MSIX],
}
RSS_QUEUES = {"e1000e": 2, "igb": 4}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    rig = rig_of(metafunc.config)
    pairs = rig.pairs() if rig else {}
    if "pair" in metafunc.fixturenames and "mode" in metafunc.fixturenames:
        cases = [(p, m) for f, p in sorted(pairs.items()) for m in MODES[f]]
        ids = [f"{p[0].model}-{m}" for p, m in cases]
        metafunc.parametrize(("pair", "mode"), cases, ids=ids)
    elif "pair" in metafunc.fixturenames:
        cases = [p for _, p in sorted(pairs.items())]
        metafunc.parametrize("pair", cases, ids=[p[0].model for p in cases])


def _ready(entry: TestPort) -> str:
    nic = pci.describe(entry.address)
    assert nic.vfio_ready, f"{entry.address} is not bound to vfio-pci"
    return nic.bdf


@pytest.fixture
def ports(pair: LabPair, request: pytest.FixtureRequest) -> Iterator[tuple[Nic, Nic]]:
    mode = request.node.callspec.params.get("mode")
    opts = dict(getattr(request, "param", {}))
    a_entry, b_entry = pair
    if opts.get("queues") == "rss":
        if a_entry.model not in RSS_QUEUES:
            pytest.skip("the 82540EM has a single queue: no RSS")
        opts["queues"] = RSS_QUEUES[a_entry.model]
    with (
        hwnic.open(_ready(a_entry), interrupt=mode, wait_link=LINK_TIMEOUT) as a,
        hwnic.open(_ready(b_entry), interrupt=mode, wait_link=LINK_TIMEOUT, **opts) as b,
    ):
        if mode is not None:
            assert a.interrupt is not None and a.interrupt.granted_type is mode
        yield a, b


def collect(
    nic: Nic,
    expect: int,
    timeout: float = RECEIVE_TIMEOUT,
    *,
    queue: int | None = None,
    flows: bool = False,
) -> tuple[np.ndarray, list[int]]:
    """Receive until ``expect`` frames arrived (or timeout); returns (seqs, bad counts)."""
    seqs: list[np.ndarray] = []
    bad = []
    got = 0
    deadline = time.monotonic() + timeout
    while got < expect and time.monotonic() < deadline:
        batch = nic.receive(timeout=0.5 if queue is None else 0, queue=queue)
        if batch is None:
            if queue is not None:
                break
            continue
        checked = traffic.check(batch.frames, batch.lengths, flows=flows)
        seqs.append(checked.seqs)
        bad.append(checked.bad)
        got += batch.count
        batch.release()
    return (np.concatenate(seqs) if seqs else np.zeros(0, np.uint64)), bad


def send_all(nic: Nic, frames: np.ndarray, lengths: np.ndarray) -> None:
    sent = nic.send(frames, lengths, timeout=RECEIVE_TIMEOUT)
    assert sent == len(frames), f"only {sent} of {len(frames)} frames were posted"


def send_windowed(
    a: Nic, b: Nic, frames: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, list[int]]:
    """Send at most a receive ring's worth before waiting for it to arrive.

    QEMU's models drop what a flush of the hub's queue delivers beyond a full
    ring (the 82540EM counts it in MPC; measured: a 3000-frame burst into a
    511-descriptor ring lost 900 to 1800 frames on all three), so a loss-free
    test keeps no more in flight than the receiver can hold.
    """
    window = b.config.ring_size - 1
    seqs, bad = [], []
    for start in range(0, len(frames), window):
        chunk = slice(start, start + window)
        send_all(a, frames[chunk], lengths[chunk])
        got, chunk_bad = collect(b, len(lengths[chunk]))
        seqs.append(got)
        bad += chunk_bad
    return np.concatenate(seqs), bad


def test_every_size_arrives_in_order(ports: tuple[Nic, Nic], mode: InterruptType) -> None:
    a, b = ports
    sizes = traffic.sizes_60_to_1514()
    seqs = np.arange(len(sizes))
    frames = traffic.build(seqs, sizes, a.mac, b.mac)
    got, bad = send_windowed(a, b, frames, sizes)
    assert sum(bad) == 0, "corrupted frames"
    assert len(got) == len(sizes), f"{len(got)} of {len(sizes)} frames arrived"
    assert (got == seqs).all(), "frames lost, duplicated or reordered"
    stats = b.stats()
    assert stats["rx"][0]["frames"] == len(sizes)
    assert stats["interrupts"]["totals"]["dpc_runs"] > 0


def test_burst_then_silence(ports: tuple[Nic, Nic], mode: InterruptType) -> None:
    """The last frames of a burst arrive though no more traffic follows them."""
    a, b = ports
    # As deep as the receive ring: what goes beyond it is dropped by QEMU's
    # models when the hub flushes its queue (measured for all three).
    n = b.config.ring_size - 1
    lengths = np.full(n, traffic.MIN_FRAME)
    send_all(a, traffic.build(np.arange(n), lengths, a.mac, b.mac), lengths)
    got, _ = collect(b, n)
    assert len(got) == n and (got == np.arange(n)).all()


@pytest.mark.parametrize("ports", [{"budget": 4}], indirect=True)
def test_small_budget_reruns(ports: tuple[Nic, Nic], pair: LabPair) -> None:
    a, b = ports
    n = b.config.ring_size - 1
    lengths = np.full(n, 128)
    send_all(a, traffic.build(np.arange(n), lengths, a.mac, b.mac), lengths)
    got, _ = collect(b, n)
    assert len(got) == n and (got == np.arange(n)).all()
    totals = b.stats()["interrupts"]["totals"]
    assert totals["more_pending"] > 0, "a budget of 4 never ran out"
    hist = b.interrupt.stats.indicated_per_dpc if b.interrupt else None
    assert hist is not None and hist.percentile(100) <= 4 * 2  # log2 bucket upper bound


@pytest.mark.parametrize("ports", [{"queues": "rss"}], indirect=True)
def test_rss_spreads_flows(ports: tuple[Nic, Nic], pair: LabPair) -> None:
    """Flows land on every RX queue, each queue in order, each on its own message."""
    a, b = ports
    n, flows = b.config.ring_size - 1, 64
    lengths = np.full(n, 128)
    flow_ids = np.arange(n) % flows
    send_all(a, traffic.build(np.arange(n), lengths, a.mac, b.mac, flows=flow_ids), lengths)
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    per_queue: list[list[np.ndarray]] = [[] for _ in b.rx]
    while sum(sum(len(x) for x in q) for q in per_queue) < n and time.monotonic() < deadline:
        for q in range(len(b.rx)):
            got, bad = collect(b, n, timeout=0.2, queue=q, flows=True)
            assert sum(bad) == 0
            per_queue[q].append(got)
        time.sleep(0.05)
    seqs = [np.concatenate(q) if q else np.zeros(0, np.uint64) for q in per_queue]
    total = np.concatenate(seqs)
    assert len(total) == n and len(np.unique(total)) == n, "lost or duplicated frames"
    for q, got in enumerate(seqs):
        assert len(got) > 0, f"RSS put nothing on queue {q}"
        assert (np.diff(got.astype(np.int64)) > 0).all(), f"queue {q} out of order"
    assert b.interrupt is not None
    if b.interrupt.granted_type is InterruptType.MSIX:
        runs = [b.interrupt.stats[m].dpc_runs for m in b.rx_messages()]
        assert all(r > 0 for r in runs), f"DPC runs per RX message: {runs}"


def test_link_flap_reported_and_traffic_resumes(
    ports: tuple[Nic, Nic], pair: LabPair, hwnic_link: LinkControl
) -> None:
    a, b = ports
    changes = b.link_changes
    hwnic_link.set_link(pair[1], False, nic=b)
    b.wait_link(False, LINK_TIMEOUT)
    hwnic_link.set_link(pair[1], True, nic=b)
    b.wait_link(True, LINK_TIMEOUT)
    deadline = time.monotonic() + LINK_TIMEOUT
    want = changes + hwnic_link.changes_per_flap(b)
    while b.link_changes < want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.link_changes >= want, "link down and up were not both reported (LSC)"
    n = 200
    lengths = np.full(n, 100)
    send_all(a, traffic.build(np.arange(n), lengths, a.mac, b.mac), lengths)
    got, _ = collect(b, n)
    assert len(got) == n and (got == np.arange(n)).all()


def test_link_flap_under_traffic(
    ports: tuple[Nic, Nic], pair: LabPair, hwnic_link: LinkControl
) -> None:
    """Frames sent while the link is down are lost (QEMU drops them); the rest arrive."""
    import threading

    a, b = ports
    stop = threading.Event()
    sent = [0]

    def sender() -> None:
        lengths = np.full(32, 64)
        while not stop.is_set():
            frames = traffic.build(np.arange(sent[0], sent[0] + 32), lengths, a.mac, b.mac)
            sent[0] += a.send(frames, lengths, timeout=1.0)
            time.sleep(0.01)

    thread = threading.Thread(target=sender, name="flap-sender")
    thread.start()
    try:
        time.sleep(0.5)
        hwnic_link.set_link(pair[1], False, nic=b)
        b.wait_link(False, LINK_TIMEOUT)
        time.sleep(0.5)
        hwnic_link.set_link(pair[1], True, nic=b)
        b.wait_link(True, LINK_TIMEOUT)
        resumed_at = sent[0]
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    got, bad = collect(b, sent[0], timeout=5.0)
    assert sum(bad) == 0
    assert len(np.unique(got)) == len(got), "duplicates"
    # No order check here: around a link change QEMU's net layer can deliver a
    # new frame ahead of ones still queued at the hub (seen once on e1000e).
    assert (got < sent[0]).all()
    # Traffic resumed: frames sent after the link came back arrived.
    assert sent[0] > resumed_at, "the sender stalled"
    assert (got >= resumed_at).any(), "nothing sent after link-up arrived"
