"""Rate control per batch: batch k may start once its first frame is due.

Frame ``i`` (counting from 0) is due at ``start + i / rate``, so a batch that
begins with frame ``sent`` waits until ``start + sent / rate`` and then goes
out whole. The average rate is exact and the burst size is the batch size;
a sender that falls behind does not sleep (it never "catches up" faster than
it can send, it just sends back to back).
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
Sleeper = Callable[[float], object]  # time.sleep, or Event.wait (stops early)


def delay(sent: int, elapsed: float, rate: float | None) -> float:
    """Seconds to wait before the batch starting with frame ``sent`` (0: go now)."""
    if rate is None:
        return 0.0
    return max(0.0, sent / rate - elapsed)


def batch_interval(batch: int, rate: float) -> float:
    """Seconds between the starts of full batches at ``rate`` frames/s."""
    return batch / rate


class Pacer:
    """Sleeps until the next batch is due; ``rate=None`` never sleeps."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleeper = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self.start = clock()
        self.slept = 0.0  # s spent waiting: the headroom a paced sender had

    def restart(self) -> None:
        self.start = self._clock()

    def wait(self, sent: int) -> float:
        """Wait until frame ``sent`` is due; returns the seconds slept."""
        if self.rate is None:
            return 0.0  # unpaced: no clock read (a guest's clock may be slow)
        pause = delay(sent, self._clock() - self.start, self.rate)
        if pause > 0:
            self._sleep(pause)
            self.slept += pause
        return pause
