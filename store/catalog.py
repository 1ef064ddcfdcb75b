"""The personas folder read once and kept current by cheap checks, for listings that must stay fast.

Reading every card and adapter pointer on each listing costs a file parse per persona. The catalog
keeps what it read for each folder with a signature made of ``stat`` calls only (the folder's
entries, its ``adapters/`` entries and the training work folder's entries): a folder whose
signature is unchanged is not read again, so a card edited, a version published or a folder removed
is seen at the next listing, without a restart and without a watcher. Given a ``token`` (what moves
whenever a folder may have changed, such as a watcher's count of changes), a listing whose token is
the one of the last check checks no folder at all (one older than ``max_age_s`` has them checked
in the background, for a change the token cannot see). Safe to call from threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path

from .adapters import ADAPTERS_DIR
from .errors import StoreError
from .progress import WORK_DIR
from .registry import Persona, PersonaStore

Signature = tuple[Hashable, ...]
Entry = Persona | StoreError
Token = Callable[[], Hashable | None]
"""Equal between two calls only if no persona folder changed in between; None when that cannot be told."""


def _entries(folder: str) -> tuple[tuple[str, int, int], ...]:
    """Name, modification time and size of each entry of ``folder`` (empty when it is missing)."""
    try:
        with os.scandir(folder) as found:
            out = []
            for entry in found:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append((entry.name, st.st_mtime_ns, st.st_size))
    except OSError:
        return ()
    return tuple(sorted(out))


def signature(folder: Path) -> Signature:
    """What changes whenever anything a persona listing shows of ``folder`` may have changed (plain
    strings and no look into a subfolder that is not there: a listing takes one of these per persona)."""
    top = _entries(str(folder))
    if not any(name == ADAPTERS_DIR for name, _, _ in top):
        return (top, (), ())
    adapters = os.path.join(folder, ADAPTERS_DIR)
    inner = _entries(adapters)
    work = _entries(os.path.join(adapters, WORK_DIR)) if any(name == WORK_DIR for name, _, _ in inner) else ()
    return (top, inner, work)


class Catalog:
    """Personas by name as last read, each re-read only when its folder's signature changed."""

    def __init__(self, store: PersonaStore, token: Token | None = None, max_age_s: float = 30.0) -> None:
        self.store = store
        self.token = token
        self.max_age_s = max_age_s
        self.reads = 0
        """Persona folders parsed (a listing that found nothing changed parses none)."""
        self.checks = 0
        """Listings that checked every folder (one whose token had not moved checks none)."""
        self._lock = threading.Lock()
        self._known: dict[str, tuple[Signature, Entry]] = {}
        self._checked: tuple[Hashable | None, float] = (None, float("-inf"))
        self._rechecking = False

    def entries(self) -> dict[str, Entry]:
        """Every persona folder, as its :class:`Persona` or the error that keeps it from being read.

        With a token that has not moved, what was read last; once that is older than ``max_age_s``,
        it is still what this call gets, while a check runs in the background for the next one."""
        token = self.token() if self.token is not None else None
        with self._lock:
            last, at = self._checked
            if token is not None and token == last:
                if time.monotonic() - at >= self.max_age_s and not self._rechecking:
                    self._rechecking = True
                    threading.Thread(target=self._recheck, name="catalog-check", daemon=True).start()
                return {name: entry for name, (_, entry) in self._known.items()}
        return self._check(token)

    def refresh(self) -> dict[str, Entry]:
        """Check every folder now and record it under no token: the next listing still checks every
        folder's signature (so a change made meanwhile is listed), but reads only those that changed."""
        return self._check(None, listing=False)

    def _recheck(self) -> None:
        try:
            self._check(self.token() if self.token is not None else None)
        finally:
            with self._lock:
                self._rechecking = False

    def _check(self, token: Hashable | None, listing: bool = True) -> dict[str, Entry]:
        """Check every folder (reading again those whose signature changed), recorded under ``token``;
        counted in :attr:`checks` when made for a listing."""
        began = time.monotonic()
        names = self.store.names()
        fresh: dict[str, tuple[Signature, Entry]] = {}
        for name in names:
            sig = signature(self.store.root / name)
            with self._lock:
                known = self._known.get(name)
            if known is not None and known[0] == sig:
                fresh[name] = known
                continue
            try:
                entry: Entry = self.store.get(name)
            except StoreError as exc:
                entry = exc
            self.reads += 1
            fresh[name] = (sig, entry)
        with self._lock:
            if began >= self._checked[1]:  # a check that began later and ended first stays recorded
                self._known = fresh
                self._checked = (token, began)
            if listing:
                self.checks += 1
        return {name: entry for name, (_, entry) in fresh.items()}

    def signature_of(self, name: str) -> Signature | None:
        """The signature the persona was last read with (None before it was read)."""
        with self._lock:
            known = self._known.get(name)
        return known[0] if known else None

    def scan(self) -> tuple[list[Persona], dict[str, str]]:
        """As :meth:`PersonaStore.scan`, reading only the folders that changed since the last call."""
        found: list[Persona] = []
        problems: dict[str, str] = {}
        for name, entry in self.entries().items():
            if isinstance(entry, StoreError):
                problems[name] = str(entry)
            else:
                found.append(entry)
        return found, problems
