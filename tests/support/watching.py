"""Knowing that the personas folder watcher sees what a test writes next.

``watchfiles`` begins watching some time after the watcher's task starts; a file written before then is
never reported, and a test asserting that something was *not* reported would pass for that reason
alone. :func:`start_watching` (a watcher the test runs) and :func:`watching` (one a server runs)
return only once a write to ``probe``, a hidden or staged file that starts nothing, was reported.
Events in folders watched from the start arrive in the order they were written, so a test can also
wait for a marker written last and then assert on everything written before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from service.watcher import PersonaWatcher

from .polling import wait_until, wait_until_async

__all__ = ["seen", "start_watching", "watching"]

PROBE_EVERY_S = 1.0
"""Longer than the watcher takes to report a write, so no probe is still on its way once one was seen."""


def _probing(watcher: PersonaWatcher, probe: Path, clock: Callable[[], float]) -> Callable[[], bool]:
    """A condition that writes ``probe`` now and then until the watcher has handled a batch since."""
    since = watcher.batches
    written: list[float] = []

    def looking() -> bool:
        if written and watcher.batches > since:
            return True
        if not written or clock() - written[-1] > PROBE_EVERY_S:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_text(str(len(written)))
            written.append(clock())
        return False

    return looking


async def start_watching(watcher: PersonaWatcher, probe: Path, timeout: float = 20.0) -> asyncio.Task:
    """Run ``watcher`` in a task; return it once a write to ``probe`` has been reported."""
    task = asyncio.create_task(watcher.run())
    looking = _probing(watcher, probe, asyncio.get_running_loop().time)
    await wait_until_async(looking, timeout, "the watcher to report a file written in its folder")
    return task


def watching(watcher: PersonaWatcher, probe: Path, timeout: float = 20.0) -> None:
    """Return once ``watcher`` (running elsewhere, as a server runs it) has reported a write to ``probe``."""
    wait_until(_probing(watcher, probe, time.monotonic), timeout, "the watcher to report a file written in its folder")


async def seen(watcher: PersonaWatcher, since: int, what: str, timeout: float = 15.0) -> None:
    """Wait until ``watcher`` has handled a batch of file events after its count was ``since``."""
    await wait_until_async(lambda: watcher.batches > since, timeout, f"the watcher to see {what}")
