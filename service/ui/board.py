"""The persona list every open tab of the page shows, read from the store only when something changed.

Each tab asks every few seconds. The answer is kept and read again only when the store's token moved
(:mod:`service.store_changes`: the watcher saw a change, a job record was written, the API changed
something) or after the page's own changes; a store shared with other machines, whose changes the
watcher cannot see, is read again at least every :data:`MAX_AGE_S` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Any

from fastapi import FastAPI

from store.registry import PersonaStore

from ..personas.protocol import PersonaStatus
from ..personas.status import all_statuses
from ..store_changes import MAX_AGE_S, StoreChanges

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

    def snapshot(self, fresh: bool = False) -> Snapshot:
        """The statuses; ``fresh`` reads the store now (after the page itself changed something)."""
        changes: StoreChanges = self.app.state.changes
        if fresh:
            changes.wrote()
        token: Hashable | None = changes.token()
        with self._lock:
            recent = time.monotonic() - self._read_at < MAX_AGE_S
            if not fresh and token is not None and token == self._token and recent:
                return self._snapshot
            state = self.app.state
            self._snapshot = all_statuses(self.store, getattr(state, "catalog", None), getattr(state, "statuses", None))
            self._token, self._read_at = token, time.monotonic()
            self.reads += 1
            return self._snapshot
