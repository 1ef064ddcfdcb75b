"""Training yields the CPU to the server beside it: the worker pauses the training process while the
server is generating, and lets it run a share of the time so a server that never rests does not starve it.

Pausing from outside (SIGSTOP, SIGCONT) answers a new request within one tick, where a pause between
training steps would leave the request beside a whole step; the process keeps its threads, memory and
loss curve, it only waits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

TICK_S = 0.05
"""How often the worker looks at the server's load while a training process runs."""
PERIOD_S = 1.0
"""While the server is busy, each period the training process is paused first, then runs its share."""


class CpuYielder:
    """Pauses and resumes one training process from the server's load; call :meth:`tick` every ``TICK_S``."""

    def __init__(
        self,
        pid: int,
        busy: Callable[[], bool],
        share: float,
        period_s: float = PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pid, self.busy, self.share, self.period_s, self.clock = pid, busy, share, period_s, clock
        self.paused = False
        self.paused_s = 0.0
        """Seconds the process spent paused, in all."""
        self._busy_since: float | None = None
        self._paused_at = 0.0

    def tick(self) -> None:
        now = self.clock()
        if self.share >= 1 or not self.busy():
            self._busy_since = None
            self.resume()
            return
        if self._busy_since is None:
            self._busy_since = now
        phase = (now - self._busy_since) % self.period_s
        if phase < (1 - self.share) * self.period_s:
            self._pause(now)
        else:
            self.resume()

    def resume(self) -> None:
        """Let the process run (always before it is signalled to stop, and when the worker ends)."""
        if self.paused:
            self.paused = False
            self.paused_s += self.clock() - self._paused_at
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)

    def _pause(self, now: float) -> None:
        if not self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGSTOP)
                self.paused, self._paused_at = True, now


def wake(pid: int) -> None:
    """A training process a previous worker may have left paused: let it run (and see its signals)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGCONT)


class PauseClock:
    """Inside a training process: the seconds it has spent stopped, so step times and the time budget
    count only the time it could run. A thread ticks every ``tick_s``; a gap longer than ``gap_s`` between
    ticks is time the process did not run (paused by its worker, or starved of the CPU)."""

    def __init__(self, tick_s: float = 0.05, gap_s: float = 0.3) -> None:
        self.tick_s, self.gap_s = tick_s, gap_s
        self.paused_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pause-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            if now - last > self.gap_s:
                self.paused_s += now - last - self.tick_s
            last = now

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
