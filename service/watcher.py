"""Watching the personas folder: logs that appear or change start training, with no command typed.

``watchfiles`` reports changes in batches; each persona whose files changed waits until its folder
has been quiet for ``settle_s`` (a slow copy, a file at a time, keeps it waiting), then
``on_settled(name)`` is called once. A persona folder that is removed is reported the same way; the
callback looks at the folder to tell which. ``generation`` counts settled changes; ``changes`` counts
every batch of changes the page could show (a card, a published version, a job's progress), so the
chat page re-reads the store only when something changed instead of scanning it from every tab.
Staged uploads (``.uploads/``) are neither: they are not a persona until they are moved into place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from store.jobs import JOBS_DIR
from store.names import NAME_PATTERN

from .uploads import UPLOADS_DIR

log = logging.getLogger("persona.watcher")

Callback = Callable[[str], Awaitable[None]]


class PersonaWatcher:
    def __init__(self, root: Path, on_settled: Callback, settle_s: float = 3.0) -> None:
        self.root = Path(root)
        self.on_settled = on_settled
        self.settle_s = settle_s
        self.generation = 0
        self.changes = 0
        self.batches = 0
        """Batches of file events handled, staged uploads too: whoever wrote a file can tell it was seen."""
        self.running = False
        """Watching now: a watcher that could not start, or stopped, sees no change."""
        self._changed: dict[str, float] = {}
        self._stop = asyncio.Event()

    def persona_of(self, path: str) -> str | None:
        """The persona a changed path belongs to, or None for files that do not start training
        (adapters and work files written by training, the job records, staged uploads, hidden files)."""
        try:
            parts = Path(path).resolve().relative_to(self.root.resolve()).parts
        except ValueError:
            return None
        if not parts or parts[0] == JOBS_DIR or not NAME_PATTERN.fullmatch(parts[0]):
            return None
        if len(parts) > 1 and (parts[1] == "adapters" or parts[-1].startswith(".")):
            return None
        return parts[0]

    def _staged(self, path: str) -> bool:
        try:
            return Path(path).resolve().relative_to(self.root.resolve()).parts[:1] == (UPLOADS_DIR,)
        except ValueError:
            return False

    async def run(self) -> None:
        """Watch until :meth:`stop`; never raises for a file that appears, changes or vanishes."""
        from watchfiles import awatch

        self.root.mkdir(parents=True, exist_ok=True)
        settle = asyncio.create_task(self._settle_loop())
        self.running = True
        try:
            async for changes in awatch(
                self.root, stop_event=self._stop, debounce=400, step=100, recursive=True, ignore_permission_denied=True
            ):
                now = asyncio.get_running_loop().time()
                if any(not self._staged(path) for _, path in changes):
                    self.changes += 1
                for _, path in changes:
                    name = self.persona_of(path)
                    if name:
                        self._changed[name] = now
                self.batches += 1
        finally:
            self.running = False
            settle.cancel()

    async def _settle_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = asyncio.get_running_loop().time()
            for name in [n for n, at in self._changed.items() if now - at >= self.settle_s]:
                del self._changed[name]
                self.generation += 1
                try:
                    await self.on_settled(name)
                except Exception:  # one persona's trouble must not stop the watcher
                    log.exception("handling a change of persona %s failed", name)

    def stop(self) -> None:
        self._stop.set()
