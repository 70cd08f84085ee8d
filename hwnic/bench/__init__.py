"""Packet-rate benchmarks: ``hwnic bench {tx,rx,loopback}`` and sweeps.

``options`` (settings and their parsers), ``pacing`` (rate control per
batch), ``pool`` (prebuilt frames, sequence numbers rewritten per batch),
``runner`` (the measurement loop), ``live`` (the table while it runs),
``report`` (summary, JSON, plots) and ``sweep`` (one run per setting).
"""
