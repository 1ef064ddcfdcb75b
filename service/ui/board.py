"""The persona list every open tab of the page shows, read from the store only when something changed.

Each tab asks every few seconds. The answer is kept and read again only when the folder watcher saw
a change (a card, logs, a published version, a job's progress) or a job record was written; a store
shared with other machines, whose changes the watcher cannot see, is read again at least every
:data:`MAX_AGE_S` seconds.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from fastapi import FastAPI

from store.jobs import JOBS_DIR
from store.registry import PersonaStore

from ..personas.protocol import PersonaStatus
from ..personas.status import all_statuses

MAX_AGE_S = 30.0

Snapshot = tuple[list[PersonaStatus], dict[str, str]]
"""Every persona's status (an invalid card's with its error), and for each unreadable one the reason."""


class StatusBoard:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.store: PersonaStore = app.state.store
        self.reads = 0
        """How often the store was read (the page's refreshes that found nothing new read nothing)."""
        self._lock = threading.Lock()
        self._token: Any = None
        self._snapshot: Snapshot = ([], {})
        self._read_at = float("-inf")

    def token(self) -> Any:
        """What changes whenever what the page shows may have: the watcher's counts and the job records'
        folder (rewritten with every progress report). None without a watcher: always read."""
        watcher = getattr(getattr(self.app.state, "training", None), "watcher", None)
        if watcher is None:
            return None
        try:
            jobs = os.stat(self.store.root / JOBS_DIR).st_mtime_ns
        except OSError:
            jobs = None
        return (watcher.generation, watcher.changes, jobs)

    def snapshot(self, fresh: bool = False) -> Snapshot:
        """The statuses; ``fresh`` reads the store now (after the page itself changed something)."""
        token = self.token()
        with self._lock:
            recent = time.monotonic() - self._read_at < MAX_AGE_S
            if not fresh and token is not None and token == self._token and recent:
                return self._snapshot
            state = self.app.state
            self._snapshot = all_statuses(self.store, getattr(state, "catalog", None), getattr(state, "statuses", None))
            self._token, self._read_at = token, time.monotonic()
            self.reads += 1
            return self._snapshot
