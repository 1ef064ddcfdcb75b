"""What tells a listing that the personas folder may have changed, so that a thousand folders are not
checked on every listing.

The token moves whenever something a listing shows may have changed: the folder watcher saw a batch
of changes (a card, a published version, a job's progress), a persona folder was added or removed
(the folder's own time), a job record was written, or this server's API or page changed the store.
A change the token cannot see (a store shared with other machines, a watcher that stopped) is listed
once :data:`MAX_AGE_S` have passed and a check made in the background has found it. While a change
through the API is in flight there is no token, so a listing never keeps what it read half-way
through one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Hashable
from pathlib import Path

from fastapi import Request

from store.jobs import JOBS_DIR

from .watcher import PersonaWatcher

MAX_AGE_S = 30.0
"""The longest a listing keeps what it read while the token stays the same."""

READS = frozenset({"GET", "HEAD", "OPTIONS"})


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class StoreChanges:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.watcher: PersonaWatcher | None = None
        """The running server's folder watcher (None before start-up and after shut-down)."""
        self._lock = threading.Lock()
        self._writes = 0
        self._writing = 0

    def wrote(self) -> None:
        """This process changed the store (the page after its own actions)."""
        with self._lock:
            self._writes += 1

    def begin(self) -> None:
        with self._lock:
            self._writes += 1
            self._writing += 1

    def end(self) -> None:
        with self._lock:
            self._writes += 1
            self._writing -= 1

    def token(self) -> Hashable | None:
        """Equal between two calls only if nothing a listing shows changed in between; None when that
        cannot be told (no watcher running, a change in flight): read the store."""
        watcher = self.watcher
        with self._lock:
            if watcher is None or not watcher.running or self._writing:
                return None
            writes = self._writes
        return (watcher.changes, watcher.generation, writes, _mtime(self.root), _mtime(self.root / JOBS_DIR))


async def marks_changes(request: Request) -> AsyncIterator[None]:
    """A router's dependency: each request that may change the store moves the token before and after."""
    changes: StoreChanges | None = getattr(request.app.state, "changes", None)
    if changes is None or request.method in READS:
        yield
        return
    changes.begin()
    try:
        yield
    finally:
        changes.end()
