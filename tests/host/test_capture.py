"""pcap/pcapng files: batches written with numpy read back through dpkt and tshark;
``hwnic capture`` and ``hwnic send`` against a fake pair of ports."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import dpkt
import numpy as np
import pytest

import hwnic
from hwnic import capture, traffic
from hwnic.bench.testing import FakeWire
from hwnic.cli.main import main
from hwnic.errors import UsageError

SRC, DST = "02:00:00:00:00:01", "02:00:00:00:00:02"
TS_NS = 1_700_000_000_123_456_789
A, B = "0000:01:00.0", "0000:02:00.0"


def _frames(n: int = 50, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.resize(np.array([60, 61, 63, 64, 100, 590, 1514]), n)
    return traffic.build(np.arange(n), lengths, SRC, DST, width=width), lengths


@pytest.mark.parametrize("fmt", capture.FORMATS)
def test_round_trip_through_dpkt(tmp_path: Path, fmt: str) -> None:
    frames, lengths = _frames(width=2048)  # rows wider than the frames, as DMA buffers are
    path = tmp_path / f"t.{fmt}"
    with capture.CaptureWriter(path) as w:
        assert w.format == fmt
        w.write(frames[:20], lengths[:20], TS_NS)
        w.write(frames[20:], lengths[20:], np.arange(30) * 1_000_000_000)
        w.write(frames[:0], lengths[:0], TS_NS)  # an empty batch writes nothing
    assert w.frames == 50 and w.bytes == int(lengths.sum())
    reader = dpkt.pcapng.Reader if fmt == "pcapng" else dpkt.pcap.Reader
    with open(path, "rb") as f:
        records = list(reader(f))
    assert len(records) == 50
    for i, (_, buf) in enumerate(records):
        assert buf == frames[i, : lengths[i]].tobytes()
    assert float(records[0][0]) == pytest.approx(TS_NS / 1e9, abs=1e-6)
    assert float(records[25][0]) == pytest.approx(5.0)
    back = capture.read(path)
    assert back.count == 50
    assert (back.lengths == lengths).all()
    assert traffic.check(back.frames, back.lengths).good.all()


def test_pcap_bytes_match_dpkts_own_writer() -> None:
    frames, lengths = _frames(10)
    ours = io.BytesIO()
    capture.CaptureWriter("x.pcap", fileobj=ours).write(frames, lengths, TS_NS)
    theirs = io.BytesIO()
    w = dpkt.pcap.Writer(theirs, snaplen=capture.DEFAULT_SNAPLEN)
    for i in range(10):
        w.writepkt(frames[i, : lengths[i]].tobytes(), ts=TS_NS // 1000 / 1e6)
    assert ours.getvalue() == theirs.getvalue()


def test_snaplen_cuts_frames_but_keeps_their_length(tmp_path: Path) -> None:
    frames, lengths = _frames(7)
    for fmt in capture.FORMATS:
        path = tmp_path / f"s.{fmt}"
        with capture.CaptureWriter(path, snaplen=64) as w:
            w.write(frames, lengths, TS_NS)
        back = capture.read(path)
        assert back.lengths.max() == 64
        assert (back.frames[:, :60] == frames[:, :60]).all()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("fmt", capture.FORMATS)
def test_tshark_reads_the_files(tmp_path: Path, fmt: str) -> None:
    frames, lengths = _frames(40)
    path = tmp_path / f"t.{fmt}"
    with capture.CaptureWriter(path) as w:
        w.write(frames, lengths, TS_NS)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.len", "-e", "eth.src"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert [int(r[0]) for r in rows] == lengths.tolist()
    assert {r[1] for r in rows} == {SRC}


def test_format_choice_and_bad_files(tmp_path: Path) -> None:
    assert capture.format_for("a.pcapng") == "pcapng"
    assert capture.format_for("a.cap") == "pcap"
    assert capture.format_for("a.pcapng", "pcap") == "pcap"
    with pytest.raises(UsageError):
        capture.format_for("a", "erf")
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    with pytest.raises(UsageError, match="neither pcap nor pcapng"):
        capture.read(junk)
    with pytest.raises(UsageError, match="cannot read"):
        capture.read(tmp_path / "missing.pcap")
    cut = tmp_path / "cut.pcap"
    frames, lengths = _frames(3)
    with capture.CaptureWriter(cut) as w:
        w.write(frames, lengths, TS_NS)
    cut.write_bytes(cut.read_bytes()[:-10])
    back = capture.read(cut)  # a cut file still reads: the whole records are intact
    assert back.lengths[:2].tolist() == [60, 61]


def test_timestamps_keep_their_resolution(tmp_path: Path) -> None:
    frames, lengths = _frames(3)
    ts = TS_NS + np.array([0, 1_234, 5_000_001])  # ns steps a float of seconds would lose
    micro = tmp_path / "us.pcap"
    with capture.CaptureWriter(micro) as w:
        w.write(frames, lengths, ts)
    assert capture.read(micro).ts_ns.tolist() == (ts // 1000 * 1000).tolist()
    nano = tmp_path / "ns.pcap"
    with open(nano, "wb") as f:
        writer = dpkt.pcap.Writer(f, nano=True)
        for i in range(3):
            writer.writepkt(frames[i, : lengths[i]].tobytes(), ts=Decimal(int(ts[i])) / 10**9)
    assert capture.read(nano).ts_ns.tolist() == ts.tolist()


def _option(code: int, data: bytes) -> dpkt.pcapng.PcapngOptionLE:
    return dpkt.pcapng.PcapngOptionLE(code=code, data=data)


def test_pcapng_resolution_and_offset_per_interface(tmp_path: Path) -> None:
    frames, lengths = _frames(3)
    end = _option(dpkt.pcapng.PCAPNG_OPT_ENDOFOPT, b"")
    ns = _option(dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL, bytes([9]))
    pow2 = _option(dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL, bytes([0x80 | 10]))  # 1/1024 s
    offset = _option(dpkt.pcapng.PCAPNG_OPT_IF_TSOFFSET, struct.pack("<q", 100))
    blocks = [
        dpkt.pcapng.SectionHeaderBlockLE(),
        dpkt.pcapng.InterfaceDescriptionBlockLE(linktype=1, opts=[ns, end]),
        dpkt.pcapng.InterfaceDescriptionBlockLE(linktype=1, opts=[pow2, offset, end]),
    ]
    ticks = [(0, TS_NS), (1, 3 * 1024 + 512), (0, TS_NS + 1)]
    for i, (iface, t) in enumerate(ticks):
        data = frames[i, : lengths[i]].tobytes()
        blocks.append(
            dpkt.pcapng.EnhancedPacketBlockLE(
                iface_id=iface, ts_high=t >> 32, ts_low=t & 0xFFFFFFFF,
                caplen=len(data), pkt_len=len(data), pkt_data=data,
            )
        )  # fmt: skip
    path = tmp_path / "multi.pcapng"
    path.write_bytes(b"".join(bytes(b) for b in blocks))
    back = capture.read(path)
    assert back.ts_ns.tolist() == [TS_NS, 103_500_000_000, TS_NS + 1]
    assert back.lengths.tolist() == lengths.tolist()
    path.write_bytes(path.read_bytes()[:-10])  # a cut last block: the whole ones still read
    assert capture.read(path).count == 2
    blocks[1] = dpkt.pcapng.InterfaceDescriptionBlockLE(linktype=105, opts=[end])  # 802.11
    path.write_bytes(b"".join(bytes(b) for b in blocks))
    with pytest.raises(UsageError, match="not an Ethernet capture"):
        capture.read(path)


# -- the commands, against fake ports ------------------------------------------------------------


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> FakeWire:
    w = FakeWire()
    monkeypatch.setattr(hwnic, "open", w.open)
    return w


def test_capture_command_writes_count_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    w = FakeWire()
    peer = w.open(B)
    frames, lengths = _frames(100)

    def opener(bdf: str, **kw: Any) -> Any:
        nic = w.open(bdf, **kw)
        peer.send(frames[:60], lengths[:60])  # arrives in batches before the loop starts
        peer.send(frames[60:], lengths[60:])
        return nic

    monkeypatch.setattr(hwnic, "open", opener)
    out = tmp_path / "c.pcapng"
    assert main(["capture", A, "-w", str(out), "--count", "75"]) == 0
    back = capture.read(out)
    assert back.count == 75
    assert (back.lengths == lengths[:75]).all()
    assert w.nics[A].closed
    err = capsys.readouterr().err
    assert f"capturing on {A}" in err and "75 frames" in err


def test_capture_stops_after_duration(tmp_path: Path, wire: FakeWire) -> None:
    out = tmp_path / "empty.pcap"
    assert main(["capture", A, "-w", str(out), "--duration", "0.3"]) == 0
    assert capture.read(out).count == 0
    with open(out, "rb") as f:
        assert dpkt.pcap.Reader(f).datalink() == capture.LINKTYPE_ETHERNET


def test_send_command_replays_a_file(tmp_path: Path, wire: FakeWire) -> None:
    peer = wire.open(B)
    frames, lengths = _frames(30)
    path = tmp_path / "r.pcap"
    with capture.CaptureWriter(path) as w:
        w.write(frames, lengths, TS_NS)
    assert main(["send", A, str(path), "--loop", "3", "--batch", "8", "--rate", "100000"]) == 0
    assert peer.received == 90
    got = np.concatenate([b.lengths for b in peer.queue])
    assert (got == np.tile(lengths, 3)).all()


def test_send_refuses_oversized_frames(tmp_path: Path, wire: FakeWire) -> None:
    path = tmp_path / "big.pcap"
    big = np.zeros((1, 9100), np.uint8)  # longer than the longest jumbo frame
    with capture.CaptureWriter(path) as w:
        w.write(big, np.array([9100]), TS_NS)
    assert main(["send", A, str(path)]) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["capture", A, "-w", "x.pcap", "--count", "0"],
        ["capture", A, "-w", "x.pcap", "--format", "erf"],
        ["capture", A, "-w", "x.pcap", "--snaplen", "4"],
        ["send", A, "x.pcap", "--loop", "-1"],
        ["send", A, "x.pcap", "--rate", "0"],
    ],
)
def test_bad_values_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_capture_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["capture", A])
    assert exc.value.code == 2
